"""Probes on in-memory embeddings: the HEAR MLP grid trained all at once, a linear probe, kNN.

The HEAR 2021 probe (hear-eval-kit `FullyConnectedPrediction`): `hidden_layers` x
[Linear(1024) -> BatchNorm -> Dropout(0.1) -> ReLU] -> Linear(C); xavier init (uniform or
normal) with gain 1 on the first layer and sqrt(2) after a ReLU, PyTorch's default bias
init; Adam; batch 1024 in the stored row order (the kit does not shuffle); validation every
3 epochs, early stopping after 20 checks without a strict improvement of the primary
validation score, and the best checkpoint (first epoch reaching the best score) is kept; as
Lightning does for the kit, a NaN or infinite score stops the point (the checkpoint counts
NaN as the worst score, and the first check is always kept). No normalization of the embeddings. A grid point holds the kit's whole configuration
(`GridPoint`), so a task's `task_specific_param_grid` can change any of it; the points of one
`train_grid` call share their schedule (epochs, validation interval, patience, batch size).

All grid points of one depth live in stacked tensors [G, ...] and train in one pass over
the batches (one batched matmul per layer); each point has its own random generator for
its init and dropout masks, so a point trains exactly as it would alone (tested). Points
that stop early leave the stack, so no compute is spent on them.
"""
from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

INITS = ("xavier_uniform", "xavier_normal")
HEAR_LRS = (3.2e-3, 1e-3, 3.2e-4, 1e-4)
BN_EPS, BN_MOMENTUM = 1e-5, 0.1
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8
EVAL_ROWS = 4096

# score_fn(logits [N, C]) -> (score, extra); extra is e.g. the chosen event post-processing
ScoreFn = Callable[[np.ndarray], "tuple[float, Any]"]
# the kit's PARAM_GRID (heareval 2021.1.3) keys that audiorep honours, with its values
KIT_GRID = {"batch_size": [1024], "check_val_every_n_epoch": [3], "dropout": [0.1], "hidden_dim": [1024],
            "hidden_layers": [1, 2], "initialization": list(INITS), "lr": list(HEAR_LRS), "max_epochs": [500],
            "patience": [20]}


@dataclass(frozen=True)
class GridPoint:
    hidden_layers: int
    lr: float
    init: str
    hidden_dim: int = 1024
    dropout: float = 0.1
    max_epochs: int = 500
    check_every: int = 3
    patience: int = 20
    batch_size: int = 1024

    @classmethod
    def from_kit(cls, conf: dict[str, Any]) -> "GridPoint":
        """A point from one of the kit's grid configurations (keys of KIT_GRID)."""
        return cls(hidden_layers=conf["hidden_layers"], lr=conf["lr"], init=conf["initialization"],
                   hidden_dim=conf["hidden_dim"], dropout=conf["dropout"], max_epochs=conf["max_epochs"],
                   check_every=conf["check_val_every_n_epoch"], patience=conf["patience"],
                   batch_size=conf["batch_size"])

    @property
    def schedule(self) -> tuple[int, int, int, int]:
        """What the points of one `train_grid` call share: (max_epochs, check_every, patience, batch_size)."""
        return self.max_epochs, self.check_every, self.patience, self.batch_size


def hear_grid(n_points: int = 8, seed: int = 42, overrides: dict[str, list] | None = None) -> list[GridPoint]:
    """The kit's grid (KIT_GRID updated by `overrides`, e.g. a task's task_specific_param_grid) in
    sklearn ParameterGrid order (sorted keys, last key fastest), shuffled by `random.Random(seed)`, first n.

    With seed 42 (the kit's `seed_everything(42)`) these are the kit's own points.
    `overrides={"hidden_layers": [0]}` gives the linear probe's grid (lr x init).
    """
    grid = {**KIT_GRID, **(overrides or {})}
    unknown = set(grid) - set(KIT_GRID)
    if unknown:
        raise ValueError(f"grid keys {sorted(unknown)} cannot be set (known: {', '.join(KIT_GRID)})")
    keys = sorted(grid)
    full = [GridPoint.from_kit(dict(zip(keys, values))) for values in itertools.product(*(grid[k] for k in keys))]
    random.Random(seed).shuffle(full)
    return full[:n_points]


@dataclass(frozen=True)
class ProbeConfig:
    """How a grid trains: the seed of its points' generators, and the device."""

    seed: int = 42
    device: str = "cpu"


@dataclass
class ProbeResult:
    point: GridPoint
    state: dict[str, torch.Tensor]  # this point's parameters and BatchNorm statistics
    epoch: int                      # 0-based epoch of the kept checkpoint
    val_score: float
    extra: Any = None
    epochs_run: int = 0
    history: list[float] = field(default_factory=list)


def _generator(seed: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + index)


class MLPStack:
    """G MLPs of the same depth as stacked tensors: `w{i}` [G, in, out], `b{i}` [G, 1, out], and
    per hidden layer `gamma{i}`, `beta{i}`, `mean{i}`, `var{i}` [G, 1, H]; the output layer is last."""

    def __init__(self, tensors: dict[str, torch.Tensor], depth: int, dropout: torch.Tensor):
        self.t = tensors
        self.depth = depth
        self.dropout = dropout  # [G]

    @classmethod
    def init(cls, points: list[GridPoint], gens: list[torch.Generator], d_in: int, n_out: int,
             device: str) -> "MLPStack":
        depth = points[0].hidden_layers
        assert all(p.hidden_layers == depth for p in points)
        per_point = [_init_point(p, g, d_in, n_out) for p, g in zip(points, gens)]
        tensors = {k: torch.stack([pp[k] for pp in per_point]).to(device) for k in per_point[0]}
        dropout = torch.tensor([p.dropout for p in points], device=device)
        return cls(tensors, depth, dropout)

    @classmethod
    def from_states(cls, states: list[dict[str, torch.Tensor]], points: list[GridPoint], device: str) -> "MLPStack":
        tensors = {k: torch.stack([s[k] for s in states]).to(device) for k in states[0]}
        return cls(tensors, points[0].hidden_layers, torch.tensor([p.dropout for p in points], device=device))

    def params(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.t.items() if not k.startswith(("mean", "var"))}

    def select(self, keep: torch.Tensor) -> None:
        self.t = {k: v[keep] for k, v in self.t.items()}
        self.dropout = self.dropout[keep]

    def point_state(self, g: int) -> dict[str, torch.Tensor]:
        return {k: v[g].detach().cpu().clone() for k, v in self.t.items()}

    def forward(self, x: torch.Tensor, train: bool, gens: list[torch.Generator] | None = None) -> torch.Tensor:
        """x [B, D] -> logits [G, B, C]."""
        t = self.t
        h = x
        for i in range(self.depth):
            h = torch.matmul(h, t[f"w{i}"]) + t[f"b{i}"]  # [G, B, H]
            h = self._batchnorm(h, i, train)
            if train:
                h = h * self._dropout_mask(h.shape[1:], gens).to(h.device)
            h = F.relu(h)
        w = t[f"w{self.depth}"]
        if w.shape[-1] == 1:  # one output: with G = 1 matmul would take a matrix-vector product, whose sums
            # round unlike the batched product's, and a point's logits would depend on the size of its stack
            return torch.matmul(h, F.pad(w, (0, 1)))[..., :1] + t[f"b{self.depth}"]  # [G, B, 1]
        return torch.matmul(h, w) + t[f"b{self.depth}"]  # [G, B, C]

    def _batchnorm(self, h: torch.Tensor, i: int, train: bool) -> torch.Tensor:
        t = self.t
        if train:
            var, mean = torch.var_mean(h, 1, correction=0, keepdim=True)  # [G, 1, H]
            with torch.no_grad():
                n = h.shape[1]
                t[f"mean{i}"].lerp_(mean, BN_MOMENTUM)
                t[f"var{i}"].lerp_(var * (n / (n - 1)), BN_MOMENTUM)
        else:
            mean, var = t[f"mean{i}"], t[f"var{i}"]
        scale = t[f"gamma{i}"] * torch.rsqrt(var + BN_EPS)  # [G, 1, H]
        return torch.addcmul(t[f"beta{i}"] - mean * scale, h, scale)

    def _dropout_mask(self, shape: torch.Size, gens: list[torch.Generator]) -> torch.Tensor:
        """[G, B, H] inverted-dropout masks, each point's from its own generator. A unit is kept when
        a 16-bit uniform (four per 64-bit draw: 5x cheaper than bernoulli_) is past the drop share,
        so drop probabilities are multiples of 2^-16 (0.1 -> 0.1000061)."""
        n = shape.numel()
        mask = torch.empty(len(gens), *shape)
        for m, p, g in zip(mask, self.dropout.tolist(), gens):
            bits = torch.empty(-(-n // 4), dtype=torch.int64).random_(-2**63, None, generator=g)
            keep = bits.view(torch.int16)[:n].view(shape) >= round(p * 65536) - 32768
            torch.mul(keep, 1 / (1 - p), out=m)
        return mask


def _init_point(p: GridPoint, g: torch.Generator, d_in: int, n_out: int) -> dict[str, torch.Tensor]:
    """One MLP's initial tensors (weights stored as [in, out])."""
    dims = [d_in] + [p.hidden_dim] * p.hidden_layers + [n_out]
    out = {}
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        gain = 1.0 if i == 0 else math.sqrt(2.0)  # calculate_gain("linear"), then ("relu")
        w = torch.empty(a, b)
        if p.init == "xavier_uniform":
            bound = gain * math.sqrt(6.0 / (a + b))
            w.uniform_(-bound, bound, generator=g)
        elif p.init == "xavier_normal":
            w.normal_(0.0, gain * math.sqrt(2.0 / (a + b)), generator=g)
        else:
            raise ValueError(f"unknown init {p.init!r} (known: {', '.join(INITS)})")
        out[f"w{i}"] = w
        out[f"b{i}"] = torch.empty(1, b).uniform_(-1 / math.sqrt(a), 1 / math.sqrt(a), generator=g)
        if i < p.hidden_layers:
            out[f"gamma{i}"], out[f"beta{i}"] = torch.ones(1, b), torch.zeros(1, b)
            out[f"mean{i}"], out[f"var{i}"] = torch.zeros(1, b), torch.ones(1, b)
    return out


class PointAdam:
    """torch's Adam (fused on CPU) with one parameter group, and so one learning rate, per stacked
    point: each group holds views [in, out] of the stacked tensors, updated in place."""

    def __init__(self, params: dict[str, torch.Tensor], lr: list[float], state: list[dict] | None = None):
        self.params = params
        self.views = [{k: v.detach()[g] for k, v in params.items()} for g in range(len(lr))]
        fused = next(iter(params.values())).device.type in ("cpu", "cuda")
        self.opt = torch.optim.Adam([{"params": list(v.values()), "lr": r} for v, r in zip(self.views, lr)],
                                    betas=ADAM_BETAS, eps=ADAM_EPS, fused=fused)
        for g, st in enumerate(state or []):
            for k, view in self.views[g].items():
                if k in st:
                    self.opt.state[view] = st[k]
        self.lr = lr

    def point_states(self) -> list[dict]:
        return [{k: self.opt.state[v] for k, v in views.items() if v in self.opt.state} for views in self.views]

    @torch.no_grad()
    def step(self) -> None:
        for g, views in enumerate(self.views):
            for k, v in views.items():
                v.grad = self.params[k].grad[g]
        self.opt.step()
        for p in self.params.values():
            p.grad = None


def _loss(logits: torch.Tensor, y: torch.Tensor, multiclass: bool) -> torch.Tensor:
    """Sum over points of each point's mean loss; logits [G, B, C], y [B] (class ids) or [B, C].
    The binary loss is taken point by point: an elementwise kernel over all G x B x C values would
    give a point's last values the scalar (not the vectorized) exp when G changes, so a point's
    gradients would depend on the other points of the stack."""
    g, b, c = logits.shape
    if multiclass:
        return F.cross_entropy(logits.reshape(g * b, c), y.repeat(g), reduction="sum") / b
    return sum(F.binary_cross_entropy_with_logits(point, y, reduction="sum") for point in logits) / (b * c)


def probabilities(logits: torch.Tensor, multiclass: bool) -> torch.Tensor:
    return logits.softmax(-1) if multiclass else logits.sigmoid()


def validation_loss(logits: np.ndarray, y: np.ndarray, multiclass: bool) -> float:
    """The kit's val_loss of logits [N, C] against 0/1 targets [N, C]: mean cross-entropy (multiclass)
    or mean binary cross-entropy over all N x C entries (multilabel)."""
    yt = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))
    return float(_loss(torch.from_numpy(logits)[None], yt.argmax(1) if multiclass else yt, multiclass))


@torch.no_grad()
def predict_logits(stack: MLPStack, x: torch.Tensor) -> torch.Tensor:
    """x [N, D] -> logits [G, N, C] on the CPU (eval mode, in chunks of rows)."""
    return torch.cat([stack.forward(x[i:i + EVAL_ROWS], train=False).cpu() for i in range(0, len(x), EVAL_ROWS)], 1)


def predict(results: list[ProbeResult], x: np.ndarray, multiclass: bool, device: str = "cpu") -> np.ndarray:
    """Probabilities [R, N, C] of trained probes (any mix of depths) on embeddings x [N, D]."""
    xt = torch.from_numpy(x).to(device)
    out = []
    for r in results:
        stack = MLPStack.from_states([r.state], [r.point], device)
        out.append(probabilities(predict_logits(stack, xt)[0], multiclass).numpy())
    return np.stack(out)


class _Group:
    """The points of one depth being trained together, with their bookkeeping."""

    def __init__(self, idx: list[int], points: list[GridPoint], ids: list[int], d_in: int, n_out: int,
                 cfg: ProbeConfig):
        self.idx = idx  # positions in the caller's list of points
        self.gens = [_generator(cfg.seed, ids[i]) for i in idx]
        self.stack = MLPStack.init([points[i] for i in idx], self.gens, d_in, n_out, cfg.device)
        for v in self.stack.params().values():
            v.requires_grad_(True)
        self.opt = PointAdam(self.stack.params(), [points[i].lr for i in idx])

    def drop(self, stopped: set[int]) -> None:
        keep = [j for j, i in enumerate(self.idx) if i not in stopped]
        if len(keep) == len(self.idx):
            return
        if not keep:
            self.idx = []
            return
        states = self.opt.point_states()
        with torch.no_grad():
            self.stack.select(torch.tensor(keep, dtype=torch.long, device=self.stack.dropout.device))
        for v in self.stack.params().values():
            v.requires_grad_(True)
        self.opt = PointAdam(self.stack.params(), [self.opt.lr[j] for j in keep], [states[j] for j in keep])
        self.idx = [self.idx[j] for j in keep]
        self.gens = [self.gens[j] for j in keep]


def train_grid(points: list[GridPoint], x_train: np.ndarray, y_train: np.ndarray, x_valid: np.ndarray,
               score_fn: ScoreFn, multiclass: bool, maximize: bool = True, cfg: ProbeConfig = ProbeConfig(),
               desc: str = "probes", ids: list[int] | None = None) -> list[ProbeResult]:
    """Train every grid point on (x_train [N, D], y_train [N, C] 0/1) with early stopping on
    `score_fn` of the validation logits (higher is better unless not `maximize`); -> one result
    per point, in the order given. The points share one schedule (`GridPoint.schedule`); point i
    draws its init and dropout from generator `ids[i]` (default: its position i)."""
    schedules = {p.schedule for p in points}
    if len(schedules) != 1:
        raise ValueError(f"the points of one grid must share max_epochs, check_every, patience and batch_size; "
                         f"got {sorted(schedules)}")
    max_epochs, check_every, patience, batch_size = schedules.pop()
    ids = list(range(len(points))) if ids is None else ids
    device = cfg.device
    xt = torch.from_numpy(np.ascontiguousarray(x_train, dtype=np.float32)).to(device)
    xv = torch.from_numpy(np.ascontiguousarray(x_valid, dtype=np.float32)).to(device)
    yt = torch.from_numpy(np.ascontiguousarray(y_train, dtype=np.float32)).to(device)
    if multiclass:
        yt = yt.argmax(1)
    d_in, n_out = x_train.shape[1], y_train.shape[1]
    depths = sorted({p.hidden_layers for p in points})
    groups = [_Group([i for i, p in enumerate(points) if p.hidden_layers == d], points, ids, d_in, n_out, cfg)
              for d in depths]
    sign = 1.0 if maximize else -1.0
    best = [-math.inf] * len(points)
    results: list[ProbeResult | None] = [None] * len(points)
    waits = [0] * len(points)
    history: list[list[float]] = [[] for _ in points]
    stopped: set[int] = set()
    n = len(xt)
    bar = tqdm(range(max_epochs), desc=desc, leave=False)
    for epoch in bar:
        for start in range(0, n, batch_size):
            xb, yb = xt[start:start + batch_size], yt[start:start + batch_size]
            for grp in groups:
                if len(xb) < 2 and grp.stack.depth:  # BatchNorm cannot train on one row
                    continue
                loss = _loss(grp.stack.forward(xb, train=True, gens=grp.gens), yb, multiclass)
                loss.backward()
                grp.opt.step()
        if (epoch + 1) % check_every:
            continue
        for grp in groups:
            logits = predict_logits(grp.stack, xv).numpy()  # [G, Nv, C]
            for j, i in enumerate(grp.idx):
                score, extra = score_fn(logits[j])
                history[i].append(score)
                kept = -math.inf if math.isnan(score) else sign * score  # Lightning's checkpoint: NaN is the worst
                if results[i] is None or kept > sign * results[i].val_score:
                    results[i] = ProbeResult(points[i], grp.stack.point_state(j), epoch, sign * kept, extra)
                if not math.isfinite(score):  # Lightning's EarlyStopping(check_finite=True) stops here
                    stopped.add(i)
                elif sign * score > best[i]:
                    best[i], waits[i] = sign * score, 0
                else:
                    waits[i] += 1
                    if waits[i] >= patience:
                        stopped.add(i)
            grp.drop(stopped)
        groups = [g for g in groups if g.idx]
        bar.set_postfix(active=sum(len(g.idx) for g in groups))
        if not groups:
            break
    for i, p in enumerate(points):
        if results[i] is None:  # never validated (max_epochs < check_every)
            raise ValueError(f"grid point {p} was never validated in {max_epochs} epochs "
                             f"(validation every {check_every} epochs)")
        results[i].epochs_run = len(history[i]) * check_every
        results[i].history = history[i]
    return results


def select_best(results: list[ProbeResult], maximize: bool = True) -> ProbeResult:
    """Best validation score; ties go to the earlier point (the kit's stable sort)."""
    sign = 1.0 if maximize else -1.0
    best = max(range(len(results)), key=lambda i: (sign * results[i].val_score, -i))
    return results[best]


# ---------------------------------------------------------------- kNN

KNN_KS = (1, 3, 5, 10, 20, 50)
KNN_MAX_SIMILARITIES = 1 << 25  # query rows x train rows per chunk (128 MB of float32)


def _unit(x: np.ndarray, device: str) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
    return F.normalize(t, dim=1)


@torch.no_grad()
def knn_probabilities(x_train: np.ndarray, y_train: np.ndarray, x_query: np.ndarray, ks: tuple[int, ...],
                      device: str = "cpu") -> np.ndarray:
    """Cosine kNN: for each k, the mean label vector of the k nearest training rows -> [K, Nq, C]."""
    xt, xq = _unit(x_train, device), _unit(x_query, device)
    yt = torch.from_numpy(np.ascontiguousarray(y_train, dtype=np.float32)).to(device)
    kmax = min(max(ks), len(xt))
    rows = max(1, KNN_MAX_SIMILARITIES // len(xt))
    out = []
    for i in range(0, len(xq), rows):
        nearest = (xq[i:i + rows] @ xt.T).topk(kmax, dim=1).indices  # [q, kmax]
        votes = yt[nearest].cumsum(1)  # [q, kmax, C]
        out.append(torch.stack([votes[:, min(k, kmax) - 1] / min(k, kmax) for k in ks]).cpu())
    return torch.cat(out, 1).numpy()


def select_knn(x_train: np.ndarray, y_train: np.ndarray, x_valid: np.ndarray, score_fn: ScoreFn,
               maximize: bool = True, ks: tuple[int, ...] = KNN_KS, device: str = "cpu") -> tuple[int, float, Any]:
    """Choose k on validation -> (k, validation score, extra)."""
    probs = knn_probabilities(x_train, y_train, x_valid, ks, device)
    sign = 1.0 if maximize else -1.0
    scored = [(k, *score_fn(p)) for k, p in zip(ks, probs)]
    return max(scored, key=lambda s: -math.inf if math.isnan(s[1]) else sign * s[1])

