"""Scene metrics of the HEAR protocol, in numpy: top-1, pitch and chroma accuracy, mAP, ROC-AUC, d-prime.

All take `pred` [N, C] (probabilities or scores) and `target` [N, C] (one-hot or
multi-hot, 0/1) and return a float. mAP and ROC-AUC are macro averages of the
per-class binary scores with scikit-learn's tie handling (tests compare them with
scikit-learn); d-prime is sqrt(2) * probit(AUC) per class, averaged. As in the HEAR
kit, ROC-based scores are NaN when some class has only positives or only negatives.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def top1_acc(pred: np.ndarray, target: np.ndarray) -> float:
    return float(np.mean(pred.argmax(1) == target.argmax(1)))


def chroma_acc(pred: np.ndarray, target: np.ndarray) -> float:
    """Top-1 accuracy on pitch classes (label index mod 12): octave errors count as right."""
    return float(np.mean(pred.argmax(1) % 12 == target.argmax(1) % 12))


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
