"""Presets as data: name -> EncoderConfig; (name, tag) -> released weights."""
from __future__ import annotations

from dataclasses import dataclass, replace

from .backbones import ViTConfig
from .embed import EmbedConfig
from .encoder import EncoderConfig
from .frontends import FbankConfig, PasstMelConfig

PASST_RELEASES = "https://github.com/kkoutini/PaSST/releases/download"
TINY = dict(dim=64, depth=2, heads=4)

_passt = EncoderConfig(
    name="passt-s", frontend=PasstMelConfig(), backbone=ViTConfig(), num_classes=527, pool="prefix",
    embed=EmbedConfig(levels=("M", "H"), rf_ms=(160.0,), hop_ms=50.0, scene_hop_s=2.5))
_audiomae = EncoderConfig(
    name="audiomae-b", frontend=FbankConfig(),
    backbone=ViTConfig(max_frames=1024, stride=(16, 16), prefix=1, pos="sincos"),
    pool="patches", embed=EmbedConfig(levels=("M",), timestamps="tokens", scene_hop_s=5.0))
_asit = EncoderConfig(
    name="asit-b", frontend=FbankConfig(sample_rate=32000),
    backbone=ViTConfig(max_frames=592, stride=(16, 16), prefix=1, pos="learned"),
    pool="patches", embed=EmbedConfig(levels=("M",), timestamps="tokens", scene_hop_s=3.0))

PRESETS: dict[str, EncoderConfig] = {
    "passt-s": _passt,
    "passt-s-hop5": replace(_passt, name="passt-s-hop5", frontend=PasstMelConfig(hop_length=160),
                            backbone=ViTConfig(max_frames=2000)),
    "audiomae-b": _audiomae,
    "asit-b": _asit,
    "passt-tiny": replace(_passt, name="passt-tiny", backbone=ViTConfig(**TINY), num_classes=10),
    "audiomae-tiny": replace(_audiomae, name="audiomae-tiny", backbone=replace(_audiomae.backbone, **TINY)),
    "asit-tiny": replace(_asit, name="asit-tiny", backbone=replace(_asit.backbone, **TINY)),
}


@dataclass(frozen=True)
class Weights:
    url: str
    sha256: str | None  # None: recorded on first download, checked on every later use
    format: str         # "passt", "audiomae" or "audiorep"
    note: str = ""


WEIGHTS: dict[tuple[str, str], Weights] = {
    ("passt-s", "audioset"): Weights(
        f"{PASST_RELEASES}/v0.0.1-audioset/passt-s-f128-p16-s10-ap.476-swa.pt", None, "passt",
        "AudioSet mAP .476, SWA; the HEAR 2021 default"),
    ("passt-s-hop5", "audioset"): Weights(
        f"{PASST_RELEASES}/v0.0.3-audioset/passt-s-f128-stfthop160-p16-s10-ap.473-swa.pt", None, "passt",
        "STFT hop 5 ms (2000 frames for 10 s), AudioSet mAP .473"),
}
DEFAULT_TAG = {name: tag for (name, tag) in WEIGHTS}


def get(name: str) -> EncoderConfig:
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    return PRESETS[name]


def list_presets() -> list[str]:
    return list(PRESETS)


def main(argv: list[str] | None = None) -> int:
    """`audiorep presets`: the table of presets and their released weights."""
    for name, cfg in PRESETS.items():
        b = cfg.backbone
        weights = ", ".join(f"{tag}: {w.note}" for (n, tag), w in WEIGHTS.items() if n == name) or "none released"
        print(f"{name:<14} {cfg.frontend.kind:<9} {cfg.frontend.sample_rate:>5} Hz  ViT {b.dim}x{b.depth}  "
              f"patch {b.patch} stride {b.stride}  frames {b.max_frames}  weights: {weights}")
    return 0
