"""DDP with torchrun on 2 CPU processes (gloo) computes the single-process gradients of the same global batch."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from test_train import make_corpus, make_run, small_config  # noqa: F401  (helpers shared with the loop tests)

SCRIPT = """
import sys
from pathlib import Path
import torch
torch.set_num_threads(1)
sys.path.insert(0, {tests!r})
from test_train_ddp import gradients
gradients(Path({manifest!r}), Path({out!r}))
"""

RESUME = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_train import make_run, small_config
make_run(Path({out!r}), Path({manifest!r}), small_config(steps=3, batch_size=4), "run1")
"""


def gradients(manifest: Path, out: Path) -> None:
    """One backward on this process's share of micro-step 0, then 3 loop steps; rank 0 saves both."""
    import os

    import torch.distributed as dist
    import torch.nn as nn

    from audiorep.data import ClipDataset, clips_from
    from audiorep.train import make_loader, setup_distributed
    from test_train import SR, TagObjective, tiny_encoder

    cfg = small_config(steps=3, batch_size=4)
    rank, world, _ = setup_distributed(cfg)
    clips, vocabulary = clips_from(manifest)
    data = ClipDataset(clips, SR, round(cfg.data.crop_s * SR), cfg.data, vocabulary)
    objective = TagObjective(tiny_encoder(), num_classes=len(vocabulary))
    model = nn.parallel.DistributedDataParallel(objective) if world > 1 else objective
    batch = next(iter(make_loader(data, cfg, 0, rank, world)))
    loss, _ = model(batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in objective.named_parameters()}
    trained = make_run(out, manifest, cfg, f"run{world}")
    if rank == 0:
        torch.save({"grads": grads, "weights": trained.state_dict(), "items": len(batch["wave"])}, out / f"world{world}.pt")
    if world > 1:
        dist.destroy_process_group()
    os.environ.pop("WORLD_SIZE", None)


def test_two_processes_match_one(tmp_path):
    manifest = make_corpus(tmp_path)
    tests = str(Path(__file__).parent)
    script = tmp_path / "ddp_worker.py"
    script.write_text(SCRIPT.format(tests=tests, manifest=str(manifest), out=str(tmp_path)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    env = dict(os.environ, PYTHONPATH=str(Path(tests).parent))  # the package, wherever it is installed
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[:3000]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        gradients(manifest, tmp_path)
    finally:
        torch.set_num_threads(threads)
    one, two = torch.load(tmp_path / "world1.pt"), torch.load(tmp_path / "world2.pt")
    assert (one["items"], two["items"]) == (4, 2)
    for name, g in one["grads"].items():
        torch.testing.assert_close(two["grads"][name], g, rtol=1e-4, atol=1e-6, msg=name)
    for name, w in one["weights"].items():
        torch.testing.assert_close(two["weights"][name], w, rtol=1e-4, atol=1e-5, msg=name)

    # the 1-process run, resumed by 2 processes: every rank stops with rank 0's reason, none hangs
    script = tmp_path / "resume_worker.py"
    script.write_text(RESUME.format(tests=tests, manifest=str(manifest), out=str(tmp_path)))
    assert (tmp_path / "run1" / "checkpoints" / "step_0000003" / "state.json").exists()
    done = subprocess.run(cmd[:-1] + [str(script)], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode != 0
    assert done.stderr.count("was started with 1 processes, now 2") >= 2, done.stderr[-3000:]
