"""hear21passt.base30sec, drop-in: `import audiorep.hear.passt.base30sec` (MODULES["base30sec"] says what it runs)."""
from . import module_api

load_model, get_scene_embeddings, get_timestamp_embeddings = module_api("base30sec")
