"""hear21passt.hop160base2lvl as a drop-in (what it runs: MODULES["hop160base2lvl"])."""
from . import module_api

load_model, get_scene_embeddings, get_timestamp_embeddings = module_api("hop160base2lvl")
