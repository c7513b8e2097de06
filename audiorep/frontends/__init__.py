"""Frontends: waveform [B, S] -> features [B, C, T]. The contract:

    __init__(cfg)                 cfg: a frozen dataclass with a `kind` default (its name in FRONTENDS)
    sample_rate, hop_s            input rate; seconds per output frame
    features                      C, channels of the output
    min_samples                   shortest input
    num_frames(samples)           frames for an input of that many samples (ValueError below min_samples)
    samples_for(frames)           fewest samples giving at least `frames` frames
    level_l(feats) -> [B, C]      HEAR level L of a window, or ValueError where the frontend has none

No augmentation happens in a frontend (see augment/). `register_frontend(Config, Module)`
adds a kind, from inside the package or outside it.
"""
from ..config import Registry
from .mel import Fbank, FbankConfig, PasstMel, PasstMelConfig, kaldi_mel_banks
from .waveform import Waveform, WaveformConfig

FRONTENDS = Registry("frontend", default="passt_mel")
MODULES: dict[str, type] = {}


def register_frontend(config_cls, module_cls) -> None:
    FRONTENDS.register(config_cls)
    MODULES[config_cls.kind] = module_cls


def build_frontend(cfg):
    """Build the frontend module for a frontend config instance (dispatch on `cfg.kind`)."""
    FRONTENDS.config_class(cfg.kind)
    return MODULES[cfg.kind](cfg)


register_frontend(PasstMelConfig, PasstMel)
register_frontend(FbankConfig, Fbank)
register_frontend(WaveformConfig, Waveform)

__all__ = ["FRONTENDS", "Fbank", "FbankConfig", "PasstMel", "PasstMelConfig", "Waveform", "WaveformConfig",
           "build_frontend", "kaldi_mel_banks", "register_frontend"]
