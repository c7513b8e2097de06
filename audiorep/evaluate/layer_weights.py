"""Learned layer weighting (SUPERB's featurizer) and the probe that trains it for scene and
timestamp tasks.

`LayerWeights`: one logit per layer, initialised to zero (all layers equal), softmax, the
weighted sum of the layers: [..., L, D] -> [..., D]; trained with the downstream head, its
softmax is what results.json reports (`layer_weights`) and `plot_layer_weights` draws.

`train_weighted_probe`: the HEAR probe of one grid point (hidden layers of [Linear ->
BatchNorm -> Dropout -> ReLU], Adam, validation every `check_every` epochs, early stopping
after `patience` checks without strict improvement, the first best checkpoint kept) with a
`LayerWeights` in front, on per-layer rows x [N, L, D] (layer_store.py); a sequence
downstream (asr_head.py) puts the same module in front of its BiLSTMs.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .probes import GridPoint


class LayerWeights(nn.Module):
    def __init__(self, num_layers: int):
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[..., L, D] -> [..., D]."""
        if x.shape[-2] != len(self.weights):
            raise ValueError(f"features have {x.shape[-2]} layers, the layer weights {len(self.weights)}")
        return (self.softmax()[:, None] * x).sum(-2)

    def softmax(self) -> torch.Tensor:
        return F.softmax(self.weights, dim=0)  # [L]

    def report(self, names: list[str]) -> dict[str, float]:
        return {n: round(float(w), 6) for n, w in zip(names, self.softmax().detach().cpu())}


def plot_layer_weights(weights: dict[str, dict[str, float]], path: Path, title: str) -> None:
    """One bar group per model: softmax weight of each layer."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * max(len(w) for w in weights.values()) * len(weights)), 3))
    width = 0.8 / len(weights)
    for k, (model, w) in enumerate(weights.items()):
        ax.bar(np.arange(len(w)) + k * width, list(w.values()), width, label=model)
    names = list(next(iter(weights.values())))
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=60, fontsize=7)
    ax.set_ylabel("softmax weight")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


class WeightedProbe(nn.Module):
    """LayerWeights -> the HEAR MLP of `point`."""

    def __init__(self, num_layers: int, dim: int, n_out: int, point: GridPoint):
        super().__init__()
        self.layer_weights = LayerWeights(num_layers)
        blocks, width = [], dim
        for _ in range(point.hidden_layers):
            blocks += [nn.Linear(width, point.hidden_dim), nn.BatchNorm1d(point.hidden_dim),
                       nn.Dropout(point.dropout), nn.ReLU()]
            width = point.hidden_dim
        self.mlp = nn.Sequential(*blocks, nn.Linear(width, n_out))
        init = nn.init.xavier_uniform_ if point.init == "xavier_uniform" else nn.init.xavier_normal_
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                init(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.layer_weights(x))  # [N, L, D] -> [N, C]


@dataclass
class WeightedResult:
    model: WeightedProbe
    epoch: int
    val_score: float


def _loss(logits: torch.Tensor, y: torch.Tensor, multiclass: bool) -> torch.Tensor:
    return F.cross_entropy(logits, y.argmax(1)) if multiclass else F.binary_cross_entropy_with_logits(logits, y)


def train_weighted_probe(x_train: np.ndarray, y_train: np.ndarray, x_valid: np.ndarray,
                         score: Callable[[np.ndarray], float], multiclass: bool, point: GridPoint,
                         seed: int = 42, maximize: bool = True, device: str = "cpu") -> WeightedResult:
    """Rows x [N, L, D], targets y [N, C] (multi-hot; one-hot for multiclass); `score(logits
    of the validation rows)` picks the kept epoch."""
    torch.manual_seed(seed)
    model = WeightedProbe(x_train.shape[1], x_train.shape[2], y_train.shape[1], point).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=point.lr)
    x = torch.as_tensor(x_train, dtype=torch.float32, device=device)
    y = torch.as_tensor(y_train, dtype=torch.float32, device=device)
    xv = torch.as_tensor(x_valid, dtype=torch.float32, device=device)
    best = WeightedResult(copy.deepcopy(model), -1, -np.inf if maximize else np.inf)
    waited = 0
    for epoch in range(point.max_epochs):
        model.train()
        for i in range(0, len(x), point.batch_size):
            if len(x) - i < 2 and point.hidden_layers:  # BatchNorm needs 2 rows
                continue
            opt.zero_grad()
            _loss(model(x[i:i + point.batch_size]), y[i:i + point.batch_size], multiclass).backward()
            opt.step()
        if (epoch + 1) % point.check_every:
            continue
        model.eval()
        with torch.no_grad():
            val = score(model(xv).cpu().numpy())
        if (val > best.val_score) if maximize else (val < best.val_score):
            best, waited = WeightedResult(copy.deepcopy(model), epoch, val), 0
        else:
            waited += 1
            if waited >= point.patience:
                break
    best.model.eval()
    return best
