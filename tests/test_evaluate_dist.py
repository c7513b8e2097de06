"""`torchrun -m audiorep evaluate` on 2 CPU processes (gloo) writes what one process writes
(timing aside), a grid point's outcome does not depend on the rank that trained it, kill -9
of a rank then a rerun with another world size continues to the same results, and a locked
--out is refused by every rank without a hang."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from audiorep.evaluate import cli, probes
from audiorep.files import folder_lock
from test_evaluate_e2e import tasks  # noqa: F401  (the tiny tones and bursts tasks)

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).parent.parent
TIMING = "probe_seconds"  # per task, and results.json's "timing": the only fields allowed to differ


def _argv(tasks: Path, out: Path) -> list[str]:
    return ["--model", "logmel", "--no-references", "--tasks", str(tasks), "--out", str(out), "--grid-points", "4",
            "--max-epochs", "6", "--bootstrap", "20", "--device", "auto"]


# `audiorep evaluate` whose rank KILL_RANK (when set) SIGKILLs itself right after writing its first
# probe outcome: killed mid-grid, whatever the machine's speed
DYING_EVALUATE = f"""
import sys
sys.path.insert(0, {str(ROOT / "tests")!r})
from dying import die_after
from audiorep.evaluate import cli, probe_parts
die_after(probe_parts, "write")
sys.exit(cli.main(sys.argv[1:]))
"""

def _torchrun(argv: list[str], folder: Path, nproc: int = 2, **env) -> subprocess.Popen:
    script = folder / "evaluate_worker.py"
    script.write_text(DYING_EVALUATE)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **env)  # one thread per rank, as the reference
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           str(script), *argv]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _results(out: Path) -> dict:
    """results.json without its timing fields."""
    doc = json.loads((out / "results.json").read_text())
    doc.pop("timing")
    for per_task in doc["results"].values():
        for result in per_task.values():
            result.pop(TIMING)
    return doc


def _parts(out: Path) -> dict[str, bytes]:
    """Every probe training's outcome: its .json without the seconds it took, and its probabilities."""
    found = {}
    for path in sorted((out / "predictions").rglob("*.points/*/*")):
        doc = path.read_bytes()
        if path.suffix == ".json":
            doc = json.loads(doc)
            doc.pop("seconds")
        found[str(path.relative_to(out))] = doc
    return found


@pytest.fixture(scope="module")
def small(tasks, tmp_path_factory) -> Path:  # noqa: F811 (the imported fixture)
    """The tones (3 folds) and bursts (event) tasks with probes of 64 hidden units (their metadata's grid)."""
    root = tmp_path_factory.mktemp("small")
    for name in ("tones", "bursts"):
        shutil.copytree(tasks / name, root / name)
        meta = json.loads((root / name / "task_metadata.json").read_text())
        meta["evaluation_params"] = {"task_specific_param_grid": {"hidden_dim": [64]}}
        (root / name / "task_metadata.json").write_text(json.dumps(meta))
    return root


@pytest.fixture(scope="module")
def reference(small, tmp_path_factory):
    """One process, one thread (as each torchrun rank: float sums can differ with the thread count)."""
    out = tmp_path_factory.mktemp("one") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli.main(_argv(small, out)) == 0
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.mark.parametrize("classes", [3, 1])
def test_a_grid_point_trains_alike_whatever_points_share_its_stack(classes):
    """What lets ranks split a grid: point i's outcome is bitwise the same trained with the whole
    grid, with some of it, or alone (a stack of one point is where matmul and elementwise kernels
    would otherwise take other paths)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((150, 12)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 150)] if classes == 3 else \
        (rng.random((150, 1)) < 0.3).astype(np.float32)
    points = [dataclasses.replace(p, hidden_dim=16, max_epochs=6, batch_size=64)
              for p in probes.hear_grid(5, 42, {"hidden_layers": [0, 1, 2]})]
    score = (lambda p: (float(np.mean(p.argmax(1) == y.argmax(1))), None)) if classes == 3 else \
        (lambda p: (-float(np.mean((p > 0) != (y > 0))), None))
    whole = probes.train_grid(points, x, y, x, score, multiclass=classes == 3)
    for ids in ([0, 2, 4], [1, 3], [3]):
        part = probes.train_grid([points[i] for i in ids], x, y, x, score, multiclass=classes == 3, ids=ids)
        for i, r in zip(ids, part):
            assert (r.epoch, r.val_score, r.history) == (whole[i].epoch, whole[i].val_score, whole[i].history)
            assert all(torch.equal(v, whole[i].state[k]) for k, v in r.state.items()), (ids, i)


def test_two_processes_write_what_one_writes(small, reference, tmp_path):
    out = tmp_path / "two"
    done = _torchrun(_argv(small, out), tmp_path)
    stdout, stderr = done.communicate(timeout=240)
    assert done.returncode == 0, stderr[-3000:]
    assert _results(out) == _results(reference)
    untimed = [(run / "report.md").read_text().split("## Timing")[0] for run in (out, reference)]
    assert untimed[0] == untimed[1] and "### tones" in untimed[0]  # the last section is the timing table
    for plot in ("categories.png", "tasks.png"):  # timing.png shows the timing
        assert (out / "plots" / plot).read_bytes() == (reference / "plots" / plot).read_bytes()
    # each rank trained half of every grid: the points' outcomes are bitwise those one process trained
    parts = _parts(out)
    assert len(parts) == 2 * (4 + 4 + 2)  # (.json, .npy) x (bursts: 4 points; tones: 4 points + 2 other folds)
    assert parts == _parts(reference)


def test_kill_a_rank_then_resume_with_one_process(small, reference, tmp_path):
    out = tmp_path / "killed"
    run = _torchrun(_argv(small, out), tmp_path, KILL_RANK="1")
    _, stderr = run.communicate(timeout=240)  # torchrun stops rank 0 too: no hang
    assert run.returncode != 0 and "Signal 9 (SIGKILL) received" in stderr, stderr[-2000:]
    assert not (out / "results.json").exists()
    finished = {p: p.stat().st_mtime_ns for p in (out / "predictions").rglob("*.points/*/*.json")}
    assert finished  # rank 1 wrote one before it died
    assert cli.main(_argv(small, out)) == 0  # world size 1 now
    assert _results(out) == _results(reference)
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())  # reused, not trained again


def test_a_locked_out_is_refused_by_every_rank(small, tmp_path):
    out = tmp_path / "locked"
    with folder_lock(out):  # this test's process is the live run using it
        run = _torchrun(_argv(small, out), tmp_path)
        _, stderr = run.communicate(timeout=120)
    assert run.returncode != 0
    assert f"another run (pid {os.getpid()}" in stderr and str(out) in stderr
    assert not (out / "embeddings").exists()
