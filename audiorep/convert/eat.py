"""Alibaba-MIIL/AudioClassfication `SoundNetRaw` (EAT) state dicts -> audiorep names.

The official model is nn.Sequentials indexed by position; ours names the same layers
(backbones/conv.py), so the map is a handful of renames. The classifier `tf.fc` (a Linear
on the cls token) becomes the encoder's head, which must then be a Linear alone
(`head_norm=False`); an encoder without a head drops it. No EAT weights were ever
released (the official repository's issue #17): this reads checkpoints people train with
the official code (`best_model.pt`, a plain state dict; DataParallel's `module.` prefix is
removed by the loader).
"""
from __future__ import annotations

import re

import torch

FORMAT = "eat"

RENAMES = [  # (official pattern, ours), applied in order
    (r"^start\.1\.", "stem.conv."),
    (r"^start\.2\.", "stem.bn."),
    (r"^down2\.", "dilated."),
    (r"\.down\.1\.", ".conv."),
    (r"\.down\.2\.", ".bn."),
    (r"\.down\.4\.filt$", ".filt"),
    (r"\.block_t\.1\.", ".block_t.conv."),
    (r"\.block_t\.2\.", ".block_t.bn."),
    (r"\.block_f\.0\.", ".block_f.conv."),
    (r"\.block_f\.1\.", ".block_f.bn."),
    (r"^tf\.transformer_enc\.layers\.", "blocks."),
    (r"^tf\.transformer_enc\.norm\.", "norm."),
    (r"^tf\.(cls_token|pos_embed)$", r"\1"),
]


def matches(sd: dict) -> bool:
    return "tf.pos_embed" in sd and "start.1.weight" in sd


def backbone_name(key: str) -> str:
    for pattern, repl in RENAMES:
        key = re.sub(pattern, repl, key)
    return key


def to_audiorep(sd: dict[str, torch.Tensor], encoder) -> dict[str, torch.Tensor]:
    positions = sd["tf.pos_embed"].shape[1] - 1
    clip_tokens = encoder.backbone.cfg.clip_tokens
    if positions != clip_tokens:
        raise ValueError(f"the EAT checkpoint's positions cover {positions} tokens (its seq_len / 1024), the encoder's "
                         f"{clip_tokens}: build it with encoder.backbone.clip_tokens={positions}")
    out = {f"backbone.{backbone_name(k)}": v for k, v in sd.items() if not k.startswith("tf.fc.")}
    if hasattr(encoder, "head"):
        if encoder.config.head_norm:
            raise ValueError("an EAT classifier is a Linear alone: build the encoder with head_norm=False")
        out.update({f"head.0.{k[len('tf.fc.'):]}": v for k, v in sd.items() if k.startswith("tf.fc.")})
    return out
