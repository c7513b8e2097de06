"""audiorep evaluate vs hear-eval-kit's `heareval.predictions.runner` on the same embeddings.

    python benchmarks/bench_heareval.py --setup /tmp/heareval-venv      # once
    python benchmarks/bench_heareval.py --venv /tmp/heareval-venv --out /tmp/bench-heareval

Both read one embeddings folder per task (our embedding step, log-mel baseline, in the
kit's layout) and run the same protocol (grid points sampled with seed 42, early stopping,
k-fold rotation); printed: the primary test score of each and the wall-clock ratio.

The kit (2021.1.3) needs pytorch-lightning < 2 (it passes `gpus=` and uses
`validation_epoch_end`) and dcase_util needs `pkg_resources` (setuptools < 81). `--setup`
makes a separate venv (with --system-site-packages, so torch, numpy, sklearn, sed_eval
come from this environment) holding only: heareval --no-deps, pytorch-lightning 1.9.5,
setuptools<81, more-itertools, torchinfo, pandas. The kit's `torch.load` of its own
checkpoints needs TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 on torch >= 2.6 (set for its run only),
and its event-task test step needs a `FitLoop.current_epoch` setter that Lightning 1.9
dropped (restored by a 3-line launcher, see KIT_LAUNCHER; the kit's code is not modified).
Tasks: `--tasks DIR` (HEAR task folders), else two synthetic ones are made (tones: 3-fold
scene, 3 classes; bursts: event, 2 labels).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from audiorep.evaluate import embeddings as emb
from audiorep.evaluate import probes
from audiorep.evaluate.cli import find_tasks
from audiorep.evaluate.protocol import ProbeConfig, evaluate_task
from audiorep.tasks.format import TaskWriter, load_task, make_metadata

SR = 16000
# The kit tests an event model at its best epoch by assigning `trainer.fit_loop.current_epoch`,
# a setter that Lightning 1.9 no longer has (the assignment is silently ignored and the test
# step fails with a KeyError); this restores it, then runs the kit's runner unchanged.
KIT_LAUNCHER = """
import runpy, sys
from pytorch_lightning.loops.fit_loop import FitLoop
FitLoop.current_epoch = property(lambda self: self.epoch_progress.current.completed,
                                 lambda self, v: setattr(self.epoch_progress.current, "completed", v))
sys.argv = ["heareval.predictions.runner"] + sys.argv[1:]
runpy.run_module("heareval.predictions.runner", run_name="__main__")
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


def make_tasks(root: Path, clips: int) -> None:
    rng = np.random.default_rng(0)
    freqs = {"low": 300, "mid": 420, "high": 560}
    meta = make_metadata("tones", "scene", "multiclass", ["top1_acc", "mAP"], 1.0, "new_split_kfold", 3)
    with TaskWriter(root / "tones", meta, sorted(freqs), overwrite=True) as w:
        for fold in ("fold00", "fold01", "fold02"):
            for i in range(clips):
                label = list(freqs)[i % 3]
                x = _tone(rng, freqs[label] * (1 + 0.08 * rng.standard_normal()), SR)
                w.add(fold, x + 0.3 * rng.standard_normal(SR).astype(np.float32), [label])
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


def kit_score(emb_dir: Path) -> tuple[float, dict]:
    scores = json.loads((emb_dir / "test.predicted-scores.json").read_text())
    meta = json.loads((emb_dir / "task_metadata.json").read_text())
    if "aggregated_scores" in scores:
        agg = scores["aggregated_scores"]
        return agg["test_score_mean"], {k[5:-5]: v for k, v in agg.items()
                                        if k.startswith("test_") and k.endswith("_mean")}
    only = scores[next(k for k in scores if k not in ("hparams", "postprocessing", "score_mode", "embedding_path"))]
    return only["test_score"], {k[5:]: v for k, v in only.items() if k.startswith("test_") and k != "test_score"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--setup", type=Path, help="create the kit's venv here and exit")
    p.add_argument("--venv", type=Path, default=Path("/tmp/heareval-venv"))
    p.add_argument("--out", type=Path, default=Path("/tmp/bench-heareval"))
    p.add_argument("--tasks", type=Path, help="HEAR task folders (default: make synthetic ones)")
    p.add_argument("--clips", type=int, default=90, help="clips per fold/split of the synthetic tasks")
    p.add_argument("--model", default="logmel")
    p.add_argument("--grid-points", type=int, default=8)
    p.add_argument("--threads", type=int, default=2, help="torch threads for both")
    args = p.parse_args(argv)
    if args.setup:
        setup(args.setup)
        return 0
    kit_python = args.venv / "bin" / "python"
    if not kit_python.exists():
        p.error(f"{kit_python}: missing; run with --setup {args.venv} first")
    import torch

    torch.set_num_threads(args.threads)
    tasks_dir = args.tasks
    if tasks_dir is None:
        tasks_dir = args.out / "tasks"
        make_tasks(tasks_dir, args.clips)
    spec = emb.parse_model(args.model)
    rows = []
    for task_path in find_tasks(tasks_dir):
        task = load_task(task_path)
        ours_dir = args.out / "ours" / task.name
        emb.embed_task(task, spec, ours_dir)
        kit_dir = args.out / "kit" / task.name
        shutil.rmtree(kit_dir, ignore_errors=True)
        shutil.copytree(ours_dir, kit_dir)
        result_file = args.out / "ours-result" / f"{task.name}.json"
        result_file.unlink(missing_ok=True)
        cfg = ProbeConfig(grid_points=args.grid_points, train=probes.TrainConfig(seed=42))
        start = time.perf_counter()
        ours = evaluate_task(ours_dir, cfg, result_file)
        ours_s = time.perf_counter() - start
        env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "OMP_NUM_THREADS": str(args.threads),
               "MKL_NUM_THREADS": str(args.threads)}
        start = time.perf_counter()
        run = subprocess.run([str(kit_python), "-c", KIT_LAUNCHER, str(kit_dir.resolve()),
                              "--grid-points", str(args.grid_points)], cwd=args.out, env=env,
                             capture_output=True, text=True)
        kit_s = time.perf_counter() - start
        if run.returncode:
            print(run.stdout[-3000:], run.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"heareval runner failed on {kit_dir}")
        kit, kit_all = kit_score(kit_dir)
        rows.append({"task": task.name, "metric": ours["primary"], "ours": ours["score"], "kit": kit,
                     "ours_s": ours_s, "kit_s": kit_s, "ratio": kit_s / ours_s,
                     "ours_all": {k: v["mean"] for k, v in ours["scores"].items()}, "kit_all": kit_all})
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'task':<10} {'metric':<24} {'audiorep':>9} {'heareval':>9} {'diff':>7} "
          f"{'ours s':>8} {'kit s':>8} {'speed-up':>8}")
    for r in rows:
        print(f"{r['task']:<10} {r['metric']:<24} {r['ours']:9.4f} {r['kit']:9.4f} {r['ours'] - r['kit']:7.4f} "
              f"{r['ours_s']:8.1f} {r['kit_s']:8.1f} {r['ratio']:7.1f}x")
    total = sum(r["kit_s"] for r in rows) / sum(r["ours_s"] for r in rows)
    print(f"total speed-up {total:.1f}x ({args.threads} torch threads, grid points {args.grid_points})")
    (args.out / "bench.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
