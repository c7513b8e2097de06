"""hear21passt.hop160base2lvlmel, drop-in: `import audiorep.hear.passt.hop160base2lvlmel` (MODULES["hop160base2lvlmel"] says what it runs)."""
from . import module_api

load_model, get_scene_embeddings, get_timestamp_embeddings = module_api("hop160base2lvlmel")
