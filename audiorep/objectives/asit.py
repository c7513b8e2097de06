"""ASiT pretraining: corrupt -> encode -> project / reconstruct -> distil from an EMA teacher.

Each clip comes as two crops (views). The student sees their spectrograms with groups of
pixels corrupted (`masking.gmml_corrupt`, as released: each crop either zeroed at 50-70%, or,
half the time, with 30% pasted from another clip) and is trained by three losses:
  recon   L1 between the reconstruction head's output and the clean spectrogram, over
          the corrupted pixels;
  local   per data token: cross-entropy between the teacher's sharpened, centred
          prototype distribution (clean view) and the student's (corrupted view);
  global  the same on the cls token, across views (student view 1 vs teacher view 0
          and vice versa).
The teacher is an EMA copy of the student's encoder and projection head (momentum
0.996 -> 1, cosine, per step), owned here and updated in `after_step`; it gets no
gradient. The run ships the teacher's encoder by default (`ASiTConfig.ship`).

Defaults follow the released code (Sara-Ahmed/ASiT): loss = global + local + 2 x recon,
the local loss over every data token. The paper's choices are config fields: weights
1/1/1 and the local loss on corrupted tokens only (Eq. 5).

Layout: features [B, F, T], tokens time-major (k = t * F' + f). The released code works
on [T, F] images; `convert/asit.py` maps its weights (patch and transposed-conv kernels
transposed, the same token order).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from ..ema import EMA, momentum_at
from ..layers import init_weights
from ..masking import gmml_corrupt
from ..monitor import entropy, representation_stats

SHIPS = ("teacher", "student")


@dataclass(frozen=True)
class ASiTConfig:
    ratio: float = 0.7              # zeroed share of a crop ~ U(min(0.5, ratio), ratio)
    alien_prob: float = 0.5         # probability that a crop is corrupted with another clip's pixels instead
    alien_ratio: float = 0.3        # ... at a share ~ U(min(0.5, alien_ratio), alien_ratio) (released: 0.3)
    alien_self: bool = False        # the donor may be the crop's own clip, leaving it clean (released: True)
    max_block: float = 0.3          # longest side of a corruption rectangle, fraction of frames / bins
    align: int = 1                  # rectangle corners and sides in multiples of this (16: patch-aligned)
    global_dim: int = 8192          # prototypes of the cls (global) head
    local_dim: int = 1024           # prototypes of the data-token (local) head
    head_hidden: int = 2048         # projection MLP, shared by both heads
    head_bottleneck: int = 256
    recon_hidden: int = 768         # reconstruction MLP
    recon_bottleneck: int = 128
    student_temp: float = 0.1
    teacher_temp: float = 0.04      # at step 0, linearly to teacher_temp_final ...
    teacher_temp_final: float = 0.07
    teacher_temp_warmup: float = 0.3  # ... over this fraction of the run (released: 30 of 100 epochs)
    center_momentum: float = 0.9
    momentum: float = 0.996         # teacher EMA momentum at step 0, cosine to 1 at the end
    w_global: float = 1.0
    w_local: float = 1.0
    w_recon: float = 2.0            # released code: 2; paper: 1
    local_corrupted_only: bool = False  # paper Eq. 5: local loss on tokens with >= half their pixels corrupted
    ship: str = "teacher"           # which encoder the run saves: one of SHIPS


# ----------------------------------------------------------------------------- heads


class WeightNormLinear(nn.Module):
    """Linear without bias, weight = g * v / ||v|| row-wise (torch weight_norm over dim 0);
    `weight_g` [out, 1] stays fixed at 1 as released (it is loaded, not trained)."""

    def __init__(self, dim: int, out: int):
        super().__init__()
        self.weight_g = nn.Parameter(torch.ones(out, 1), requires_grad=False)
        self.weight_v = nn.Parameter(nn.Linear(dim, out, bias=False).weight.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight_g * self.weight_v / self.weight_v.norm(dim=1, keepdim=True))


def mlp(dim: int, hidden: int, out: int, last_gelu: bool) -> nn.Sequential:
    layers = [nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, out)]
    return nn.Sequential(*layers, *([nn.GELU()] if last_gelu else []))


class ProjectionHead(nn.Module):
    """Released `CLSHead`: one 3-layer MLP, L2-normalized bottleneck, then prototypes:
    `cls_layer` for token 0 (global), `data_layer` for the data tokens (local)."""

    def __init__(self, dim: int, cfg: ASiTConfig):
        super().__init__()
        self.mlp = mlp(dim, cfg.head_hidden, cfg.head_bottleneck, last_gelu=False)
        self.cls_layer = WeightNormLinear(cfg.head_bottleneck, cfg.global_dim)
        self.data_layer = WeightNormLinear(cfg.head_bottleneck, cfg.local_dim)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, 1 + N, D] -> global logits [B, global_dim], local logits [B, N, local_dim]."""
        x = F.normalize(self.mlp(tokens), dim=-1)
        return self.cls_layer(x[:, 0]), self.data_layer(x[:, 1:])


class ReconstructionHead(nn.Module):
    """Released `RECHead`: MLP (GELU after every layer) per data token, then a transposed
    conv with kernel = stride = patch back to pixels."""

    def __init__(self, dim: int, cfg: ASiTConfig, patch: tuple[int, int]):
        super().__init__()
        self.mlp = mlp(dim, cfg.recon_hidden, cfg.recon_bottleneck, last_gelu=True)
        self.convTrans = nn.ConvTranspose2d(cfg.recon_bottleneck, 1, kernel_size=patch, stride=patch)

    def forward(self, patches: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """[B, N = T' * F', D] -> [B, F' * pf, T' * pt]."""
        x = self.mlp(patches)  # [B, N, C]
        x = x.unflatten(1, grid).permute(0, 3, 2, 1)  # [B, C, F', T']
        return self.convTrans(x).squeeze(1)  # [B, F, T]


class Branch(nn.Module):
    """What the teacher copies: the encoder and the projection head."""

    def __init__(self, encoder: nn.Module, head: ProjectionHead):
        super().__init__()
        self.encoder, self.head_cls = encoder, head


# ----------------------------------------------------------------------------- losses


def sharpen(teacher: torch.Tensor, center: torch.Tensor, teacher_temp: torch.Tensor) -> torch.Tensor:
    """The teacher's target: softmax of its centred logits at its temperature, [..., K] -> [..., K]."""
    return F.softmax((teacher.float() - center) / teacher_temp, dim=-1)


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, center: torch.Tensor,
                 student_temp: float, teacher_temp: torch.Tensor) -> torch.Tensor:
    """Per-row cross-entropy between the teacher's centred, sharpened softmax and the
    student's: student, teacher [..., K] logits, center [K] -> [...]."""
    target = sharpen(teacher, center, teacher_temp)
    return -(target * F.log_softmax(student.float() / student_temp, dim=-1)).sum(-1)


@torch.no_grad()
def update_center(center: torch.Tensor, teacher: torch.Tensor, momentum: float) -> None:
    """center <- momentum * center + (1 - momentum) * mean of the teacher logits [M, K] over
    every process (one all_reduce when a process group exists)."""
    stats = torch.cat([teacher.float().sum(0), teacher.new_tensor([teacher.shape[0]], dtype=torch.float32)])
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(stats)
    center.mul_(momentum).add_(stats[:-1] / stats[-1], alpha=1 - momentum)


def teacher_temp_at(step: int, total: int, cfg: ASiTConfig) -> float:
    """Linear warm-up from teacher_temp to teacher_temp_final over teacher_temp_warmup of the run."""
    warmup = cfg.teacher_temp_warmup * total
    progress = min(step / warmup, 1.0) if warmup > 0 else 1.0
    return cfg.teacher_temp + (cfg.teacher_temp_final - cfg.teacher_temp) * progress


# -------------------------------------------------------------------------- objective


class ASiT(nn.Module):
    """ASiT objective around an audiorep Encoder with a non-overlapping ViT (see the module docstring)."""

    def __init__(self, encoder: nn.Module, cfg: ASiTConfig = ASiTConfig(), num_classes: int = 0):
        super().__init__()
        bb = encoder.config.backbone
        if tuple(getattr(bb, "stride", ())) != tuple(getattr(bb, "patch", (None,))) or getattr(bb, "prefix", 0) != 1:
            raise ValueError(f"ASiT needs a ViT backbone with non-overlapping patches and one cls token; got {bb}")
        if not (cfg.w_recon or cfg.w_local or cfg.w_global):
            raise ValueError("ASiTConfig: w_recon, w_local and w_global are all 0; nothing to train")
        if cfg.ship not in SHIPS:
            raise ValueError(f"ASiTConfig.ship={cfg.ship!r}: expected one of {SHIPS}")
        self.encoder, self.cfg = encoder, cfg
        self.patch = tuple(bb.patch)  # (freq, time)
        self.head_cls = ProjectionHead(bb.dim, cfg)
        self.head_recons = ReconstructionHead(bb.dim, cfg, self.patch)
        self.head_cls.mlp.apply(init_weights)
        self.head_recons.mlp.apply(init_weights)
        unused = [m for m, w in ((self.head_recons, cfg.w_recon), (self.head_cls.data_layer, cfg.w_local),
                                 (self.head_cls.cls_layer, cfg.w_global), (self.head_cls.mlp, cfg.w_local + cfg.w_global))
                  if not w]
        for module in unused:  # a loss weighted 0 is skipped: its head is frozen, so DDP expects no gradient
            module.requires_grad_(False)
        self.teacher = EMA(Branch(encoder, self.head_cls))
        self.register_buffer("center_cls", torch.zeros(cfg.global_dim))
        self.register_buffer("center_data", torch.zeros(cfg.local_dim))
        self.register_buffer("teacher_temp", torch.tensor(teacher_temp_at(0, 1, cfg)))

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        """[B, 2, S] two crops per clip -> [2 * B, F, T] view-major (view 0 of every clip,
        then view 1), cut to whole patches."""
        if wave.ndim != 3 or wave.shape[1] != 2:
            raise ValueError(f"ASiT: batch['wave'] must hold two crops per clip [B, 2, S] (recipe views=2), "
                             f"got shape {tuple(wave.shape)}")
        with torch.no_grad():
            feats = self.encoder.frontend(wave.transpose(0, 1).flatten(0, 1))  # [2B, F, T]
        pf, pt = self.patch
        return feats[:, : feats.shape[1] // pf * pf, : feats.shape[2] // pt * pt]

    def corrupt(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[2B, F, T] -> (corrupted [2B, F, T], mask [2B, F, T] bool); alien blocks come from
        another clip of the same view."""
        c = self.cfg
        views = [gmml_corrupt(v, c.ratio, c.alien_prob, c.alien_ratio, c.max_block, c.align, c.alien_self)
                 for v in feats.chunk(2)]
        return torch.cat([v[0] for v in views]), torch.cat([v[1] for v in views])

    @torch.no_grad()
    def teach(self, clean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[B, F, T] clean spectrograms -> the teacher's cls token [B, D] and its global [B, C]
        and local [B, N, K] logits."""
        branch = self.teacher.model
        tokens = branch.encoder.backbone(clean).tokens  # [B, 1 + N, D]
        return (tokens[:, 0], *branch.head_cls(tokens))

    @torch.no_grad()
    def teacher_stats(self, t_token: torch.Tensor, t_cls: torch.Tensor, t_data: torch.Tensor) -> dict[str, float]:
        """What shows a collapsing teacher (read before the losses move the centres): the
        spread of its cls tokens (`monitor.representation_stats`), the mean entropy of its
        targets in nats (log K: uniform, 0: one-hot) and the norm of each centre."""
        stats = representation_stats(t_token, "teacher_emb")
        if self.cfg.w_global:
            stats["teacher_entropy"] = entropy(sharpen(t_cls, self.center_cls, self.teacher_temp))
            stats["center_norm"] = float(self.center_cls.norm())
        if self.cfg.w_local:
            stats["teacher_entropy_data"] = entropy(sharpen(t_data, self.center_data, self.teacher_temp))
            stats["center_data_norm"] = float(self.center_data.norm())
        return stats

    def recon_loss(self, recon: torch.Tensor, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean |reconstruction - clean| over the corrupted pixels; all [B, F, T]."""
        m = mask.to(recon.dtype)
        return ((recon - feats).abs() * m).sum() / m.sum().clamp(min=1)

    def local_loss(self, s_data: torch.Tensor, t_data: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Student vs teacher per data token of the same view ([B, N, K] each), averaged
        over all tokens or (local_corrupted_only) over the corrupted ones; updates the center."""
        c = self.cfg
        per_token = distill_loss(s_data, t_data, self.center_data, c.student_temp, self.teacher_temp)  # [B, N]
        update_center(self.center_data, t_data.flatten(0, 1), c.center_momentum)
        if not c.local_corrupted_only:
            return per_token.mean()
        weight = self.token_mask(mask).to(per_token.dtype)
        return (per_token * weight).sum() / weight.sum().clamp(min=1)

    def global_loss(self, s_cls: torch.Tensor, t_cls: torch.Tensor) -> torch.Tensor:
        """cls logits [2B, C] (view-major): student view 1 vs teacher view 0 and vice versa;
        updates the center."""
        c = self.cfg
        (s0, s1), (t0, t1) = s_cls.chunk(2), t_cls.chunk(2)
        loss = (distill_loss(s1, t0, self.center_cls, c.student_temp, self.teacher_temp).mean()
                + distill_loss(s0, t1, self.center_cls, c.student_temp, self.teacher_temp).mean()) / 2
        update_center(self.center_cls, t_cls, c.center_momentum)
        return loss

    def token_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """[B, F, T] pixel mask -> [B, N] tokens (time-major) with at least half their pixels corrupted."""
        share = F.avg_pool2d(mask[:, None].float(), self.patch)[:, 0]  # [B, F', T']
        return share.transpose(1, 2).flatten(1) >= 0.5

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.cfg
        feats = self.features(batch["wave"])  # [2B, F, T]
        corrupted, mask = self.corrupt(feats)
        out = self.encoder.backbone(corrupted)  # tokens [2B, 1 + N, D]
        parts, stats = {}, representation_stats(out.tokens[:, 0], "emb")  # the student's cls tokens
        if c.w_recon:
            parts["recon"] = self.recon_loss(self.head_recons(out.patches, out.grid), feats, mask)
        if c.w_local or c.w_global:
            s_cls, s_data = self.head_cls(out.tokens)
            t_token, t_cls, t_data = self.teach(feats)
            stats |= self.teacher_stats(t_token, t_cls, t_data)
            if c.w_local:
                parts["local"] = self.local_loss(s_data, t_data, mask)
            if c.w_global:
                parts["global"] = self.global_loss(s_cls, t_cls)
        weights = {"recon": c.w_recon, "local": c.w_local, "global": c.w_global}
        loss = sum(weights[k] * v for k, v in parts.items())
        logs = {f"loss_{k}": float(v.detach()) for k, v in parts.items()}
        return loss, {**logs, **stats, "corrupted": float(mask.float().mean()), "teacher_temp": float(self.teacher_temp)}

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int) -> None:
        """After optimizer step `step`: teacher EMA with the cosine momentum, and the teacher
        temperature of the next step."""
        self.teacher.update(Branch(self.encoder, self.head_cls), momentum_at(step, total_steps, self.cfg.momentum))
        self.teacher_temp.fill_(teacher_temp_at(step + 1, total_steps, self.cfg))

    def encoder_to_save(self) -> nn.Module:
        return self.teacher.model.encoder if self.cfg.ship == "teacher" else self.encoder
