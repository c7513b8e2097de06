"""benchmarks/bench_data.py --quick (tiny sizes, seconds) so the data-throughput benchmark cannot rot."""
import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_data.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_data", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run_measures_every_recipe_and_data_path(tmp_path, capsys):
    bench = load_bench()
    threads = torch.get_num_threads()
    try:
        assert bench.main(["--quick", "--out", str(tmp_path / "data.json")]) == 0
    finally:
        torch.set_num_threads(threads)
    result = json.loads((tmp_path / "data.json").read_text())
    rows = result["rows"]
    assert sorted((r["recipe"], r["data"]) for r in rows) == sorted(
        (name, data) for name in bench.WORK for data in ("files", "shards flac", "shards wav"))
    for r in rows:
        assert r["size"] == "tiny" and r["batch"] == 4 and r["views"] == (2 if r["recipe"] == "asit" else 1)
        assert r["loader_per_worker"] > 0 and r["loader_2_workers"] > 0 and r["objective_ms"] > 0
        assert r["steady_per_worker"] > 0
        assert r["gpu_samples_per_s"] == pytest.approx(0.4 * 989.4e12 / (r["gflop_per_sample"] * 1e9))
        assert r["workers_needed"] == math.ceil(r["gpu_samples_per_s"] / r["loader_per_worker"])
    printed = capsys.readouterr().out
    assert sum(line.startswith("| ") and "tiny (" in line for line in printed.splitlines()) == len(rows)

    # PaSST's step: the frontend's mel matrix product, then forward + backward of the encoder with
    # the recipe's patchout (backward: 2 x forward, less the patch embedding's input gradient: 2.70 x)
    from audiorep.encoder import Encoder

    recipe, encoder_cfg, objective_cfg, _ = bench.resolve("passt", "tiny")
    objective = recipe.objective(Encoder(encoder_cfg), objective_cfg, num_classes=4)
    with FlopCounterMode(display=False) as frontend, torch.no_grad():
        feats = objective.encoder.frontend(torch.zeros(1, round(2.0 * objective.encoder.sample_rate)))  # 2 s crops
    with FlopCounterMode(display=False) as encoder, torch.no_grad():
        pooled = objective.embed(feats, objective.patchout(1, objective.encoder.backbone.grid(feats.shape[-1])))
        objective.encoder.head(pooled)
    step = next(r["gflop_per_sample"] for r in rows if r["recipe"] == "passt") * 1e9
    assert 2.6 < (step - frontend.get_total_flops()) / encoder.get_total_flops() < 3.0
