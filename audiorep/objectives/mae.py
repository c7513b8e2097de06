"""Audio-MAE pretraining: patchify -> mask -> encode -> decode -> loss.

The encoder (an audiorep Encoder with a non-overlapping ViT) sees only the kept ~20% of
the patch tokens; a light decoder puts mask tokens back at the dropped positions and
predicts every patch's pixels; the loss is the per-patch MSE on the dropped patches,
with targets normalized per patch (norm_pix_loss) as in the released pretraining.

Decoder kinds (each a stack of one or two small block modules):
  "local"  Swin-V2-style window blocks (the released decoder_mode=1): scaled cosine
           attention inside (4, 4)-token windows, shifted by (2, 0) on odd blocks,
           continuous position bias, post-norm residuals;
  "global" pre-norm ViT blocks over all tokens, the cls token included (decoder_mode=0);
  "hybrid" window blocks, then global attention in the last block (the paper's variant;
           the released code has none).

Layout: features [B, F, T] (mel bins x frames), tokens time-major (k = t * F' + f). A
patch's pixels are ordered (time in patch, freq in patch) as the released `patchify`
of a [T, F] image, so a released decoder's `decoder_pred` rows keep their meaning.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..convert import load_objective_weights
from ..layers import Block, Mlp, TablePosEmbed, xavier_init
from ..masking import masked_from_keep, random_keep, restore_ids, time_freq_keep
from ..monitor import representation_stats

DECODERS = ("local", "global", "hybrid")
MASKINGS = ("random", "time_freq")


@dataclass(frozen=True)
class MAEConfig:
    mask_ratio: float = 0.8       # "random": fraction of patch tokens dropped (argsort of noise)
    masking: str = "random"       # one of MASKINGS; "time_freq" = the released mask_2d option
    mask_time: float = 0.7        # "time_freq": fraction of time columns dropped
    mask_freq: float = 0.3        # "time_freq": fraction of freq rows dropped
    norm_pix_loss: bool = True    # normalize each target patch (mean 0, unbiased var 1)
    decoder: str = "local"        # one of DECODERS
    decoder_dim: int = 512
    decoder_depth: int = 16       # released: 16 local blocks (the paper's global decoder: 8)
    decoder_heads: int = 16
    mlp_ratio: float = 4.0
    window: tuple[int, int] = (4, 4)  # (time, freq) tokens per attention window
    shift: tuple[int, int] = (2, 0)   # (time, freq) roll of odd local blocks
    meta_hidden: int = 384        # hidden width of the position-bias MLP
    norm_eps: float = 1e-6


# ----------------------------------------------------------------------------- blocks


def log_relative_coords(window: tuple[int, int], device=None) -> torch.Tensor:
    """[A * A, 2] (time, freq) offsets between all token pairs of a window, log-spaced:
    sign(d) * log(1 + |d|); row i * A + j holds position(i) - position(j)."""
    t, f = torch.meshgrid(torch.arange(window[0], device=device), torch.arange(window[1], device=device), indexing="ij")
    coords = torch.stack([t.flatten(), f.flatten()], dim=1)  # [A, 2]
    d = (coords[:, None] - coords[None]).flatten(0, 1).float()  # [A * A, 2]
    return d.sign() * d.abs().log1p()


class WindowAttention(nn.Module):
    """Swin-V2 attention inside a window: cosine similarity / tau (a learned temperature per
    head, at least 0.01) + a position bias that an MLP computes from relative coordinates."""

    def __init__(self, dim: int, heads: int, meta_hidden: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.meta_mlp = nn.Sequential(OrderedDict(  # dropout 0.1 on the bias as released
            fc1=nn.Linear(2, meta_hidden), act=nn.ReLU(), drop1=nn.Dropout(0.1),
            fc2=nn.Linear(meta_hidden, heads), drop2=nn.Dropout(0.1)))
        self.tau = nn.Parameter(torch.ones(heads))

    def position_bias(self, window: tuple[int, int]) -> torch.Tensor:
        area = window[0] * window[1]
        bias = self.meta_mlp(log_relative_coords(window, self.tau.device))  # [A * A, H]
        return bias.T.reshape(self.heads, area, area)  # [H, A, A]

    def forward(self, x: torch.Tensor, window: tuple[int, int], mask: torch.Tensor | None) -> torch.Tensor:
        """x [B, W, A, D] (B clips, W windows of A tokens); mask [W, A, A] (0 or -100) or None."""
        B, W, A, D = x.shape
        qkv = self.qkv(x).view(B * W, A, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # [3, BW, H, A, Dh]
        # q.k / max(|q||k|, 1e-6) in the release; normalizing each vector differs only for near-zero ones
        q = F.normalize(qkv[0], dim=-1) / self.tau.clamp(min=0.01).to(qkv.dtype)[:, None, None]
        k = F.normalize(qkv[1], dim=-1)
        bias = self.position_bias(window)[None]  # [1, H, A, A]
        if mask is not None:
            bias = (bias + mask[:, None]).repeat(B, 1, 1, 1)  # [B * W, H, A, A], windows clip-major
        x = F.scaled_dot_product_attention(q, k, qkv[2], attn_mask=bias.to(q.dtype), scale=1.0)  # [BW, H, A, Dh]
        return self.proj(x.transpose(1, 2).reshape(B, W, A, D))


class WindowBlock(nn.Module):
    """Swin-V2 block on the (time, freq) token grid: post-norm residuals,
    x = x + norm1(window_attn(x)); x = x + norm2(mlp(x)). Shifted blocks roll the grid
    by -shift first and mask attention between tokens that the roll brought together."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, window: tuple[int, int],
                 shift: tuple[int, int], meta_hidden: int, eps: float):
        super().__init__()
        self.window, self.shift = tuple(window), tuple(shift)
        self.attn = WindowAttention(dim, heads, meta_hidden)
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm2 = nn.LayerNorm(dim, eps=eps)

    def fit(self, grid: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
        """Window and shift for this grid: a window is clipped to the grid; no shift along an
        axis that one window covers."""
        window = tuple(min(g, w) for g, w in zip(grid, self.window))
        shift = tuple(0 if g <= w else s for g, w, s in zip(grid, window, self.shift))
        if any(g % w for g, w in zip(grid, window)):
            raise ValueError(f"token grid {grid} is not a multiple of the decoder window {window}")
        return window, shift

    def shift_mask(self, grid, window, shift, device) -> torch.Tensor | None:
        """[W, A, A]: -100 between tokens of a window that come from different regions of the
        rolled grid (the last `window` rows: before / after the wrapped `shift` rows)."""
        if not any(shift):
            return None
        region = [torch.zeros(n, dtype=torch.long, device=device) for n in grid]
        for axis in range(2):
            if shift[axis]:
                pos = torch.arange(grid[axis], device=device)
                region[axis] = (pos >= grid[axis] - window[axis]).long() + (pos >= grid[axis] - shift[axis]).long()
        ids = (region[0][:, None] * 3 + region[1][None]).float()  # [T', F']
        ids = partition(ids[None, ..., None], window)[0, ..., 0]  # [W, A]
        return (ids[:, :, None] != ids[:, None, :]).float() * -100.0

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """x [B, T' * F', D] patch tokens, no prefix."""
        B, N, D = x.shape
        window, shift = self.fit(grid)
        h = x.view(B, *grid, D).roll((-shift[0], -shift[1]), dims=(1, 2))  # [B, T', F', D]
        h = self.attn(partition(h, window), window, self.shift_mask(grid, window, shift, x.device))  # [B, W, A, D]
        h = unpartition(h, grid, window).roll(shift, dims=(1, 2)).reshape(B, N, D)
        x = x + self.norm1(h)
        return x + self.norm2(self.mlp(x))


def partition(x: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
    """[B, T', F', D] -> [B, W, A, D]: windows in time-major order, tokens time-major inside."""
    B, T, Fq, D = x.shape
    x = x.view(B, T // window[0], window[0], Fq // window[1], window[1], D)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(B, -1, window[0] * window[1], D)


def unpartition(x: torch.Tensor, grid: tuple[int, int], window: tuple[int, int]) -> torch.Tensor:
    """[B, W, A, D] -> [B, T', F', D], the inverse of `partition`."""
    B, D = x.shape[0], x.shape[-1]
    x = x.view(B, grid[0] // window[0], grid[1] // window[1], window[0], window[1], D)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(B, grid[0], grid[1], D)


class GlobalBlock(Block):
    """Pre-norm ViT block over all tokens; takes (and ignores) the grid like WindowBlock."""

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        return super().forward(x)


# ---------------------------------------------------------------------------- decoder


class Decoder(nn.Module):
    """Encoder tokens of the kept patches -> pixel predictions for every patch."""

    def __init__(self, cfg: MAEConfig, enc_dim: int, grid: tuple[int, int], n_prefix: int, patch_pixels: int):
        super().__init__()
        if cfg.decoder not in DECODERS:
            raise ValueError(f"MAEConfig.decoder={cfg.decoder!r}: expected one of {DECODERS}")
        dim = cfg.decoder_dim
        self.keep_prefix = cfg.decoder == "global"  # window blocks work on the patch grid only
        self.embed = nn.Linear(enc_dim, dim)
        self.mask_token = nn.Parameter(nn.init.normal_(torch.zeros(1, 1, dim), std=0.02))
        self.pos_embed = TablePosEmbed(*grid, n_prefix, dim, learned=False)
        n_local = {"local": cfg.decoder_depth, "global": 0, "hybrid": cfg.decoder_depth - 1}[cfg.decoder]
        self.blocks = nn.ModuleList(
            WindowBlock(dim, cfg.decoder_heads, cfg.mlp_ratio, cfg.window, cfg.shift if i % 2 else (0, 0),
                        cfg.meta_hidden, cfg.norm_eps) if i < n_local else
            GlobalBlock(dim, cfg.decoder_heads, cfg.mlp_ratio, eps=cfg.norm_eps)
            for i in range(cfg.decoder_depth))
        self.norm = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.pred = nn.Linear(dim, patch_pixels)

    def no_weight_decay(self) -> set[str]:
        return {"mask_token"}

    def forward(self, tokens: torch.Tensor, ids_restore: torch.Tensor, grid: tuple[int, int], prefix: int) -> torch.Tensor:
        """tokens [B, P + K, D_enc] (kept patches in `keep` order), ids_restore [B, N]
        -> pred [B, N, patch_pixels] in token order."""
        x = self.embed(tokens)  # [B, P + K, D]
        B, N, D = x.shape[0], ids_restore.shape[1], x.shape[-1]
        patches = torch.cat([x[:, prefix:], self.mask_token.expand(B, N - (x.shape[1] - prefix), D)], dim=1)  # [B, N, D]
        patches = patches.gather(1, ids_restore[..., None].expand(-1, -1, D))  # [B, N, D] in token order
        patches = patches + self.pos_embed(grid[0]).flatten(0, 1)
        if self.keep_prefix:
            x = torch.cat([x[:, :prefix] + self.pos_embed.prefix[:prefix], patches], dim=1)  # [B, P + N, D]
        else:
            x, prefix = patches, 0
        for block in self.blocks:
            x = block(x, grid)
        return self.pred(self.norm(x))[:, prefix:]  # [B, N, patch_pixels]


# -------------------------------------------------------------------------- objective


class MAE(nn.Module):
    """Masked autoencoder objective around an audiorep Encoder (see the module docstring)."""

    def __init__(self, encoder: nn.Module, cfg: MAEConfig = MAEConfig(), num_classes: int = 0):
        super().__init__()
        bb = encoder.config.backbone
        if tuple(bb.stride) != tuple(bb.patch):
            raise ValueError(f"MAE needs non-overlapping patches; backbone has patch {bb.patch}, stride {bb.stride}")
        if cfg.masking not in MASKINGS:
            raise ValueError(f"MAEConfig.masking={cfg.masking!r}: expected one of {MASKINGS}")
        self.encoder, self.cfg = encoder, cfg
        self.patch = tuple(bb.patch)  # (freq, time)
        grid = encoder.backbone.grid(bb.max_frames)
        self.decoder = Decoder(cfg, bb.dim, grid, bb.prefix, self.patch[0] * self.patch[1])
        self.frame_multiple = self.patch[1] * (1 if cfg.decoder == "global" else cfg.window[0])
        self.decoder.apply(xavier_init)

    def pad_frames(self, feats: torch.Tensor) -> torch.Tensor:
        """[B, F, T] -> [B, F, T_pad]: zero frames up to whole patches (and whole decoder
        windows), as the release zero-pads clips to 1024 frames."""
        return F.pad(feats, (0, -feats.shape[-1] % self.frame_multiple))

    def patchify(self, feats: torch.Tensor) -> torch.Tensor:
        """[B, F, T] -> pixel targets [B, N = T' * F', pt * pf], time-major tokens, each
        patch's pixels ordered (time in patch, freq in patch)."""
        B, Fq, T = feats.shape
        pf, pt = self.patch
        x = feats[:, : Fq // pf * pf, : T // pt * pt].reshape(B, Fq // pf, pf, T // pt, pt)  # [B, F', pf, T', pt]
        return x.permute(0, 3, 1, 4, 2).reshape(B, (T // pt) * (Fq // pf), pt * pf)  # [B, T' * F', pt * pf]

    def mask(self, B: int, grid: tuple[int, int], device=None, noise=None) -> tuple[torch.Tensor, torch.Tensor]:
        """-> keep [B, K], ids_restore [B, N]. `noise` fixes the draw: [B, N] for "random",
        (noise_t [B, T'], noise_f [B, F']) for "time_freq"."""
        if self.cfg.masking == "random":
            return random_keep(B, grid, self.cfg.mask_ratio, noise=noise, device=device)
        noise_t, noise_f = noise if noise is not None else (None, None)
        drop_t = grid[0] - int(grid[0] * (1 - self.cfg.mask_time))
        drop_f = grid[1] - int(grid[1] * (1 - self.cfg.mask_freq))
        keep = time_freq_keep(B, grid, drop_t, drop_f, noise_t=noise_t, noise_f=noise_f, device=device)
        return keep, restore_ids(keep, grid[0] * grid[1])

    def encode(self, feats: torch.Tensor, keep: torch.Tensor):
        """[B, F, T], keep [B, K] -> BackboneOutput with tokens [B, P + K, D] (final norm)."""
        return self.encoder.backbone(feats, keep=keep)

    def decode(self, tokens: torch.Tensor, ids_restore: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """[B, P + K, D] -> pred [B, N, pt * pf]."""
        return self.decoder(tokens, ids_restore, grid, self.encoder.config.backbone.prefix)

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        with torch.no_grad():
            feats = self.pad_frames(self.encoder.frontend(batch["wave"]))  # [B, F, T]
        target = self.patchify(feats)  # [B, N, pt * pf]
        grid = self.encoder.backbone.grid(feats.shape[-1])
        keep, ids_restore = self.mask(feats.shape[0], grid, feats.device)
        tokens = self.encode(feats, keep).tokens  # [B, P + K, D]
        pred = self.decode(tokens, ids_restore, grid)
        masked = masked_from_keep(keep, target.shape[1])
        loss = reconstruction_loss(pred, target, masked, self.cfg.norm_pix_loss)
        prefix = self.encoder.config.backbone.prefix
        stats = representation_stats(tokens[:, prefix:].mean(1))  # of each clip's mean visible token
        return loss, {"visible_tokens": float(keep.shape[1]), **stats}

    def load_audiomae(self, source) -> None:
        """Load a released Audio-MAE pretraining checkpoint (path, or its state_dict): the
        encoder and the decoder, through convert/audiomae.py."""
        load_objective_weights(self, source, "audiomae")


def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, masked: torch.Tensor, norm_pix: bool) -> torch.Tensor:
    """Mean over masked patches of the per-patch MSE. pred, target [B, N, pixels]; masked [B, N]."""
    if norm_pix:
        mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)  # unbiased, as released
        target = (target - mean) / (var + 1e-6).sqrt()
    per_patch = (pred - target).pow(2).mean(dim=-1)  # [B, N]
    masked = masked.to(per_patch.dtype)
    return (per_patch * masked).sum() / masked.sum()
