"""Spectrogram ViT: patch grid -> (+ positions) -> keep/mask -> prefix tokens -> blocks -> norm.

One class covers PaSST (overlapping 16x16 patches, stride 10, cls + dist tokens,
factorized freq/time positions), Audio-MAE (non-overlapping patches, cls, fixed sin-cos
table) and ASiT (learned table). Input [B, F, T] (mel bins, frames); patch tokens are
flattened time-major (k = t * F' + f) so a token's index tells its time. Implements the
backbone contract of backbones/base.py (kind "vit").
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..layers import Block, FactorizedPosEmbed, PatchEmbed, TablePosEmbed, init_weights
from .base import BackboneOutput, unsupported

POS_EMBEDS = ("factorized", "learned", "sincos")


@dataclass(frozen=True)
class ViTConfig:
    kind: str = "vit"
    n_mels: int = 128            # input frequency bins
    max_frames: int = 998        # frames the positional embeddings cover
    patch: tuple[int, int] = (16, 16)   # (freq, time)
    stride: tuple[int, int] = (10, 10)  # (freq, time); = patch for non-overlapping
    dim: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    norm_eps: float = 1e-6
    prefix: int = 2              # 0, 1 (cls) or 2 (cls + dist)
    pos: str = "factorized"      # one of POS_EMBEDS
    mask_token: bool = False     # learned token for `mask` inputs (GMML-style)
    drop_path: float = 0.0


class ViT(nn.Module):
    def __init__(self, cfg: ViTConfig, hop_s: float):
        super().__init__()
        if cfg.pos not in POS_EMBEDS:
            raise ValueError(f"ViTConfig.pos={cfg.pos!r}: expected one of {POS_EMBEDS}")
        self.cfg, self.hop_s = cfg, hop_s
        self.dim, self.in_features, self.num_layers = cfg.dim, cfg.n_mels, cfg.depth
        self.patch_embed = PatchEmbed(cfg.patch, cfg.stride, cfg.dim)
        n_time, n_freq = self.patch_embed.grid(cfg.n_mels, cfg.max_frames)
        if cfg.pos == "factorized":
            self.pos_embed = FactorizedPosEmbed(n_time, n_freq, cfg.prefix, cfg.dim)
        else:
            self.pos_embed = TablePosEmbed(n_time, n_freq, cfg.prefix, cfg.dim, learned=cfg.pos == "learned")
        if cfg.prefix >= 1:
            self.cls_token = nn.Parameter(nn.init.trunc_normal_(torch.zeros(1, 1, cfg.dim), std=0.02))
        if cfg.prefix == 2:
            self.dist_token = nn.Parameter(nn.init.trunc_normal_(torch.zeros(1, 1, cfg.dim), std=0.02))
        if cfg.mask_token:
            self.mask_token = nn.Parameter(nn.init.trunc_normal_(torch.zeros(1, 1, cfg.dim), std=0.02))
        rates = torch.linspace(0, cfg.drop_path, cfg.depth).tolist()
        self.blocks = nn.ModuleList(
            Block(cfg.dim, cfg.heads, cfg.mlp_ratio, cfg.qkv_bias, cfg.norm_eps, rate) for rate in rates)
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.apply(init_weights)
        self.frames = (cfg.patch[1], self.max_input_frames())  # at least one patch of frames
        self.train_frames = cfg.max_frames  # training crops: what the positions were built for

    def grid(self, n_frames: int) -> tuple[int, int]:
        return self.patch_embed.grid(self.cfg.n_mels, n_frames)

    def max_input_frames(self) -> int:
        """Longest input (frames) whose time patches the positional embeddings cover:
        PaSST's 998-frame table also covers 10 s = 1000 frames."""
        n_time = self.grid(self.cfg.max_frames)[0]
        return self.cfg.patch[1] + n_time * self.cfg.stride[1] - 1

    def layer_id(self, name: str) -> int:
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return 0 if name.startswith(("patch_embed", "pos_embed", "cls_token", "dist_token", "mask_token")) else self.num_layers + 1

    def no_weight_decay(self) -> set[str]:
        return {n for n, _ in self.named_parameters() if n.startswith(("pos_embed", "cls_token", "dist_token", "mask_token"))}

    def token_times(self, grid: tuple[int, int]) -> torch.Tensor:
        """Centre time (s) of every patch token, time-major -> [T' * F']."""
        patch_t, stride_t = self.cfg.patch[1], self.cfg.stride[1]
        columns = (torch.arange(grid[0]) * stride_t + patch_t / 2) * self.hop_s  # [T']
        return columns.repeat_interleave(grid[1])

    def positions(self, n_time: int) -> torch.Tensor:
        """[T', F', D] position embeddings; in training PaSST's time table is cropped at a
        random offset (kkoutini/PaSST issue #42), in eval from 0."""
        if self.cfg.pos != "factorized":
            return self.pos_embed(n_time)
        spare = self.pos_embed.time.shape[0] - n_time
        offset = int(torch.randint(spare + 1, ())) if self.training and spare > 0 else 0
        return self.pos_embed(n_time, offset)

    def patchify(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, F, T] -> (position-embedded patch tokens [B, N = T' * F', D], positions [N, D])."""
        x = self.patch_embed(feats)  # [B, D, F', T']
        x = x.permute(0, 3, 2, 1)  # [B, T', F', D]
        pos = self.positions(x.shape[1])  # [T', F', D]
        return (x + pos).flatten(1, 2), pos.flatten(0, 1)  # [B, N, D], [N, D]

    def prefix_tokens(self, B: int) -> list[torch.Tensor]:
        tokens = [getattr(self, name) for name in ("cls_token", "dist_token")[: self.cfg.prefix]]
        return [(t + self.pos_embed.prefix[i]).expand(B, -1, -1) for i, t in enumerate(tokens)]

    def forward(self, feats: torch.Tensor, keep: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                padding: torch.Tensor | None = None, layers: list[int] | None = None) -> BackboneOutput:
        """feats [B, F, T]; keep [B, K] patch indices to keep (patchout, MAE); mask [B, N] bool
        (True = replace by the mask token); layers: block indices whose outputs to return."""
        unsupported("vit", padding=padding)
        B = feats.shape[0]
        x, pos = self.patchify(feats)  # [B, N, D], [N, D]
        grid = self.grid(feats.shape[-1])
        times = self.token_times(grid).to(feats.device)  # [N]
        if mask is not None:  # the mask token takes the place of the patch content; positions stay
            x = torch.where(mask[..., None], self.mask_token + pos, x)
        if keep is not None:
            x = x.gather(1, keep[..., None].expand(-1, -1, x.shape[-1]))  # [B, K, D]
            times = times[keep]  # [B, K]
        x = torch.cat(self.prefix_tokens(B) + [x], dim=1)  # [B, P + K, D]
        hidden = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if layers is not None and i in layers:
                hidden.append(x)
        return BackboneOutput(self.norm(x), self.cfg.prefix, times, grid, keep,
                              hidden=hidden if layers is not None else None)
