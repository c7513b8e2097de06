"""EAT (Gazneli et al. 2022, "End-to-end audio strikes back"): a 1-D conv stack over the raw
waveform, then a small transformer with a cls token (backbone kind "conv").

    waveform [B, 1, S] -> stem (k7) -> anti-aliased Down stages x `factors`, each doubling the
    channels, a residual block after every other one -> two dilated stages (residual blocks,
    dilations 1, 3, 9, then Down 2) -> 1x1 projection to `dim` -> [cls] + tokens + learned
    positions -> post-norm GELU transformer (torch's nn.TransformerEncoderLayer, as the
    official model) -> LayerNorm.

One token covers prod(factors) * 4 samples (1024 for the paper's [4, 4, 4, 4]: ~46 ms at
22.05 kHz); an input of S samples gives ceil(S / 1024) tokens. Every conv pads by
reflection, so an input must be longer than the widest reflection at every stage: for
[4, 4, 4, 4] at least 32257 samples (32 tokens). The official model takes exactly its
training length (it zero-pads or crops every clip to `clip_length` tokens); here shorter
inputs use the first position rows and the encoder zero-pads inputs below the minimum.
BatchNorm behaves as in the official model: batch statistics in training, running
statistics in eval. Parameter names follow the official module with plainer names for its
nn.Sequential indices (convert/eat.py maps them).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import BackboneOutput, unsupported

DILATIONS = (1, 3, 9)   # residual blocks of each dilated stage
DILATED_FACTORS = (2, 2)  # the two dilated stages' downsampling


@dataclass(frozen=True)
class ConvConfig:
    kind: str = "conv"
    channels: int = 16                         # nf: stem width, doubled by every Down stage
    factors: tuple[int, ...] = (4, 4, 4, 4)    # Down strides before the dilated stages
    kernel: int = 15                           # depthwise kernel of the residual blocks
    dim: int = 128                             # transformer width
    depth: int = 4
    heads: int = 8
    ff: int = 512                              # transformer feed-forward width
    dropout: float = 0.1                       # transformer dropout (attention, residual, feed-forward)
    clip_tokens: int = 216                     # tokens the positions cover (official clip_length: AudioSet's
                                               # 221184 samples = 10 s; ESC-50 used 112, Speech Commands 64)


class ConvBN(nn.Module):
    """Reflection pad -> Conv1d (no bias) -> BatchNorm -> LeakyReLU(0.2); length kept.
    Each conv stage declares `stride` (length divisor) and `reach` (widest reflection pad)."""

    stride = 1

    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int = 1, groups: int = 1):
        super().__init__()
        self.pad = self.reach = dilation * (kernel // 2)
        self.conv = nn.Conv1d(c_in, c_out, kernel, dilation=dilation, groups=groups, bias=False)
        self.bn = nn.BatchNorm1d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (self.pad, self.pad), mode="reflect") if self.pad else x
        return F.leaky_relu(self.bn(self.conv(x)), 0.2)


class Down(ConvBN):
    """Double the channels (conv k = d + 1), then blur-downsample by d: a fixed triangular
    filter of length 2d + 1 (e.g. [1, 2, 3, 4, 5, 4, 3, 2, 1] / 25), reflect-padded by d,
    depthwise with stride d. ceil(L / d) samples out."""

    def __init__(self, channels: int, d: int):
        super().__init__(channels, 2 * channels, d + 1)
        self.stride = d
        ramp = torch.arange(1, d + 2, dtype=torch.float32)  # 1 .. d + 1
        taps = torch.cat([ramp, ramp.flip(0)[1:]])  # [2d + 1]
        self.register_buffer("filt", (taps / taps.sum()).repeat(2 * channels, 1, 1))  # [C, 1, 2d + 1]
        self.reach = max(self.pad, d)  # widest reflection, for the minimum input length

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(super().forward(x), (self.stride, self.stride), mode="reflect")
        return F.conv1d(x, self.filt, stride=self.stride, groups=x.shape[1])


class ResBlock(nn.Module):
    """shortcut(x) + block_f(x) + block_t(x): a 1x1 conv with bias, a pointwise ConvBN and a
    depthwise, dilated ConvBN (the official ResBlock1dTF)."""

    stride = 1

    def __init__(self, dim: int, kernel: int, dilation: int = 1):
        super().__init__()
        self.block_t = ConvBN(dim, dim, kernel, dilation, groups=dim)
        self.block_f = ConvBN(dim, dim, 1)
        self.shortcut = nn.Conv1d(dim, dim, 1)
        self.reach = self.block_t.reach

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.block_f(x) + self.block_t(x)


class ConvTransformer(nn.Module):
    def __init__(self, cfg: ConvConfig, hop_s: float):
        super().__init__()
        self.cfg, self.hop_s = cfg, hop_s
        self.dim, self.in_features, self.num_layers = cfg.dim, 1, cfg.depth
        nf = cfg.channels
        self.stem = ConvBN(1, nf, 7)
        down = []
        for i, d in enumerate(cfg.factors):
            down.append(Down(nf, d))
            nf *= 2
            if i % 2 == 0:
                down.append(ResBlock(nf, cfg.kernel))
        self.down = nn.Sequential(*down)
        dilated = []
        for d in DILATED_FACTORS:
            dilated += [ResBlock(nf, cfg.kernel, dilation) for dilation in DILATIONS]
            dilated.append(Down(nf, d))
            nf *= 2
        self.dilated = nn.Sequential(*dilated)
        self.project = nn.Conv1d(nf, cfg.dim, 1)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.clip_tokens + 1, cfg.dim))
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(cfg.dim, cfg.heads, cfg.ff, cfg.dropout, activation="gelu", batch_first=True)
            for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim)
        self.token_samples = math.prod(cfg.factors) * math.prod(DILATED_FACTORS)
        self.frames = (self.min_samples(), cfg.clip_tokens * self.token_samples)
        self.apply(_init_weights)

    def conv_stages(self) -> list[nn.Module]:
        return [self.stem, *self.down, *self.dilated]

    def num_tokens(self, samples: int) -> int:
        for layer in self.conv_stages():
            samples = -(-samples // layer.stride)
        return samples

    def min_samples(self) -> int:
        """Shortest input for which every reflection pad is narrower than its layer's input."""
        need = 1
        for layer in reversed(self.conv_stages()):  # input length that leaves >= `need` after this layer
            need = max(layer.reach + 1, (need - 1) * layer.stride + 1)
        return need

    def layer_id(self, name: str) -> int:
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return self.num_layers + 1 if name.startswith("norm.") else 0

    def no_weight_decay(self) -> set[str]:
        """None besides the 1-d parameters: the official optimizer decays the cls token and positions."""
        return set()

    def token_padding(self, padding: torch.Tensor, n_tokens: int) -> torch.Tensor:
        """[B, S] padded samples -> [B, K]: a token is padding when its first sample is."""
        return padding[:, :: self.token_samples][:, :n_tokens]

    def conv_tokens(self, wave: torch.Tensor) -> torch.Tensor:
        """[B, 1, S] -> conv tokens [B, D, K] before the transformer."""
        if wave.ndim != 3 or wave.shape[1] != 1:
            raise ValueError(f"conv backbone expects [batch, 1, samples], got shape {tuple(wave.shape)}")
        lo, hi = self.frames
        if not lo <= wave.shape[-1] <= hi:
            raise ValueError(f"conv backbone takes {lo} to {hi} samples ({self.num_tokens(lo)} to "
                             f"{self.cfg.clip_tokens} tokens), got {wave.shape[-1]}: pad short audio, window long audio")
        x = self.dilated(self.down(self.stem(wave)))  # [B, C, S / token_samples]
        return self.project(x)  # [B, D, K]

    def forward(self, feats: torch.Tensor, keep: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                padding: torch.Tensor | None = None, layers: list[int] | None = None) -> BackboneOutput:
        """feats [B, 1, S] waveform; keep [B, K] token indices; padding [B, S] True = padded sample;
        layers: transformer blocks whose outputs go to `hidden`."""
        unsupported("conv", mask=mask)
        B = feats.shape[0]
        x = self.conv_tokens(feats).transpose(1, 2)  # [B, K, D]
        K = x.shape[1]
        x = x + self.pos_embed[:, 1:K + 1]
        times = (torch.arange(K, device=x.device) + 0.5) * self.token_samples * self.hop_s  # [K]
        token_pad = self.token_padding(padding, K) if padding is not None else None
        if keep is not None:
            x = x.gather(1, keep[..., None].expand(-1, -1, x.shape[-1]))  # [B, K', D]
            times = times[keep]  # [B, K']
            token_pad = token_pad.gather(1, keep) if token_pad is not None else None
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(B, -1, -1)  # [B, 1, D]
        x = torch.cat([cls, x], dim=1)  # [B, 1 + K, D]
        key_pad = F.pad(token_pad, (1, 0)) if token_pad is not None else None  # the cls token is never padding
        hidden = []
        for i, block in enumerate(self.blocks):
            x = block(x, src_key_padding_mask=key_pad)
            if layers is not None and i in layers:
                hidden.append(x)
        return BackboneOutput(self.norm(x), 1, times, keep=keep, padding=token_pad,
                              hidden=hidden if layers is not None else None)


def _init_weights(m: nn.Module) -> None:
    """The official init: convs N(0, 0.02) with zero bias, norms 1 / 0, linear biases 0
    (linear weights keep torch's defaults); cls token and positions start at zero."""
    if isinstance(m, nn.Conv1d):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.BatchNorm1d, nn.LayerNorm)):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Linear) and m.bias is not None:
        nn.init.zeros_(m.bias)
