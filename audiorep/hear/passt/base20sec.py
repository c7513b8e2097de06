"""hear21passt.base20sec, drop-in: `import audiorep.hear.passt.base20sec` (MODULES["base20sec"] says what it runs)."""
from . import module_api

load_model, get_scene_embeddings, get_timestamp_embeddings = module_api("base20sec")
