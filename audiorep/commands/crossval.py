"""`audiorep crossval --recipe eat --task TASK --out RUN [--seeds N] [field=value ...]`:
train from scratch on every fold of a task and test on the held-out one (crossval.py);
rerun the same command to resume. Under torchrun (`torchrun --nproc-per-node 8 -m audiorep
crossval ...`) the ranks share the (seed, fold) runs, each trained by one process."""
from __future__ import annotations

import argparse

from .. import presets
from ..crossval import crossval
from ..dist import agree
from ..dist import joined
from ..objectives import RECIPES
from ..tasks.format import load_task


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="audiorep crossval", description=(
        "k-fold cross-validation from scratch (ESC-50 protocol: train on k-1 folds, test on the held-out one), "
        "or train -> valid/test for train/valid/test tasks. Overrides: field=value for TrainConfig (steps, "
        "batch_size, lr...), encoder.FIELD=value and objective.FIELD=value."))
    parser.add_argument("--recipe", default="eat", choices=sorted(RECIPES))
    parser.add_argument("--task", required=True, help="HEAR-format scene task folder")
    parser.add_argument("--out", required=True, help="study folder (rerun the same command to resume)")
    parser.add_argument("--preset", help="encoder preset (default: the recipe's)")
    parser.add_argument("--seeds", type=int, default=1, help="repeat every fold with this many seeds")
    parser.add_argument("--epochs", type=float, help="train this many passes over each fold's training clips "
                                                     "(sets steps from the fold size and batch_size; warmup_frac "
                                                     "and per-epoch EMA scale with it)")
    parser.add_argument("--folds", help="comma-separated held-out folds to run (default: all), e.g. fold00,fold01")
    parser.add_argument("--stop-after", type=int, help="stop the first unfinished run after this step, as if interrupted")
    parser.add_argument("overrides", nargs="*", help="field=value")
    args = parser.parse_intermixed_args(argv)

    if args.seeds < 1:
        parser.error(f"--seeds {args.seeds}: expected at least 1")
    if args.epochs is not None and not args.epochs > 0:
        parser.error(f"--epochs {args.epochs}: expected a number of passes over the training clips > 0")
    task = load_task(args.task)
    if task.embedding_type != "scene":
        parser.error(f"{args.task}: cross-validation needs a scene task, this one is {task.embedding_type!r}")
    recipe = RECIPES[args.recipe]
    encoder_cfg = presets.get(args.preset or recipe.preset)
    with joined("cpu") as w:  # the ranks meet over gloo; each run picks its own device (train.device)
        agree(sorted((k, str(v)) for k, v in vars(args).items()), w, "audiorep crossval's arguments")
        results = crossval(recipe, encoder_cfg, task, args.out, args.seeds, args.overrides, args.epochs,
                           args.stop_after, args.folds.split(",") if args.folds else None)
    for key, s in results.get("summary", {}).items() if w.main else ():
        se = f" +- {s['se']:.4f}" if s["se"] is not None else ""
        print(f"{task.name} {key}: {s['mean']:.4f}{se} (s.e. over {'folds' if len(s['folds']) > 1 else 'seeds'}, "
              f"{s['runs']} runs)")
    return 0
