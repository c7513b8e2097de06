"""Build the small offline suite, time it, and show every task is learnable and not trivial.

Baseline: numpy log-mel (64 bands, 25 ms window, 10 ms hop). Scene tasks: mean and std
over time -> standardized -> logistic regression (train+valid -> test; k-fold tasks: each
fold tested once, trained on the others). Event tasks: per 40 ms frame, log-mel with +-2
frames of context -> one logistic regression per label -> frame micro-F1 on the test split
(fold00 for k-fold tasks) against the F1 of a random guess at each label's frame rate.

    python benchmarks/bench_tasks.py [--out DIR] [--seed 0] [--size small] [--reuse]
"""
from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import StandardScaler

from audiorep import audio
from audiorep.tasks import suite
from audiorep.tasks.format import Task, load_task

SR = 16000
N_FFT, WIN, HOP, N_MELS = 512, 400, 160, 64
EVENT_FRAME_HOP = 4   # 4 x 10 ms
CONTEXT = 2


def mel_filterbank(n_mels: int = N_MELS, n_fft: int = N_FFT, sr: int = SR) -> np.ndarray:
    """Triangular HTK-mel filters [n_mels, n_fft // 2 + 1]."""
    def to_mel(f):
        return 2595 * np.log10(1 + f / 700)

    def to_hz(m):
        return 700 * (10 ** (m / 2595) - 1)

    edges = to_hz(np.linspace(to_mel(0), to_mel(sr / 2), n_mels + 2))
    bins = np.fft.rfftfreq(n_fft, 1 / sr)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    return np.maximum(0, np.minimum((bins - lower) / (centre - lower), (upper - bins) / (upper - centre)))


FILTERS = mel_filterbank()
WINDOW = np.hanning(WIN)


def log_mel(wave: np.ndarray) -> np.ndarray:
    """[S] -> [frames, N_MELS]"""
    frames = audio.chunk(wave, WIN, HOP) * WINDOW  # [T, WIN]
    power = np.abs(np.fft.rfft(frames, N_FFT)) ** 2  # [T, N_FFT // 2 + 1]
    return np.log(power @ FILTERS.T + 1e-6)


def _probe() -> LogisticRegression:
    return LogisticRegression(max_iter=2000, C=1.0)


def scene_score(task: Task) -> tuple[float, float]:
    """-> (test accuracy, chance = share of the most frequent test label)."""
    feats, labels = {}, {}
    for split in task.split_names:
        rows = [(task.audio_path(split, name), ann[0]) for name, ann in sorted(task.splits[split].items())]
        feats[split] = np.stack([np.concatenate([m.mean(0), m.std(0)])
                                 for m in (log_mel(audio.read(p)[0]) for p, _ in rows)])  # [N, 2 * N_MELS]
        labels[split] = np.array([lab for _, lab in rows])
    if task.split_mode == "trainvaltest":
        rounds = [(["train", "valid"], "test")]
    else:
        rounds = [([s for s in task.split_names if s != test], test) for test in task.split_names]
    accs, chances = [], []
    for train, test in rounds:
        x, y = np.concatenate([feats[s] for s in train]), np.concatenate([labels[s] for s in train])
        scaler = StandardScaler().fit(x)
        model = _probe().fit(scaler.transform(x), y)
        accs.append(float((model.predict(scaler.transform(feats[test])) == labels[test]).mean()))
        _, counts = np.unique(labels[test], return_counts=True)
        chances.append(counts.max() / counts.sum())
    return float(np.mean(accs)), float(np.mean(chances))


def _frames_and_targets(task: Task, split: str) -> tuple[np.ndarray, np.ndarray]:
    index = task.label_index()
    xs, ys = [], []
    for name, events in sorted(task.splits[split].items()):
        mel = log_mel(audio.read(task.audio_path(split, name))[0])
        padded = np.pad(mel, ((CONTEXT, CONTEXT), (0, 0)), mode="edge")
        stacked = np.concatenate([padded[i:i + len(mel)] for i in range(2 * CONTEXT + 1)], axis=1)  # [T, 5 * N_MELS]
        keep = np.arange(0, len(mel), EVENT_FRAME_HOP)
        times = keep * HOP / SR * 1000
        target = np.zeros((len(keep), len(task.vocabulary)), np.int8)
        for ev in events:
            target[(times >= ev["start"]) & (times < ev["end"]), index[ev["label"]]] = 1
        xs.append(stacked[keep])
        ys.append(target)
    return np.concatenate(xs), np.concatenate(ys)


def event_score(task: Task) -> tuple[float, float]:
    """-> (frame micro-F1 on the test split, F1 of random guesses at each label's rate)."""
    names = task.split_names
    test = "test" if "test" in names else names[0]
    train = [s for s in names if s != test]
    parts = [_frames_and_targets(task, s) for s in train]
    x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    x_test, y_test = _frames_and_targets(task, test)
    present = y.any(axis=0) & ~y.all(axis=0)  # labels a classifier can be trained for
    scaler = StandardScaler().fit(x)
    model = OneVsRestClassifier(LogisticRegression(max_iter=100)).fit(scaler.transform(x), y[:, present])
    pred = np.zeros_like(y_test)
    pred[:, present] = model.predict(scaler.transform(x_test))
    tp = float((pred & y_test).sum())
    f1 = 2 * tp / max(pred.sum() + y_test.sum(), 1)
    rate = y_test.mean(axis=0)
    chance = float((rate ** 2).sum() / max(rate.sum(), 1e-12))
    return f1, chance


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="suite folder (default: a temporary folder)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", default="small")
    p.add_argument("--reuse", action="store_true", help="use the suite already in --out instead of building")
    args = p.parse_args()
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    warnings.filterwarnings("ignore", message=".*Label not .* is present in all training examples.*")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        if not args.reuse:
            start = time.perf_counter()
            suite.build_suite(out, args.seed, args.size)
            print(f"build --size {args.size}: {time.perf_counter() - start:.1f} s wall for {len(suite.TASKS)} tasks")
        print(f"{'task':<22}{'kind':<8}{'metric':<12}{'baseline':>9}{'chance':>8}")
        for name in suite.TASKS:
            task = load_task(out / name)
            start = time.perf_counter()
            if task.embedding_type == "scene":
                score, chance, metric = *scene_score(task), "accuracy"
            else:
                score, chance, metric = *event_score(task), "frame F1"
            print(f"{name:<22}{task.embedding_type:<8}{metric:<12}{score:>9.3f}{chance:>8.3f}"
                  f"   ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
