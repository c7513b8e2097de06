"""SUPERB's ASR downstream: layer weighting -> (frame-pair averaging) -> SpecAugment (training)
-> projection -> 2 x BiLSTM -> characters + blank, trained with CTC (s3prl downstream/asr,
config.yaml and model.py, and the runner's `specaug`).

As s3prl runs it: a learned softmax weighting of the encoder's layers (zero-initialised),
SpecAugment on the weighted features of training batches (asr_specaug.py: time warp 5, 4
feature masks < 50 dims, 2 time masks < 40 frames, zeros), Linear(D, 1024), two bidirectional
LSTM layers of 1024 units each followed by dropout 0.2, Linear(2048, characters + 1),
log-softmax, CTC with blank index 0 and `zero_infinity`; Adam at a constant lr 1e-4 (the
schedule is commented out in the config), gradient norm clipped at 1, 200k steps, the kept
model the best validation WER (greedy decoding) of checks every 2000 steps. Batches are
length buckets (`buckets`): the training utterances sorted longest first and cut into runs of
32; a run whose longest utterance is over 0.125 s (s3prl's HALF_BATCHSIZE_TIME, 2000 samples
at 16 kHz: in practice every run) is split in two batches of 16; the last, shorter run is one
batch (dropped if it is a single utterance); the batches' order is shuffled every epoch, their
contents stay fixed. The EnCodecMAE paper averages consecutive frame pairs first (75 -> 37.5
frames/s); `pair_average` does the same (a clip of odd length drops its last frame), and
SpecAugment's widths count the averaged frames, as they would count the frames of an upstream
that averaged them itself. `specaug=None` and `bucketing=False` give the earlier training
(shuffled batches of `batch_size`, no augmentation) bit for bit.

Training utterances whose label cannot be emitted under CTC in their frames (fewer frames
than characters plus repeated neighbours) are skipped and counted by name.
"""
from __future__ import annotations

import copy
import sys
import time
from dataclasses import dataclass
from functools import partial
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .asr_specaug import SpecAugConfig, heavy, spec_augment
from .layer_weights import LayerWeights

BLANK = 0


@dataclass(frozen=True)
class AsrConfig:
    project_dim: int = 1024
    lstm_dim: int = 1024
    lstm_layers: int = 2
    dropout: float = 0.2
    lr: float = 1e-4
    batch_size: int = 32
    steps: int = 200_000
    eval_every: int = 2000
    clip: float = 1.0
    pair_average: bool = True
    layer_weights: bool = True   # False: the last layer only (SUPERB's "last hidden" setting)
    specaug: SpecAugConfig | None = SpecAugConfig()  # None: no SpecAugment
    bucketing: bool = True       # False: shuffled utterances, batch_size each
    half_batch_s: float = 0.125  # a bucket whose longest utterance is longer is split in two
    seed: int = 42
    device: str = "cpu"

    def __post_init__(self):
        for name in ("project_dim", "lstm_dim", "lstm_layers", "batch_size", "steps", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"AsrConfig.{name}={getattr(self, name)}: expected an integer >= 1")
        if self.half_batch_s < 0:
            raise ValueError(f"AsrConfig.half_batch_s={self.half_batch_s}: expected seconds >= 0")
        if not (self.lr > 0 and self.clip > 0 and 0 <= self.dropout < 1):
            raise ValueError(f"AsrConfig: lr {self.lr} and clip {self.clip} must be > 0, dropout in [0, 1)")


def pair_average(x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, T, ...] -> [B, T // 2, ...]: the mean of frames 2t and 2t + 1."""
    T = x.shape[1] // 2 * 2
    return x[:, :T].unflatten(1, (T // 2, 2)).mean(2), lengths // 2


def out_frames(frames: int, cfg: AsrConfig) -> int:
    return frames // 2 if cfg.pair_average else frames


def ctc_min_frames(ids: Sequence[int]) -> int:
    """Fewest frames that can emit `ids` under CTC: one per symbol, plus a blank between repeats."""
    return len(ids) + sum(a == b for a, b in zip(ids, ids[1:]))


class AsrHead(nn.Module):
    def __init__(self, num_layers: int, dim: int, num_symbols: int, cfg: AsrConfig):
        super().__init__()
        self.cfg = cfg
        self.layer_weights = LayerWeights(num_layers) if cfg.layer_weights else None
        self.project = nn.Linear(dim, cfg.project_dim)
        self.lstms = nn.ModuleList(nn.LSTM(cfg.project_dim if i == 0 else 2 * cfg.lstm_dim, cfg.lstm_dim,
                                           batch_first=True, bidirectional=True) for i in range(cfg.lstm_layers))
        self.dropout = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(2 * cfg.lstm_dim, num_symbols + 1)  # + the blank

    def forward(self, x: torch.Tensor, lengths: torch.Tensor,
                augment: Callable | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, T, L, D] layers of frames, lengths [B] -> (log-probs [B, T', V + 1], lengths [B]);
        `augment(features [B, T', D], lengths)` (SpecAugment in training) before the projection."""
        x = self.layer_weights(x) if self.layer_weights is not None else x[:, :, -1]  # [B, T, D]
        if self.cfg.pair_average:
            x, lengths = pair_average(x, lengths)  # [B, T // 2, D]
        if augment is not None:
            x = augment(x, lengths)
        x = self.project(x)
        for lstm in self.lstms:
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            x = self.dropout(nn.utils.rnn.pad_packed_sequence(lstm(packed)[0], batch_first=True,
                                                              total_length=x.shape[1])[0])  # [B, T', 2H]
        return F.log_softmax(self.out(x), dim=-1), lengths


def collate(frames: list[np.ndarray], device) -> tuple[torch.Tensor, torch.Tensor]:
    """[T_i, L, D] arrays -> ([B, T, L, D] zero-padded, [B] lengths)."""
    lengths = torch.tensor([len(f) for f in frames])
    x = torch.zeros(len(frames), int(lengths.max()), *frames[0].shape[1:])
    for i, f in enumerate(frames):
        x[i, :len(f)] = torch.from_numpy(f)
    return x.to(device), lengths


@torch.no_grad()
def log_probs(head: AsrHead, clips: Callable[[int], np.ndarray], n: int, batch: int) -> list[np.ndarray]:
    """[T'_i, V + 1] log-probabilities of clips 0..n-1."""
    head.eval()
    out = []
    for i in range(0, n, batch):
        x, lengths = collate([clips(j) for j in range(i, min(n, i + batch))], next(head.parameters()).device)
        lp, lens = head(x, lengths)
        out += [lp[k, :lens[k]].cpu().numpy() for k in range(len(lens))]
    return out


def trainable(frames: list[int], labels: list[list[int]], names: list[str],
              cfg: AsrConfig) -> tuple[list[int], list[str]]:
    """-> (indices of the utterances CTC can train on, names of those it cannot)."""
    keep, skipped = [], []
    for i, (n, ids) in enumerate(zip(frames, labels)):
        (keep if out_frames(n, cfg) >= ctc_min_frames(ids) else skipped).append(i)
    return keep, [names[i] for i in skipped]


def buckets(seconds: Sequence[float], keep: list[int], cfg: AsrConfig) -> list[list[int]]:
    """s3prl's length buckets of the utterances `keep`: longest first, runs of batch_size, a run
    whose longest is over half_batch_s split in two, the last run kept whole when it has two or more."""
    order = sorted(keep, key=lambda i: -seconds[i])  # stable: equal lengths keep their order
    B, out = cfg.batch_size, []
    for k in range(0, len(order), B):
        run = order[k:k + B]
        if len(run) < B:
            out += [run] if len(run) > 1 else []
        elif B >= 2 and seconds[run[0]] > cfg.half_batch_s:
            out += [run[:B // 2], run[B // 2:]]
        else:
            out.append(run)
    return out


def batches(keep: list[int], seconds: Sequence[float] | None, cfg: AsrConfig,
            rng: np.random.Generator) -> Iterator[list[int]]:
    """Training batches without end: the buckets in a new order every epoch (bucketing), or
    utterances shuffled every epoch and cut into batch_size (the last few carried over)."""
    if cfg.bucketing:
        if seconds is None:
            raise ValueError("AsrConfig.bucketing needs every training utterance's duration (seconds)")
        fixed = buckets(seconds, keep, cfg)
        if not fixed:
            raise ValueError(f"bucketing: {len(keep)} training utterance(s) make no batch of two or more")
        while True:
            yield from (fixed[j] for j in rng.permutation(len(fixed)))
    order: list[int] = []
    while True:
        if len(order) < cfg.batch_size:
            order += [keep[i] for i in rng.permutation(len(keep))]
        batch, order = order[:cfg.batch_size], order[cfg.batch_size:]
        yield batch


@dataclass
class Trained:
    head: AsrHead
    step: int                  # the kept check's step
    val_wer: float
    history: list[tuple[int, float, float]]  # (step, mean train loss since the last check, validation WER)
    skipped: list[str]
    seconds: float


def train_asr(clips: Callable[[int], np.ndarray], lengths: list[int], labels: list[list[int]], names: list[str],
              num_symbols: int, validate: Callable[[AsrHead], float], cfg: AsrConfig,
              seconds: Sequence[float] | None = None) -> Trained:
    """CTC training on utterances 0..n-1 (`clips(i)` -> [T_i, L, D] float32 with T_i = lengths[i],
    `labels[i]` symbol ids 1..V, `seconds[i]` its duration, needed by bucketing); `validate(head)`
    -> validation WER (lower is better) every `eval_every` steps and at the end."""
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    keep, skipped = trainable(lengths, labels, names, cfg)
    if not keep:
        raise ValueError(f"no training utterance is long enough for its transcript under CTC ({len(skipped)} "
                         f"skipped, e.g. {skipped[:3]})")
    first = clips(keep[0])
    head = AsrHead(first.shape[1], first.shape[2], num_symbols, cfg).to(cfg.device)
    opt = torch.optim.Adam(head.parameters(), lr=cfg.lr)
    todo = batches(keep, seconds, cfg, np.random.default_rng(cfg.seed))
    augment = None
    if cfg.specaug is not None:
        augment = partial(spec_augment, cfg=cfg.specaug, generator=torch.Generator().manual_seed(cfg.seed))
        why = heavy(cfg.specaug, first.shape[2], float(np.mean([out_frames(lengths[i], cfg) for i in keep])))
        if why:
            print(f"warning: {why}", file=sys.stderr)
    best, history, losses = (None, 0, float("inf")), [], []
    for step in range(1, cfg.steps + 1):
        batch = next(todo)
        head.train()
        x, x_len = collate([clips(i) for i in batch], cfg.device)
        lp, lp_len = head(x, x_len, augment)
        targets = torch.tensor([s for i in batch for s in labels[i]], device=cfg.device)
        loss = F.ctc_loss(lp.transpose(0, 1), targets, lp_len, torch.tensor([len(labels[i]) for i in batch]),
                          blank=BLANK, zero_infinity=True)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(head.parameters(), cfg.clip)
        opt.step()
        losses.append(loss.item())
        if step % cfg.eval_every == 0 or step == cfg.steps:
            wer = validate(head)
            history.append((step, float(np.mean(losses)), wer))
            losses = []
            if wer < best[2]:  # strict: the first best check is kept
                best = (copy.deepcopy(head.state_dict()), step, wer)
    head.load_state_dict(best[0])
    head.eval()
    return Trained(head, best[1], best[2], history, skipped, time.perf_counter() - start)
