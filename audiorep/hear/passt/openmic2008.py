"""hear21passt.openmic2008, drop-in: `import audiorep.hear.passt.openmic2008` (MODULES["openmic2008"] says what it runs)."""
from . import module_api

load_model, get_scene_embeddings, get_timestamp_embeddings = module_api("openmic2008")
