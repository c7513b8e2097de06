"""Fine-tune any encoder on a HEAR-format task with a supervised recipe, then score it.

    audiorep finetune --model runs/mae --task tasks/keywords --out runs/mae-keywords steps=300

The encoder (a preset, a saved encoder or a run folder) gets a classifier head for the
task's labels (LayerNorm + Linear on its pooled features), trained with layer-wise lr
decay through the one training loop; the run saves RUN/encoder with that head, so its
logits are the encoder's HEAR level H. Then valid and test are scored with the task's
primary metric family (top-1 accuracy for multiclass tasks, mAP for multilabel ones) and
written to RUN/metrics.json. Rerun the same command to resume.
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from .config import override, to_dict
from .data import ClipDataset, task_clips
from .evaluate.metrics import mean_average_precision, top1_acc
from .files import write_json
from .tasks.format import load_task
from .train import TrainConfig, train
from .runs import crop_samples, split_overrides

# Fine-tuning defaults (Audio-MAE / PaSST fine-tuning), overridden from the command line.
FINETUNE_DEFAULTS = ["steps=500", "batch_size=32", "lr=5e-4", "warmup_steps=50", "weight_decay=0.05",
                     "betas=0.9,0.999", "layer_decay=0.75", "schedule=cosine", "data.gain_db=6",
                     "checkpoint_every=100", "log_every=10"]


def task_splits(task, fold: int) -> tuple[list[str], str, str]:
    """(train splits, valid split, test split): HEAR's k-fold rotation for k-fold tasks."""
    names = task.split_names
    if names == ["train", "valid", "test"]:
        return ["train"], "valid", "test"
    k = len(names)
    test, valid = names[fold % k], names[(fold + 1) % k]
    return [s for s in names if s not in (test, valid)], valid, test


@torch.no_grad()
def eval_dataset(clips, sample_rate: int, crop: int, data_cfg, vocabulary) -> ClipDataset:
    """The clips to score, each once (the training data's duration repeats, `repeat_s`, left out)."""
    return ClipDataset(clips, sample_rate, crop, replace(data_cfg, repeat_s=0.0), vocabulary)


def predict(objective, dataset: ClipDataset, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(scores [N, C], targets [N, C]) on deterministic crops, in eval mode (no augmentation)."""
    objective.eval()
    device = next(objective.parameters()).device
    scores, targets = [], []
    with torch.no_grad():
        for batch in DataLoader(dataset, batch_size=batch_size):
            scores.append(objective.logits(batch["wave"].to(device)).float().cpu())
            targets.append(batch["target"])
    objective.train()
    return torch.cat(scores).numpy(), torch.cat(targets).numpy()


def score(scores: np.ndarray, targets: np.ndarray, prediction_type: str) -> dict[str, float]:
    if prediction_type == "multiclass":
        return {"top1_acc": top1_acc(scores, targets)}
    return {"mAP": mean_average_precision(scores, targets)}


def finetune(model: str, task_dir: str, out: str | Path, overrides: list[str], recipe: str = "passt",
             fold: int = 0, stop_after: int | None = None) -> dict | None:
    """Fine-tune `model` (a preset, saved encoder or run folder) on a HEAR scene task, then
    score valid and test (RUN/metrics.json, rank 0). Returns the metrics, or None when
    stopped early or not rank 0."""
    from .models import load
    from .objectives import RECIPES

    task = load_task(task_dir)
    if task.embedding_type != "scene":
        raise ValueError(f"{task_dir}: fine-tuning needs a scene task, this one is {task.embedding_type!r}")
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; recipes: {sorted(RECIPES)}")
    spec = RECIPES[recipe]
    parts = split_overrides(overrides)
    cfg = override(TrainConfig(), FINETUNE_DEFAULTS + parts["train"])

    torch.manual_seed(cfg.seed)
    encoder = load(model).with_head(len(task.vocabulary))
    if cfg.data.crop_s == 0 and task.metadata["sample_duration"]:
        longest = crop_samples(encoder, cfg.data) / encoder.sample_rate
        cfg = replace(cfg, data=replace(cfg.data, crop_s=min(task.metadata["sample_duration"], longest)))
    crop = crop_samples(encoder, cfg.data)
    frames = encoder.frontend.num_frames(crop)
    defaults = [f"loss={'ce' if task.prediction_type == 'multiclass' else 'bce'}",
                f"time_mask={frames // 5}", f"freq_mask={encoder.frontend.features // 5}"]
    objective_cfg = override(spec.config(), defaults + list(spec.objective_defaults) + parts["objective"])
    train_splits, valid, test = task_splits(task, fold)
    clips = [c for split in train_splits for c in task_clips(task_dir, split)[0]]
    data = ClipDataset(clips, encoder.sample_rate, crop, cfg.data, task.vocabulary)
    objective = spec.objective(encoder, objective_cfg, num_classes=len(task.vocabulary))
    run_config = {"recipe": recipe, "model": str(model), "task": str(task_dir), "fold": fold,
                  "encoder": to_dict(encoder.config), "objective": to_dict(objective_cfg),
                  "vocabulary": task.vocabulary}
    objective = train(objective, data, cfg, out, run_config, stop_after)
    if int(os.environ.get("RANK", "0")) != 0 or (stop_after is not None and stop_after < cfg.steps):
        return None
    metrics = {}
    for split in (valid, test):
        dataset = eval_dataset(task_clips(task_dir, split)[0], encoder.sample_rate, crop, cfg.data, task.vocabulary)
        metrics[split] = score(*predict(objective, dataset), task.prediction_type)
        print(f"{task.name} {split}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics[split].items()))
    write_json(Path(out) / "metrics.json", {"task": task.name, "model": str(model), **metrics})
    return metrics
