"""Transformer building blocks shared by every backbone and decoder.

Parameter names follow timm (`attn.qkv`, `mlp.fc1`, `norm1`...) so official checkpoints
load through small key maps. Attention runs through F.scaled_dot_product_attention.
"""
from __future__ import annotations


import torch
import torch.nn as nn
import torch.nn.functional as F


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, qkv_bias: bool = True):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, N, D = x.shape
        qkv = self.qkv(x).view(B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # [3, B, H, N, Dh]
        x = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=attn_mask)  # [B, H, N, Dh]
        return self.proj(x.transpose(1, 2).reshape(B, N, D))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero whole samples' residual branch with probability p."""
    if p == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - p)
    return x * keep / (1 - p)


class Block(nn.Module):
    """Pre-norm transformer block (ViT/DeiT)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 eps: float = 1e-6, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + drop_path(self.attn(self.norm1(x), attn_mask), self.drop_path, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)


class PatchEmbed(nn.Module):
    """[B, F, T] spectrogram -> [B, D, F', T'] patch grid (overlapping when stride < patch)."""

    def __init__(self, patch: tuple[int, int], stride: tuple[int, int], dim: int, in_chans: int = 1):
        super().__init__()
        self.patch, self.stride = tuple(patch), tuple(stride)
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=self.patch, stride=self.stride)

    def grid(self, n_freq: int, n_frames: int) -> tuple[int, int]:
        """(time, freq) token counts for an input of n_freq x n_frames."""
        frames = max(n_frames, self.patch[1])
        return (frames - self.patch[1]) // self.stride[1] + 1, (n_freq - self.patch[0]) // self.stride[0] + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] < self.patch[1]:  # shorter than one patch: zero-pad to one patch of frames
            x = F.pad(x, (0, self.patch[1] - x.shape[-1]))
        return self.proj(x.unsqueeze(1))  # [B, D, F', T']


def sincos_1d(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """[N] positions -> [N, dim] as [sin(p*w), cos(p*w)], w_i = 10000^(-i/(dim/2))."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = positions.double()[:, None] * omega[None]  # [N, dim/2]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def sincos_table(n_time: int, n_freq: int, dim: int) -> torch.Tensor:
    """Audio-MAE's fixed 2-D sin-cos table as its released code builds it -> [T', F', D].

    Token k = t * F' + f (time-major) gets concat(sincos(k % T'), sincos(k // T')): the
    released grid is laid out (freq, time) while tokens are flattened time-major, so the
    two halves do not encode (t, f) geometrically. Released weights were trained with it.
    """
    k = torch.arange(n_time * n_freq)
    table = torch.cat([sincos_1d(k % n_time, dim // 2), sincos_1d(k // n_time, dim // 2)], dim=1)
    return table.view(n_time, n_freq, dim)


class FactorizedPosEmbed(nn.Module):
    """PaSST: separate learned freq and time embeddings (time cropped to the input, from
    `offset`: PaSST's training crops at a random offset, its inference from 0)."""

    def __init__(self, n_time: int, n_freq: int, n_prefix: int, dim: int):
        super().__init__()
        self.time = nn.Parameter(torch.zeros(n_time, dim))
        self.freq = nn.Parameter(torch.zeros(n_freq, dim))
        self.prefix = nn.Parameter(torch.zeros(n_prefix, dim))
        for p in self.parameters():
            nn.init.trunc_normal_(p, std=0.02)

    def forward(self, n_time: int, offset: int = 0) -> torch.Tensor:
        check_length(offset + n_time, self.time.shape[0])
        return self.time[offset:offset + n_time, None] + self.freq[None]  # [T', F', D]


class TablePosEmbed(nn.Module):
    """One embedding per (time, freq) token, learned (ASiT) or fixed sin-cos (Audio-MAE)."""

    def __init__(self, n_time: int, n_freq: int, n_prefix: int, dim: int, learned: bool):
        super().__init__()
        if learned:
            self.table = nn.Parameter(nn.init.trunc_normal_(torch.zeros(n_time, n_freq, dim), std=0.02))
            self.prefix = nn.Parameter(nn.init.trunc_normal_(torch.zeros(n_prefix, dim), std=0.02))
        else:
            self.register_buffer("table", sincos_table(n_time, n_freq, dim))
            self.register_buffer("prefix", torch.zeros(n_prefix, dim))

    def forward(self, n_time: int) -> torch.Tensor:
        check_length(n_time, self.table.shape[0])
        return self.table[:n_time]  # [T', F', D]


def check_length(n_time: int, max_time: int) -> None:
    if n_time > max_time:
        raise ValueError(f"input has {n_time} time patches but the model covers {max_time}: "
                         "window longer audio (embed.py does) or build the model with more max_frames")


def init_weights(m: nn.Module, xavier: bool = False) -> None:
    """timm / MAE init, for `module.apply`: Linear weights truncated-normal (std 0.02) or
    xavier-uniform, zero biases, unit LayerNorms."""
    if isinstance(m, nn.Linear):
        if xavier:
            nn.init.xavier_uniform_(m.weight)
        else:
            nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def xavier_init(m: nn.Module) -> None:
    """The released Audio-MAE decoder and EnCodecMAE init (xavier-uniform linears)."""
    init_weights(m, xavier=True)
