"""`audiorep demo`: the whole toolkit on a laptop, in about 10 minutes on 2 CPU cores.

1. builds the offline task suite (HEAR format) and an unlabeled pretraining corpus;
2. pretrains a tiny Audio-MAE on the corpus for `--minutes` (the one training loop);
3. evaluates it with the HEAR protocol against the log-mel baseline and the same
   encoder at its random initialization (the exact weights pretraining started from);
4. writes OUT/demo.md: mean normalized score per model, per-task scores, the training curve.

Every stage reuses what a previous run left in OUT (tasks, corpus, checkpoints, embeddings),
so an interrupted demo continues where it stopped when rerun with the same arguments.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from . import presets, sizes
from .config import override
from .encoder import Encoder
from .evaluate import scores
from .objectives import RECIPES
from .runs import run_recipe, split_overrides

TINY = sizes.get("audiomae", "tiny")  # the model, its decoder and optimizer; the demo size sets batch and crop


@dataclass(frozen=True)
class Size:
    suite: str              # task suite size (audiorep.tasks.suite SIZES)
    corpus_hours: float
    minutes: float          # pretraining time budget
    batch_size: int         # over the tiny Audio-MAE's own (sizes.py)
    crop_s: float
    grid_points: int        # probe grid of the evaluator
    max_epochs: int
    tasks: tuple[str, ...] | None = None  # None: the whole suite


SIZES = {
    # piano_transcription is left out: its probes (88 labels, 5 folds of 10 s frames) alone
    # take longer than the rest of the demo; `audiorep evaluate` runs it on the full suite
    "small": Size("small", 0.5, 3.0, 32, 3.84, 2, 50, ("keywords", "speaker_count", "language_id", "speaking_style",
                                                      "pitch", "family", "sound_classes", "scene_events")),
    "tiny": Size("tiny", 0.02, 0.2, 8, 2.0, 1, 10, ("keywords", "sound_classes")),  # CI: the same path, fast
}


def seconds_per_step(encoder_cfg, size: Size) -> float:
    """Time a forward/backward of one batch of the configured objective (after one warm-up step)."""
    recipe = RECIPES["audiomae"]
    objective_overrides = split_overrides(list(TINY.overrides))["objective"]
    objective = recipe.objective(Encoder(encoder_cfg), override(recipe.config(), list(recipe.objective_defaults) +
                                                                objective_overrides))
    optimizer = torch.optim.AdamW(objective.parameters())
    wave = torch.randn(size.batch_size, round(size.crop_s * objective.encoder.sample_rate)) * 0.1
    times = []
    for _ in range(2):
        start = time.perf_counter()
        loss, _ = objective({"wave": wave})
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
    return times[-1]


def normalized(results: dict, models: list[str]) -> dict[str, dict[str, float]]:
    """{task: {model: score / best score of `models` on the task}} from the evaluator's results.json."""
    runs = {m: results["results"][m] for m in models}
    maximize = {task: r["maximize"] for per_task in runs.values() for task, r in per_task.items()}
    table = scores.normalize(scores.primary_table(runs), maximize)
    return {task: {m: v for m, v in row.items() if not math.isnan(v)} for task, row in table.items()
            if not all(math.isnan(v) for v in row.values())}


def mean_normalized(table: dict[str, dict[str, float]]) -> dict[str, float]:
    per_model: dict[str, list[float]] = {}
    for scores in table.values():
        for model, value in scores.items():
            per_model.setdefault(model, []).append(value)
    return {m: sum(v) / len(v) for m, v in per_model.items()}


def write_summary(out: Path, names: dict[str, str], results: dict, pretrain: dict) -> str:
    label = {v: k for k, v in names.items()}
    models = list(names.values())
    table = normalized(results, models)
    means = mean_normalized(table)
    lines = ["# audiorep demo", "",
             f"Tiny Audio-MAE ({pretrain['params'] / 1e6:.2f} M parameters) pretrained for {pretrain['steps']} steps "
             f"({pretrain['minutes']:.1f} min, batch {pretrain['batch_size']}, {pretrain['crop_s']} s crops) on "
             f"{pretrain['corpus_clips']} unlabeled 10 s clips; MAE loss {pretrain['loss_first']:.3f} -> "
             f"{pretrain['loss_last']:.3f}. HEAR protocol probes on the frozen scene/timestamp embeddings.", "",
             "| model | mean normalized score |", "|---|---|"]
    lines += [f"| {label[m]} | {means.get(m, math.nan):.3f} |" for m in models]
    lines += ["", "Normalized score = task score / best score of these models on the task (1.0 = best).", "",
              "| task | " + " | ".join(label[m] for m in models) + " |", "|---|" + "---|" * len(models)]
    for task, scores in sorted(table.items()):
        raw = {m: results["results"][m][task]["score"] for m in models if task in results["results"].get(m, {})}
        lines.append(f"| {task} | " + " | ".join(f"{raw.get(m, math.nan):.3f} ({scores.get(m, math.nan):.2f})"
                                                  for m in models) + " |")
    delta = means.get(names["pretrained"], math.nan) - means.get(names["random init"], math.nan)
    verdict = "beats" if delta > 0 else "does NOT beat"
    lines += ["", f"**Pretrained {verdict} random init on the mean normalized score "
                  f"({means.get(names['pretrained'], math.nan):.3f} vs {means.get(names['random init'], math.nan):.3f}, "
                  f"{delta:+.3f}).**", "", f"Full evaluator report: {out / 'eval' / 'report.md'}", ""]
    text = "\n".join(lines)
    (out / "demo.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    from .evaluate import cli as evaluate_cli
    from .tasks.suite import build_corpus, build_suite

    parser = argparse.ArgumentParser(prog="audiorep demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="audiorep-demo", type=Path, help="output folder (reused when rerun)")
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--minutes", type=float, help="pretraining budget (default: the size's)")
    parser.add_argument("--steps", type=int, help="pretraining steps (default: as many as fit in --minutes)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    size, out, began = SIZES[args.size], args.out, time.perf_counter()
    # one compute thread + one loader process fill 2 cores; two threads next to a busy
    # loader (or any other job) spin against each other and run many times slower
    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"size": args.size, "seed": args.seed, **asdict(size)}
    stamp = out / "demo_settings.json"
    if stamp.exists() and json.loads(stamp.read_text()) != json.loads(json.dumps(settings)):
        parser.error(f"{out} holds a demo made with other settings ({stamp}); use another --out")
    stamp.write_text(json.dumps(settings, indent=1))

    print(f"[1/4] task suite ({size.suite}) and corpus ({size.corpus_hours} h) in {out}", flush=True)
    tasks, corpus = out / "tasks", out / "corpus"
    if not (tasks / "done").exists():
        build_suite(tasks, args.seed, size.suite, size.tasks)
        (tasks / "done").write_text("")
    if not corpus.exists():
        build_corpus(corpus, size.corpus_hours, args.seed)

    encoder_cfg = override(presets.get(TINY.preset), split_overrides(list(TINY.overrides))["encoder"])
    run = out / "pretrain"
    steps_file = out / "pretrain_steps.json"  # the step count is fixed once, so a rerun resumes the same run
    if args.steps:
        steps = args.steps
    elif steps_file.exists():
        steps = json.loads(steps_file.read_text())["steps"]
    else:
        per_step = seconds_per_step(encoder_cfg, size)
        steps = max(10, int((args.minutes or size.minutes) * 60 / (per_step * 1.15)))  # ~15% for data and logs
    steps_file.write_text(json.dumps({"steps": steps}))
    print(f"[2/4] pretraining {TINY.preset} with Audio-MAE for {steps} steps", flush=True)
    started = time.perf_counter()
    run_recipe(RECIPES["audiomae"], presets.get(TINY.preset), str(corpus / "16000"), run,
               [*TINY.overrides, f"steps={steps}", f"batch_size={size.batch_size}", f"seed={args.seed}",
                f"data.crop_s={size.crop_s}", "data.workers=1", f"checkpoint_every={max(1, steps // 4)}",
                f"log_every={max(1, steps // 50)}"], run_config={"preset": TINY.preset})
    minutes = (time.perf_counter() - started) / 60

    init = out / "random-init"  # the weights pretraining started from (run_recipe seeds the encoder alike)
    torch.manual_seed(args.seed)
    Encoder(encoder_cfg).save(init)

    print("[3/4] HEAR evaluation: pretrained vs random init vs log-mel baseline", flush=True)
    names = {"pretrained": str(run), "random init": str(init), "log-mel": "logmel"}
    evaluate_cli.main(["--tasks", str(tasks), "--out", str(out / "eval"), "--no-references",
                       "--grid-points", str(size.grid_points), "--max-epochs", str(size.max_epochs),
                       *[x for spec in names.values() for x in ("--model", spec)]])
    results = json.loads((out / "eval" / "results.json").read_text())
    resolved = {k: _model_name(v) for k, v in names.items()}

    with open(run / "log.csv", newline="") as f:
        curve = [float(r["loss"]) for r in csv.DictReader(f)]
    pretrain = {"steps": steps, "minutes": minutes, "batch_size": size.batch_size, "crop_s": size.crop_s,
                "corpus_clips": len(list((corpus / "16000").glob("*.wav"))), "loss_first": curve[0],
                "loss_last": curve[-1], "params": sum(p.numel() for p in Encoder(encoder_cfg).parameters())}
    print("[4/4] report", flush=True)
    print(write_summary(out, resolved, results, pretrain))
    print(f"demo finished in {(time.perf_counter() - began) / 60:.1f} min; summary in {out / 'demo.md'}")
    return 0


def _model_name(spec: str) -> str:
    from .evaluate.embeddings import parse_model

    return parse_model(spec).label  # results.json is keyed by display label


if __name__ == "__main__":
    sys.exit(main())
