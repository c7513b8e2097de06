"""`audiorep evaluate`: embeddings -> probes -> scores -> report, for several models and tasks.

    audiorep evaluate --model passt-s --model hearbaseline.naive --tasks TASKS/ --out runs/eval

Every run also evaluates the built-in references: the log-mel statistics baseline and,
for each audiorep model, the same architecture with random weights (`--no-references`
to skip them). Output tree:
    OUT/embeddings/<model>/<task>/   HEAR-kit embeddings layout (cached)
    OUT/predictions/<mode>/<model>/<task>.json   per-task results (cached)
    OUT/results.json, OUT/report.md, OUT/plots/
Reruns reuse cached embeddings and finished tasks; an interrupted run resumes there.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

from audiorep.tasks.format import METADATA_FILE, TaskFormatError, load_task

from . import embeddings as emb
from . import probes
from .protocol import MODES, ProbeConfig, evaluate_task
from .report import write_report
from .scores import load_reference


def find_tasks(path: Path) -> list[Path]:
    """A task folder, or a folder of task folders."""
    if (path / METADATA_FILE).exists():
        return [path]
    tasks = sorted(p for p in path.iterdir() if (p / METADATA_FILE).exists()) if path.is_dir() else []
    if not tasks:
        raise TaskFormatError(f"{path}: no {METADATA_FILE} in it or in its subfolders")
    return tasks


def model_list(specs: list[str], references: bool) -> list[emb.ModelSpec]:
    models = [emb.parse_model(s) for s in specs]
    if references:
        models.append(emb.parse_model("logmel"))
        models += [emb.parse_model(f"random:{m.path}") for m in models if m.is_audiorep and not m.random_init]
    unique: dict[str, emb.ModelSpec] = {}
    for m in models:
        unique.setdefault(m.name, m)
    return list(unique.values())


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="audiorep evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", default=[], help="model to evaluate (repeatable); see above")
    p.add_argument("--tasks", required=True, type=Path, help="a HEAR task folder or a folder of them")
    p.add_argument("--out", required=True, type=Path, help="output folder (embeddings, results, report)")
    p.add_argument("--mode", choices=MODES, default="mlp", help="probe: HEAR MLP grid, linear grid or kNN")
    p.add_argument("--seed", type=int, default=42, help="first seed (42 = the kit's grid points)")
    p.add_argument("--seeds", type=int, default=1, help="number of seeds to average (seed, seed+1, ...)")
    p.add_argument("--grid-points", type=int, default=8)
    p.add_argument("--max-epochs", type=int, default=500)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-seconds", type=float, default=emb.BATCH_SECONDS, help="audio per model call")
    p.add_argument("--reference-table", type=Path, help="CSV model,task,score or JSON to normalize against")
    p.add_argument("--no-references", action="store_true", help="skip the log-mel and random-init references")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not args.model and args.no_references:
        parser().error("nothing to evaluate: give --model or drop --no-references")
    tasks = [load_task(p) for p in find_tasks(args.tasks)]
    models = model_list(args.model, not args.no_references)
    reference = load_reference(args.reference_table) if args.reference_table else None
    cfg = ProbeConfig(mode=args.mode, grid_points=args.grid_points,
                      seeds=tuple(range(args.seed, args.seed + args.seeds)),
                      train=probes.TrainConfig(max_epochs=args.max_epochs, seed=args.seed, device=args.device))
    results: dict[str, dict[str, dict]] = {}
    timing: dict[str, dict[str, float]] = {}
    for spec in tqdm(models, desc="models"):
        loaded = None
        results[spec.name], timing[spec.name] = {}, {"embed_seconds": 0.0, "probe_seconds": 0.0}
        for task in tqdm(tasks, desc=spec.name, leave=False):
            emb_dir = args.out / "embeddings" / spec.name / task.name
            if not all(emb.split_complete(emb_dir, s) for s in task.split_names):
                loaded = loaded or emb.load_hear_model(spec, args.device)
            info = emb.embed_task(task, spec, emb_dir, args.device, args.batch_seconds, loaded)
            out_file = args.out / "predictions" / args.mode / spec.name / f"{task.name}.json"
            result = evaluate_task(emb_dir, cfg, out_file)
            results[spec.name][task.name] = result
            timing[spec.name]["embed_seconds"] += sum(info["seconds"].values())
            timing[spec.name]["probe_seconds"] += result["probe_seconds"]
    config = {"models": [m.name for m in models], "tasks": [t.name for t in tasks], "mode": args.mode,
              "grid_points": args.grid_points, "seeds": list(cfg.seeds), "max_epochs": args.max_epochs,
              "device": args.device, "reference_table": str(args.reference_table) if reference else None}
    write_report(args.out, results, {t.name: t.metadata for t in tasks}, timing, config, reference)
    scores = {m: {t: round(r["score"], 4) for t, r in per.items()} for m, per in results.items()}
    print(json.dumps({"report": str(args.out / "report.md"), "primary_scores": scores}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
