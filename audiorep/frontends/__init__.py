"""Frontends: waveform [B, S] -> features. Each declares `sample_rate` and `hop_s` (seconds)."""
from .mel import Fbank, FbankConfig, PasstMel, PasstMelConfig, kaldi_mel_banks

FRONTENDS = {
    PasstMelConfig.kind: PasstMel,
    FbankConfig.kind: Fbank,
}


def build_frontend(cfg):
    """Build the frontend module for a frontend config instance (dispatch on `cfg.kind`)."""
    if cfg.kind not in FRONTENDS:
        raise ValueError(f"unknown frontend kind {cfg.kind!r}; known: {sorted(FRONTENDS)}")
    return FRONTENDS[cfg.kind](cfg)


__all__ = ["Fbank", "FbankConfig", "PasstMel", "PasstMelConfig", "build_frontend", "kaldi_mel_banks"]
