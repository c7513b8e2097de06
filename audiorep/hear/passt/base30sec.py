"""hear21passt.base30sec as a drop-in (what it runs: MODULES["base30sec"])."""
from . import module_api

load_model, get_scene_embeddings, get_timestamp_embeddings = module_api("base30sec")
