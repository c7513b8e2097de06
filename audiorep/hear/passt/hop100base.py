"""hear21passt.hop100base, drop-in: `import audiorep.hear.passt.hop100base` (MODULES["hop100base"] says what it runs)."""
from . import module_api

load_model, get_scene_embeddings, get_timestamp_embeddings = module_api("hop100base")
