"""The crossval runs of a study: each an ordinary `audiorep crossval` folder OUT/crossval/<run>
(a fresh encoder trained on the other folds of the task and scored on each held-out one, for
every seed), run as its own process, and their table.

The score of a crossval run is crossval's own summary of the task's primary metric on the
held-out clips: the mean over folds x seeds +- its standard error (over the per-fold means when
several folds are held out, else over the seeds' runs; crossval.summarize). Crossval keeps no
per-clip predictions, so there is no bootstrap over clips here. The difference to a baseline
run is paired: the runs of the same (seed, fold) are subtracted and the differences summarized
the same way; where no (seed, fold) is shared it is the difference of the means with the
s.e.s added in quadrature (marked unpaired).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from audiorep import presets
from audiorep.config import override
from audiorep.crossval import fold_crop, folds, summarize, train_config
from audiorep.data import task_clips
from audiorep.encoder import Encoder
from audiorep.files import write_json
from audiorep.objectives import RECIPES
from audiorep.tasks.format import load_task
from audiorep.runs import split_overrides

from . import launch
from .spec import Run, Spec

CHECKPOINTS = 4  # checkpoints per fold's training (a killed fold resumes from the last)


@dataclass(frozen=True)
class CrossvalRun:
    run: Run
    task: Path
    overrides: tuple[str, ...]     # the run's, then the study's steps and checkpoint_every
    epochs: float | None
    folds: tuple[str, ...]         # the held-out folds it runs
    steps: tuple[int, ...]         # optimizer steps of each
    audio_per_step: float          # seconds: batch x views x crop (the task's clips, at most the encoder's span)


def folder(out: Path, run: str) -> Path:
    return out / "crossval" / run


def plan(spec: Spec, run: Run, out: Path) -> CrossvalRun:
    """The crossval of `run` on its task (built under OUT/tasks): its steps per fold from the budget."""
    task, recipe = load_task(out / "tasks" / run.crossval.task), RECIPES[run.recipe]
    train_overrides = split_overrides(list(run.overrides))["train"]
    encoder = Encoder(override(presets.get(run.preset), split_overrides(list(run.overrides))["encoder"]))
    cfg = train_config(recipe, train_overrides, task, 1, None, 0)
    per_step = cfg.batch_size * recipe.views * fold_crop(encoder, cfg.data) / encoder.sample_rate
    epochs = spec.budget if spec.unit == "epochs" else None
    chosen = [f for f in folds(task) if run.crossval.folds is None or f[0] in run.crossval.folds]
    if epochs is None:
        steps = [int(spec.budget) if spec.unit == "steps" else max(1, int(spec.budget / per_step))] * len(chosen)
    else:
        steps = [train_config(recipe, train_overrides, task, sum(len(task_clips(task.path, s)[0]) for s in splits),
                              epochs, 0).steps for _, splits, _ in chosen]
    extra = ([] if epochs else [f"steps={steps[0]}"]) + [f"checkpoint_every={max(1, min(steps) // CHECKPOINTS)}"]
    return CrossvalRun(run, task.path, (*run.overrides, *extra), epochs, tuple(f[0] for f in chosen), tuple(steps),
                       per_step)


def first_fold(out: Path, c: CrossvalRun) -> Path:
    """The run folder of seed 0 on the first held-out fold (one fold's training, as measured for cost)."""
    return folder(out, c.run.name) / "seed0" / c.folds[0]


def command(c: CrossvalRun, out: Path) -> list[str]:
    run = c.run
    return [*launch.python(run.torchrun), "-m", "audiorep", "crossval", "--recipe", run.recipe, "--task", str(c.task),
            "--out", str(folder(out, run.name)), "--preset", run.preset, "--seeds", str(len(run.seeds)),
            *(["--folds", ",".join(run.crossval.folds)] if run.crossval.folds else []),
            *(["--epochs", repr(c.epochs)] if c.epochs is not None else []), *c.overrides]


def results(out: Path, run: str) -> dict | None:
    path = folder(out, run) / "results.json"
    return json.loads(path.read_text()) if path.exists() else None


def train(c: CrossvalRun, out: Path, threads: int) -> None:
    """Run (or resume) the crossval unless its results are complete; its wall time in OUT/state/<run>.json."""
    done = results(out, c.run.name)
    if done is not None and done["complete"]:
        return
    wall = launch.run_process(command(c, out), out / "logs" / f"{c.run.name}.log", threads)
    write_json(out / "state" / f"{c.run.name}.json", {"segments": {"crossval": wall}})


def score(out: Path, run: Run) -> dict:
    """crossval's summary of test/<primary metric> for `run`."""
    return results(out, run.name)["summary"][f"test/{run.crossval.metric}"]


def difference(out: Path, run: Run, baseline: Run) -> dict:
    """{mean, se, pairs} of run - baseline on test/<metric>, paired by (seed, fold) where both have it."""
    metric = run.crossval.metric
    theirs = {(r["seed"], r["fold"]): r["scores"]["test"][metric] for r in results(out, baseline.name)["runs"]}
    pairs = [{**r, "scores": {"test": {metric: r["scores"]["test"][metric] - theirs[key]}}}
             for r in results(out, run.name)["runs"] if (key := (r["seed"], r["fold"])) in theirs]
    if pairs:
        s = summarize(pairs)[f"test/{metric}"]
        return {"mean": s["mean"], "se": s["se"], "pairs": len(pairs)}
    a, b = score(out, run), score(out, baseline)
    se = math.sqrt(a["se"] ** 2 + b["se"] ** 2) if a["se"] is not None and b["se"] is not None else None
    return {"mean": a["mean"] - b["mean"], "se": se, "pairs": 0}


def _pm(mean: float, se: float | None, sign: str = "") -> str:
    return f"{mean:{sign}.3f}" + (f" +- {se:.3f}" if se is not None else "")


def table(spec: Spec, out: Path) -> list[str]:
    """Markdown: per crossval run its cross-validated score and the difference to its baseline."""
    runs = {r.name: r for r in spec.runs}
    lines = ["Cross-validated (`audiorep crossval`: trained from scratch on the other folds, scored on the held-out "
             "one; mean +- s.e. over folds, or over seeds when one fold is held out):", "",
             "| run | recipe | task (held-out folds) | metric | runs | score (mean +- s.e.) "
             "| - baseline (mean +- s.e.) | paper |", "|---|---|---|---|---|---|---|---|"]
    for run in spec.crossvals:
        s, cv = score(out, run), run.crossval
        if cv.baseline:
            d = difference(out, run, runs[cv.baseline])
            versus = f"{_pm(d['mean'], d['se'], '+')} vs {cv.baseline} " + (
                f"(paired, {d['pairs']} runs)" if d["pairs"] else "(unpaired)")
        else:
            versus = "–"
        lines.append(f"| {run.name} | {run.recipe} ({run.size or run.preset}) | {cv.task} "
                     f"({', '.join(cv.folds) if cv.folds else 'all'}) | test {cv.metric} | {s['runs']} | "
                     f"{_pm(s['mean'], s['se'])} | {versus} | {run.paper or '–'} |")
    return lines
