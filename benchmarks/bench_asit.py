"""ASiT loss ablation at small scale, beside the paper's Table 2.

    python benchmarks/bench_asit.py --out runs/asit-ablation            # 2 seeds, ~25 min on 2 CPU cores
    python benchmarks/bench_asit.py --out runs/asit-ablation --seeds 3  # ~30 min (the table in docs/asit.md)

Four variants of one tiny ASiT (asit-tiny: ViT 64 wide, 2 blocks; 1.3 s crops of 8 x 8
patches; small heads), pretrained with the same seeds, steps, batches and data on the
suite's unlabeled corpus (audiorep.tasks.suite.build_corpus), differing only in the loss
weights: reconstruction only, + local, + global, all three. Each run's shipped (teacher)
encoder is evaluated with `audiorep evaluate` on a few suite tasks, together with the
log-mel baseline and the encoder at its initialization. The table gives each variant's
mean normalized score (task score / best score of all evaluated models on the task,
averaged over tasks) as mean +- standard error over seeds, beside the paper's AS-20K mAP
(ViT-S, 10 epochs on AudioSet). Every stage reuses what a previous run left in --out.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from study import add_arguments, mean_scores, save_init, slug, suite_and_corpus, table

from audiorep import presets
from audiorep.config import override
from audiorep.objectives import RECIPES
from audiorep.train import run_recipe

VARIANTS = {  # objective overrides; the released weights otherwise (recon x2, local on all data tokens)
    "recon": ["objective.w_local=0", "objective.w_global=0"],
    "recon + local": ["objective.w_global=0"],
    "recon + global": ["objective.w_local=0"],
    "all three": [],
}
PAPER = {"recon": 25.5, "recon + local": 27.6, "recon + global": 27.1, "all three": 28.1}  # Table 2, AS-20K mAP
TASKS = ("sound_classes", "pitch", "family")
ENCODER = ["encoder.backbone.max_frames=128", "encoder.backbone.drop_path=0.1", "encoder.embed.scene_hop_s=1.0"]
# teacher momentum 0.97 (released: 0.996): over 200 steps a 0.996 teacher, the encoder that
# is shipped and evaluated, would still hold about 2/3 of its initial weights
OBJECTIVE = ["objective.momentum=0.97", "objective.global_dim=256", "objective.local_dim=128",
             "objective.head_hidden=256", "objective.head_bottleneck=64", "objective.recon_hidden=128",
             "objective.recon_bottleneck=64"]


def pretrain(out: Path, corpus: Path, variant: str, seed: int, steps: int, batch: int) -> Path:
    run = out / "runs" / slug(variant, seed)
    train = [f"steps={steps}", f"batch_size={batch}", "blr=0", "lr=1e-3", f"seed={seed}", "data.workers=1",
             f"checkpoint_every={steps}", f"log_every={max(1, steps // 20)}"]  # warm-up: the recipe's 10%
    run_recipe(RECIPES["asit"], presets.get("asit-tiny"), str(corpus), run, ENCODER + OBJECTIVE + VARIANTS[variant] + train)
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, steps=200, batch=8, corpus_hours=0.3, tasks=TASKS)  # batch: clips, two crops each
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one compute thread + one loader process, as the demo
    began = time.perf_counter()
    tasks, corpus = suite_and_corpus(args.out, args.tasks, args.corpus_hours)
    runs = {slug(v, s): pretrain(args.out, corpus, v, s, args.steps, args.batch)
            for s in range(args.seeds) for v in VARIANTS}
    runs["init"] = save_init(args.out, override(presets.get("asit-tiny"), [o.split(".", 1)[1] for o in ENCODER]))
    minutes_pretrain = (time.perf_counter() - began) / 60
    means = mean_scores(args.out, tasks, runs)
    lines = [f"ASiT loss ablation: asit-tiny, {args.steps} steps x {args.batch} clips (2 crops of 1.3 s), "
             f"{args.seeds} seeds, corpus {args.corpus_hours} h; tasks {', '.join(args.tasks)}; "
             f"{(time.perf_counter() - began) / 60:.1f} min in all ({minutes_pretrain:.1f} pretraining)", ""]
    text = "\n".join(lines + table(means, VARIANTS, args.seeds, PAPER, "paper Table 2 (AS-20K mAP)"))
    (args.out / "ablation.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
