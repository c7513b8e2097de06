"""hear21passt.base, drop-in: `import audiorep.hear.passt.base` (MODULES["base"] says what it runs)."""
from . import module_api

load_model, get_scene_embeddings, get_timestamp_embeddings = module_api("base")
