"""hear21passt.base2levelmel, drop-in: `import audiorep.hear.passt.base2levelmel` (MODULES["base2levelmel"] says what it runs)."""
from . import module_api

load_model, get_scene_embeddings, get_timestamp_embeddings = module_api("base2levelmel")
