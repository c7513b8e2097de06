"""Frame transformer (EnCodecMAE): one token per input frame, the released transformer.

features [B, C, T] -> Linear(C -> D) -> + scale * sin/cos position of each frame -> keep
(drop masked frames) -> ResiDual blocks over the kept frames, padded keys masked -> tokens.

The layout is what the released weights (habla-liaa/encodecmae) expect:
  - ResiDual normalization: two streams, x0 post-normed and x1 un-normalized;
    x0 = LN1(x0 + att(x0)), x1 = x1 + att(x0); x0 = LN2(x0 + ff(x0)), x1 = x1 + ff(x0);
    output x0 + LN(x1);
  - one feed-forward (Linear-ReLU-Linear) shared by every block of a stack;
  - attention without biases, heads interleaved (channel c belongs to head c % H);
  - interleaved sin/cos positions (even channels sin, odd cos) times a learned scalar.
No mask token: masked frames are dropped (`keep`); clips of a batch may keep different
numbers of frames, the empty slots of a row are marked by keep < 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import sincos_1d, xavier_init
from .base import BackboneOutput, unsupported


@dataclass(frozen=True)
class FrameConfig:
    kind: str = "frame"
    in_features: int = 256   # channels per frame: 256 fbank bins, or 128 EnCodec latents
    dim: int = 768
    depth: int = 10          # released: small 5, base 10, large 20 (dim 1024)
    heads: int = 12          # head width dim // heads (large: 1024 // 12 = 85, 1020 channels)
    ff_dim: int = 4096       # the shared feed-forward's hidden width (released default)
    max_frames: int = 300    # longest window: 4 s at 24 kHz, the released training crop
    centre: float = 1.0      # frame i's centre is (i + centre) hops from the window start: the
                             # released fbank frame (637 samples, 26.56 ms) spans two hops (318)
    norm_eps: float = 1e-5


def interleaved_sincos(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """[...] frame positions -> [..., dim]: channel 2i = sin(p w_i), 2i + 1 = cos(p w_i)."""
    table = sincos_1d(positions.flatten().cpu(), dim)  # [N, dim] as [sin..., cos...] (float64 on the CPU)
    table = table.view(-1, 2, dim // 2).transpose(1, 2).reshape(-1, dim)  # [N, dim] interleaved
    return table.view(*positions.shape, dim).to(positions.device)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))


class InterleavedAttention(nn.Module):
    """Self-attention without biases whose head h owns channels h, h + H, h + 2H, ... of
    the H * (dim // H) projected channels (1020 of 1024 for the released large model)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.inner = heads, dim // heads * heads
        self.qkv = nn.Linear(dim, 3 * self.inner, bias=False)
        self.proj = nn.Linear(self.inner, dim, bias=False)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        B, N, _ = x.shape
        qkv = self.qkv(x).view(B, N, 3, self.inner // self.heads, self.heads).permute(2, 0, 4, 1, 3)  # [3, B, H, N, Dh]
        x = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=attn_mask)  # [B, H, N, Dh]
        return self.proj(x.permute(0, 2, 3, 1).reshape(B, N, self.inner))  # channel d * H + h


class ResiDualBlock(nn.Module):
    def __init__(self, dim: int, heads: int, eps: float):
        super().__init__()
        self.attn = InterleavedAttention(dim, heads)
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.norm2 = nn.LayerNorm(dim, eps=eps)

    def forward(self, x0, x1, ff: FeedForward, attn_mask):
        a = self.attn(x0, attn_mask)
        x0, x1 = self.norm1(x0 + a), x1 + a
        f = ff(x0)
        return self.norm2(x0 + f), x1 + f


class ResiDualStack(nn.Module):
    """Positions + ResiDual blocks sharing one feed-forward + the final norm of the x1 stream."""

    def __init__(self, dim: int, depth: int, heads: int, ff_dim: int, eps: float = 1e-5):
        super().__init__()
        self.pos_scale = nn.Parameter(torch.tensor(1.0))
        self.ff = FeedForward(dim, ff_dim)
        self.blocks = nn.ModuleList(ResiDualBlock(dim, heads, eps) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.apply(xavier_init)
        with torch.no_grad():
            for block in self.blocks:  # the released q, k, v are three linears: init each as one
                for w in block.attn.qkv.weight.chunk(3):
                    nn.init.xavier_uniform_(w)

    def run(self, x: torch.Tensor, positions: torch.Tensor, padding: torch.Tensor | None,
            layers: list[int] | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """x [B, N, D] at frame `positions` ([N] or [B, N]); padding [B, N] True = ignored key
        -> (x0 + norm(x1) [B, N, D], the x0 stream after each block in `layers`)."""
        x = x + self.pos_scale * interleaved_sincos(positions, x.shape[-1]).to(x.dtype)
        attn_mask = None if padding is None else ~padding[:, None, None, :]  # [B, 1, 1, N], True = attend
        x0 = x1 = x
        hidden, wanted = [], {i % len(self.blocks) for i in layers or ()}  # -1: the last block
        for i, block in enumerate(self.blocks):
            x0, x1 = block(x0, x1, self.ff, attn_mask)
            if i in wanted:
                hidden.append(x0)
        return x0 + self.norm(x1), hidden


class Frame(ResiDualStack):
    """The frame backbone: features [B, C, T] -> one token per (kept) frame."""

    def __init__(self, cfg: FrameConfig, hop_s: float):
        if cfg.dim % 2 or cfg.heads > cfg.dim:
            raise ValueError(f"FrameConfig: dim {cfg.dim} must be even and at least heads ({cfg.heads})")
        super().__init__(cfg.dim, cfg.depth, cfg.heads, cfg.ff_dim, cfg.norm_eps)
        self.cfg, self.hop_s = cfg, hop_s
        self.proj = nn.Linear(cfg.in_features, cfg.dim)
        xavier_init(self.proj)
        self.dim, self.in_features, self.num_layers = cfg.dim, cfg.in_features, cfg.depth
        self.frames = (1, cfg.max_frames)

    def frame_times(self, positions: torch.Tensor) -> torch.Tensor:
        """Centre of frame i in seconds from the window start: (i + centre) hops, computed in
        float64 so frame i sits at exactly i hops after frame 0 (13.25 ms steps, no drift)."""
        return ((positions.double() + self.cfg.centre) * self.hop_s).float()

    def forward(self, feats: torch.Tensor, keep: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                padding: torch.Tensor | None = None, layers: list[int] | None = None) -> BackboneOutput:
        """feats [B, C, T]; keep [B, K] frames to keep (< 0: an empty slot); padding [B, T]
        True = padded frame; layers: blocks whose x0 stream goes to `hidden` (the released
        per-layer activations; the final output is `tokens`)."""
        unsupported("frame", mask=mask)
        B, C, T = feats.shape
        if C != self.in_features:
            raise ValueError(f"frame backbone expects {self.in_features} feature channels, got {C}")
        if T > self.frames[1]:
            raise ValueError(f"frame backbone: {T} frames but at most {self.frames[1]} (FrameConfig.max_frames); "
                             "window longer audio (embed.py does)")
        x = self.proj(feats.transpose(1, 2))  # [B, T, D]
        positions = torch.arange(T, device=feats.device)  # [T]
        if keep is not None:
            empty = keep < 0
            positions = keep.clamp(min=0)  # [B, K]
            x = x.gather(1, positions[..., None].expand(-1, -1, x.shape[-1]))  # [B, K, D]
            padding = empty if padding is None else empty | padding.gather(1, positions)
        tokens, hidden = self.run(x, positions, padding, layers)
        return BackboneOutput(tokens, 0, self.frame_times(positions), keep=keep, padding=padding,
                              hidden=hidden if layers is not None else None)

    def layer_id(self, name: str) -> int:
        """proj and positions 0, block i i + 1; the shared feed-forward serves every block,
        it goes with the last one; the final norm after the blocks."""
        if name.startswith(("proj.", "pos_scale")):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        if name.startswith("ff."):
            return self.num_layers
        return self.num_layers + 1

    def no_weight_decay(self) -> set[str]:
        return {"pos_scale"}
