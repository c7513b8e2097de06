"""`audiorep study SPEC --out OUT`: several recipes trained on the same data with the same
budget, evaluated together by one `audiorep evaluate`, in one table with 95% intervals.

    OUT/spec.toml                 the spec (a rerun must give the same one)
    OUT/corpus/, OUT/tasks/       the data built for the study (suite corpus and tasks)
    OUT/runs/<run>-seed<k>/       ordinary run folders (audiorep pretrain)
    OUT/crossval/<run>/           ordinary crossval folders (audiorep crossval) of crossval runs
    OUT/points/<label>@<step>     the encoder of every curve point; init-<run>: references
    OUT/eval/                     the one evaluation (results.json, report.md)
    OUT/cost/, OUT/state/, OUT/logs/   measured cost, segment wall times, training logs
    OUT/table.md, OUT/study.md, OUT/plots/

Every stage reuses what is on disk, so a study killed at any point continues when rerun
and gives the same table.md. Two studies on one OUT are refused (files.folder_lock).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

from audiorep import presets
from audiorep.config import override, to_dict
from audiorep.encoder import Encoder
from audiorep.evaluate import cli as evaluate_cli
from audiorep.files import folder_lock, write_text
from audiorep.tasks.format import check_task
from audiorep.runs import split_overrides

from . import crossvals, launch, plan, report
from .cost import cost
from .spec import Spec, SpecError, load

UNIT_AXIS = {"steps": "training steps", "audio_s": "audio seen (minutes)", "minutes": "training minutes (calibrated)"}


def keep_spec(spec: Spec, out: Path) -> None:
    saved = out / "spec.toml"
    if saved.exists() and saved.read_text() != spec.text:
        raise SpecError(f"{out} holds a study of another spec ({saved}); use another --out or that spec")
    write_text(saved, spec.text)


def prepare_data(spec: Spec, out: Path) -> None:
    """Build the corpus and the suite tasks the spec asks for (once), link a task folder's
    tasks into OUT/tasks, and check every task as `audiorep tasks check` does."""
    from audiorep.tasks.suite import build_corpus, build_suite

    ev, tasks = spec.evaluation, out / "tasks"
    fields = {name: f"evaluate.tasks[{i}]" for i, name in enumerate(ev.tasks)}
    fields |= {r.crossval.task: f"run[{spec.runs.index(r)}].crossval.task" for r in spec.crossvals
               if r.crossval.task not in fields}
    if spec.data_kind == "corpus" and not (out / "corpus").exists():
        build_corpus(out / "corpus", spec.data["hours"], spec.data["seed"])
    tasks.mkdir(parents=True, exist_ok=True)
    if ev.folder is None:
        missing = [t for t in fields if not (tasks / t / "task_metadata.json").exists()]
        if missing:
            build_suite(tasks, ev.suite_seed, ev.suite_size, missing)
    else:
        for name in fields:
            if not (tasks / name).exists():
                (tasks / name).symlink_to(ev.folder / name, target_is_directory=True)
    for name, field in fields.items():
        problems = check_task(tasks / name)
        if problems:
            raise SpecError(f"{spec.path}: {field}: {name} fails `audiorep tasks check`: " + "; ".join(problems[:3]))


def save_inits(spec: Spec, out: Path) -> dict[str, str]:
    """The encoder each run without `init` starts from (its first seed), one per distinct
    architecture, as OUT/points/init-<run>; -> {run name: reference label}."""
    refs: dict[str, str] = {}
    made: dict[tuple[str, int], str] = {}
    for run in spec.pretraining:
        if run.init is not None:
            continue
        cfg = override(presets.get(run.preset), split_overrides(list(run.overrides))["encoder"])
        key = (json.dumps(to_dict(cfg), sort_keys=True), run.seeds[0])
        if key not in made:
            made[key] = f"init-{run.name}"
            path = out / "points" / made[key]
            if not path.exists():
                tmp = path.with_name(f".{path.name}.tmp")
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(run.seeds[0])  # as run_recipe seeds the encoder it builds
                    Encoder(cfg).save(tmp)
                tmp.rename(path)
        refs[run.name] = made[key]
    return refs


def at(label: str, step: int, steps: int) -> str:
    """The evaluation's name of a training's encoder at `step`."""
    return label if step == steps else f"{label}@{step}"


def evaluate(spec: Spec, out: Path, items: list[plan.Training], plans: dict, refs: dict[str, str]) -> dict:
    """One `audiorep evaluate` over every curve point, the init references and log-mel."""
    ev = spec.evaluation
    models = [f"{at(t.label, step, plans[t.label][0])}={launch.point_dir(out, t.label, step)}"
              for t in items for step in plans[t.label][1]]
    models += [f"{ref}={out / 'points' / ref}" for ref in dict.fromkeys(refs.values())]
    models.append(f"{report.LOGMEL}=logmel")
    seeds = {run.name: set(run.seeds) for run in spec.runs}
    compare = [x for a, b in ev.compare for s in sorted(seeds[a] & seeds[b])
               for x in ("--compare", plan.label(a, s), plan.label(b, s))]
    argv = ["--tasks", str(out / "tasks"), "--out", str(out / "eval"), "--no-references", "--mode", ev.mode,
            "--grid-points", str(ev.grid_points), "--seeds", str(ev.seeds), "--bootstrap", str(ev.bootstrap),
            *(["--max-epochs", str(ev.max_epochs)] if ev.max_epochs else []),
            *[x for m in models for x in ("--model", m)], *compare]
    evaluate_cli.main(argv)
    results = json.loads((out / "eval" / "results.json").read_text())
    if results["failed"]:  # a model without a task would be averaged over fewer tasks: no table
        raise ValueError(f"{out / 'eval' / 'report.md'}: evaluation failed for " + "; ".join(
            f"{k}: {v}" for k, v in sorted(results["failed"].items())))
    return results


def probe_report(spec: Spec, out: Path, items: list[plan.Training], plans: dict, refs: dict[str, str],
                 results: dict) -> tuple[list[str], list[str], list[str]]:
    """The runs that pretrain: (what the scores mean, their score table, the plots and learning curves)."""
    runs = {run.name: run for run in spec.pretraining}
    labels = {name: [t.label for t in items if t.run == name] for name in runs}
    steps = {name: plans[labels[name][0]] for name in runs}  # every seed of a run has the same schedule
    groups = {name: labels[name] for name in runs}
    groups |= {f"{name}@{p}": [f"{lab}@{p}" for lab in labels[name]] for name in runs for p in steps[name][1][:-1]}
    references = [*dict.fromkeys(refs.values()), report.LOGMEL]
    groups |= {ref: [ref] for ref in references}
    s = report.Scores(results, groups)
    rows = [{"name": n, "group": n, "paper": r.paper,
             "recipe": f"{r.recipe} ({r.size or r.preset})" + (f", init {r.init}" if r.init else "")}
            for n, r in runs.items()]
    table = report.score_table(s, rows, references)

    per_step = {t.run: t.audio_per_step for t in items}
    seconds = {name: _calibrated(out, name) for name in runs}

    def x(name: str, step: int) -> float:
        if spec.unit == "audio_s":
            return step * per_step[name] / 60
        return step * seconds[name] / 60 if spec.unit == "minutes" else step

    curves = {n: [(x(n, p), n if p == steps[n][0] else f"{n}@{p}") for p in steps[n][1]] for n in runs}
    inits = {n: refs.get(n) or runs[n].init for n in runs}
    (out / "plots").mkdir(parents=True, exist_ok=True)
    report.plot_curves(out / "plots" / "curves.png", s, curves, {n: g for n, g in inits.items() if g},
                       UNIT_AXIS[spec.unit])
    report.plot_scores(out / "plots" / "scores.png", s, {n: n for n in runs} | {r: r for r in references}, references)
    ev = spec.evaluation
    above = [f"Pretrained encoders: `{ev.mode}` probes, {ev.grid_points} grid points, max {ev.max_epochs or 'grid'} "
             f"epochs, {ev.seeds} probe seed(s), {ev.bootstrap} bootstrap resamples; tasks: {', '.join(ev.tasks)}. "
             "Normalized score = task score / best score of every evaluated model on the task (an error rate: "
             "best / score), averaged over the tasks. Intervals: 95% bootstrap over test clips (the evaluator's "
             "shared resamples); a run of several seeds averages its seeds' replicates, and the s.e. over seeds "
             "is the spread of the training itself.", ""]
    below = ["", "![scores](plots/scores.png)", "", "## Learning curves", "",
             f"Mean normalized score against the budget ({UNIT_AXIS[spec.unit]}); dotted: each run's "
             "initialization (random, or the run it starts from), dashed: log-mel.", "", "![curves](plots/curves.png)"]
    return above, table, below


def write_report(spec: Spec, out: Path, items: list[plan.Training], plans: dict, refs: dict[str, str],
                 results: dict | None, cvs: list[crossvals.CrossvalRun], measured: dict[str, dict],
                 minutes: float) -> str:
    curve = ", ".join(f"{p:g}" for p in spec.curve)
    budget = f"{spec.budget:g} {spec.unit}" + (" per fold" if spec.crossvals else "") + (
        f", curve at {curve}" if curve else "")
    data = (f"the suite's unlabeled corpus ({spec.data['hours']:g} h, seed {spec.data['seed']})"
            if spec.data_kind == "corpus" else f"{spec.data_kind} {spec.data}" if spec.data_kind else "the runs' tasks")
    above = [f"# {spec.title or 'audiorep study'}", "",
             f"Spec `{spec.path.name}`; data: {data}; budget per run: {budget}. "
             f"{minutes:.1f} min in all on this machine.", ""]
    intro, table, below = probe_report(spec, out, items, plans, refs, results) if spec.pretraining else ([], [], [])
    above += intro
    if spec.crossvals:
        table += ([""] if table else []) + crossvals.table(spec, out)
    below += ["", "## Cost", "", *cost_table(out, items, plans, cvs, measured), *comparisons(results or {})]
    if results is not None:
        below += ["", f"Evaluator report: {out / 'eval' / 'report.md'}"]
    return report.write(out, above, table, below)


def _calibrated(out: Path, run: str) -> float:
    path = out / "state" / f"{run}.calibration.json"
    return json.loads(path.read_text())["seconds_per_step"] if path.exists() else math.nan


def _wall_minutes(out: Path, labels: list[str]) -> float:
    """Mean over `labels` of the wall time of their completed segments (OUT/state)."""
    walls = [sum(json.loads((out / "state" / f"{lab}.json").read_text())["segments"].values()) for lab in labels]
    return sum(walls) / len(walls) / 60


def costs(spec: Spec, out: Path, cvs: list[crossvals.CrossvalRun]) -> dict[str, dict]:
    """{run: cost} measured on its first seed's training (a crossval run: its first fold's)."""
    found = {run.name: cost(out, plan.label(run.name, run.seeds[0])) for run in spec.pretraining}
    return found | {c.run.name: cost(out, f"crossval-{c.run.name}", crossvals.first_fold(out, c)) for c in cvs}


def cost_table(out: Path, items: list[plan.Training], plans: dict, cvs: list[crossvals.CrossvalRun],
               measured: dict[str, dict]) -> list[str]:
    lines = ["Parameters of the encoder and of all that trains (heads, decoders, ...); audio seen = steps x "
             "batch x views x crop; wall time of the training processes (segments that completed; mean over "
             "seeds; a crossval run: its whole process, every fold and seed); FLOP counted by "
             "torch.utils.flop_counter on one training step (matrix products, convolutions, attention; forward + "
             "backward). Crossval runs: steps and audio per fold.", "",
             "| run | encoder params (M) | trained params (M) | steps | audio seen (min) | wall time (min) | "
             "training GFLOP per audio second |", "|---|---|---|---|---|---|---|"]
    rows = []  # (run, steps, audio seen in s, wall minutes)
    for run in dict.fromkeys(t.run for t in items):
        labels = [t.label for t in items if t.run == run]
        steps = plans[labels[0]][0]
        rows.append((run, str(steps), steps * next(t.audio_per_step for t in items if t.run == run),
                     _wall_minutes(out, labels)))
    for c in cvs:
        steps = f"{c.steps[0]}" if len(set(c.steps)) == 1 else f"{min(c.steps)}-{max(c.steps)}"
        audio = max(c.steps) * c.audio_per_step
        rows.append((c.run.name, f"{steps} per fold", audio, _wall_minutes(out, [c.run.name])))
    for name, steps, audio, wall in rows:
        m = measured[name]
        lines.append(f"| {name} | {m['encoder_params'] / 1e6:.3f} | {m['trained_params'] / 1e6:.3f} | {steps} | "
                     f"{audio / 60:.1f} | {wall:.1f} | {m['flop_per_audio_s'] / 1e9:.2f} |")
    return lines


def comparisons(results: dict) -> list[str]:
    if not results.get("comparisons"):
        return []
    lines = ["", "## Paired comparisons", "", "A - B on the same resampled test clips: mean difference, 95% "
             "interval, share of resamples where A is better (overall: the mean normalized score).", "",
             "| A | B | task | A - B [95% interval] | P(A better) |", "|---|---|---|---|---|"]
    for c in results["comparisons"]:
        for task, d in [("all tasks", c["overall"]), *sorted(c["tasks"].items())]:
            if d is not None:
                lines.append(f"| {c['a']} | {c['b']} | {task} | {d['difference']:+.3f} "
                             f"[{d['interval'][0]:+.3f}, {d['interval'][1]:+.3f}]{' *' if d['significant'] else ''} | "
                             f"{d['p_better']:.2f} |")
    return lines + ["", "`*`: the interval excludes 0."]


def run(spec_path: str | Path, out: str | Path, jobs: int = 1) -> str:
    """Run (or continue) the study of `spec_path` in `out`; -> the text of OUT/study.md."""
    spec = load(spec_path)
    if jobs < 1:
        raise ValueError(f"--jobs {jobs}: expected at least 1")
    out = Path(out).resolve()
    with folder_lock(out, what=f"{out} (a study)"):
        threads = torch.get_num_threads()
        torch.set_num_threads(spec.threads)
        try:
            began = time.perf_counter()
            keep_spec(spec, out)
            prepare_data(spec, out)
            items = plan.trainings(spec, out)
            cvs = [crossvals.plan(spec, r, out) for r in spec.crossvals]
            others = {f"crossval {c.run.name}": launch.Job((), lambda c=c: crossvals.train(c, out, spec.threads))
                      for c in cvs}
            plans = launch.train_all(spec, out, items,
                                     lambda t, seconds: plan.schedule(spec, t.audio_per_step, seconds), jobs, others)
            refs = save_inits(spec, out)
            torch.set_num_threads(spec.threads * jobs)  # the trainings are done: their cores are free
            results = evaluate(spec, out, items, plans, refs) if spec.pretraining else None
            measured = costs(spec, out, cvs)  # measured here, so the time stated below includes it
            minutes = (time.perf_counter() - began) / 60
            return write_report(spec, out, items, plans, refs, results, cvs, measured, minutes)
        finally:
            torch.set_num_threads(threads)


__all__ = ["Spec", "SpecError", "load", "run"]
