"""Cross-validation from scratch: a recipe trained on a task's folds, tested on the held-out one.

The ESC-50 protocol for k-fold tasks: for every fold i, a fresh encoder is trained on the
other k - 1 folds and tested on fold i; optionally repeated with several seeds. A
train/valid/test task trains on train and is scored on valid and test. Nothing is selected
on a test fold: the weights of the last step are scored (and, with train.ema > 0, their
EMA too, as `<split>_ema`).

    RUN/seed0/fold00/     one run of the training loop (train.train): resumable, with its
                          own config.json, checkpoints, log.csv, encoder/ and, when done,
                          metrics.json
    RUN/results.json      every run's scores; per fold the mean over seeds, per seed the mean
                          over folds; and for each split and metric the mean +- s.e.

The s.e. is that of the mean over folds (the spread of the per-fold means, k-fold tasks)
or over seeds (train/valid/test tasks); `se_seeds` is the s.e. over the seeds' means.
A finished run (metrics.json) is skipped when the command is run again, an unfinished one
resumes from its last checkpoint, so rerunning the same command completes the study, with
any number of processes: under torchrun the ranks share the runs, each trained by one process.
Every fold is checked before the first run trains (`check_plan`): an empty split, or a
training setting that cannot work for a fold's size (e.g. a warm-up not shorter than the
steps `--epochs` gives), is an error naming it, not a failure after the other folds.
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .config import override, to_dict
from .data import ClipDataset, DataConfig, task_clips
from .dist import alone, gather_patiently, share, world
from .encoder import Encoder
from .files import write_json
from .finetune import eval_dataset, predict, score
from .train import TrainConfig, check_config, train, uses_ema
from .runs import split_overrides


def folds(task) -> list[tuple[str, list[str], dict[str, str]]]:
    """[(run name, training splits, {score name: scored split})]: each fold held out in turn
    and scored as "test" (k-fold tasks), or train -> valid and test."""
    names = task.split_names
    if names == ["train", "valid", "test"]:
        return [("train_valid_test", ["train"], {"valid": "valid", "test": "test"})]
    return [(name, [s for s in names if s != name], {"test": name}) for name in names]


def train_config(recipe, overrides: list[str], task, n_train: int, epochs: float | None, seed: int) -> TrainConfig:
    """The recipe's TrainConfig with the overrides; `epochs` sets steps from the fold's size;
    the crop is the task's clip length (at most what the encoder takes)."""
    cfg = override(TrainConfig(), list(recipe.defaults) + overrides)
    if epochs is not None:
        if not epochs > 0:
            raise ValueError(f"--epochs {epochs}: expected a number of passes over the training clips > 0")
        cfg = replace(cfg, steps=max(1, math.ceil(epochs * n_train / cfg.batch_size)))
    if cfg.data.crop_s == 0 and task.metadata.get("sample_duration"):
        cfg = replace(cfg, data=replace(cfg.data, crop_s=float(task.metadata["sample_duration"])))
    return replace(cfg, seed=cfg.seed + seed)


def fold_crop(encoder: Encoder, data: DataConfig) -> int:
    """Samples of a fold's training crop: data.crop_s (train_config sets it to the task's clip
    length when 0), at most what the encoder takes, at least its shortest input."""
    return max(min(round(data.crop_s * encoder.sample_rate), encoder.span_samples), encoder.min_samples)


def run_fold(recipe, encoder_cfg, task, fold: tuple[str, list[str], dict[str, str]], seed: int, overrides: list[str],
             out: Path, epochs: float | None = None, stop_after: int | None = None) -> dict | None:
    """Train one fresh encoder on the fold's training splits and score its held-out splits
    -> {score name: {metric: value}} (also written to out/metrics.json); None when stopped early."""
    name, train_splits, scored = fold
    parts = split_overrides(overrides)
    encoder_cfg = override(encoder_cfg, parts["encoder"])
    objective_cfg = override(recipe.config(), list(recipe.objective_defaults) + parts["objective"])
    clips = [c for split in train_splits for c in task_clips(task.path, split)[0]]
    cfg = train_config(recipe, parts["train"], task, len(clips), epochs, seed)
    torch.manual_seed(cfg.seed)
    encoder = Encoder(encoder_cfg)
    crop = fold_crop(encoder, cfg.data)
    data = ClipDataset(clips, encoder.sample_rate, crop, cfg.data, task.vocabulary, recipe.views)
    objective = recipe.objective(encoder, objective_cfg, num_classes=len(task.vocabulary))
    run_config = {"recipe": recipe.name, "task": str(task.path), "fold": name, "seed": seed,
                  "encoder": to_dict(encoder_cfg), "objective": to_dict(objective_cfg), "vocabulary": task.vocabulary}
    objective = train(objective, data, cfg, out, run_config, stop_after)
    if stop_after is not None and stop_after < cfg.steps:
        return None
    models = {"": objective}
    if uses_ema(cfg):
        models["_ema"] = recipe.objective(Encoder.load(out / "encoder_ema"), objective_cfg)
    metrics = {}
    for key, split in scored.items():
        dataset = eval_dataset(task_clips(task.path, split)[0], encoder.sample_rate, crop, cfg.data, task.vocabulary)
        for suffix, model in models.items():
            metrics[key + suffix] = score(*predict(model.to(objective.encoder.device), dataset),
                                            task.prediction_type)
    write_json(out / "metrics.json", metrics)
    return metrics


def check_plan(recipe, task, chosen: list[tuple[str, list[str], dict[str, str]]], overrides: list[str],
               epochs: float | None, seeds: int) -> None:
    """Refuse, before any training, a fold with an empty training or scored split and a
    training config that cannot work for some fold (check_config on each fold's steps)."""
    train_overrides = split_overrides(list(overrides))["train"]
    for name, train_splits, scored in chosen:
        for split in train_splits + list(scored.values()):
            if not task_clips(task.path, split)[0]:
                role = "held out" if split in scored.values() else "training"
                raise ValueError(f"{task.path}: split {split!r} ({role} split of fold {name}) has no clips")
        n_train = sum(len(task_clips(task.path, split)[0]) for split in train_splits)
        for seed in range(seeds):
            try:
                check_config(train_config(recipe, train_overrides, task, n_train, epochs, seed))
            except ValueError as e:
                raise ValueError(f"fold {name} ({n_train} training clips): {e}") from None


def mean_se(values: list[float]) -> tuple[float, float | None]:
    """Mean and standard error (None for a single value)."""
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), (float(a.std(ddof=1) / math.sqrt(len(a))) if len(a) > 1 else None)


def summarize(runs: list[dict]) -> dict:
    """runs [{"seed", "fold", "scores": {split: {metric: value}}}] -> per fold, per seed, overall."""
    fold_names = sorted({r["fold"] for r in runs})
    seeds = sorted({r["seed"] for r in runs})
    keys = sorted({(split, metric) for r in runs for split, m in r["scores"].items() for metric in m})
    summary = {}
    for split, metric in keys:
        def value(r):
            return r["scores"][split][metric]
        by_fold = {f: mean_se([value(r) for r in runs if r["fold"] == f])[0] for f in fold_names}
        by_seed = {s: mean_se([value(r) for r in runs if r["seed"] == s])[0] for s in seeds}
        spread = list(by_fold.values()) if len(fold_names) > 1 else [value(r) for r in runs]
        mean, se = mean_se(spread)
        summary[f"{split}/{metric}"] = {
            "mean": mean, "se": se, "se_seeds": mean_se(list(by_seed.values()))[1],
            "folds": by_fold, "seeds": {str(s): v for s, v in by_seed.items()}, "runs": len(runs)}
    return summary


def crossval(recipe, encoder_cfg, task, out: str | Path, seeds: int = 1, overrides: list[str] = (),
             epochs: float | None = None, stop_after: int | None = None, only: list[str] | None = None) -> dict:
    """Every (seed, fold) run of `task` under RUN (finished ones skipped, unfinished resumed)
    -> the results, also written to RUN/results.json. only: run just these held-out folds;
    stop_after: leave the first unfinished run after this step, as if interrupted.

    Under torchrun the ranks share the runs still to do (dist.share); each trains its runs as one
    process (dist.alone: no DDP with the other ranks) and rank 0 writes results.json, the same as
    one process writes. Every rank returns the results."""
    out = Path(out)
    chosen = folds(task)
    if only:
        unknown = sorted(set(only) - {name for name, _, _ in chosen})
        if unknown:
            raise ValueError(f"{task.path}: no fold {unknown} (folds: {[name for name, _, _ in chosen]})")
        chosen = [fold for fold in chosen if fold[0] in only]
    check_plan(recipe, task, chosen, list(overrides), epochs, seeds)
    plan = [(seed, fold) for seed in range(seeds) for fold in chosen]
    w = world("cpu")  # the ranks only meet (over gloo); each run picks its own device
    todo = [(seed, fold) for seed, fold in plan if not (out / f"seed{seed}" / fold[0] / "metrics.json").exists()]
    gather_patiently(None, w)  # every rank has listed the runs to do before a run finishes
    stopped = False
    bar = tqdm(share(todo, w), desc=f"crossval {task.name}", unit="run", dynamic_ncols=True, disable=not w.main)
    for seed, fold in bar:
        bar.set_postfix(seed=seed, fold=fold[0])
        with alone():
            scores = run_fold(recipe, encoder_cfg, task, fold, seed, list(overrides), out / f"seed{seed}" / fold[0],
                              epochs, stop_after)
        if scores is None:
            stopped = True
            break
        line = ", ".join(f"{split} {m} {v:.4f}" for split, ms in scores.items() for m, v in ms.items())
        tqdm.write(f"crossval {task.name} seed {seed} {fold[0]}: {line}", file=sys.stderr)
        if w.main:
            _results(recipe, encoder_cfg, task, out, seeds, plan)  # progress: the runs finished so far
    bar.close()
    gather_patiently(stopped, w)  # every run of every rank is finished (or stopped)
    return _results(recipe, encoder_cfg, task, out, seeds, plan, write=w.main)


def _results(recipe, encoder_cfg, task, out: Path, seeds: int, plan: list, write: bool = True) -> dict:
    """The results of the finished runs of `plan`, in its order ({} when none is); written to
    RUN/results.json when `write`."""
    runs = []
    for seed, fold in plan:
        metrics = out / f"seed{seed}" / fold[0] / "metrics.json"
        if metrics.exists():
            runs.append({"seed": seed, "fold": fold[0], "scores": json.loads(metrics.read_text())})
    if not runs:
        return {}
    results = {"task": task.name, "recipe": recipe.name, "encoder": encoder_cfg.name, "seeds": seeds,
               "complete": len(runs) == len(plan), "summary": summarize(runs), "runs": runs}
    if write:
        write_json(out / "results.json", results)
    return results
