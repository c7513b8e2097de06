"""Names that timm-style ViT checkpoints (PaSST, Audio-MAE, ASiT) share with ours."""
from __future__ import annotations


def transformer(sd: dict, prefix: str = "") -> dict:
    """`{prefix}blocks.*`, `norm.*`, `patch_embed.*` -> ours under `backbone.` (same names)."""
    parts = tuple(f"{prefix}{p}" for p in ("blocks.", "norm.", "patch_embed."))
    return {f"backbone.{k[len(prefix):]}": v for k, v in sd.items() if k.startswith(parts)}
