"""Fine-tune any encoder on a HEAR-format task with the supervised objective, then score it.

    audiorep finetune --model runs/mae --task tasks/keywords --out runs/mae-keywords steps=300

The encoder (a preset, a saved encoder or a run folder) gets a classifier head for the
task's labels (LayerNorm + Linear on its pooled features), trained with layer-wise lr
decay through the one training loop; the run saves RUN/encoder with that head, so its
logits are the encoder's HEAR level H. Then valid and test are scored with the task's
primary metric family (top-1 accuracy for multiclass tasks, mAP for multilabel ones) and
written to RUN/metrics.json. Rerun the same command to resume.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from .config import override, to_dict
from .data import ClipDataset, task_clips
from .encoder import Encoder
from .evaluate.metrics import mean_average_precision, top1_acc
from .files import write_json
from .train import TrainConfig, crop_samples, split_overrides, train

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


def with_head(encoder: Encoder, num_classes: int) -> Encoder:
    """The same encoder with a fresh classifier head of `num_classes` outputs (kept if it fits)."""
    if encoder.config.num_classes == num_classes:
        return encoder
    new = Encoder(replace(encoder.config, num_classes=num_classes))
    state = {k: v for k, v in encoder.state_dict().items() if not k.startswith("head.")}
    missing, unexpected = new.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith("head.") for k in missing), (missing, unexpected)
    return new


@torch.no_grad()
def predict(objective, dataset: ClipDataset, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(scores [N, C], targets [N, C]) on deterministic crops, in eval mode (no augmentation)."""
    objective.eval()
    device = next(objective.parameters()).device
    scores, targets = [], []
    for batch in DataLoader(dataset, batch_size=batch_size):
        feats = objective.encoder.frontend(batch["wave"].to(device))  # [B, F, T]
        scores.append(objective.logits(feats).float().cpu())
        targets.append(batch["target"])
    objective.train()
    return torch.cat(scores).numpy(), torch.cat(targets).numpy()


def score(scores: np.ndarray, targets: np.ndarray, prediction_type: str) -> dict[str, float]:
    if prediction_type == "multiclass":
        return {"top1_acc": top1_acc(scores, targets)}
    return {"mAP": mean_average_precision(scores, targets)}


def main(argv: list[str] | None = None) -> int:
    import audiorep
    from .objectives import RECIPES
    from .tasks.format import load_task

    parser = argparse.ArgumentParser(prog="audiorep finetune", description=(
        "Fine-tune an encoder on a task. Overrides: field=value for TrainConfig (steps, lr, layer_decay, "
        "data.crop_s...), objective.FIELD=value for the supervised objective (mixup_alpha, patchout_time...)."))
    parser.add_argument("--model", required=True, help="preset name, saved encoder folder or run folder")
    parser.add_argument("--task", required=True, help="HEAR-format task folder (scene task)")
    parser.add_argument("--out", required=True, help="run folder (rerun the same command to resume)")
    parser.add_argument("--recipe", default="passt", help="supervised recipe (default: passt)")
    parser.add_argument("--fold", type=int, default=0, help="k-fold tasks: the test fold")
    parser.add_argument("--stop-after", type=int, help="stop after this step, as if interrupted")
    parser.add_argument("overrides", nargs="*", help="field=value")
    args = parser.parse_intermixed_args(argv)

    task = load_task(args.task)
    if task.embedding_type != "scene":
        parser.error(f"{args.task}: fine-tuning needs a scene task, this one is {task.embedding_type!r}")
    config_cls, objective_cls = RECIPES[args.recipe]
    parts = split_overrides(args.overrides)
    cfg = override(TrainConfig(), FINETUNE_DEFAULTS + parts["train"])

    torch.manual_seed(cfg.seed)
    encoder = with_head(audiorep.load(args.model), len(task.vocabulary))
    if cfg.data.crop_s == 0 and task.metadata["sample_duration"]:
        longest = crop_samples(encoder, cfg.data) / encoder.sample_rate
        cfg = replace(cfg, data=replace(cfg.data, crop_s=min(task.metadata["sample_duration"], longest)))
    crop = crop_samples(encoder, cfg.data)
    frames = encoder.frontend.num_frames(crop)
    defaults = [f"loss={'ce' if task.prediction_type == 'multiclass' else 'bce'}",
                f"time_mask={frames // 5}", f"freq_mask={encoder.config.frontend.n_mels // 5}"]
    objective_cfg = override(config_cls(), defaults + parts["objective"])
    train_splits, valid, test = task_splits(task, args.fold)
    clips = [c for split in train_splits for c in task_clips(args.task, split)[0]]
    data = ClipDataset(clips, encoder.sample_rate, crop, cfg.data, task.vocabulary)
    objective = objective_cls(encoder, objective_cfg, num_classes=len(task.vocabulary))
    run_config = {"recipe": args.recipe, "model": str(args.model), "task": str(args.task), "fold": args.fold,
                  "encoder": to_dict(encoder.config), "objective": to_dict(objective_cfg),
                  "vocabulary": task.vocabulary}
    objective = train(objective, data, cfg, args.out, run_config, args.stop_after)

    if int(os.environ.get("RANK", "0")) == 0 and (args.stop_after is None or args.stop_after >= cfg.steps):
        metrics = {}
        for split in (valid, test):
            eval_clips = task_clips(args.task, split)[0]
            dataset = ClipDataset(eval_clips, encoder.sample_rate, crop, cfg.data, task.vocabulary)
            metrics[split] = score(*predict(objective, dataset), task.prediction_type)
            print(f"{task.name} {split}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics[split].items()))
        write_json(Path(args.out) / "metrics.json", {"task": task.name, "model": str(args.model), **metrics})
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
