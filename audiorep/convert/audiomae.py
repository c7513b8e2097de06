"""facebookresearch/AudioMAE checkpoints (`{"model": state_dict}`) -> audiorep names.

The released input is [T, F], ours [F, T]: the patch kernel is transposed. Both position
tables are the released fixed sin-cos ones ([1, 1 + T' * F', D]); the decoder's
`decoder_X` parameters belong to the MAE objective (`objective_state`)."""
from __future__ import annotations

from .timm import transformer

FORMAT = "audiomae"


def matches(sd: dict) -> bool:
    return "pos_embed" in sd and "patch_embed.proj.weight" in sd and "cls_token" in sd


def split_table(pos, n_freq: int) -> dict:
    """[1, 1 + T' * F', D] -> prefix [1, D] + table [T', F', D]."""
    pos = pos[0]
    return {"prefix": pos[:1], "table": pos[1:].reshape(-1, n_freq, pos.shape[-1])}


def to_audiorep(sd: dict, encoder) -> dict:
    out = transformer(sd)
    out["backbone.patch_embed.proj.weight"] = sd["patch_embed.proj.weight"].transpose(-1, -2)
    out["backbone.cls_token"] = sd["cls_token"]
    n_freq = encoder.backbone.grid(encoder.config.backbone.max_frames)[1]
    out.update({f"backbone.pos_embed.{k}": v for k, v in split_table(sd["pos_embed"], n_freq).items()})
    return out


def objective_state(sd: dict, objective) -> dict:
    """The released decoder -> `MAE.decoder` names: `decoder_X` -> `decoder.X`, mask_token kept."""
    if "decoder_pos_embed" not in sd:
        raise ValueError("the checkpoint has no Audio-MAE decoder (an encoder-only or fine-tuned checkpoint?)")
    out = {f"decoder.{k[len('decoder_'):]}": v for k, v in sd.items()
           if k.startswith(("decoder_embed.", "decoder_blocks.", "decoder_norm.", "decoder_pred."))}
    out["decoder.mask_token"] = sd["mask_token"]
    n_freq = objective.decoder.pos_embed.table.shape[1]
    out.update({f"decoder.pos_embed.{k}": v for k, v in split_table(sd["decoder_pos_embed"], n_freq).items()})
    return out
