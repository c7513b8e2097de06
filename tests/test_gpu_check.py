"""benchmarks/gpu_check.sh --dry-run: every part of the GPU check runs on the CPU (so the script
cannot rot between the rare runs on a GPU), and a part that raises fails the run."""
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402


def dry_run(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(out), *extra],
                          capture_output=True, text=True, timeout=600)


def test_dry_run_covers_every_part(tmp_path):
    done = dry_run(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["info"]["dry_run"] and report["ok"]
    assert set(report["parts"]) == set(gpu_check.PARTS)
    assert {name: part["status"] for name, part in report["parts"].items()} == dict.fromkeys(gpu_check.PARTS, "ok")
    check, curves = report["parts"]["correctness"], report["parts"]["bf16_curves"]
    for name in gpu_check.RECIPES:
        row = check["recipes"][name]
        assert row["status"] == "ok" and row["same_draws"] and sum(row["draws"].values()) > 0
        assert row["loss_rel"] <= check["tolerances"]["loss"] and row["update_rel"] <= check["tolerances"]["update"]
        assert len(curves["recipes"][name]["fp32"]) == len(curves["recipes"][name]["bf16"]) == curves["steps"]
    assert "passt-s patchout" in report["parts"]["bench_train"]["stdout"]
    assert "timestamp embeddings" in report["parts"]["bench_embed"]["stdout"]
    assert report["parts"]["bench_heareval"]["results"]["rows"]
    summary = (tmp_path / "gpu_check.md").read_text()
    assert "DRY RUN" in summary and "![loss curves](gpu_check_curves.png)" in summary
    assert (tmp_path / "gpu_check_curves.png").stat().st_size > 0

    # run again, a part that was ok is kept; a part that raises fails the run and is reported
    (tmp_path / "work" / "corpus" / "manifest.csv").write_text("path,labels\nmissing.wav,low\n")
    (tmp_path / "parts" / "correctness.record.json").unlink()
    again = dry_run(tmp_path, "--only", "correctness", "bench_embed")
    assert again.returncode == 1
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["ok"] is False and report["parts"]["bench_embed"]["kept"]
    assert report["parts"]["correctness"]["status"] == "failed"
    assert all(r["status"] == "failed" for r in report["parts"]["correctness"]["recipes"].values())
    assert "NOT all parts ok" in (tmp_path / "gpu_check.md").read_text()


def test_draws_are_the_same_whatever_the_global_seed():
    """CpuDraws routes every random op a step makes to its own generator: a different global
    seed changes nothing, and the ops are counted."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    def draws(global_seed):
        torch.manual_seed(global_seed)
        mode = gpu_check.CpuDraws(0)
        with mode:
            x = torch.ones(4, 8)
            out = [torch.rand(3), torch.randn(2, device="cpu"), torch.randint(0, 9, (5,)), torch.randperm(6),
                   torch.rand_like(x), F.dropout(x, 0.5, True), x.new_empty(4).bernoulli_(0.5),
                   torch.empty(3).uniform_(-1, 1), torch.distributions.Beta(0.3, 0.3).sample((4,)),
                   torch.multinomial(torch.ones(5), 3), torch.nn.Dropout(0.2)(x)]
        return out, mode.counts

    (a, counts), (b, _) = draws(1), draws(2)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert counts["rand"] == 1 and counts["dropout"] == 2 and counts["_sample_dirichlet"] == 1


def test_a_part_past_its_budget_is_killed_with_its_children(tmp_path):
    start = time.perf_counter()
    status, seconds, _, stdout = gpu_check.timed(["bash", "-c", "echo started; sleep 30 & wait"], 1, tmp_path / "log")
    assert status == "timeout" and seconds < 10 and time.perf_counter() - start < 10
    assert stdout.strip() == "started"
