"""Presets as data: name -> EncoderConfig; name -> the format of its official checkpoints;
(name, tag) -> released weights."""
from __future__ import annotations

from dataclasses import dataclass, replace

from .backbones import ViTConfig
from .backbones.conv import ConvConfig
from .backbones.frame import FrameConfig
from .encoder import EmbedConfig, EncoderConfig
from .frontends import FbankConfig, PasstMelConfig
from .frontends.waveform import WaveformConfig

PASST_RELEASES = "https://github.com/kkoutini/PaSST/releases/download"
TINY = dict(dim=64, depth=2, heads=4)

# PaSST embeds as the released hear21passt wrapper: [logits, features] (1295-d), audio past
# 10 s reflect-padded by 5 s at each end and cut into 10 s windows every 2.5 s; 16 windows (16 s
# of audio) per forward keeps every call's peak memory under the wrapper's (docs/hear21passt.md)
_passt = EncoderConfig(
    name="passt-s", frontend=PasstMelConfig(), backbone=ViTConfig(), num_classes=527, pool="prefix",
    embed=EmbedConfig(levels=("H", "M"), rf_ms=(160.0,), hop_ms=50.0, scene_hop_s=2.5, scene_window_s=10.0,
                      scene_pad="reflect", batch_size=16))
_audiomae = EncoderConfig(
    name="audiomae-b", frontend=FbankConfig(),
    backbone=ViTConfig(max_frames=1024, stride=(16, 16), prefix=1, pos="sincos"),
    pool="tokens", embed=EmbedConfig(levels=("M",), timestamps="tokens", scene_hop_s=5.0))
_asit = EncoderConfig(
    name="asit-b", frontend=FbankConfig(sample_rate=32000),
    backbone=ViTConfig(max_frames=592, stride=(16, 16), prefix=1, pos="learned", drop_path=0.1),  # released: 0.1 in training
    pool="tokens", embed=EmbedConfig(levels=("M",), timestamps="tokens", scene_hop_s=3.0))
# EAT (end-to-end): peak-normalized 22.05 kHz waveform, conv stack + transformer, one token per
# 1024 samples (46 ms), positions for 10 s; cls token -> a Linear head; no weights released
_eat = EncoderConfig(
    name="eat-s", frontend=WaveformConfig(), backbone=ConvConfig(), pool="prefix", head_norm=False,
    embed=EmbedConfig(levels=("M",), timestamps="tokens", scene_hop_s=5.0))
# EnCodecMAE (the mel256 models): 24 kHz Kaldi fbank, 256 bins, hop 318 (13.25 ms), one token per
# frame, 4 s windows as the released extraction; embeddings: the last layer's frames, timestamps
# every frame, scene = their mean
_encodecmae = EncoderConfig(
    name="encodecmae-base", frontend=FbankConfig(sample_rate=24000, n_mels=256, frame_length_ms=26.56,
                                                 frame_shift_ms=13.28, remove_mean=False, mean=-6.12, scale=4.82),
    backbone=FrameConfig(), pool="tokens",
    embed=EmbedConfig(levels=("M",), timestamps="tokens", hop_ms=13.25, scene_hop_s=4.0))
ENCODECMAE_HUB = "hf://lpepino/encodecmae-v2"

PRESETS: dict[str, EncoderConfig] = {
    "passt-s": _passt,
    "passt-s-hop5": replace(_passt, name="passt-s-hop5", frontend=PasstMelConfig(hop_length=160),
                            backbone=ViTConfig(max_frames=2000)),
    "passt-s-hop3": replace(_passt, name="passt-s-hop3", frontend=PasstMelConfig(hop_length=100),
                            backbone=ViTConfig(max_frames=3200)),
    # time positions for 20 / 30 s: one forward up to that length, longer audio in windows of it
    "passt-s-20s": replace(_passt, name="passt-s-20s", backbone=ViTConfig(max_frames=2000),
                           embed=replace(_passt.embed, scene_window_s=20.0, scene_hop_s=5.0)),
    "passt-s-30s": replace(_passt, name="passt-s-30s", backbone=ViTConfig(max_frames=3000),
                           embed=replace(_passt.embed, scene_window_s=30.0, scene_hop_s=10.0)),
    "passt-s-openmic": replace(_passt, name="passt-s-openmic", num_classes=20),
    "audiomae-b": _audiomae,
    "asit-b": _asit,
    "passt-tiny": replace(_passt, name="passt-tiny", backbone=ViTConfig(**TINY), num_classes=10),
    "audiomae-tiny": replace(_audiomae, name="audiomae-tiny", backbone=replace(_audiomae.backbone, **TINY)),
    "asit-tiny": replace(_asit, name="asit-tiny", backbone=replace(_asit.backbone, **TINY)),
    "eat-s": _eat,
    "eat-m": replace(_eat, name="eat-m", backbone=ConvConfig(channels=32, dim=256, depth=6, heads=16, ff=2048)),
    "eat-tiny": replace(_eat, name="eat-tiny", backbone=ConvConfig(channels=4, dim=64, depth=2, heads=4, ff=128)),
    "encodecmae-small": replace(_encodecmae, name="encodecmae-small", backbone=FrameConfig(depth=5)),
    "encodecmae-base": _encodecmae,
    "encodecmae-large": replace(_encodecmae, name="encodecmae-large", backbone=FrameConfig(dim=1024, depth=20)),
    "encodecmae-tiny": replace(_encodecmae, name="encodecmae-tiny", backbone=FrameConfig(**TINY, ff_dim=256)),
}


# The format of each preset's official checkpoints (a converter in convert/); a checkpoint
# given for a preset is read as this format and refused when it is not.
FORMATS: dict[str, str] = {
    "passt-s": "passt", "passt-s-hop5": "passt", "passt-s-hop3": "passt", "passt-s-20s": "passt",
    "passt-s-30s": "passt", "passt-s-openmic": "passt", "passt-tiny": "passt",
    "audiomae-b": "audiomae", "audiomae-tiny": "audiomae",
    "asit-b": "asit", "asit-tiny": "asit",
    "eat-s": "eat", "eat-m": "eat", "eat-tiny": "eat",
    "encodecmae-small": "encodecmae", "encodecmae-base": "encodecmae", "encodecmae-large": "encodecmae",
    "encodecmae-tiny": "encodecmae",
}


@dataclass(frozen=True)
class Weights:
    url: str            # https://, file:// or hf://owner/repo/file[@revision]
    sha256: str | None  # None: recorded on first download, checked on every later use
    format: str         # a converter in convert/ (or "audiorep")
    note: str = ""


WEIGHTS: dict[tuple[str, str], Weights] = {
    ("passt-s", "audioset"): Weights(
        f"{PASST_RELEASES}/v0.0.1-audioset/passt-s-f128-p16-s10-ap.476-swa.pt", None, "passt",
        "AudioSet mAP .476, SWA; the HEAR 2021 default"),
    ("passt-s-hop5", "audioset"): Weights(
        f"{PASST_RELEASES}/v0.0.3-audioset/passt-s-f128-stfthop160-p16-s10-ap.473-swa.pt", None, "passt",
        "STFT hop 5 ms (2000 frames for 10 s), AudioSet mAP .473"),
    ("passt-s-hop3", "audioset"): Weights(
        f"{PASST_RELEASES}/v0.0.3-audioset/passt-s-f128-stfthop100-p16-s10-ap.473-swa.pt", None, "passt",
        "STFT hop 100 samples = 3.125 ms (3200 frames for 10 s), AudioSet mAP .473"),
    ("passt-s-20s", "audioset"): Weights(
        f"{PASST_RELEASES}/v0.0.5/passt-s-f128-20sec-p16-s10-ap.474-swa.pt", None, "passt",
        "time positions for 20 s, AudioSet mAP .474"),
    ("passt-s-30s", "audioset"): Weights(
        f"{PASST_RELEASES}/v0.0.5/passt-s-f128-30sec-p16-s10-ap.473-swa.pt", None, "passt",
        "time positions for 30 s, AudioSet mAP .473"),
    ("passt-s-openmic", "openmic"): Weights(
        f"{PASST_RELEASES}/v0.0.5/openmic-passt-s-f128-10sec-p16-s10-ap.85.pt", None, "passt",
        "fine-tuned on OpenMIC-2008 (20 instrument logits), mAP .85"),
    # EnCodecMAE: {imports, config, state_dict} files; pretrained on AudioSet + FMA + LibriLight
    # (500k steps), "st" = + self-training (150k steps on k-means ids), the default where released
    ("encodecmae-small", "mix"): Weights(f"{ENCODECMAE_HUB}/mel256-ec-small.pt", None, "encodecmae",
                                        "mel256 -> EnCodec targets, 5 layers"),
    ("encodecmae-base", "mix"): Weights(f"{ENCODECMAE_HUB}/mel256-ec-base.pt", None, "encodecmae",
                                       "mel256 -> EnCodec targets, 10 layers (paper: global score 97.0)"),
    ("encodecmae-base", "st"): Weights(f"{ENCODECMAE_HUB}/mel256-ec-base_st.pt", None, "encodecmae",
                                      "+ self-training (paper: 97.6)"),
    ("encodecmae-large", "mix"): Weights(f"{ENCODECMAE_HUB}/mel256-ec-large.pt", None, "encodecmae",
                                        "mel256 -> EnCodec targets, 20 layers x 1024 (paper: 97.1)"),
    ("encodecmae-large", "st"): Weights(f"{ENCODECMAE_HUB}/mel256-ec-large_st.pt", None, "encodecmae",
                                       "+ self-training (paper: 100)"),
}
DEFAULT_TAG = {name: tag for (name, tag) in WEIGHTS}

# Training-side structured patchout of the PaSST paper for each STFT hop: (time columns, freq
# rows) dropped from the patch grid of a 10 s crop (kkoutini/PaSST s_patchout_t/s_patchout_f).
# The supervised objective takes fractions of the grid: the recipes that have patchout fields
# take them from here (patchout_overrides; objective.patchout_time=... still wins). passt-s-hop5
# has no entry: its Table 2 values were not available to us.
PATCHOUT: dict[str, tuple[int, int]] = {
    "passt-s": (40, 4),         # 99 x 12 grid -> 59 x 8 = 472 patches (+2 prefix tokens)
    "passt-s-hop3": (150, 6),   # 319 x 12 grid -> 169 x 6 = 1014 patches (paper Table 2, the "3 ms" model)
}


def patchout_overrides(name: str, grid: tuple[int, int]) -> list[str]:
    """The paper's patchout for preset `name` as the objective's fractions of its (time, freq)
    patch grid of a 10 s crop (round(grid * fraction) gives back the counts); none when unknown."""
    if name not in PATCHOUT:
        return []
    (t, f), (n_time, n_freq) = PATCHOUT[name], grid
    return [f"patchout_time={t / n_time!r}", f"patchout_freq={f / n_freq!r}"]


def get(name: str) -> EncoderConfig:
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    return PRESETS[name]


def list_presets() -> list[str]:
    return list(PRESETS)
