"""`audiorep finetune --model ENCODER --task TASK --out RUN [field=value ...]`: fine-tune any
encoder on a HEAR scene task (finetune.py), then score valid and test; rerun to resume."""
from __future__ import annotations

import argparse

from ..dist import leave
from ..finetune import finetune


def main(argv: list[str] | None = None) -> int:
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
    finetune(args.model, args.task, args.out, args.overrides, args.recipe, args.fold, args.stop_after)
    leave()
    return 0
