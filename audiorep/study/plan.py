"""The trainings of a study: one per (run, seed), with the data, overrides and audio per step
it will use, and the budget in steps with the points of its learning curve.

Audio seen per step = batch_size x views x crop seconds (the audio the model is given);
a budget in `audio_s` is that many seconds of it, one in `minutes` is converted with the
seconds per step measured by a short calibration run (launch.py). Budgets in audio or
minutes put the curve points on a grain of 1/50 of the run, so checkpoints stay few.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from audiorep import presets
from audiorep.config import override
from audiorep.encoder import Encoder
from audiorep.objectives import RECIPES
from audiorep.train import TrainConfig
from audiorep.runs import crop_samples, split_overrides

from .spec import Run, Spec

GRAIN = 50  # derived budgets: curve points on multiples of steps // GRAIN


@dataclass(frozen=True)
class Training:
    label: str                     # "<run>-seed<k>": its run folder and its model in the evaluation
    run: str
    seed: int
    recipe: str
    preset: str
    data: str
    overrides: tuple[str, ...]     # the run's, without the study's steps / seed / checkpoint_every
    init: str | None               # label of the training it starts from
    torchrun: int
    audio_per_step: float          # seconds


def label(run: str, seed: int) -> str:
    return f"{run}-seed{seed}"


def data_path(spec: Spec, run: Run, out: Path) -> str:
    """What `pretrain --data` gets: the labelled task of a supervised run, else the study's data."""
    if run.task is not None:
        return str(out / "tasks" / run.task)
    if spec.data_kind == "corpus":
        return str(out / "corpus" / "16000")
    return str(spec.data)


def audio_per_step(run: Run) -> float:
    """Seconds of audio the model sees per optimizer step: batch x views x crop."""
    recipe = RECIPES[run.recipe]
    parts = split_overrides(list(run.overrides))
    cfg = override(TrainConfig(), list(recipe.defaults) + parts["train"])
    encoder = Encoder(override(presets.get(run.preset), parts["encoder"]))
    return cfg.batch_size * recipe.views * crop_samples(encoder, cfg.data) / encoder.sample_rate


def trainings(spec: Spec, out: Path) -> list[Training]:
    """Every (run, seed) of the spec's runs that pretrain, in the spec's order."""
    found = []
    for run in spec.pretraining:
        per_step = audio_per_step(run)
        for seed in run.seeds:
            found.append(Training(label(run.name, seed), run.name, seed, run.recipe, run.preset,
                                  data_path(spec, run, out), run.overrides,
                                  label(run.init, seed) if run.init else None, run.torchrun, per_step))
    return found


def to_steps(spec: Spec, value: float, audio_per_step: float, seconds_per_step: float | None) -> float:
    if spec.unit == "steps":
        return value
    if spec.unit == "audio_s":
        return value / audio_per_step
    return value * 60 / seconds_per_step


def schedule(spec: Spec, audio_per_step: float, seconds_per_step: float | None = None) -> tuple[int, tuple[int, ...]]:
    """(steps of the run, the steps at which its encoder is evaluated, the last = steps)."""
    steps = max(1, int(to_steps(spec, spec.budget, audio_per_step, seconds_per_step)))
    grain = 1 if spec.unit == "steps" else max(1, steps // GRAIN)
    points = {min(max(grain, round(to_steps(spec, p, audio_per_step, seconds_per_step) / grain) * grain), steps)
              for p in spec.curve}
    return steps, tuple(sorted(points | {steps}))


def checkpoint_every(points: tuple[int, ...]) -> int:
    """A checkpoint at every point (the run stops there and its encoder is copied)."""
    return math.gcd(*points)
