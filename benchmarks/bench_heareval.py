"""audiorep evaluate vs hear-eval-kit's `heareval.predictions.runner` on the same embeddings.

    python benchmarks/bench_heareval.py --setup /tmp/heareval-venv      # once
    python benchmarks/bench_heareval.py --venv /tmp/heareval-venv --tasks DIR --seeds 3
    python benchmarks/bench_heareval.py --no-kit --device cuda       # audiorep's side alone

Both read one embeddings folder per task (our embedding step, log-mel baseline, in the
kit's layout) and run the same protocol (the same grid points for a seed, early stopping,
k-fold rotation), and our metrics score the kit's own test probabilities too
(column "scoring": the largest difference from the kit's score of them; it should be 0).
`--seeds N` runs each tool N times (seeds 42, 43, ..., from `--first-seed`; the kit's
hard-coded 42 is replaced by the launcher), since one run of either differs from another
by more than a point on small test sets. Printed per task: the primary test score of each
(mean +- standard error over seeds) and of their per-seed difference; seconds (the kit's
own timer, without its start-up); the speed-up; the probe FLOPs each run trained (from the
epochs each training ran) per second; and the ceiling: the kit's time over the time our
FLOPs take at this machine's measured matmul rate, i.e. the most any tool doing the
protocol's arithmetic could be faster here.

The kit (2021.1.3) needs pytorch-lightning < 2 (it passes `gpus=` and uses
`validation_epoch_end`) and dcase_util needs `pkg_resources` (setuptools < 81). `--setup`
makes a separate venv (with --system-site-packages, so torch, numpy, sklearn, sed_eval
come from this environment) holding only: heareval --no-deps, pytorch-lightning 1.9.5,
setuptools<81, more-itertools, torchinfo, pandas. The kit's `torch.load` of its own
checkpoints needs TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 on torch >= 2.6 (set for its run only),
and its event-task test step needs a `FitLoop.current_epoch` setter that Lightning 1.9
dropped (restored by a short launcher, see KIT_LAUNCHER; the kit's code is not modified).
Tasks: `--tasks DIR` (HEAR task folders), else two synthetic ones are made (tones: 3-fold
scene, 3 classes; bursts: event, 2 labels). `--no-kit` runs audiorep's side alone (scores,
seconds, GFLOP/s and their share of the matmul rate) where the kit's venv cannot be made (a
machine without PyPI); `--device` puts the embedding step and both tools' probes on that
device; `--quick` makes the scene task alone (a smoke run of the code path, gpu_check.py
--dry-run).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from audiorep.evaluate import embeddings as emb
from audiorep.evaluate.cli import find_tasks
from audiorep.evaluate.protocol import ProtocolConfig, TaskData, data_splits, evaluate_task
from audiorep.tasks.format import VOCABULARY_FILE, TaskWriter, fold_name, load_task, make_metadata, read_vocabulary

SR = 16000
# The kit tests an event model at its best epoch by assigning `trainer.fit_loop.current_epoch`,
# a setter that Lightning 1.9 no longer has (the assignment is silently ignored and the test
# step fails with a KeyError); this restores it, seeds the run with the seed given first
# (the kit hard-codes 42), then runs the kit's runner unchanged.
KIT_LAUNCHER = """
import runpy, sys
from pytorch_lightning.loops.fit_loop import FitLoop
FitLoop.current_epoch = property(lambda self: self.epoch_progress.current.completed,
                                 lambda self, v: setattr(self.epoch_progress.current, "completed", v))
import pytorch_lightning, heareval.predictions.task_predictions as tp
seed = int(sys.argv.pop(1))  # the kit always seeds 42; other seeds make repeated runs
tp.seed_everything = lambda _, workers=False: pytorch_lightning.seed_everything(seed, workers)
sys.argv = ["heareval.predictions.runner"] + sys.argv[1:]
try:
    runpy.run_module("heareval.predictions.runner", run_name="__main__")
except SystemExit as done:  # click exits; keep the test probabilities the kit just pickled, as .npy
    if done.code:
        raise
import glob, pickle, numpy as np
for path in glob.glob(sys.argv[1] + "/*.predictions.pkl"):
    with open(path, "rb") as f:
        np.save(path[:-len(".predictions.pkl")] + ".kit-probs.npy", pickle.load(f)["prediction"].numpy())
"""
KIT_PACKAGES = ["pytorch-lightning==1.9.5", "setuptools<81", "more-itertools", "torchinfo", "pandas"]


def setup(venv: Path) -> None:
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run(pip + ["--no-deps", "heareval==2021.1.3"], check=True)
    subprocess.run(pip + KIT_PACKAGES, check=True)


def _tone(rng, f, n):
    t = np.arange(n) / SR
    return (0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32)


def make_tasks(root: Path, clips: int, event: bool = True) -> None:
    rng = np.random.default_rng(0)
    freqs = {"low": 300, "mid": 420, "high": 560}
    meta = make_metadata("tones", "scene", "multiclass", ["top1_acc", "mAP"], 1.0, "new_split_kfold", 3)
    with TaskWriter(root / "tones", meta, sorted(freqs), overwrite=True) as w:
        for fold in map(fold_name, range(3)):
            for i in range(clips):
                label = list(freqs)[i % 3]
                x = _tone(rng, freqs[label] * (1 + 0.08 * rng.standard_normal()), SR)
                w.add(fold, x + 0.3 * rng.standard_normal(SR).astype(np.float32), [label])
    if not event:
        return
    meta = make_metadata("bursts", "event", "multilabel", ["event_onset_200ms_fms", "segment_1s_er"], 4.0)
    with TaskWriter(root / "bursts", meta, ["beep", "buzz"], overwrite=True) as w:
        for split in ("train", "valid", "test"):
            for _ in range(clips // 3):
                x = 0.1 * rng.standard_normal(4 * SR).astype(np.float32)
                events = []
                for label, f in (("beep", 1500), ("buzz", 250)):
                    for _ in range(rng.integers(1, 3)):
                        start, dur = rng.uniform(0, 3.4), rng.uniform(0.15, 0.6)
                        a = int(start * SR)
                        n = min(int(dur * SR), len(x) - a)
                        x[a:a + n] += _tone(rng, f, n)
                        events.append({"label": label, "start": round(start * 1000, 1),
                                       "end": round((start + n / SR) * 1000, 1)})
                w.add(split, x, events)


def kit_score(emb_dir: Path) -> float:
    scores = json.loads((emb_dir / "test.predicted-scores.json").read_text())
    if "aggregated_scores" in scores:
        return scores["aggregated_scores"]["test_score_mean"]
    return scores["test"]["test_score"]


def kit_epochs(emb_dir: Path) -> list[int]:
    """Epochs each of the kit's trainings ran (its Lightning CSV logs: last validated epoch + 1)."""
    out = []
    for log in sorted(emb_dir.glob("lightning_logs/version_*/metrics.csv")):
        with log.open() as f:
            epochs = [int(r["epoch"]) for r in csv.DictReader(f) if r.get("val_score") and r.get("epoch")]
        out.append(max(epochs) + 1 if epochs else 0)
    return out


def our_epochs(result: dict) -> list[int]:
    """Epochs each of our trainings ran: every grid point, then the chosen point on the other splits."""
    sel = result["selection"][0]
    return [g["epochs_run"] for g in sel["grid"]] + [r["epochs_run"] for r in result["runs"][1:]]


def point_flops(dims: list[int], rows: int) -> float:
    """FLOPs of one training epoch of one MLP (forward + backward, no input gradient)."""
    macs = sum(a * b for a, b in zip(dims[:-1], dims[1:]))
    return 2 * rows * (3 * macs - dims[0] * dims[1])


def task_flops(emb_dir: Path, result: dict, epochs: list[int]) -> float:
    """Training FLOPs of a run whose trainings ran `epochs` (grid points first, in grid order)."""
    meta = json.loads((emb_dir / "task_metadata.json").read_text())
    n_labels = len(read_vocabulary(emb_dir / VOCABULARY_FILE))
    rows = {s: json.loads((emb_dir / f"{s}.embedding-dimensions.json").read_text()) for s in meta["splits"]}
    splits = data_splits(meta)
    grid = result["selection"][0]["grid"]
    chosen = result["selection"][0]["chosen"]
    flops = 0.0
    for i, e in enumerate(epochs):
        point, split = (grid[i], splits[0]) if i < len(grid) else (chosen, splits[i - len(grid) + 1])
        n, d = sum(rows[s][0] for s in split["train"]), rows[split["train"][0]][1]
        flops += e * point_flops([d] + [point["hidden_dim"]] * point["hidden_layers"] + [n_labels], n)
    return flops


def gemm_rate(device: str) -> float:
    """The device's fp32 matmul rate (FLOP/s) on the probes' 1024 x 1024 layers, best of 5."""
    import torch

    a, b = torch.randn(4, 1024, 1024, device=device), torch.randn(4, 1024, 1024, device=device)
    best = float("inf")
    for _ in range(6):
        start = time.perf_counter()
        torch.bmm(a, b).sum().item()  # .item() waits for a GPU
        best = min(best, time.perf_counter() - start)
    return 2 * 4 * 1024 ** 3 / best


def run_kit(kit_python: Path, src: Path, work: Path, seed: int, grid_points: int, threads: int,
            device: str) -> dict:
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(src, work, ignore=shutil.ignore_patterns("lightning_logs", "prediction*", "test.predict*"))
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "OMP_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    gpus = ["--gpus", "[0]" if device.startswith("cuda") else "null"]  # the kit takes a GPU whenever it sees one
    run = subprocess.run([str(kit_python), "-c", KIT_LAUNCHER, str(seed), str(work.resolve()),
                          "--grid-points", str(grid_points), *gpus], cwd=work.parent, env=env,
                         capture_output=True, text=True)
    wall = time.perf_counter() - start
    if run.returncode:
        print(run.stdout[-3000:], run.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"heareval runner failed on {work}")
    done = json.loads((work / "prediction-done.json").read_text())
    return {"score": kit_score(work), "seconds": done["time"], "wall": wall, "epochs": kit_epochs(work),
            "scoring_diff": crosscheck(work)}


def crosscheck(work: Path) -> float:
    """Largest |kit's test score - ours| when our metrics (and event post-processing, with the kit's
    chosen setting) score the kit's own test probabilities: scoring must agree whatever training does.
    Event tasks: the first split only (the kit records the post-processing of the grid search's)."""
    data = TaskData(work)
    kit = json.loads((work / "test.predicted-scores.json").read_text())
    setting = tuple(v for _, v in kit["postprocessing"]) if data.event else None
    splits = data_splits(data.meta)
    worst = 0.0
    for split in splits[:1] if data.event else splits:
        name = "|".join(split["test"])
        ours = data.test_scores(split["test"], np.load(work / f"{name}.kit-probs.npy"), setting)[data.primary]
        worst = max(worst, abs(ours - kit[name]["test_score"]))
    return worst


def _mean_se(values: list[float]) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--setup", type=Path, help="create the kit's venv here and exit")
    p.add_argument("--venv", type=Path, default=Path("/tmp/heareval-venv"))
    p.add_argument("--out", type=Path, default=Path("/tmp/bench-heareval"))
    p.add_argument("--tasks", type=Path, help="HEAR task folders (default: make synthetic ones)")
    p.add_argument("--clips", type=int, default=90, help="clips per fold/split of the synthetic tasks")
    p.add_argument("--model", default="logmel")
    p.add_argument("--grid-points", type=int, default=8)
    p.add_argument("--seeds", type=int, default=1, help="runs of each tool, seeds 42, 43, ...")
    p.add_argument("--first-seed", type=int, default=42, help="to add seeds to an earlier run")
    p.add_argument("--threads", type=int, default=2, help="torch threads for both")
    p.add_argument("--device", default="cpu", help="probe device for both (cuda: the kit gets --gpus [0])")
    p.add_argument("--no-kit", action="store_true", help="audiorep's side alone (no heareval venv needed)")
    p.add_argument("--quick", action="store_true", help="the scene task alone (a smoke run of the code path)")
    args = p.parse_args(argv)
    if args.setup:
        setup(args.setup)
        return 0
    kit_python = args.venv / "bin" / "python"
    if not args.no_kit and not kit_python.exists():
        p.error(f"{kit_python}: missing; run with --setup {args.venv} first (or --no-kit)")
    import torch

    torch.set_num_threads(args.threads)
    rate = gemm_rate(args.device)
    tasks_dir = args.tasks
    if tasks_dir is None:
        tasks_dir = args.out / "tasks"
        make_tasks(tasks_dir, args.clips, event=not args.quick)
    spec = emb.parse_model(args.model)
    rows = []
    for task_path in find_tasks(tasks_dir):
        task = load_task(task_path)
        ours_dir = args.out / "ours" / task.name
        emb.embed_task(task, spec, ours_dir, args.device)
        row = {"task": task.name, "ours": [], "kit": []}
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            result_file = args.out / "ours-result" / f"{task.name}-{seed}.json"
            result_file.unlink(missing_ok=True)
            cfg = ProtocolConfig(grid_points=args.grid_points, seeds=(seed,), device=args.device)
            start = time.perf_counter()
            ours = evaluate_task(ours_dir, cfg, result_file)
            seconds = time.perf_counter() - start
            epochs = our_epochs(ours)
            row["metric"] = ours["primary"]
            row["ours"].append({"score": ours["score"], "seconds": seconds, "epochs": epochs,
                                "flops": task_flops(ours_dir, ours, epochs)})
            kit = None
            if not args.no_kit:
                kit = run_kit(kit_python, ours_dir, args.out / "kit" / task.name, seed, args.grid_points,
                              args.threads, args.device)
                kit["flops"] = task_flops(ours_dir, ours, kit["epochs"])  # the same grid points in the same order
                row["kit"].append(kit)
            print(json.dumps({"task": task.name, "seed": seed, "ours": row["ours"][-1], "kit": kit}), flush=True)
        rows.append(row)
    if args.no_kit:
        print_ours(rows, rate, args)
    else:
        print_both(rows, rate, args)
    (args.out / "bench.json").write_text(json.dumps({"gemm_flops": rate, "device": args.device, "kit": not args.no_kit,
                                                    "rows": rows}, indent=1))
    return 0


def print_ours(rows: list[dict], rate: float, args) -> None:
    """audiorep's side alone: score, seconds, GFLOP/s, and its time over what its FLOPs take at the matmul rate."""
    print(f"\nfp32 matmul rate ({args.device}, {args.threads} threads, 4 x 1024^3 bmm): {rate / 1e9:.0f} GFLOP/s; "
          f"{args.seeds} seed(s), {args.grid_points} grid points; mean +- standard error over seeds; no heareval run")
    print(f"{'task':<28} {'metric':<22} {'audiorep':>15} {'ours s':>7} {'ours GF/s':>9} {'of rate':>7}")
    for r in rows:
        o, o_se = _mean_se([x["score"] for x in r["ours"]])
        o_s, o_f = sum(x["seconds"] for x in r["ours"]), sum(x["flops"] for x in r["ours"])
        print(f"{r['task']:<28} {r['metric']:<22} {o:8.4f}+-{o_se:.4f} {o_s:7.1f} {o_f / o_s / 1e9:9.1f} "
              f"{o_f / o_s / rate:7.1%}")
    print(f"total: audiorep {sum(x['seconds'] for r in rows for x in r['ours']):.1f} s")


def print_both(rows: list[dict], rate: float, args) -> None:
    print(f"\nfp32 matmul rate ({args.device}, {args.threads} threads, 4 x 1024^3 bmm): {rate / 1e9:.0f} GFLOP/s; "
          f"{args.seeds} seed(s), {args.grid_points} grid points; mean +- standard error over seeds")
    print(f"{'task':<28} {'metric':<22} {'audiorep':>15} {'heareval':>15} {'diff':>15} {'ours s':>7} "
          f"{'kit s':>7} {'speed-up':>8} {'ours GF/s':>9} {'kit GF/s':>8} {'ceiling':>7} {'scoring':>8}")
    for r in rows:
        (o, o_se), (k, k_se) = _mean_se([x["score"] for x in r["ours"]]), _mean_se([x["score"] for x in r["kit"]])
        d, d_se = _mean_se([a["score"] - b["score"] for a, b in zip(r["ours"], r["kit"])])
        o_s, k_s = sum(x["seconds"] for x in r["ours"]), sum(x["seconds"] for x in r["kit"])
        o_f, k_f = sum(x["flops"] for x in r["ours"]), sum(x["flops"] for x in r["kit"])
        # the fastest any tool can be with these FLOPs at this machine's matmul rate, vs the kit's time
        ceiling = k_s / (o_f / rate)
        print(f"{r['task']:<28} {r['metric']:<22} {o:8.4f}+-{o_se:.4f} {k:8.4f}+-{k_se:.4f} {d:+8.4f}+-{d_se:.4f} "
              f"{o_s:7.1f} {k_s:7.1f} {k_s / o_s:7.1f}x {o_f / o_s / 1e9:9.1f} {k_f / k_s / 1e9:8.1f} {ceiling:6.1f}x "
              f"{max(x['scoring_diff'] for x in r['kit']):8.1e}")
    o_s = sum(x["seconds"] for r in rows for x in r["ours"])
    k_s = sum(x["seconds"] for r in rows for x in r["kit"])
    print(f"total: audiorep {o_s:.1f} s, heareval {k_s:.1f} s (its own timer; wall with start-up "
          f"{sum(x['wall'] for r in rows for x in r['kit']):.1f} s): {k_s / o_s:.1f}x")


if __name__ == "__main__":
    sys.exit(main())
