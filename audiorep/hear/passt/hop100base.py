"""hear21passt.hop100base as a drop-in (what it runs: MODULES["hop100base"])."""
from . import module_api

load_model, get_scene_embeddings, get_timestamp_embeddings = module_api("hop100base")
