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
other folds; an ASR task, a --layer-weights task or a kNN task is one unit). Rank 0 selects,
scores and writes the report, identical to one process's (timing aside). Work is reused per
unit whatever the world size of the interrupted run.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from audiorep import dist
from audiorep.tasks.asr_task import AsrTask, is_asr_task
from audiorep.tasks.format import METADATA_FILE, Task, TaskFormatError, check_task, load_task, metadata_warnings

from . import asr, layer_probe
from . import embeddings as emb
from . import protocol as proto
from .bootstrap import N_BOOTSTRAP
from .protocol import MODES, ProtocolConfig, validation_interval
from .ranks import gather_patiently, joined, out_lock
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


@dataclass(frozen=True)
class Job:
    """One model on one task; `kind`: "probes" (the protocol's units), "layers" (--layer-weights)
    or "asr" (one unit each, embeddings included for ASR)."""
    spec: emb.ModelSpec
    task: Task | AsrTask
    kind: str
    emb_dir: Path
    out_json: Path

    @property
    def name(self) -> str:
        return f"{self.task.path.name} / {self.spec.label}"


class Models:
    """The HEAR model this rank used last, kept for its next unit of the same model."""

    def __init__(self, device: str):
        self.device, self.spec, self.loaded = device, None, None

    def get(self, spec: emb.ModelSpec) -> tuple[Any, Any]:
        if spec != self.spec:
            self.spec, self.loaded = None, None
            self.loaded, self.spec = emb.load_hear_model(spec, self.device), spec
        return self.loaded

    def current(self, spec: emb.ModelSpec) -> tuple[Any, Any] | None:
        return self.loaded if spec == self.spec else None


def _failure(e: Exception) -> str:
    return f"{type(e).__name__}: {e}"


def _first_failures(gathered: list[dict[int, tuple[int, str]]]) -> dict[int, str]:
    """Job index -> the failure of its first failing unit (in the order one process takes them)."""
    merged: dict[int, tuple[int, str]] = {}
    for fails in gathered:
        for i, pos_why in fails.items():
            merged[i] = min(merged.get(i, pos_why), pos_why)
    return {i: why for i, (_, why) in sorted(merged.items())}


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


def _embed(jobs: list[Job], args: argparse.Namespace, w: dist.World, models: Models,
           ) -> tuple[dict[int, dict], dict[int, str]]:
    """Every rank embeds its share of the (job, split) units of the HEAR jobs -> (embedding info
    of each job that did not fail, on rank 0; failed jobs' reasons, on every rank)."""
    fails: dict[int, tuple[int, str]] = {}
    if w.main:  # stale folders removed, metadata written, before any rank writes a split
        for i, job in enumerate(jobs):
            try:
                emb.prepare_task(job.task, job.spec, job.emb_dir)
            except Exception as e:  # noqa: BLE001 -- reported by task and model; the others go on
                fails[i] = (-1, _failure(e))
    fails = gather_patiently(fails, w)[0]
    units = [(i, split) for i, job in enumerate(jobs) if i not in fails for split in job.task.split_names]
    done: dict[tuple[int, str], dict] = {}
    for pos, (i, split) in tqdm(dist.share(list(enumerate(units)), w), desc="embeddings", disable=not w.main):
        job = jobs[i]
        if i in fails or emb.split_complete(job.emb_dir, split):
            continue
        try:
            done[i, split] = emb.embed_split(job.task, split, job.emb_dir, str(w.device), args.batch_seconds,
                                             models.get(job.spec))
        except Exception as e:  # noqa: BLE001
            fails[i] = (pos, _failure(e))
    gathered = gather_patiently((done, fails), w)
    failed = _first_failures([f for _, f in gathered])
    done = {k: v for d, _ in gathered for k, v in d.items()}
    infos = {i: emb.record_task(job.spec, job.emb_dir, {s: d for (j, s), d in done.items() if j == i})
             for i, job in enumerate(jobs) if i not in failed and w.main}
    return infos, failed


def _units(jobs: list[Job], failed: dict[int, str], cfg: ProtocolConfig, second: bool) -> list[tuple[int, Any]]:
    """(job index, unit) of the jobs not `failed`: the first probe units (with one "whole" unit per
    ASR or layer-weights job), or with `second` the units that need the first ones done. A job that
    cannot be planned joins `failed` (alike on every rank: they read the same files)."""
    out = []
    for i, job in enumerate(jobs):
        if i in failed:
            continue
        if job.kind != "probes":
            out += [] if second else [(i, "whole")]
            continue
        try:
            if proto.cached_result(job.out_json, proto.task_settings(job.emb_dir, cfg)) is None:
                first, rest = proto.plan_units(json.loads((job.emb_dir / METADATA_FILE).read_text()), cfg)
                out += [(i, u) for u in (rest if second else first)]
        except Exception as e:  # noqa: BLE001
            failed[i] = _failure(e)
    return out


def _probe(jobs: list[Job], units: list[tuple[int, Any]], cfg: ProtocolConfig, args: argparse.Namespace,
           asr_run, w: dist.World, models: Models) -> tuple[dict[int, tuple], dict[int, tuple[int, str]]]:
    """This rank's share of `units` -> (whole jobs' (info, result), failures (position, why))."""
    whole, fails = {}, {}
    mine = dist.share(list(enumerate(units)), w)
    for i, group in itertools.groupby(mine, key=lambda pos_unit: pos_unit[1][0]):
        group = list(group)
        job = jobs[i]
        try:
            if job.kind == "asr":
                whole[i] = asr.evaluate_task(job.task, job.spec, args.out, asr_run, cfg.device,
                                             models.current(job.spec))
            elif job.kind == "layers":
                whole[i] = (None, layer_probe.evaluate_task(job.task, job.emb_dir, cfg, job.out_json,
                                                             lambda: models.get(job.spec)))
            else:
                proto.train_units(job.emb_dir, cfg, [u for _, (_, u) in group], proto.parts_dir(job.out_json),
                                  proto.task_settings(job.emb_dir, cfg))
        except Exception as e:  # noqa: BLE001
            fails[i] = (group[0][0], _failure(e))
    return whole, fails


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
    jobs = []
    for spec in models:
        for path, task in tasks.items():
            asr_job = isinstance(task, AsrTask)
            kind = "asr" if asr_job else "layers" if args.layer_weights and spec.is_audiorep else "probes"
            mode = "asr" if asr_job else f"{args.mode}+layers" if kind == "layers" else args.mode
            jobs.append(Job(spec, task, kind, args.out / "embeddings" / spec.name / path.name,
                            args.out / "predictions" / mode / spec.name / f"{path.name}.json"))
    models_held = Models(str(w.device))
    hear = [i for i, job in enumerate(jobs) if job.kind != "asr"]
    infos, embed_failed = _embed([jobs[i] for i in hear], args, w, models_held)
    infos = {hear[i]: info for i, info in infos.items()}
    job_failed = {hear[i]: why for i, why in embed_failed.items()}
    whole, fails = _probe(jobs, _units(jobs, job_failed, cfg, False), cfg, args, asr_run, w, models_held)
    gathered = gather_patiently((whole, fails), w)
    whole = {i: r for wh, _ in gathered for i, r in wh.items()}
    job_failed.update(_first_failures([f for _, f in gathered]))
    _, fails = _probe(jobs, _units(jobs, job_failed, cfg, True), cfg, args, asr_run, w, models_held)
    job_failed.update(_first_failures(gather_patiently(fails, w)))
    code = None
    if w.main:
        results: dict[str, dict[str, dict]] = {m.label: {} for m in models}
        timing = {m.label: {"embed_seconds": 0.0, "probe_seconds": 0.0} for m in models}
        for i, job in enumerate(jobs):
            why = job_failed.get(i)
            if why is None:
                try:
                    info, results[job.spec.label][job.task.path.name] = _result(job, cfg, infos.get(i), whole.get(i))
                except Exception as e:  # noqa: BLE001 -- reported by task and model; the other tasks go on
                    why = _failure(e)
            if why is not None:
                failed[job.name] = why
                print(f"FAILED {job.name}: {why}", file=sys.stderr)
                continue
            timing[job.spec.label]["embed_seconds"] += sum(info["seconds"].values())
            timing[job.spec.label]["probe_seconds"] += results[job.spec.label][job.task.path.name]["probe_seconds"]
        code = _write(args, w, models, paths, cfg, results, timing, (metadata, failed, warnings, reference, categories))
    return gather_patiently(code, w)[0]  # every rank returns once the report is written


def _result(job: Job, cfg: ProtocolConfig, info: dict | None, whole: tuple | None) -> tuple[dict, dict]:
    """Rank 0: a job's (embedding info, result): its whole unit's, or assembled from its probe units."""
    if job.kind != "probes":
        return whole[0] if whole[0] is not None else info, whole[1]
    settings = proto.task_settings(job.emb_dir, cfg)
    cached = proto.cached_result(job.out_json, settings)
    return info, cached or proto.assemble(proto.TaskData(job.emb_dir), cfg, settings, job.out_json)


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
