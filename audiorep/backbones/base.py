"""The backbone contract: what every backbone returns, and the table of backbone kinds.

A backbone maps features [B, C, T] (channels, frames) to tokens. Its config is a frozen
dataclass whose `kind` field names it in BACKBONES; `register_backbone(Config, Module)`
adds a kind, from inside the package or outside it, and `build_backbone(cfg, hop_s)`
builds one. A backbone module has:

    __init__(cfg, hop_s)          hop_s: seconds per input frame (token times come from it)
    dim                           token width D
    frames                        (min, max) input frames it accepts
    in_features                   channels C it expects, or None for any
    num_layers                    blocks, for layer-wise learning-rate decay
    forward(feats, keep=None, mask=None, padding=None, layers=None) -> BackboneOutput
    layer_id(name) -> int         0 embeddings, i + 1 block i, num_layers + 1 after the blocks
    no_weight_decay() -> set      parameter names (relative) kept out of weight decay, besides 1-d ones

`keep` [B, K] token indices to keep (patchout, MAE), `mask` [B, N] bool tokens replaced by a
learned mask token, `padding` [B, T] bool padded frames of a variable-length batch,
`layers` blocks whose outputs go to `hidden`. A backbone raises ValueError for an input it
cannot honour.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import Registry

BACKBONES = Registry("backbone", default="vit")
MODULES: dict[str, type] = {}


@dataclass
class BackboneOutput:
    tokens: torch.Tensor                      # [B, P + K, D] after the final norm
    prefix: int                               # P: cls-like tokens come first
    times: torch.Tensor                       # [K] or [B, K]: centre of each non-prefix token, seconds from the window start
    grid: tuple[int, int] | None = None       # 2-D models: (T', F') of the full token grid
    keep: torch.Tensor | None = None          # [B, K] indices of the tokens present
    padding: torch.Tensor | None = None       # [B, K] True where a token is padding
    hidden: list[torch.Tensor] | None = None  # selected blocks' outputs, [B, P + K, D] each

    @property
    def patches(self) -> torch.Tensor:
        return self.tokens[:, self.prefix:]


def register_backbone(config_cls, module_cls) -> None:
    """Make `config_cls` (a frozen dataclass with a `kind` default) build `module_cls`."""
    BACKBONES.register(config_cls)
    MODULES[config_cls.kind] = module_cls


def build_backbone(cfg, hop_s: float):
    BACKBONES.config_class(cfg.kind)
    return MODULES[cfg.kind](cfg, hop_s)


def unsupported(name: str, **inputs) -> None:
    """ValueError for the inputs a backbone cannot honour (those that are not None)."""
    given = sorted(k for k, v in inputs.items() if v is not None)
    if given:
        raise ValueError(f"backbone {name!r} does not take {', '.join(given)}")
