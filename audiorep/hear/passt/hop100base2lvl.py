"""hear21passt.hop100base2lvl, drop-in: `import audiorep.hear.passt.hop100base2lvl` (MODULES["hop100base2lvl"] says what it runs)."""
from . import module_api

load_model, get_scene_embeddings, get_timestamp_embeddings = module_api("hop100base2lvl")
