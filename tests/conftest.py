import json
import os
import sys
import types
from pathlib import Path

import pytest
import torch

PARITY = Path(os.environ.get("AUDIOREP_PARITY", Path(__file__).resolve().parents[2] / "shared" / "parity"))

torch.set_num_threads(min(2, torch.get_num_threads()))


def load_fixture(name: str):
    """-> (official state_dict, inputs, outputs, sidecar json) of a ../shared/parity fixture."""
    from safetensors.torch import load_file

    path = PARITY / f"{name}.safetensors"
    if not path.exists():
        pytest.fail(f"parity fixture {path} missing (set AUDIOREP_PARITY to the parity folder)")
    t = load_file(str(path))
    sd = {k: v for k, v in t.items() if not k.startswith(("input/", "output/"))}
    inp = {k[len("input/"):]: v for k, v in t.items() if k.startswith("input/")}
    out = {k[len("output/"):]: v for k, v in t.items() if k.startswith("output/")}
    meta = json.loads((PARITY / f"{name}.json").read_text())
    return sd, inp, out, meta


@pytest.fixture
def fixture_loader():
    return load_fixture


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread (and do not fight other jobs for the cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def install_hear_module(monkeypatch, name: str, sample_rate: int, size: int, timestamps, scene=None, model=None) -> str:
    """Install a HEAR API module `name` (sys.modules) for the evaluator: load_model gives `model`
    (or a bare one) declaring `sample_rate` and `size`; `timestamps(audio, model) -> (emb, ms)`;
    scenes from `scene(audio, model)` or the mean of the timestamp embeddings."""
    model = model if model is not None else torch.nn.Module()
    model.sample_rate, model.scene_embedding_size, model.timestamp_embedding_size = sample_rate, size, size
    mod = types.ModuleType(name)
    mod.load_model = lambda model_file_path="", random_init=False: model
    mod.get_timestamp_embeddings = timestamps
    mod.get_scene_embeddings = scene or (lambda audio, m: timestamps(audio, m)[0].mean(1))
    monkeypatch.setitem(sys.modules, name, mod)
    return name

