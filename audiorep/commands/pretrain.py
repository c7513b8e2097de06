"""`audiorep pretrain RECIPE --data PATH --out RUN [field=value ...]`: train an encoder with a
recipe (objectives.RECIPES); rerun the same command to resume; under torchrun
(`torchrun --nproc_per_node 2 -m audiorep pretrain ...`) every process runs it."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from .. import presets
from ..dist import leave
from ..objectives import RECIPES
from ..runs import run_recipe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="audiorep pretrain", description=(
        "Train an encoder with a recipe. Overrides: field=value for TrainConfig (e.g. steps=2000, "
        "data.crop_s=4), encoder.FIELD=value and objective.FIELD=value for the other configs."))
    parser.add_argument("recipe", choices=sorted(RECIPES))
    parser.add_argument("--data", required=True, help="task folder, folder of audio, .csv/.jsonl manifest or tar shards")
    parser.add_argument("--out", required=True, help="run folder (rerun the same command to resume)")
    parser.add_argument("--preset", help="encoder preset (default: the recipe's base model)")
    parser.add_argument("--init", help="start from this run's weights (self-training: encodecmae-st --init STAGE1_RUN)")
    parser.add_argument("--stop-after", type=int, help="stop after this step, as if interrupted")
    parser.add_argument("overrides", nargs="*", help="field=value")
    args = parser.parse_intermixed_args(argv)

    recipe = RECIPES[args.recipe]
    preset = args.preset or recipe.preset
    run_recipe(recipe, presets.get(preset), args.data, args.out, args.overrides, args.stop_after,
               run_config={"preset": preset}, init=args.init)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"encoder saved to {Path(args.out) / 'encoder'} (audiorep.load({str(args.out)!r}))")
    leave()
    return 0
