"""`audiorep evaluate`: embeddings -> probes -> scores -> report, for several models and tasks.

    audiorep evaluate --model passt-s --model naive=hearbaseline.naive --tasks TASKS/ --out runs/eval

Every run also evaluates the built-in references: the log-mel statistics baseline and,
for each audiorep model, the same architecture with random weights (`--no-references`
to skip them). Each task is checked when its turn comes; a task that is invalid, or that
fails for a model, is reported by name in results.json and report.md while the others run,
and the exit code is 1 when any failed. Output tree:
    OUT/embeddings/<model>/<task>/   HEAR-kit embeddings layout (cached)
    OUT/predictions/<mode>/<model>/<task>.json   per-task results (cached)
    OUT/results.json, OUT/report.md, OUT/plots/
<task> is the task's folder name (nsynth_pitch 5h and 50h share a task_name). Reruns reuse
cached embeddings and finished tasks; an interrupted run resumes there.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

from audiorep.files import folder_lock
from audiorep.tasks.asr_task import AsrTask, is_asr_task
from audiorep.tasks.format import METADATA_FILE, Task, TaskFormatError, check_task, load_task, metadata_warnings

from . import asr, layer_probe
from . import embeddings as emb
from .bootstrap import N_BOOTSTRAP
from .protocol import MODES, ProtocolConfig, evaluate_task, validation_interval
from .report import write_report
from .scores import load_categories, load_reference

MAX_PROBLEMS_SHOWN = 5


def find_tasks(path: Path) -> list[Path]:
    """A task folder, or a folder of task folders."""
    if (path / METADATA_FILE).exists():
        return [path]
    tasks = sorted(p for p in path.iterdir() if (p / METADATA_FILE).exists()) if path.is_dir() else []
    if not tasks:
        raise TaskFormatError(f"{path}: no {METADATA_FILE} in it or in its subfolders")
    return tasks


def model_list(specs: list[str], references: bool) -> list[emb.ModelSpec]:
    """The models to run (references added), each label once; ValueError on two models with one label."""
    models = [emb.parse_model(s) for s in specs]
    if references:
        models.append(emb.parse_model("logmel"))
        models += [m.random_reference() for m in models if m.is_audiorep and not m.random_init]
    unique: dict[str, emb.ModelSpec] = {}
    for m in models:
        seen = unique.setdefault(m.label, m)
        if (seen.module, seen.path, seen.random_init) != (m.module, m.path, m.random_init):
            raise ValueError(f"two models are named {m.label!r} ({seen.path or seen.module} and {m.path or m.module}): "
                             "name them with --model NAME=SPEC")
    names = {}
    for m in unique.values():
        if names.setdefault(m.name, m.label) != m.label:
            raise ValueError(f"models {names[m.name]!r} and {m.label!r} share the folder name {m.name!r}: rename one")
    return list(unique.values())


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="audiorep evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", default=[],
                   help="model to evaluate (repeatable), optionally NAME=SPEC; see embeddings.py for SPEC")
    p.add_argument("--tasks", required=True, type=Path, help="a HEAR task folder or a folder of them")
    p.add_argument("--out", required=True, type=Path, help="output folder (embeddings, results, report)")
    p.add_argument("--mode", choices=MODES, default="mlp", help="probe: HEAR MLP grid, linear grid or kNN")
    p.add_argument("--seed", type=int, default=42, help="first seed (42 = the kit's grid points)")
    p.add_argument("--seeds", type=int, default=1, help="number of seeds to average (seed, seed+1, ...)")
    p.add_argument("--grid-points", type=int, default=8)
    p.add_argument("--max-epochs", type=int, help="cap on every grid point's epochs (default: the grid's own: "
                                                  "500, or what the task's task_specific_param_grid says)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-seconds", type=float, default=emb.BATCH_SECONDS, help="audio per model call")
    p.add_argument("--categories", type=Path, help="CSV task,category or JSON {task: category} (speech, music, "
                                                   "general, other); overrides metadata and the built-in table")
    p.add_argument("--reference-table", type=Path, help="CSV model,task,score or JSON to normalize against")
    p.add_argument("--reference-model", action="append", default=[],
                   help="a model of the reference table whose published scores get a column (repeatable)")
    p.add_argument("--no-references", action="store_true", help="skip the log-mel and random-init references")
    p.add_argument("--bootstrap", type=int, default=N_BOOTSTRAP,
                   help="resamples of the test clips for 95%% intervals and comparisons (0 = none)")
    p.add_argument("--compare", nargs=2, action="append", default=[], metavar=("A", "B"),
                   help="paired bootstrap of model A against model B (labels as in --model; repeatable)")
    p.add_argument("--layer-weights", action="store_true",
                   help="audiorep models: probes learn softmax weights over all layers (HEAR tasks; ASR tasks always)")
    asr.add_arguments(p)
    return p


def _check(path: Path) -> tuple[Task | AsrTask | None, str | None]:
    """-> (task, None) or (None, why it cannot be evaluated): `tasks check` in full, wav headers
    included, so events past a clip's end and clips of the wrong length are caught here too."""
    if is_asr_task(path):
        return asr.check(path)
    problems = check_task(path)
    if problems:
        more = f" (+{len(problems) - MAX_PROBLEMS_SHOWN} more: run `audiorep tasks check`)" \
            if len(problems) > MAX_PROBLEMS_SHOWN else ""
        return None, "; ".join(problems[:MAX_PROBLEMS_SHOWN]) + more
    return load_task(path), None


def check_epochs(path: Path, max_epochs: int) -> None:
    """Refuse (before any work) an epoch cap under the task's validation interval: no grid point
    would ever be validated. A task whose metadata does not load fails on its own later."""
    try:
        interval = validation_interval(load_task(path).metadata)
    except TaskFormatError:
        return
    if max_epochs < interval:
        parser().error(f"--max-epochs {max_epochs}: task {path.name} validates every {interval} epochs "
                       f"(check_val_every_n_epoch), so no probe would ever be validated; give --max-epochs >= "
                       f"{interval}")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not args.model and args.no_references:
        parser().error("nothing to evaluate: give --model or drop --no-references")
    if args.reference_model and not args.reference_table:
        parser().error("--reference-model needs --reference-table")
    counts = (("--grid-points", args.grid_points), ("--seeds", args.seeds), ("--max-epochs", args.max_epochs))
    for option, value in counts:
        if value is not None and value < 1:
            parser().error(f"{option} {value}: expected an integer >= 1")
    if not args.batch_seconds > 0:
        parser().error(f"--batch-seconds {args.batch_seconds}: expected seconds > 0")
    if args.bootstrap < 0 or (args.compare and args.bootstrap == 0):
        parser().error(f"--bootstrap {args.bootstrap}: expected resamples >= 0 (>= 1 with --compare)")
    if args.max_epochs is not None and args.mode != "knn":
        for path in find_tasks(args.tasks):
            check_epochs(path, args.max_epochs)
    with folder_lock(args.out):  # a second evaluate on this --out stops: "another run ... is using OUT"
        return run(args)


def run(args: argparse.Namespace) -> int:
    try:
        models = model_list(args.model, not args.no_references)
    except ValueError as e:
        parser().error(str(e))
    labels = [m.label for m in models]
    for pair in args.compare:
        unknown = [name for name in pair if name not in labels]
        if unknown or pair[0] == pair[1]:
            parser().error(f"--compare {' '.join(pair)}: " + (f"no model labelled {unknown[0]!r} (models: "
                           f"{', '.join(labels)})" if unknown else "a model compared with itself"))
    paths = find_tasks(args.tasks)
    reference = load_reference(args.reference_table) if args.reference_table else None
    categories = load_categories(args.categories) if args.categories else None
    cfg = ProtocolConfig(mode=args.mode, grid_points=args.grid_points, max_epochs=args.max_epochs,
                         seeds=tuple(range(args.seed, args.seed + args.seeds)), bootstrap=args.bootstrap,
                         device=args.device)
    try:
        asr_run = asr.run_from_args(args)
    except ValueError as e:
        parser().error(str(e))
    results: dict[str, dict[str, dict]] = {m.label: {} for m in models}
    timing = {m.label: {"embed_seconds": 0.0, "probe_seconds": 0.0} for m in models}
    failed: dict[str, str] = {}
    warnings: dict[str, list[str]] = {}
    metadata: dict[str, dict] = {}
    checked: dict[Path, Task | None] = {}
    for spec in tqdm(models, desc="models"):
        loaded = None
        for path in tqdm(paths, desc=spec.label, leave=False):
            key = path.name
            if key in failed:
                continue
            if path not in checked:
                checked[path], why = _check(path)
                if why:
                    failed[key] = why
                    print(f"FAILED {key}: {why}", file=sys.stderr)
                    continue
                metadata[key] = checked[path].metadata
                warnings[key] = [] if isinstance(checked[path], AsrTask) else metadata_warnings(metadata[key])
                for w in warnings[key]:
                    print(f"warning: {key}: {w}", file=sys.stderr)
            task = checked[path]
            emb_dir = args.out / "embeddings" / spec.name / key
            try:
                if isinstance(task, AsrTask):
                    info, result = asr.evaluate_task(task, spec, args.out, asr_run, args.device, loaded)
                else:
                    if not emb.cached(task, spec, emb_dir):
                        loaded = loaded or emb.load_hear_model(spec, args.device)
                    info = emb.embed_task(task, spec, emb_dir, args.device, args.batch_seconds, loaded)
                    if args.layer_weights and spec.is_audiorep:
                        out_json = args.out / "predictions" / f"{args.mode}+layers" / spec.name / f"{key}.json"
                        result = layer_probe.evaluate_task(task, emb_dir, cfg, out_json,
                                                           lambda: loaded or emb.load_hear_model(spec, args.device))
                    else:
                        result = evaluate_task(emb_dir, cfg,
                                               args.out / "predictions" / args.mode / spec.name / f"{key}.json")
            except Exception as e:  # noqa: BLE001 -- reported by task and model; the other tasks go on
                failed[f"{key} / {spec.label}"] = f"{type(e).__name__}: {e}"
                print(f"FAILED {key} / {spec.label}: {type(e).__name__}: {e}", file=sys.stderr)
                continue
            results[spec.label][key] = result
            timing[spec.label]["embed_seconds"] += sum(info["seconds"].values())
            timing[spec.label]["probe_seconds"] += result["probe_seconds"]
    config = {"models": {m.label: m.path or m.module for m in models}, "tasks": [p.name for p in paths],
              "mode": args.mode, "grid_points": args.grid_points, "seeds": list(cfg.seeds),
              "max_epochs": args.max_epochs, "bootstrap": args.bootstrap, "device": args.device,
              "layer_weights": args.layer_weights,
              "categories": str(args.categories) if args.categories else None,
              "reference_table": str(args.reference_table) if reference else None}
    write_report(args.out, results, metadata, timing, config, reference, categories, failed, warnings,
                 args.reference_model, [tuple(pair) for pair in args.compare])
    scores = {m: {t: round(r["score"], 4) for t, r in per.items()} for m, per in results.items()}
    print(json.dumps({"report": str(args.out / "report.md"), "primary_scores": scores, "failed": sorted(failed)},
                     indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
