"""Bootstrap cost of a large scene task: the primary metric on every resample at once
(metrics.RESAMPLED) against scoring one resampled set at a time, on random multi-label scores.

    python benchmarks/bench_bootstrap.py                          # FSD50K's size: 10231 clips, 200 classes, mAP
    python benchmarks/bench_bootstrap.py --metric d_prime --classes 527

Prints both times, the ratio and the largest difference between the two (they are the same numbers).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from audiorep.evaluate import bootstrap as bs
from audiorep.evaluate.metrics import RESAMPLED, SCENE_METRICS


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=10231)
    p.add_argument("--classes", type=int, default=200)
    p.add_argument("--resamples", type=int, default=1000)
    p.add_argument("--metric", default="mAP", choices=sorted(RESAMPLED))
    p.add_argument("--positives", type=float, default=0.01, help="share of positive labels")
    p.add_argument("--loop", type=int, default=5, help="resamples scored one at a time (the rest extrapolated)")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    y = (rng.random((args.clips, args.classes)) < args.positives).astype(np.float64)
    probs = np.clip(0.3 * y + 0.7 * rng.random(y.shape), 0, 1).astype(np.float32)
    ids = bs.draws(args.clips, args.resamples, "bench/test")
    start = time.perf_counter()
    with np.errstate(invalid="ignore", divide="ignore"):
        one = [SCENE_METRICS[args.metric](probs[i], y[i]) for i in ids[:args.loop]]
    per = (time.perf_counter() - start) / args.loop
    start = time.perf_counter()
    together = RESAMPLED[args.metric](probs, y, ids)
    took = time.perf_counter() - start
    print(f"{args.metric}, {args.clips} clips x {args.classes} classes, {args.resamples} resamples: one at a time "
          f"{per * args.resamples:.0f} s ({per:.3f} s each, {args.loop} measured), all at once {took:.1f} s: "
          f"{per * args.resamples / took:.0f}x; largest difference {np.nanmax(np.abs(together[:args.loop] - one)):.1e}")


if __name__ == "__main__":
    main()
