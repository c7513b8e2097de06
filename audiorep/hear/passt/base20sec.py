"""hear21passt.base20sec as a drop-in (what it runs: MODULES["base20sec"])."""
from . import module_api

load_model, get_scene_embeddings, get_timestamp_embeddings = module_api("base20sec")
