"""hear21passt.openmic2008 as a drop-in (what it runs: MODULES["openmic2008"])."""
from . import module_api

load_model, get_scene_embeddings, get_timestamp_embeddings = module_api("openmic2008")
