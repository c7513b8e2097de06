"""Sara-Ahmed/ASiT checkpoints (`FullPipeline` state_dicts: `backbone.*`, `head_cls.*`,
`head_recons.*`, saved as `{"student": ..., "teacher": ...}`) -> audiorep names.

The released input is [T, F], ours [F, T]: the patch kernel and the reconstruction head's
transposed-conv kernel are transposed; tokens are time-major in both, so the learned
position table [1, 1 + T' * F', D] splits into our prefix + [T', F', D] table.
"""
from __future__ import annotations

from .audiomae import split_table
from .timm import transformer

FORMAT = "asit"
BACKBONE = "backbone."


def matches(sd: dict) -> bool:
    return all(f"{BACKBONE}{k}" in sd for k in ("pos_embed", "cls_token", "patch_embed.proj.weight"))


def to_audiorep(sd: dict, encoder) -> dict:
    cfg = encoder.config.backbone
    if getattr(cfg, "kind", "vit") != "vit" or tuple(cfg.patch) != tuple(cfg.stride) or cfg.prefix != 1:
        raise ValueError(f"an ASiT checkpoint needs a ViT with non-overlapping patches and one cls token; "
                         f"preset {encoder.config.name!r} has {cfg}")
    n_time, n_freq = encoder.backbone.grid(cfg.max_frames)
    pos = sd[f"{BACKBONE}pos_embed"]
    if pos.ndim != 3 or pos.shape[1] != 1 + n_time * n_freq:
        raise ValueError(f"ASiT checkpoint: backbone.pos_embed {tuple(pos.shape)} covers {pos.shape[1] - 1} "
                         f"patches; preset {encoder.config.name!r} has {n_time} x {n_freq} = {n_time * n_freq}")
    out = transformer(sd, BACKBONE)
    out["backbone.patch_embed.proj.weight"] = sd[f"{BACKBONE}patch_embed.proj.weight"].transpose(-1, -2)
    out["backbone.cls_token"] = sd[f"{BACKBONE}cls_token"]
    out.update({f"backbone.pos_embed.{k}": v for k, v in split_table(pos, n_freq).items()})
    return out


def objective_state(sd: dict, objective) -> dict:
    """The heads -> `ASiT.head_cls` / `ASiT.head_recons` (same names, the transposed-conv
    kernel transposed), and the teacher (encoder + head_cls) started as a copy of these
    weights, as the release starts its teacher from the student."""
    heads = [k for k in sd if k.startswith(("head_cls.", "head_recons."))]
    if not heads:
        raise ValueError("the checkpoint has no ASiT heads (head_cls.*, head_recons.*): a backbone-only file?")
    out = {k: sd[k] for k in heads}
    out["head_recons.convTrans.weight"] = sd["head_recons.convTrans.weight"].transpose(-1, -2)
    teacher = {f"encoder.{k}": v for k, v in to_audiorep(sd, objective.encoder).items()}
    teacher.update({k: v for k, v in out.items() if k.startswith("head_cls.")})
    out.update({f"teacher.model.{k}": v for k, v in teacher.items()})
    return out
