"""EAT on this machine: inference speed beside the paper's Table 8 and the augmentation share of a
training step.

    python benchmarks/bench_eat.py speed                      # eat-s, batch 1, 1 / 5 / 10 s clips
    python benchmarks/bench_eat.py augment --batch 8          # wave_augment's share of a training step

`speed`: eval forward of the encoder (frontend + backbone + head) on one clip, the median of
`--repeats` runs after a warm-up, with torch's threads as set (`--threads`). A 1 s clip is
shorter than EAT-S accepts (32257 samples), so it is zero-padded to that, as the encoder
does. `augment`: one training step of the `eat` recipe (augmentation, forward, backward,
AdamW) against the waveform augmentation alone (the same policy, seeds 0..n-1), both
averaged. The mix study of the paper's Table 6a is a study spec:
`audiorep study studies/eat-mixes.toml --out runs/eat-mixes --jobs 2` (docs/study.md).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from audiorep import presets
from audiorep.augment import wave_augment
from audiorep.config import override
from audiorep.encoder import Encoder
from audiorep.objectives import RECIPES
from audiorep.train import TrainConfig, param_groups

PAPER_MS = {1.0: 38.3, 5.0: 67.0, 10.0: 145.0}  # Table 8, EAT-S on a Xeon E5-2682 v4 (batch 1)


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def speed(args) -> None:
    encoder = Encoder(presets.get(args.preset)).with_head(50).eval()
    print(f"{args.preset}: {sum(p.numel() for p in encoder.parameters()) / 1e6:.2f} M parameters (50 classes), "
          f"{torch.get_num_threads()} threads, batch 1, fp32, median of {args.repeats}")
    print(f"{'clip':>6} {'samples':>8} {'ours ms':>9} {'min ms':>8} {'paper ms':>9}")
    for seconds, paper in PAPER_MS.items():
        wave = encoder.pad_short(0.1 * torch.randn(1, round(seconds * encoder.sample_rate)))
        with torch.no_grad():
            times = timed(lambda: encoder.head(encoder.pool(encoder(wave))), args.repeats)
        print(f"{seconds:>5.0f}s {wave.shape[1]:>8} {1e3 * statistics.median(times):>9.1f} "
              f"{1e3 * min(times):>8.1f} {paper:>9.1f}")


def augment(args) -> None:
    recipe = RECIPES["eat"]
    cfg = override(recipe.config(), list(recipe.objective_defaults) + ["wave_mix_after_epochs=0"])  # mixes on, as below
    objective = recipe.objective(Encoder(presets.get(args.preset)), cfg, num_classes=50).train()
    train_cfg = override(TrainConfig(), list(recipe.defaults))
    optimizer = torch.optim.AdamW(param_groups(objective, train_cfg.weight_decay), lr=train_cfg.lr, betas=train_cfg.betas,
                                  eps=train_cfg.eps)
    samples = round(args.seconds * objective.encoder.sample_rate)
    wave = 0.1 * torch.randn(args.batch, samples)
    target = torch.nn.functional.one_hot(torch.arange(args.batch) % 50, 50).float()

    def step():
        loss, _ = objective({"wave": wave, "target": target})
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    seeds = iter(range(1_000_000))

    def aug():
        torch.manual_seed(next(seeds))
        wave_augment(wave, target, cfg.wave, objective.encoder.sample_rate)

    step_s = statistics.mean(timed(step, args.repeats))
    aug_s = statistics.mean(timed(aug, 4 * args.repeats))
    print(f"{args.preset}, batch {args.batch} x {args.seconds:g} s, {torch.get_num_threads()} threads: training step "
          f"{step_s:.2f} s (augmentation included), augmentation alone {1e3 * aug_s:.0f} ms = "
          f"{100 * aug_s / step_s:.1f}% of the step (goal < 10%)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("what", choices=("speed", "augment"))
    p.add_argument("--preset", default="eat-s")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = as torch has them)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=8, help="augment: clips per step")
    p.add_argument("--seconds", type=float, default=5.0, help="augment: clip length")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    {"speed": speed, "augment": augment}[args.what](args)


if __name__ == "__main__":
    main()
