"""hear21passt.hop160base2lvlmel as a drop-in (what it runs: MODULES["hop160base2lvlmel"])."""
from . import module_api

load_model, get_scene_embeddings, get_timestamp_embeddings = module_api("hop160base2lvlmel")
