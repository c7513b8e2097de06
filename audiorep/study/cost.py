"""What a training costs: parameters and measured training FLOP per second of audio.

FLOP: torch.utils.flop_counter over one training step (forward + backward of the objective,
as the loop runs it) on a real batch of the run's data, with the objective at the run's last
checkpoint; it counts matrix products, convolutions and attention (not elementwise work), so
it is the compute that matters, comparable across recipes. Divided by the audio of the batch
(batch_size x views x crop seconds). A crossval fold's run (config.json names its task and
fold) is measured on a batch of its training clips.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from audiorep.config import from_dict
from audiorep.crossval import fold_crop, folds
from audiorep.encoder import Encoder, EncoderConfig
from audiorep.files import checkpoints, write_json
from audiorep.objectives import RECIPES
from audiorep.tasks.format import load_task
from audiorep.train import TrainConfig, epoch_steps, make_loader
from audiorep.runs import crop_samples, open_data



def source(config: dict) -> tuple[str, str]:
    """(--data, split) a run trained on: a pretraining run's data, or a crossval fold's task and
    the first of its training splits."""
    if "data" in config:
        return config["data"], "train"
    task = load_task(config["task"])
    return config["task"], next(splits[0] for name, splits, _ in folds(task) if name == config["fold"])


def measure(run: Path) -> dict:
    """{encoder_params, trained_params, flop_per_audio_s} of training run `run`."""
    config = json.loads((run / "config.json").read_text())
    recipe = RECIPES[config["recipe"]]
    cfg = from_dict(TrainConfig, config["train"])
    cfg = replace(cfg, data=replace(cfg.data, workers=0))
    torch.manual_seed(cfg.seed)
    encoder = Encoder(from_dict(EncoderConfig, config["encoder"]))
    crop = fold_crop(encoder, cfg.data) if "fold" in config else crop_samples(encoder, cfg.data)
    data_spec, split = source(config)
    data, vocabulary = open_data(data_spec, encoder.sample_rate, crop, cfg.data, split=split, views=recipe.views)
    objective = recipe.objective(encoder, from_dict(recipe.config, config["objective"]),
                                 num_classes=len(vocabulary or []))
    if hasattr(objective, "set_epoch_steps") and epoch_steps(data, cfg) is not None:  # as the loop does
        objective.set_epoch_steps(epoch_steps(data, cfg))
    last = checkpoints(run)[-1]
    objective.load_state_dict(torch.load(last / "objective.pt", map_location="cpu", weights_only=True))
    batch = next(iter(make_loader(data, cfg, 0, 0, 1)))
    objective.train()
    with FlopCounterMode(display=False) as counter:
        loss, _ = objective(batch)
        loss.backward()
    audio_s = cfg.batch_size * recipe.views * crop / encoder.sample_rate
    return {"encoder_params": sum(p.numel() for p in objective.encoder.parameters()),
            "trained_params": sum(p.numel() for p in objective.parameters() if p.requires_grad),
            "flop_per_audio_s": counter.get_total_flops() / audio_s}


def cost(out: Path, label: str, run: Path | None = None) -> dict:
    """measure() of `run` (default OUT/runs/<label>), kept in OUT/cost/<label>.json."""
    path = out / "cost" / f"{label}.json"
    if not path.exists():
        with torch.random.fork_rng(devices=[]):
            write_json(path, measure(run or out / "runs" / label))
    return json.loads(path.read_text())
