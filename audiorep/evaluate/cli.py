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
    OUT/predictions/<mode>/<model>/<task>.points/   each probe training's outcome (probe_parts.py)
<task> is the task's folder name (nsynth_pitch 5h and 50h share a task_name). Reruns reuse
cached embeddings, finished probe trainings and finished tasks; an interrupted run resumes there.

Under torchrun (`torchrun --nproc-per-node 8 -m audiorep evaluate ...`) every rank takes its
share, on its own device (--device auto: cuda:LOCAL_RANK): first of the (model, task, split)
embeddings, then of the probe trainings (each seed's grid points, then the chosen point on the
other folds; an ASR or --layer-weights task is one unit; kNN, cheap, runs on rank 0). Rank 0
selects, scores and writes the report, identical to one process's (timing aside; work.py).
Work is reused per unit whatever the world size of the interrupted run.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from audiorep import dist
from audiorep.dist import gather_patiently, joined, out_lock
from audiorep.tasks.asr_task import AsrTask, is_asr_task
from audiorep.tasks.format import METADATA_FILE, Task, TaskFormatError, check_task, load_task, metadata_warnings

from . import asr, work
from . import embeddings as emb
from .bootstrap import N_BOOTSTRAP
from .protocol import MODES, ProtocolConfig, validation_interval
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
    p.add_argument("--device", default="auto", help="auto: cuda (under torchrun cuda:LOCAL_RANK) when present, "
                                                     "else cpu; or cpu, cuda, cuda:N")
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
    with joined(args.device) as w:
        dist.agree(sorted((k, str(v)) for k, v in vars(args).items()), w, "audiorep evaluate's arguments")
        with out_lock(args.out, w):  # a second evaluate on this --out stops: "another run ... is using OUT"
            return run(args, w)


def _check_tasks(paths: list[Path], main: bool) -> tuple[dict, dict, dict, dict]:
    """-> (tasks that can be evaluated by path, failed {task: why}, metadata, warnings)."""
    tasks, failed, metadata, warnings = {}, {}, {}, {}
    for path in paths:
        task, why = _check(path)
        key = path.name
        if why:
            failed[key] = why
            if main:
                print(f"FAILED {key}: {why}", file=sys.stderr)
            continue
        tasks[path], metadata[key] = task, task.metadata
        warnings[key] = [] if isinstance(task, AsrTask) else metadata_warnings(metadata[key])
        for message in warnings[key] if main else []:
            print(f"warning: {key}: {message}", file=sys.stderr)
    return tasks, failed, metadata, warnings


def run(args: argparse.Namespace, w: dist.World | None = None) -> int:
    w = w or dist.world(args.device)
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
                         device=str(w.device))
    try:
        asr_run = asr.run_from_args(args)
    except ValueError as e:
        parser().error(str(e))
    tasks, failed, metadata, warnings = _check_tasks(paths, w.main)
    jobs = work.jobs(models, tasks, args.out, args.mode, args.layer_weights)
    done = work.run(jobs, cfg, args.out, args.batch_seconds, asr_run, w)
    code = None
    if w.main:
        results: dict[str, dict[str, dict]] = {m.label: {} for m in models}
        timing = {m.label: {"embed_seconds": 0.0, "probe_seconds": 0.0} for m in models}
        for i, job in enumerate(jobs):
            try:
                info, result = work.result(job, cfg, done, i)
            except Exception as e:  # noqa: BLE001 -- reported by task and model; the other tasks go on
                failed[job.name] = str(e) if isinstance(e, work.Failed) else work.failure(e)
                print(f"FAILED {job.name}: {failed[job.name]}", file=sys.stderr)
                continue
            results[job.spec.label][job.task.path.name] = result
            timing[job.spec.label]["embed_seconds"] += sum(info["seconds"].values())
            timing[job.spec.label]["probe_seconds"] += result["probe_seconds"]
        code = _write(args, w, models, paths, cfg, results, timing, (metadata, failed, warnings, reference, categories))
    return gather_patiently(code, w)[0]  # every rank returns once the report is written


def _write(args: argparse.Namespace, w: dist.World, models: list, paths: list[Path], cfg: ProtocolConfig,
           results: dict, timing: dict, context: tuple) -> int:
    """Rank 0: results.json, report.md and plots; -> the exit code."""
    metadata, failed, warnings, reference, categories = context
    config = {"models": {m.label: m.path or m.module for m in models}, "tasks": [p.name for p in paths],
              "mode": args.mode, "grid_points": args.grid_points, "seeds": list(cfg.seeds),
              "max_epochs": args.max_epochs, "bootstrap": args.bootstrap, "device": w.device.type,
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
