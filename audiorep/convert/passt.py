"""kkoutini/PaSST (and hear21passt) checkpoints -> audiorep names."""
from __future__ import annotations

from .timm import transformer

FORMAT = "passt"


def matches(sd: dict) -> bool:
    return "new_pos_embed" in sd and "freq_new_pos_embed" in sd and "time_new_pos_embed" in sd


def to_audiorep(sd: dict, encoder) -> dict:
    """`head_dist` is dropped: the released forward never uses it (parity README)."""
    out = transformer(sd)
    out["backbone.cls_token"] = sd["cls_token"]
    out["backbone.dist_token"] = sd["dist_token"]
    out["backbone.pos_embed.prefix"] = sd["new_pos_embed"][0]  # [2, D]
    out["backbone.pos_embed.freq"] = sd["freq_new_pos_embed"][0, :, :, 0].T  # [1, D, F', 1] -> [F', D]
    out["backbone.pos_embed.time"] = sd["time_new_pos_embed"][0, :, 0, :].T  # [1, D, 1, T'] -> [T', D]
    out.update({k: v for k, v in sd.items() if k.startswith("head.")})
    return out
