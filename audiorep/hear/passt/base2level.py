"""hear21passt.base2level, drop-in: `import audiorep.hear.passt.base2level` (MODULES["base2level"] says what it runs)."""
from . import module_api

load_model, get_scene_embeddings, get_timestamp_embeddings = module_api("base2level")
