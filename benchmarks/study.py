"""Shared steps of the small-scale variant studies (bench_asit.py; bench_encodecmae.py can
use them too): the suite tasks and unlabeled corpus, the encoder at init, one `audiorep
evaluate` over every run, and the table of mean normalized scores +- s.e. over seeds.

Normalized score = task score / best score of all evaluated models on the task (the log-mel
baseline included), averaged over the tasks (audiorep.demo.normalized / mean_normalized).
"""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import torch

from audiorep.demo import mean_normalized, normalized
from audiorep.encoder import Encoder
from audiorep.evaluate import cli as evaluate_cli
from audiorep.tasks.suite import build_corpus, build_suite


def add_arguments(parser, steps: int, batch: int, corpus_hours: float, tasks) -> None:
    """The options every study takes: --out, --seeds, --steps, --batch, --corpus-hours, --tasks."""
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--batch", type=int, default=batch)
    parser.add_argument("--corpus-hours", type=float, default=corpus_hours)
    parser.add_argument("--tasks", nargs="+", default=list(tasks))


def slug(variant: str, seed: int) -> str:
    return f"{variant.replace(' + ', '+').replace(' ', '-')}-seed{seed}"


def suite_and_corpus(out: Path, tasks: list[str], corpus_hours: float) -> tuple[Path, Path]:
    """(task folder, corpus folder of 16 kHz clips) under `out`, built once (seed 0, size small)."""
    task_dir, corpus = out / "tasks", out / "corpus"
    if not (task_dir / "done").exists():
        build_suite(task_dir, 0, "small", list(tasks))
        (task_dir / "done").write_text("")
    if not corpus.exists():
        build_corpus(corpus, corpus_hours, 0)
    return task_dir, corpus / "16000"


def save_init(out: Path, encoder_cfg) -> Path:
    """The encoder seed 0 starts from (run_recipe seeds torch with train.seed before building it)."""
    path = out / "runs" / "init-seed0"
    torch.manual_seed(0)
    Encoder(encoder_cfg).save(path)
    return path


def mean_scores(out: Path, tasks: Path, runs: dict[str, Path]) -> dict[str, float]:
    """Evaluate every run (name -> run folder), the init encoder and log-mel -> mean normalized score per name."""
    names = {name: str(run) for name, run in runs.items()} | {"logmel": "logmel"}
    evaluate_cli.main(["--tasks", str(tasks), "--out", str(out / "eval"), "--no-references",
                       "--grid-points", "2", "--max-epochs", "50",
                       *[x for name, spec in names.items() for x in ("--model", f"{name}={spec}")]])
    results = json.loads((out / "eval" / "results.json").read_text())
    if results["failed"]:  # a model without a task would be averaged over fewer tasks: no table
        raise SystemExit(f"{out / 'eval' / 'report.md'}: evaluation failed for " + "; ".join(
            f"{k}: {v}" for k, v in sorted(results["failed"].items())))
    return mean_normalized(normalized(results, list(names)))


def table(means: dict[str, float], variants, seeds: int, paper: dict[str, object], paper_column: str) -> list[str]:
    """Markdown rows: each variant's mean +- s.e. over seeds beside the paper's number, then init and log-mel."""
    lines = [f"| variant | mean normalized score (+- s.e. over seeds) | {paper_column} |", "|---|---|---|"]
    for variant in variants:
        values = [means[slug(variant, s)] for s in range(seeds)]
        se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan
        lines.append(f"| {variant} | {statistics.mean(values):.3f} +- {se:.3f} | {paper[variant]} |")
    return lines + [f"| encoder at init (seed 0) | {means['init']:.3f} | |",
                    f"| log-mel baseline | {means['logmel']:.3f} | |"]
