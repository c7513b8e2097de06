"""EAT on this machine: inference speed beside the paper's Table 8, the augmentation share of a
training step, and the mix study of the paper's Table 6a on the suite's sound_classes folds.

    python benchmarks/bench_eat.py speed                      # eat-s, batch 1, 1 / 5 / 10 s clips
    python benchmarks/bench_eat.py augment --batch 8          # wave_augment's share of a training step
    python benchmarks/bench_eat.py mixes --out runs/eat-mixes --seeds 3 --folds fold00 steps=300

`speed`: eval forward of the encoder (frontend + backbone + head) on one clip, the median of
`--repeats` runs after a warm-up, with torch's threads as set (`--threads`). A 1 s clip is
shorter than EAT-S accepts (32257 samples), so it is zero-padded to that, as the encoder
does. `augment`: one training step of the `eat` recipe (augmentation, forward, backward,
AdamW) against the waveform augmentation alone (the same policy, seeds 0..n-1), both
averaged. `mixes`: `audiorep crossval` of the `eat` recipe with no mix, each mix alone and
all four (objective.wave.mixes), over seeds; accuracy mean +- s.e. and the change
from no mix beside the paper's increments on ESC-50 (each row there adds one mix to the
previous ones: 83.0 -> +3.5 mixup -> +0.5 cutmix -> +3.1 freqmix -> +0.9 phasemix = 91.0).
Extra field=value arguments go to every crossval run (encoder.*, objective.*, train fields).
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from audiorep import presets
from audiorep.augment import wave_augment
from audiorep.config import override
from audiorep.crossval import crossval
from audiorep.encoder import Encoder
from audiorep.objectives import RECIPES
from audiorep.tasks.format import load_task
from audiorep.train import TrainConfig, param_groups

PAPER_MS = {1.0: 38.3, 5.0: 67.0, 10.0: 145.0}  # Table 8, EAT-S on a Xeon E5-2682 v4 (batch 1)
PAPER_MIX = {"mixup": 3.5, "timemix": 0.5, "freqmix": 3.1, "phasemix": 0.9, "all": 8.0}  # Table 6a, over 83.0
MIXES = ("mixup", "timemix", "freqmix", "phasemix")
CONDITIONS = {"none": (), **{m: (m,) for m in MIXES}, "all": MIXES}
# a width and length that train in minutes on two CPU cores (stated with every result)
SMALL = ["encoder.frontend.sample_rate=8000", "encoder.backbone.channels=4", "encoder.backbone.dim=64",
         "encoder.backbone.depth=2", "encoder.backbone.heads=4", "encoder.backbone.ff=256",
         "encoder.backbone.factors=4,4,4", "batch_size=16", "data.workers=1", "checkpoint_every=1000", "log_every=20"]


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


def mixes(args) -> None:
    task_dir = Path(args.task)
    if not (task_dir / "task_metadata.json").exists():
        from audiorep.tasks.suite import build_task
        build_task("sound_classes", task_dir, seed=0, size=args.size)
    task = load_task(task_dir)
    recipe = RECIPES["eat"]
    encoder_cfg = presets.get(args.preset)
    overrides = ([] if args.full_size else SMALL) + args.overrides
    folds = args.folds.split(",") if args.folds else None
    rows = {}
    for name, chosen in CONDITIONS.items():
        mix = f"objective.wave.mixes={','.join(chosen)}"
        results = crossval(recipe, encoder_cfg, task, Path(args.out) / name, args.seeds, overrides + [mix],
                           only=folds)
        rows[name] = results["summary"]["test/top1_acc"]
    print(f"\n{task.name} ({len(task.vocabulary)} classes), folds {args.folds or 'all'}, {args.seeds} seeds, "
          f"{'eat-s' if args.full_size else 'reduced: ' + ' '.join(SMALL)} {' '.join(args.overrides)}")
    print(f"{'mix':<9} {'accuracy':>16} {'vs none':>8} {'paper':>6}")
    base = rows["none"]["mean"]
    for name, s in rows.items():
        se = f" +- {100 * s['se']:.1f}" if s["se"] is not None else ""
        paper = f"{PAPER_MIX[name]:+.1f}" if name in PAPER_MIX else ""
        print(f"{name:<9} {100 * s['mean']:>8.1f}{se:<8} {100 * (s['mean'] - base):>+8.1f} {paper:>6}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("what", choices=("speed", "augment", "mixes"))
    p.add_argument("--preset", default="eat-s")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = as torch has them)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=8, help="augment: clips per step")
    p.add_argument("--seconds", type=float, default=5.0, help="augment: clip length")
    p.add_argument("--task", default="runs/tasks/sound_classes", help="mixes: the task (built there if missing)")
    p.add_argument("--size", default="small", help="mixes: suite size when the task is built")
    p.add_argument("--out", default="runs/eat-mixes", help="mixes: study folder (rerun to resume)")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--folds", help="mixes: held-out folds, e.g. fold00 (default all)")
    p.add_argument("--full-size", action="store_true", help="mixes: the preset as it is, not the reduced width")
    p.add_argument("overrides", nargs="*", help="mixes: field=value for every run")
    args = p.parse_intermixed_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    {"speed": speed, "augment": augment, "mixes": mixes}[args.what](args)


if __name__ == "__main__":
    main()
