"""What tells a user that a run is collapsing or stalling, as numbers objectives log.

Every function takes tensors of one training step and returns plain floats, computed
without gradients, so an objective can add them to its `logs` at the cost of one small SVD.
How to read them: docs/training.md ("Is it learning?").
"""
from __future__ import annotations

import torch


@torch.no_grad()
def representation_stats(x: torch.Tensor, prefix: str = "emb") -> dict[str, float]:
    """{prefix_std, prefix_rank} of embeddings x [N, D] (one row per clip or token).

    std: the mean over dimensions of the standard deviation across rows (0 = every input maps
    to the same vector: collapse). rank: the effective rank (Roy & Vetterli 2007),
    exp(entropy of the normalized singular values of the centred rows), between 1 (all rows
    on one line) and min(N, D) (variance spread evenly over every direction)."""
    x = x.detach().float().reshape(-1, x.shape[-1])  # [N, D]
    if x.shape[0] < 2:
        return {}
    x = x - x.mean(0)
    std = x.std(0).mean()
    s = torch.linalg.svdvals(x)
    p = s / s.sum().clamp_min(1e-12)
    rank = torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())
    return {f"{prefix}_std": float(std), f"{prefix}_rank": float(rank)}


@torch.no_grad()
def entropy(probs: torch.Tensor) -> float:
    """Mean entropy (nats) of the distributions in the last dimension of probs [..., K]:
    log K = uniform (a teacher that says nothing), 0 = one-hot."""
    p = probs.detach().float().reshape(-1, probs.shape[-1])
    return float(-(p * torch.log(p.clamp_min(1e-12))).sum(-1).mean())


@torch.no_grad()
def perplexity(ids: torch.Tensor, k: int) -> float:
    """exp(entropy) of the histogram of integer ids in [0, k): the number of codes in use,
    weighted by use (k = every code equally often, 1 = a single code)."""
    counts = torch.bincount(ids.detach().reshape(-1).long(), minlength=k).float()
    p = counts / counts.sum().clamp_min(1.0)
    return float(torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum()))
