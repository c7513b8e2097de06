"""`torchrun -m audiorep crossval` on 2 CPU processes: the ranks share the (seed, fold) runs, each
trained as one process, and rank 0 writes the results.json one process writes; kill -9 of a
rank mid-run, then the same study with one process, continues to the same results."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from audiorep.commands import crossval as command
from audiorep.objectives import RECIPES
from test_crossval import RECIPE, tasks  # noqa: F401  (the tiny 3-fold task)

TESTS = Path(__file__).parent
# the tiny recipe's crossval; with KILL_RANK set, that rank SIGKILLs itself right after its first
# checkpoint: killed inside a run, whatever the machine's speed
SCRIPT = f"""
import sys
sys.path.insert(0, {str(TESTS)!r})
import torch
torch.set_num_threads(1)
from dying import die_after
from test_crossval import RECIPE
from audiorep import train
from audiorep.commands import crossval as command
from audiorep.objectives import RECIPES
RECIPES[RECIPE.name] = RECIPE
die_after(train, "save_checkpoint")
sys.exit(command.main(sys.argv[1:]))
"""
TINY = ["encoder.frontend.sample_rate=16000", "encoder.backbone.channels=2", "encoder.backbone.factors=4,4",
        "encoder.backbone.dim=16", "encoder.backbone.depth=1", "encoder.backbone.heads=2", "encoder.backbone.ff=32",
        "steps=4", "checkpoint_every=2"]


def _argv(task: Path, out: Path) -> list[str]:
    return ["--recipe", RECIPE.name, "--preset", "eat-tiny", "--task", str(task), "--out", str(out), "--seeds", "2",
            *TINY]


def _torchrun(argv: list[str], tmp_path: Path, **env) -> subprocess.Popen:
    script = tmp_path / "crossval_worker.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(TESTS.parent), OMP_NUM_THREADS="1", **env)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script), *argv]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _one_process(argv: list[str], monkeypatch) -> None:
    monkeypatch.setitem(RECIPES, RECIPE.name, RECIPE)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun rank
    try:
        assert command.main(argv) == 0
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(tasks, tmp_path_factory) -> Path:  # noqa: F811 (the imported fixture)
    out = tmp_path_factory.mktemp("one") / "study"
    with pytest.MonkeyPatch.context() as monkeypatch:
        _one_process(_argv(tasks / "kfold", out), monkeypatch)
    return out


def test_two_processes_write_what_one_writes(tasks, reference, tmp_path):  # noqa: F811
    out = tmp_path / "two"
    run = _torchrun(_argv(tasks / "kfold", out), tmp_path)
    stdout, stderr = run.communicate(timeout=240)
    assert run.returncode == 0, stderr[-3000:]
    assert (out / "results.json").read_bytes() == (reference / "results.json").read_bytes()
    assert json.loads((out / "results.json").read_text())["complete"]
    assert stdout.count("tones3 test/top1_acc:") == 1  # printed by rank 0 alone
    for metrics in reference.glob("seed*/fold*/metrics.json"):
        run_dir = out / metrics.parent.relative_to(reference)
        assert (run_dir / "metrics.json").read_bytes() == metrics.read_bytes()
        assert json.loads((run_dir / "config.json").read_text())["world"] == 1  # trained alone, not with DDP


def test_kill_a_rank_then_resume_with_one_process(tasks, reference, tmp_path, monkeypatch, capsys):  # noqa: F811
    out = tmp_path / "killed"
    run = _torchrun(_argv(tasks / "kfold", out), tmp_path, KILL_RANK="1")
    first = out / "seed0" / "fold01"  # rank 1's first run (runs are shared every other one)
    _, stderr = run.communicate(timeout=240)  # torchrun stops rank 0 too: no hang
    assert run.returncode != 0 and "Signal 9 (SIGKILL) received" in stderr, stderr[-2000:]
    assert list(first.glob("checkpoints/step_*/state.json"))
    assert not (first / "metrics.json").exists()  # killed inside the run, after its first checkpoint
    partial = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else {}
    assert not partial.get("complete")  # rank 0 writes the runs finished so far
    capsys.readouterr()
    _one_process(_argv(tasks / "kfold", out), monkeypatch)  # world size 1 now
    assert f"resuming {first} from step_" in capsys.readouterr().err
    assert (out / "results.json").read_bytes() == (reference / "results.json").read_bytes()
