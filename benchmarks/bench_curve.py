"""Learning curve of a self-supervised recipe on the offline suite: the encoder at 0, N and 4N steps.

    python benchmarks/bench_curve.py audiomae --out runs/curve-audiomae --steps 100
    python benchmarks/bench_curve.py asit --out runs/curve-asit --steps 50 --seeds 2
    python benchmarks/bench_curve.py encodecmae --out runs/curve-encodecmae --steps 100 objective.targets=fbank_kmeans

One run of 4N steps per seed (the recipe's own schedule over 4N steps) on the suite's
unlabeled corpus, at the recipe's tiny size (audiorep/sizes.py; --batch over its batch size);
the encoder the run ships is copied at
step N (the run stops there as if killed, and the same command resumes it exactly), and
after step 4N. Every point, the encoder at its initialization (step 0) and the log-mel
baseline are scored by one `audiorep evaluate` on a few suite tasks; the table gives the
mean normalized score (task score / best evaluated score, averaged over tasks) +- s.e.
over seeds, the audio seen, and the run-health numbers each recipe logs (log.csv: loss,
emb_std, emb_rank and the recipe's own, at N and 4N). Writes OUT/curve.md and OUT/curve.png.
Rerun the same command to continue after an interruption.

Not a study spec: `audiorep study` gives the same points (`steps = 4N`, `curve = [N]`), but
not this table's s.e. over seeds at every point (the init of every seed included) nor the run
health beside it; this is the diagnostic for one recipe.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import statistics
import time
from pathlib import Path

import torch

from audiorep import presets, sizes
from audiorep.config import override
from audiorep.demo import mean_normalized, normalized
from audiorep.encoder import Encoder
from audiorep.evaluate import cli as evaluate_cli
from audiorep.objectives import RECIPES
from audiorep.tasks.suite import build_corpus, build_suite
from audiorep.train import TrainConfig
from audiorep.runs import crop_samples, run_recipe, split_overrides

# the self-supervised recipes at their tiny size (EnCodecMAE: random-weight EnCodec codes of whole clips)
TINY = {recipe: sizes.get(recipe, "tiny") for recipe in ("audiomae", "asit", "encodecmae")}
TASKS = ("keywords", "pitch", "family", "sound_classes")
HEALTH = ("loss", "emb_std", "emb_rank")  # and every other column the recipe logs, after these


def run_name(recipe: str, seed: int) -> str:
    return f"{recipe}-seed{seed}"


def settings(recipe: str, steps: int, batch: int, seed: int, extra: list[str]) -> list[str]:
    return [*TINY[recipe].overrides, f"steps={4 * steps}", f"batch_size={batch}", f"seed={seed}", "data.workers=1",
                   f"checkpoint_every={steps}", f"log_every={max(1, steps // 10)}", *extra]


def copy_point(run: Path, point: Path) -> None:
    """RUN/encoder (the encoder the run ships at its last checkpoint) -> point, atomically."""
    tmp = point.with_name(point.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(run / "encoder", tmp)
    tmp.rename(point)


def curve_run(out: Path, corpus: Path, recipe: str, seed: int, steps: int, batch: int,
              extra: list[str]) -> dict[int, Path]:
    """{step: encoder folder} for steps 0, N and 4N of one seed."""
    preset = TINY[recipe].preset
    overrides = settings(recipe, steps, batch, seed, extra)
    encoder_cfg = override(presets.get(preset), split_overrides(overrides)["encoder"])
    run, points = out / "runs" / run_name(recipe, seed), out / "points"
    points.mkdir(parents=True, exist_ok=True)
    init = points / f"{run_name(recipe, seed)}-step0"
    if not init.exists():
        torch.manual_seed(override(TrainConfig(), split_overrides(overrides)["train"]).seed)  # as run_recipe seeds it
        Encoder(encoder_cfg).save(init)
    found = {0: init}
    for stop in (steps, 4 * steps):
        point = points / f"{run_name(recipe, seed)}-step{stop}"
        if not point.exists():
            done = sorted((run / "checkpoints").glob("step_*")) if run.exists() else []
            if done and int(done[-1].name.split("_")[1]) > stop:
                raise SystemExit(f"{run}: trained past step {stop} without its copy; delete {run} and rerun")
            run_recipe(RECIPES[recipe], presets.get(preset), str(corpus), run, overrides, stop_after=stop,
                       run_config={"preset": preset})
            copy_point(run, point)
        found[stop] = point
    return found


def suite_and_corpus(out: Path, tasks: list[str], corpus_hours: float) -> tuple[Path, Path]:
    """(task folder, corpus folder of 16 kHz clips) under `out`, built once (seed 0, size small)."""
    task_dir, corpus = out / "tasks", out / "corpus"
    if not (task_dir / "done").exists():
        build_suite(task_dir, 0, "small", list(tasks))
        (task_dir / "done").write_text("")
    if not corpus.exists():
        build_corpus(corpus, corpus_hours, 0)
    return task_dir, corpus / "16000"


def mean_scores(out: Path, tasks: Path, runs: dict[str, Path]) -> dict[str, float]:
    """Evaluate every encoder (name -> folder) and log-mel -> mean normalized score per name."""
    names = {name: str(run) for name, run in runs.items()} | {"logmel": "logmel"}
    evaluate_cli.main(["--tasks", str(tasks), "--out", str(out / "eval"), "--no-references",
                       "--grid-points", "2", "--max-epochs", "50",
                       *[x for name, spec in names.items() for x in ("--model", f"{name}={spec}")]])
    results = json.loads((out / "eval" / "results.json").read_text())
    if results["failed"]:  # a model without a task would be averaged over fewer tasks: no table
        raise SystemExit(f"{out / 'eval' / 'report.md'}: evaluation failed for " + "; ".join(
            f"{k}: {v}" for k, v in sorted(results["failed"].items())))
    return mean_normalized(normalized(results, list(names)))


def health(run: Path, steps: list[int]) -> dict[int, dict[str, float]]:
    """The logged row at each of `steps` (the loop logs the last step of every checkpoint interval)."""
    with open(run / "log.csv", newline="") as f:
        rows = {int(r["step"]): r for r in csv.DictReader(f)}
    return {s: {k: float(v) for k, v in rows[s].items() if k not in ("step",) and v not in ("", None)}
            for s in steps if s in rows}


def plot(path: Path, recipe: str, curve: dict[int, list[float]], logmel: float) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = sorted(curve)
    means = [statistics.mean(curve[s]) for s in steps]
    errs = [statistics.stdev(curve[s]) / math.sqrt(len(curve[s])) if len(curve[s]) > 1 else 0 for s in steps]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.errorbar(steps, means, yerr=errs, marker="o", capsize=3, label=f"{recipe} (mean +- s.e. over seeds)")
    ax.axhline(means[0], color="gray", ls=":", label="its initialization")
    ax.axhline(logmel, color="black", ls="--", label="log-mel baseline")
    ax.set_xlabel("pretraining steps")
    ax.set_ylabel("mean normalized score")
    ax.set_title(f"{recipe}: learning curve on the offline suite")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", choices=sorted(TINY))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=100, help="N: the curve's points are 0, N and 4N")
    parser.add_argument("--batch", type=int, default=16, help="clips per step (over the size's)")
    parser.add_argument("--corpus-hours", type=float, default=0.3)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first .. first + seeds - 1 (to run "
                                                                    "seeds in parallel into one --out, then once more "
                                                                    "with all of them for the table)")
    parser.add_argument("overrides", nargs="*", help="field=value for every run (after the tiny settings)")
    args = parser.parse_intermixed_args(argv)
    if args.seeds < 1 or args.steps < 1:
        parser.error("--seeds and --steps must be at least 1")
    torch.set_num_threads(1)  # one compute thread + one loader process
    began = time.perf_counter()
    tasks, corpus = suite_and_corpus(args.out, args.tasks, args.corpus_hours)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    points = {f"step{step}-seed{seed}": path for seed in seeds
              for step, path in curve_run(args.out, corpus, args.recipe, seed, args.steps, args.batch,
                                          args.overrides).items()}
    minutes_train = (time.perf_counter() - began) / 60
    means = mean_scores(args.out, tasks, points)
    stops = [0, args.steps, 4 * args.steps]
    curve = {s: [means[f"step{s}-seed{seed}"] for seed in seeds] for s in stops}
    parts = split_overrides(settings(args.recipe, args.steps, args.batch, 0, args.overrides))
    encoder = Encoder(override(presets.get(TINY[args.recipe].preset), parts["encoder"]))
    crop_s = crop_samples(encoder, override(TrainConfig(), parts["train"]).data) / encoder.sample_rate
    lines = [f"{args.recipe} learning curve: {TINY[args.recipe].preset}, batch {args.batch}"
             f" x {crop_s:.3g} s, one {4 * args.steps}-step schedule per seed, {args.seeds} seed(s), "
             f"corpus {args.corpus_hours} h; tasks {', '.join(args.tasks)}; {(time.perf_counter() - began) / 60:.1f} min "
             f"in all ({minutes_train:.1f} training, 1 thread)", "",
             "| steps | audio seen (min) | mean normalized score (+- s.e. over seeds) | per seed |", "|---|---|---|---|"]
    for s in stops:
        values = curve[s]
        se = f"{statistics.stdev(values) / math.sqrt(len(values)):.3f}" if len(values) > 1 else "n/a"
        seen = s * args.batch * RECIPES[args.recipe].views * crop_s / 60  # crops of every view
        lines.append(f"| {s} | {seen:.1f} | {statistics.mean(values):.3f} +- {se} | "
                     f"{', '.join(f'{v:.3f}' for v in values)} |")
    lines.append(f"| log-mel baseline | | {means['logmel']:.3f} | |")
    logs = health(args.out / "runs" / run_name(args.recipe, seeds[0]), stops[1:])
    if logs:
        columns = [c for c in HEALTH if c in logs[stops[-1]]] + sorted(
            c for c in logs[stops[-1]] if c not in HEALTH and c not in ("lr", "weight_decay", "samples_per_s", "skipped"))
        lines += ["", f"Run health, seed {seeds[0]} (log.csv):", "", "| step | " + " | ".join(columns) + " |",
                  "|---|" + "---|" * len(columns)]
        lines += [f"| {s} | " + " | ".join(f"{logs[s].get(c, math.nan):.4g}" for c in columns) + " |" for s in logs]
    text = "\n".join(lines)
    (args.out / "curve.md").write_text(text + "\n")
    plot(args.out / "curve.png", args.recipe, curve, means["logmel"])
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
