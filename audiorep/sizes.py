"""Recipe sizes as data: (recipe, size) -> an encoder preset and the overrides that fit the
recipe to it (`audiorep pretrain RECIPE --preset PRESET OVERRIDES...`).

    tiny   a model that trains in minutes on 2 CPU cores: the settings the benchmarks and the
           demo use (decoder and head widths, teacher momentum for short runs, crop lengths,
           k-means sizes, batch sizes), stated once here
    small  a middle size (a ViT-S or the paper's own small model where there is one)
    base   the paper's model with the recipe's own settings (no overrides)

A study spec names them (`recipe = "asit", size = "tiny"`); `audiorep presets` lists them.
Overrides are `field=value` as on the pretrain command line (encoder.*, objective.*, train
fields); a study adds its budget (steps) and seed after them.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Size:
    preset: str
    overrides: tuple[str, ...] = ()
    note: str = ""


_MAE_TINY = ("encoder.backbone.max_frames=384", "encoder.embed.scene_hop_s=2.0",  # 3.84 s: 24 x 8 patches
             "objective.decoder_dim=64", "objective.decoder_depth=2", "objective.decoder_heads=4",
             "objective.meta_hidden=64", "lr=1e-3", "weight_decay=0.05", "warmup_frac=0.1", "data.crop_s=3.84",
             "batch_size=16")
# teacher momentum 0.97 (released 0.996): over a few hundred steps a 0.996 teacher, the encoder
# that is shipped and evaluated, would still hold most of its initial weights
_ASIT_TINY = ("encoder.backbone.max_frames=128", "encoder.backbone.drop_path=0.1", "encoder.embed.scene_hop_s=1.0",
              "objective.momentum=0.97", "objective.global_dim=256", "objective.local_dim=128",
              "objective.head_hidden=256", "objective.head_bottleneck=64", "objective.recon_hidden=128",
              "objective.recon_bottleneck=64", "blr=0", "lr=1e-3", "batch_size=8")
# EnCodec with random weights (codebooks drawn from the data): the released tokenizer is a download;
# its codes read from the whole-clip cache (tokenizing every crop in the step costs seconds on a CPU)
_ECMAE_TINY = ("encoder.backbone.max_frames=150", "objective.gamma_clips=50", "objective.decoder_heads=4",
               "objective.decoder_ff_dim=256", "objective.kmeans_k=256", "objective.kmeans_clips=200", "lr=1e-3",
               "warmup_steps=10", "data.crop_s=2", "batch_size=16")
# 2 s crops (200 frames: 12 x 19 patches), embeddings from windows of that span; masks scaled to it
_PASST_TINY = ("encoder.backbone.max_frames=200", "encoder.embed.scene_window_s=0", "encoder.embed.scene_pad=none",
               "encoder.embed.scene_hop_s=1.0", "objective.time_mask=40", "lr=1e-3", "warmup_frac=0.1",
               "data.crop_s=2", "batch_size=16")
# bench_eat's reduced width: 8 kHz, 4 channels, 64 wide, 2 blocks, 64x downsampling
_EAT_TINY = ("encoder.frontend.sample_rate=8000", "encoder.backbone.channels=4", "encoder.backbone.dim=64",
             "encoder.backbone.depth=2", "encoder.backbone.heads=4", "encoder.backbone.ff=256",
             "encoder.backbone.factors=4,4,4", "data.crop_s=2", "batch_size=16")
_VIT_S = ("encoder.backbone.dim=384", "encoder.backbone.heads=6")

SIZES: dict[str, dict[str, Size]] = {
    "audiomae": {
        "tiny": Size("audiomae-tiny", _MAE_TINY, "ViT 64 x 2, decoder 64 x 2, 3.84 s crops"),
        "small": Size("audiomae-b", (*_VIT_S, "objective.decoder_dim=256", "objective.decoder_depth=4",
                                     "objective.decoder_heads=8"), "ViT-S 384 x 12, decoder 256 x 4 (ours)"),
        "base": Size("audiomae-b", (), "the paper's ViT-B"),
    },
    "asit": {
        "tiny": Size("asit-tiny", _ASIT_TINY, "ViT 64 x 2, 1.28 s crops, small heads, teacher momentum 0.97"),
        "small": Size("asit-b", _VIT_S, "ViT-S 384 x 12 (the paper's ablation backbone)"),
        "base": Size("asit-b", (), "the paper's ViT-B"),
    },
    "encodecmae": {
        "tiny": Size("encodecmae-tiny", ("objective.targets=encodec_random", "objective.target_context=clip",
                                         *_ECMAE_TINY),
                     "64 x 2 frame model, 2 s crops, random-weight EnCodec targets of whole clips"),
        "small": Size("encodecmae-small", (), "the paper's Small"),
        "base": Size("encodecmae-base", (), "the paper's Base"),
    },
    "encodecmae-st": {
        "tiny": Size("encodecmae-tiny", _ECMAE_TINY, "64 x 2 frame model, 2 s crops, k = 256"),
        "small": Size("encodecmae-small", (), "the paper's Small"),
        "base": Size("encodecmae-base", (), "the paper's Base"),
    },
    "passt": {
        "tiny": Size("passt-tiny", _PASST_TINY, "ViT 64 x 2, 2 s crops"),
        "small": Size("passt-s", _VIT_S, "ViT-S 384 x 12 (ours)"),
        "base": Size("passt-s", (), "the paper's PaSST-S (ViT-B)"),
    },
    "eat": {
        "tiny": Size("eat-s", _EAT_TINY, "8 kHz, 4 channels, 64 x 2 transformer, 2 s crops"),
        "small": Size("eat-s", (), "the paper's EAT-S"),
        "base": Size("eat-m", (), "the paper's EAT-M"),
    },
}


def get(recipe: str, size: str) -> Size:
    """The size `size` of `recipe`; KeyError naming what exists."""
    if recipe not in SIZES:
        raise KeyError(f"no sizes for recipe {recipe!r}; recipes with sizes: {', '.join(SIZES)}")
    if size not in SIZES[recipe]:
        raise KeyError(f"recipe {recipe!r} has no size {size!r}; sizes: {', '.join(SIZES[recipe])}")
    return SIZES[recipe][size]
