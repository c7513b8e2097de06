"""hear21passt.hop100base2lvlmel, drop-in: `import audiorep.hear.passt.hop100base2lvlmel` (MODULES["hop100base2lvlmel"] says what it runs)."""
from . import module_api

load_model, get_scene_embeddings, get_timestamp_embeddings = module_api("hop100base2lvlmel")
