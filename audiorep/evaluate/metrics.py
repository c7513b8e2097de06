"""Scene metrics of the HEAR protocol, in numpy: top-1, pitch and chroma accuracy, mAP, ROC-AUC, d-prime.

All take `pred` [N, C] (probabilities or scores) and `target` [N, C] (one-hot or
multi-hot, 0/1) and return a float. mAP and ROC-AUC are macro averages of the
per-class binary scores with scikit-learn's tie handling (tests compare them with
scikit-learn); d-prime is sqrt(2) * probit(AUC) per class, averaged. As in the HEAR
kit, ROC-based scores are NaN when some class has only positives or only negatives.

`RESAMPLED` gives the same metrics on many bootstrap resamples at once (`ids` [b, n]: rows of
each resample): a resample is a weighting of the clips (how often each was drawn), and a
duplicated clip ties with itself, so the per-class counts at each distinct score of the whole
set, weighted, are the resample's counts. One sort per class serves every resample.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def top1_hits(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    return pred.argmax(1) == target.argmax(1)


def chroma_hits(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Top-1 on pitch classes (label index mod 12): octave errors count as right."""
    return pred.argmax(1) % 12 == target.argmax(1) % 12


def top1_acc(pred: np.ndarray, target: np.ndarray) -> float:
    return float(np.mean(top1_hits(pred, target)))


def chroma_acc(pred: np.ndarray, target: np.ndarray) -> float:
    return float(np.mean(chroma_hits(pred, target)))


def _sorted_counts(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative true/false positives at each distinct score threshold, highest first."""
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    tps = np.cumsum(labels)[last_of_tie]
    fps = last_of_tie + 1 - tps
    return tps, fps


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the step precision-recall curve of one class (sklearn's definition)."""
    tps, fps = _sorted_counts(scores, labels.astype(np.float64))
    if tps[-1] == 0:  # no positive: recall is undefined, sklearn scores it 0
        return 0.0
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of one class (trapezoids = Mann-Whitney with tied scores halved)."""
    tps, fps = _sorted_counts(scores, labels.astype(np.float64))
    if tps[-1] == 0 or fps[-1] == 0:
        return math.nan
    tpr, fpr = np.r_[0.0, tps / tps[-1]], np.r_[0.0, fps / fps[-1]]
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def mean_average_precision(pred: np.ndarray, target: np.ndarray) -> float:
    return float(np.mean([average_precision(pred[:, c], target[:, c]) for c in range(pred.shape[1])]))


def _class_aucs(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    return np.array([roc_auc(pred[:, c], target[:, c]) for c in range(pred.shape[1])])


def aucroc(pred: np.ndarray, target: np.ndarray) -> float:
    aucs = _class_aucs(pred, target)
    return math.nan if np.isnan(aucs).any() else float(aucs.mean())


def d_prime(pred: np.ndarray, target: np.ndarray) -> float:
    aucs = _class_aucs(pred, target)
    if np.isnan(aucs).any():
        return math.nan
    probit = torch.special.ndtri(torch.from_numpy(aucs)).numpy()  # inf at AUC = 1, like scipy
    with np.errstate(invalid="ignore"):  # AUCs of 0 and 1 together give NaN, as in the kit
        return float(np.mean(probit * math.sqrt(2.0)))


SCENE_METRICS = {
    "top1_acc": top1_acc,
    "pitch_acc": top1_acc,
    "chroma_acc": chroma_acc,
    "mAP": mean_average_precision,
    "d_prime": d_prime,
    "aucroc": aucroc,
}


# ---------------------------------------------------------------- many bootstrap resamples at once

CHUNK = 20_000_000  # resamples x clips weighted at once (160 MB of float64): bounds memory on large tasks
FEW_GROUPS = 256  # up to this many distinct positive scores a class is counted by matrix products, else cumsums


def resample_weights(ids: np.ndarray, n: int) -> np.ndarray:
    """[b, n] rows of clip indices -> [b, n] how often each clip was drawn."""
    b = len(ids)
    return np.bincount((ids + n * np.arange(b)[:, None]).ravel(), minlength=b * n).reshape(b, n).astype(np.float64)


def _weighted_counts(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """_sorted_counts for each row of weights [b, n] -> cumulative TP, FP [b, G] at the G distinct scores."""
    order = np.argsort(-scores, kind="mergesort")
    s, positive, w = scores[order], labels[order].astype(np.float64), weights[:, order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tps = np.cumsum(w * positive, axis=1)[:, last_of_tie]
    fps = np.cumsum(w * (1 - positive), axis=1)[:, last_of_tie]
    return tps, fps


def _positive_scores(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The distinct scores of the positives, highest first: the only thresholds where recall moves."""
    return np.unique(scores[labels > 0])[::-1]


def _average_precisions(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """average_precision of one class on each weighting [b, n] -> [b] (0 without a positive)."""
    groups = _positive_scores(scores, labels)
    if len(groups) > FEW_GROUPS:
        tps, fps = _weighted_counts(scores, labels, weights)
        counted = tps + fps
    else:  # a few positive scores: counts above each by one product (BLAS), exact for integer weights
        at_or_above = (scores[:, None] >= groups[None, :]).astype(weights.dtype)  # [n, G]
        pos = labels > 0
        counted, tps = weights @ at_or_above, weights[:, pos] @ at_or_above[pos]  # [b, G]
    total = tps[:, -1:] if tps.shape[1] else np.zeros((len(weights), 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        steps = np.diff(np.c_[np.zeros(len(tps)), tps], axis=1) / total  # recall gained at each threshold
        terms = np.where(steps > 0, steps * (tps / counted), 0.0)
    return np.where(total[:, 0] > 0, terms.sum(1), 0.0)


def _roc_aucs(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """roc_auc of one class on each weighting [b, n] -> [b] (NaN without positives or negatives):
    the Mann-Whitney form, P(positive above negative) with ties halved, as the trapezoids give."""
    groups, pos = _positive_scores(scores, labels), labels > 0
    if len(groups) > FEW_GROUPS:
        tps, fps = _weighted_counts(scores, labels, weights)
        with np.errstate(invalid="ignore", divide="ignore"):
            zero = np.zeros((len(tps), 1))
            tpr, fpr = np.c_[zero, tps / tps[:, -1:]], np.c_[zero, fps / fps[:, -1:]]
            aucs = np.sum(np.diff(fpr, axis=1) * (tpr[:, 1:] + tpr[:, :-1]) / 2, axis=1)
        return np.where((tps[:, -1] > 0) & (fps[:, -1] > 0), aucs, math.nan)
    negatives, neg_scores = weights[:, ~pos], scores[~pos][:, None]
    at = (scores[pos][:, None] == groups[None, :]).astype(weights.dtype)  # [P, G]: each positive's score
    positives = weights[:, pos] @ at  # [b, G] positive weight at each score
    above = negatives @ (neg_scores >= groups[None, :]).astype(weights.dtype)  # negatives at or above it
    tied = negatives @ (neg_scores == groups[None, :]).astype(weights.dtype)
    n_pos, n_neg = positives.sum(1), negatives.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        aucs = (positives * (n_neg[:, None] - above + 0.5 * tied)).sum(1) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), aucs, math.nan)


def _per_class(score_fn, pred: np.ndarray, target: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """score_fn of every class on every resample -> [b, C], resamples taken in chunks."""
    n, rows = len(pred), max(1, CHUNK // max(1, len(pred)))
    out = np.empty((len(ids), pred.shape[1]))
    for first in range(0, len(ids), rows):
        weights = resample_weights(ids[first:first + rows], n)
        for c in range(pred.shape[1]):
            out[first:first + rows, c] = score_fn(pred[:, c], target[:, c], weights)
    return out


def _probit_mean(aucs: np.ndarray) -> np.ndarray:
    probit = torch.special.ndtri(torch.from_numpy(aucs)).numpy()
    with np.errstate(invalid="ignore"):
        return np.mean(probit * math.sqrt(2.0), axis=1)


def _accuracies(hits):
    return lambda pred, target, ids: hits(pred, target).astype(np.float64)[ids].mean(1)


RESAMPLED = {  # name -> fn(pred [N, C], target [N, C], ids [b, n]) -> [b]
    "top1_acc": _accuracies(top1_hits),
    "pitch_acc": _accuracies(top1_hits),
    "chroma_acc": _accuracies(chroma_hits),
    "mAP": lambda pred, target, ids: _per_class(_average_precisions, pred, target, ids).mean(1),
    "aucroc": lambda pred, target, ids: _per_class(_roc_aucs, pred, target, ids).mean(1),
    "d_prime": lambda pred, target, ids: _probit_mean(_per_class(_roc_aucs, pred, target, ids)),
}
