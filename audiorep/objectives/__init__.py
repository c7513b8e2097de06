"""Objectives: nn.Modules that own an Encoder and turn a batch into (loss, logs).

RECIPES maps a recipe name to (config class, objective class); every objective is built
as `Cls(encoder, cfg, num_classes=...)` and its config is a frozen dataclass.
"""
from .mae import MAE, MAEConfig, decoder_from_audiomae
from .supervised import Supervised, SupervisedConfig

RECIPES = {
    "audiomae": (MAEConfig, MAE),
    "passt": (SupervisedConfig, Supervised),
}

__all__ = ["MAE", "MAEConfig", "RECIPES", "Supervised", "SupervisedConfig", "decoder_from_audiomae"]
