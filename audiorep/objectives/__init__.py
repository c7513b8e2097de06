"""Objectives: nn.Modules that own an Encoder and turn a batch into (loss, logs).

The contract the training loop relies on (train.py):

    Cls(encoder, cfg, num_classes=0)    cfg: the recipe's frozen config dataclass
    encoder                             the Encoder being trained (never mutated: a new head
                                        means a new encoder, Encoder.with_head)
    forward(batch) -> (loss, logs)      batch["wave"] [B, S], or [B, V, S] for a recipe with
                                        views = V crops per clip; batch["target"] [B, C] with labels;
                                        batch["index"], batch["start"] (the crop's first sample),
                                        batch["length"] (its audio samples before zero padding)
    after_step(step, total_steps)       optional: EMA teachers, schedules
    set_epoch_steps(steps_per_epoch)    optional: told once before training, for schedules the
                                        paper states in epochs (EAT's mixes start after 12)
    prepare(dataset, device, run_dir)   optional: a data-dependent stage run once before step 0
                                        of a fresh run (e.g. k-means targets); what it computes
                                        lives in the objective's state_dict, so a resume has it
    encoder_to_save()                   optional: the encoder the run ships (default `encoder`)
    no_weight_decay() on any submodule  optional: parameter names kept out of weight decay

A recipe is a record beside its objective: its config and objective classes, the default
preset, TrainConfig defaults (the command line wins) and the views per clip.
"""
from __future__ import annotations

from dataclasses import dataclass

from .asit import ASiT, ASiTConfig
from .codec_mae import CodecMAE, CodecMAEConfig
from .mae import MAE, MAEConfig
from .supervised import EATConfig, Supervised, SupervisedConfig


@dataclass(frozen=True)
class Recipe:
    name: str
    config: type                     # the objective's config dataclass
    objective: type                  # Cls(encoder, cfg, num_classes=...)
    preset: str                      # default encoder preset
    defaults: tuple[str, ...] = ()   # TrainConfig overrides from the paper's recipe
    objective_defaults: tuple[str, ...] = ()  # objective config overrides
    views: int = 1                   # random crops per clip in a batch


ENCODECMAE = ("lr=1e-4", "schedule=constant", "warmup_steps=0", "weight_decay=0.05", "decay=all", "betas=0.9,0.95",
              "batch_size=128", "data.crop_s=4", "data.repeat_s=4", "data.roll=false", "data.gain_db=0")
RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("audiomae", MAEConfig, MAE, "audiomae-b",
           ("lr=2e-4", "weight_decay=1e-4", "betas=0.9,0.95", "data.gain_db=6", "data.roll=true")),
    Recipe("passt", SupervisedConfig, Supervised, "passt-s",
           ("lr=2e-5", "weight_decay=1e-4", "betas=0.9,0.999", "schedule=linear", "data.gain_db=7",
            "data.balanced=true")),
    # official EAT ESC-50 command (--amp): AdamW (0.9, 0.99) eps 1e-4, lr 3e-4, wd 1e-5, batch 128, 3500
    # epochs of 12 steps, OneCycle (10% rise, beta1 0.95 -> 0.85 -> 0.95), summed losses clipped to norm 1,
    # EMA 0.995 per epoch after two epochs at 0.01 (BatchNorm statistics averaged too); peak-normalized
    # clips, no roll. Fractions and epochs, so `crossval --epochs` and `steps=` keep the shape of the run.
    Recipe("eat", EATConfig, Supervised, "eat-s",
           ("lr=3e-4", "betas=0.9,0.99", "eps=1e-4", "weight_decay=1e-5", "batch_size=128", "steps=42000",
            "warmup_frac=0.1", "schedule=onecycle", "cycle_beta1=0.95,0.85", "clip_grad=1.0", "ema_per_epoch=0.995",
            "ema_short_epochs=2", "data.roll=false", "data.gain_db=0")),
    # released ASiT: lr 5e-4 x batch / 256 after a warm-up of 10% of the run (10 of 100 epochs), cosine
    # to 1e-6, weight decay 0.04 -> 0.4 on every tensor of 2+ dimensions (cls and positions included), each
    # parameter's gradient clipped to norm 3 on its own, AdamW defaults; two 6 s crops per clip, cut from the
    # whole clip rolled half the time (no roll per crop)
    Recipe("asit", ASiTConfig, ASiT, "asit-b",
           ("blr=5e-4", "min_lr=1e-6", "warmup_frac=0.1", "weight_decay=0.04", "weight_decay_end=0.4",
            "decay=matrices+tokens",
            "clip_grad=3.0", "clip_mode=per_param", "betas=0.9,0.999", "data.roll=false", "data.roll_clip=0.5"),
           views=2),
    # released EnCodecMAE: AdamW (0.9, 0.95) lr 1e-4, wd 0.05 on every parameter, batch 128 of 4 s crops, 500k steps; then
    # self-training (`--init STAGE1_RUN`): k-means ids of the stage-1 encoder's activations, 150k steps
    Recipe("encodecmae", CodecMAEConfig, CodecMAE, "encodecmae-base", ENCODECMAE + ("steps=500000",)),
    Recipe("encodecmae-st", CodecMAEConfig, CodecMAE, "encodecmae-base", ENCODECMAE + ("steps=150000",),
           ("targets=teacher_kmeans",)),
)}


def register_recipe(recipe: Recipe) -> None:
    RECIPES[recipe.name] = recipe


__all__ = ["ASiT", "ASiTConfig", "CodecMAE", "CodecMAEConfig", "EATConfig", "MAE", "MAEConfig", "RECIPES", "Recipe", "Supervised", "SupervisedConfig",
           "register_recipe"]
