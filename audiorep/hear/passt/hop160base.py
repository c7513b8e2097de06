"""hear21passt.hop160base, drop-in: `import audiorep.hear.passt.hop160base` (MODULES["hop160base"] says what it runs)."""
from . import module_api

load_model, get_scene_embeddings, get_timestamp_embeddings = module_api("hop160base")
