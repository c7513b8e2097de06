"""hear21passt.base as a drop-in (what it runs: MODULES["base"])."""
from . import module_api

load_model, get_scene_embeddings, get_timestamp_embeddings = module_api("base")
