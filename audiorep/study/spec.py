"""A study spec (TOML, read with tomllib) -> a checked `Spec`; every problem names its field.

    title = "five recipes, tiny"          # optional
    threads = 1                           # torch threads of each training process
    overrides = ["data.workers=1"]        # field=value for every run, after its size's

    [data]                                # exactly one of:
    corpus = { hours = 0.3, seed = 0 }    #   the suite's unlabeled corpus, built under OUT/corpus
    # folder = "clips/"  manifest = "clips.csv"  shards = "shards/{000..009}.tar"

    [budget]                              # exactly one unit, the same for every run:
    steps = 400                           #   steps | audio_s (audio the model sees) | minutes
    curve = [100, 200]                    # earlier points to evaluate, in the same unit

    [evaluate]
    tasks = ["keywords", "pitch"]         # suite tasks built under OUT/tasks, or names in `folder`
    # folder = "tasks/"                   # a folder of HEAR tasks instead of the suite
    suite = { size = "small", seed = 0 }
    mode = "mlp"                          # grid_points, max_epochs, seeds, bootstrap as `audiorep evaluate`
    compare = [["asit", "audiomae"]]      # paired bootstrap of two runs (per seed)

    [[run]]
    name = "asit"                         # default: the recipe's name
    recipe = "asit"
    size = "tiny"                         # audiorep.sizes; preset = "..." to pick another encoder
    overrides = []
    seeds = 1                             # a count (0, 1, ...) or a list
    init = "other run"                    # start from that run's final encoder (same seeds)
    task = "family"                       # supervised recipes: the labelled task (an evaluate task) they train on
    torchrun = 2                          # launch through torchrun with this many processes (crossval too)
    paper = "Table 2: 28.1"               # a column with the paper's number

    [[run]]                               # a cross-validation run (`audiorep crossval`) of a supervised recipe:
    name = "mixup"                        #   trained from scratch on each fold, scored on the held-out one
    recipe = "eat"
    size = "tiny"
    seeds = 2                             # crossval --seeds: a count (seeds 0 .. n-1)
    crossval = { task = "sound_classes", folds = ["fold00"], baseline = "none" }

A crossval run takes the [budget] in steps or audio_s per fold, or in `epochs` (passes over a
fold's training clips; every run must then be a crossval run). [data] is needed only by
self-supervised runs that pretrain, [evaluate] only by runs that pretrain an encoder.
Relative paths are relative to the spec file.
"""
from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from audiorep import presets, sizes
from audiorep.config import override
from audiorep.crossval import folds as crossval_folds
from audiorep.evaluate.protocol import MODES
from audiorep.objectives import RECIPES, Supervised
from audiorep.tasks.format import split_names
from audiorep.tasks.scaffold import SIZES as SUITE_SIZES
from audiorep.tasks.suite import TASKS as SUITE_TASKS
from audiorep.train import TrainConfig
from audiorep.runs import split_overrides

from .fields import SpecError, fail, keys_of, path_of, seeds_of, strings, typed

UNITS = ("steps", "audio_s", "minutes", "epochs")
DATA_KINDS = ("corpus", "folder", "manifest", "shards")
SET_BY_STUDY = ("steps", "seed", "checkpoint_every")  # train fields the study owns


@dataclass(frozen=True)
class Crossval:
    task: str                      # an evaluate-style task name (suite task, or a folder in evaluate.folder)
    folds: tuple[str, ...] | None  # held-out folds to run (None: all)
    baseline: str | None = None    # a crossval run on the same task to report the difference to
    metric: str = ""               # the task's primary metric (its first evaluation metric)


@dataclass(frozen=True)
class Run:
    name: str
    recipe: str
    preset: str
    overrides: tuple[str, ...]     # the size's, the spec's common ones, the run's
    seeds: tuple[int, ...]
    size: str | None = None
    init: str | None = None
    task: str | None = None
    torchrun: int = 0
    paper: str = ""
    crossval: Crossval | None = None


@dataclass(frozen=True)
class Evaluation:
    tasks: tuple[str, ...]
    folder: Path | None = None     # None: the suite's tasks, built
    suite_size: str = "small"
    suite_seed: int = 0
    mode: str = "mlp"
    grid_points: int = 2
    max_epochs: int | None = 50
    seeds: int = 1
    bootstrap: int = 1000
    compare: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Spec:
    path: Path
    text: str                      # the file as read (a rerun must give the same one)
    data_kind: str | None          # None: no [data] (no run pretrains on it)
    data: object                   # a Path, or {"hours", "seed"} for the corpus
    unit: str
    budget: float
    curve: tuple[float, ...]
    evaluation: Evaluation
    runs: tuple[Run, ...]
    threads: int = 1
    title: str = ""

    @property
    def pretraining(self) -> tuple[Run, ...]:
        return tuple(r for r in self.runs if r.crossval is None)

    @property
    def crossvals(self) -> tuple[Run, ...]:
        return tuple(r for r in self.runs if r.crossval is not None)


def _data(spec: Path, table) -> tuple[str, object]:
    table = keys_of(spec, "[data]", table, DATA_KINDS)
    given = [k for k in DATA_KINDS if k in table]
    if len(given) != 1:
        fail(spec, "[data]", f"give exactly one of {', '.join(DATA_KINDS)} (got {', '.join(given) or 'none'})")
    kind = given[0]
    if kind == "corpus":
        corpus = keys_of(spec, "data.corpus", table[kind], ("hours", "seed"))
        hours = typed(spec, "data.corpus.hours", corpus.get("hours"), (int, float), lambda v: v > 0, "hours > 0")
        seed = typed(spec, "data.corpus.seed", corpus.get("seed", 0), int, lambda v: v >= 0, "an integer >= 0")
        return kind, {"hours": float(hours), "seed": seed}
    value = typed(spec, f"data.{kind}", table[kind], str)
    if kind == "shards":
        return kind, value if Path(value).is_absolute() else str(spec.parent.resolve() / value)
    path = path_of(spec, value)
    if not path.exists():
        fail(spec, f"data.{kind}", f"{path} does not exist")
    return kind, path


def _budget(spec: Path, table) -> tuple[str, float, tuple[float, ...]]:
    table = keys_of(spec, "[budget]", table, (*UNITS, "curve"))
    given = [u for u in UNITS if u in table]
    if len(given) != 1:
        fail(spec, "[budget]", f"give the budget in exactly one unit of {', '.join(UNITS)} "
                                f"(got {', '.join(given) or 'none'}), so every run gets the same")
    unit = given[0]
    kind = int if unit == "steps" else (int, float)
    budget = typed(spec, f"budget.{unit}", table[unit], kind, lambda v: v > 0, f"a {unit} count > 0")
    curve = table.get("curve", [])
    if not isinstance(curve, list):
        fail(spec, "budget.curve", f"expected a list of {unit}, got {curve!r}")
    for i, point in enumerate(curve):
        typed(spec, f"budget.curve[{i}]", point, kind, lambda v: 0 < v < budget, f"{unit} in (0, {budget})")
    if len(set(curve)) != len(curve):
        fail(spec, "budget.curve", f"{curve} repeats a point")
    return unit, float(budget), tuple(sorted(float(p) for p in curve))


def _unknown_task(folder: Path | None, name: str) -> str:
    """'' when `name` is a task of the study (a folder in `folder`, else a suite task), else the problem."""
    if (folder / name).is_dir() if folder else name in SUITE_TASKS:
        return ""
    where = f"a task folder in {folder}" if folder else f"a suite task ({', '.join(SUITE_TASKS)})"
    return f"{name!r} is not {where}"


def _evaluation(spec: Path, table, pretrains: bool) -> Evaluation:
    """[evaluate]; without a run that pretrains, only where tasks come from (folder, suite)."""
    allowed = ("tasks", "folder", "suite", "mode", "grid_points", "max_epochs", "seeds", "bootstrap", "compare")
    table = keys_of(spec, "[evaluate]", table, allowed)
    folder = path_of(spec, typed(spec, "evaluate.folder", table["folder"], str)) if "folder" in table else None
    if folder is not None and not folder.is_dir():
        fail(spec, "evaluate.folder", f"{folder} is not a folder")
    if not pretrains and "tasks" in table:
        fail(spec, "evaluate.tasks", "every run is a crossval run: there is no pretrained encoder to evaluate")
    if pretrains and folder is None and "tasks" not in table:
        fail(spec, "[evaluate]", "give tasks (suite task names) or folder (a folder of HEAR tasks)")
    tasks = strings(spec, "evaluate.tasks", table["tasks"]) if "tasks" in table else tuple(
        sorted(p.name for p in folder.iterdir() if (p / "task_metadata.json").exists())) if pretrains else ()
    if pretrains and not tasks:
        fail(spec, "evaluate.folder", f"{folder} holds no task folder (task_metadata.json)")
    for i, name in enumerate(tasks):
        if _unknown_task(folder, name):
            fail(spec, f"evaluate.tasks[{i}]", _unknown_task(folder, name))
    suite = keys_of(spec, "evaluate.suite", table.get("suite", {}), ("size", "seed"))
    size = suite.get("size", "small")
    if size not in SUITE_SIZES:
        fail(spec, "evaluate.suite.size", f"{size!r} is not one of {', '.join(SUITE_SIZES)}")
    mode = table.get("mode", "mlp")
    if mode not in MODES:
        fail(spec, "evaluate.mode", f"{mode!r} is not one of {', '.join(MODES)}")
    counts = {k: typed(spec, f"evaluate.{k}", table[k], int, lambda v: v >= (0 if k == "bootstrap" else 1),
                        "an integer >= 0" if k == "bootstrap" else "an integer >= 1")
              for k in ("grid_points", "max_epochs", "seeds", "bootstrap") if k in table}
    compare = table.get("compare", [])
    pairs = isinstance(compare, list) and all(isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p)
                                              for p in compare)
    if not pairs:
        fail(spec, "evaluate.compare", f"expected a list of [run, run] pairs, got {compare!r}")
    seed = typed(spec, "evaluate.suite.seed", suite.get("seed", 0), int, lambda v: v >= 0, "an integer >= 0")
    return Evaluation(tasks, folder, size, seed, mode, **counts, compare=tuple(tuple(p) for p in compare))


RUN_KEYS = ("name", "recipe", "size", "preset", "overrides", "seeds", "init", "task", "torchrun", "paper", "crossval")
CROSSVAL_KEYS = ("task", "folds", "baseline")


def task_metadata(evaluation: Evaluation, name: str) -> dict:
    """task_metadata.json of a study task, read from evaluate.folder or from the suite's builder
    (without building the task)."""
    if evaluation.folder is not None:
        return json.loads((evaluation.folder / name / "task_metadata.json").read_text())
    return SUITE_TASKS[name][0](evaluation.suite_seed, evaluation.suite_size).metadata


def _crossval(spec: Path, where: str, table, recipe: str, evaluation: Evaluation) -> Crossval:
    table = keys_of(spec, where, table, CROSSVAL_KEYS)
    if RECIPES[recipe].objective is not Supervised:
        supervised = sorted(n for n, r in RECIPES.items() if r.objective is Supervised)
        fail(spec, where, f"crossval trains a classifier from scratch on the task: {recipe} is self-supervised "
                           f"(supervised recipes: {', '.join(supervised)})")
    task = typed(spec, f"{where}.task", table.get("task"), str, expect="a task name")
    if _unknown_task(evaluation.folder, task):
        fail(spec, f"{where}.task", _unknown_task(evaluation.folder, task))
    meta = task_metadata(evaluation, task)
    if meta.get("embedding_type") != "scene":
        fail(spec, f"{where}.task", f"{task} is a {meta.get('embedding_type')!r} task: crossval needs a scene task "
                                     "(one label set per clip)")
    names = [name for name, _, _ in crossval_folds(SimpleNamespace(split_names=split_names(meta)))]
    chosen = None
    if "folds" in table:
        chosen = strings(spec, f"{where}.folds", table["folds"])
        for j, fold in enumerate(chosen):
            if fold not in names:
                fail(spec, f"{where}.folds[{j}]", f"{task} has no fold {fold!r} (folds: {', '.join(names)})")
        if not chosen or len(set(chosen)) != len(chosen):
            fail(spec, f"{where}.folds", f"expected distinct folds of {task} ({', '.join(names)}), got {list(chosen)}")
    baseline = typed(spec, f"{where}.baseline", table["baseline"], str) if "baseline" in table else None
    return Crossval(task, chosen, baseline, meta["evaluation"][0])


def _run(spec: Path, i: int, table, common: tuple[str, ...], evaluation: Evaluation) -> Run:
    where = f"run[{i}]"
    table = keys_of(spec, where, table, RUN_KEYS)
    recipe = typed(spec, f"{where}.recipe", table.get("recipe"), str, expect="a recipe name")
    if recipe not in RECIPES:
        fail(spec, f"{where}.recipe", f"unknown recipe {recipe!r} (recipes: {', '.join(sorted(RECIPES))})")
    name = typed(spec, f"{where}.name", table.get("name", recipe), str,
                  lambda v: v and all(c.isalnum() or c in "-_+." for c in v), "a name of letters, digits, - _ + .")
    size_name = table.get("size")
    size_overrides: tuple[str, ...] = ()
    preset = RECIPES[recipe].preset
    if size_name is not None:
        try:
            size = sizes.get(recipe, size_name)
        except KeyError as e:
            fail(spec, f"{where}.size", e.args[0])
        preset, size_overrides = size.preset, size.overrides
    if "preset" in table:
        preset = typed(spec, f"{where}.preset", table["preset"], str)
        if preset not in presets.PRESETS:
            fail(spec, f"{where}.preset", f"unknown preset {preset!r} (`audiorep presets` lists them)")
    own = strings(spec, f"{where}.overrides", table.get("overrides", []))
    overrides = size_overrides + common + own
    check_overrides(spec, f"{where}.overrides", recipe, preset, overrides)
    seeds = seeds_of(spec, f"{where}.seeds", table.get("seeds", 1))
    torchrun = typed(spec, f"{where}.torchrun", table.get("torchrun", 0), int, lambda v: v >= 0, "processes >= 0")
    if "crossval" in table:
        for key in ("task", "init"):
            if key in table:
                fail(spec, f"{where}.{key}", {"task": "a crossval run names its task in crossval.task",
                                               "init": "a crossval run trains from scratch on every fold"}[key])
        if seeds != tuple(range(len(seeds))):
            fail(spec, f"{where}.seeds", f"a crossval run takes a count (seeds 0 .. n-1, crossval --seeds), "
                                          f"got {list(seeds)}")
        return Run(name, recipe, preset, overrides, seeds, size_name, torchrun=torchrun,
                   paper=typed(spec, f"{where}.paper", table.get("paper", ""), str),
                   crossval=_crossval(spec, f"{where}.crossval", table["crossval"], recipe, evaluation))
    supervised = RECIPES[recipe].objective is Supervised
    task = table.get("task")
    if supervised and task is None:
        fail(spec, f"{where}.task", f"{recipe} is supervised: name the labelled task it trains on "
                                     f"(one of evaluate.tasks: {', '.join(evaluation.tasks)})")
    if task is not None and not supervised:
        fail(spec, f"{where}.task", f"{recipe} is self-supervised: it trains on [data], not on a task")
    if task is not None and task not in evaluation.tasks:
        fail(spec, f"{where}.task", f"{task!r} is not one of evaluate.tasks ({', '.join(evaluation.tasks)})")
    return Run(name, recipe, preset, overrides, seeds, size_name, table.get("init"), task, torchrun,
               typed(spec, f"{where}.paper", table.get("paper", ""), str))


def check_overrides(spec: Path, where: str, recipe: str, preset: str, overrides: tuple[str, ...]) -> None:
    """Apply the overrides to the configs the run will build, as run_recipe does."""
    for item in overrides:
        key = item.split("=", 1)[0].removeprefix("train.")
        if key in SET_BY_STUDY:
            fail(spec, where, f"{item!r}: {key} is set by the study ([budget] and seeds)")
    rec = RECIPES[recipe]
    parts = split_overrides(list(overrides))
    try:
        override(presets.get(preset), parts["encoder"])
        override(rec.config(), list(rec.objective_defaults) + parts["objective"])
        override(TrainConfig(), list(rec.defaults) + parts["train"])
    except (KeyError, ValueError, TypeError) as e:
        fail(spec, where, str(e.args[0] if e.args else e))


def _check_inits(spec: Path, runs: tuple[Run, ...]) -> None:
    by_name = {r.name: r for r in runs}
    for i, run in enumerate(runs):
        if run.init is None:
            continue
        if run.init not in by_name:
            fail(spec, f"run[{i}].init", f"{run.init!r} names no run of the study (runs: {', '.join(by_name)})")
        if by_name[run.init].crossval is not None:
            fail(spec, f"run[{i}].init", f"{run.init!r} is a crossval run: it ships no encoder to start from")
        missing = sorted(set(run.seeds) - set(by_name[run.init].seeds))
        if missing:
            fail(spec, f"run[{i}].init", f"run {run.init!r} has no seed {missing[0]} (its seeds: "
                                          f"{list(by_name[run.init].seeds)})")
        chain, at = [run.name], run.init
        while at is not None:
            if at in chain:
                fail(spec, f"run[{i}].init", "a cycle: " + " -> ".join(chain + [at]))
            chain.append(at)
            at = by_name[at].init


def _check_budget(spec: Path, runs: tuple[Run, ...], unit: str, curve: tuple[float, ...]) -> None:
    """epochs: crossval runs only; minutes: pretraining runs only; a curve needs a run that pretrains."""
    for i, run in enumerate(runs):
        if unit == "epochs" and run.crossval is None:
            fail(spec, "budget.epochs", f"epochs (passes over a fold's training clips) is a crossval budget; "
                                         f"run[{i}] ({run.name}) pretrains: give steps or audio_s")
        if unit == "minutes" and run.crossval is not None:
            fail(spec, "budget.minutes", f"run[{i}] ({run.name}) is a crossval run: give steps, audio_s or epochs")
    if curve and all(run.crossval is not None for run in runs):
        fail(spec, "budget.curve", "crossval runs are scored once, at the end of each fold: no learning curve")


def _check_baselines(spec: Path, runs: tuple[Run, ...]) -> None:
    by_name = {r.name: r for r in runs}
    for i, run in enumerate(runs):
        baseline = run.crossval.baseline if run.crossval else None
        if baseline is None:
            continue
        other = by_name.get(baseline)
        if other is None or other.crossval is None or baseline == run.name:
            crossvals = [r.name for r in runs if r.crossval and r.name != run.name]
            fail(spec, f"run[{i}].crossval.baseline", f"{baseline!r} names no other crossval run "
                                                       f"(crossval runs: {', '.join(crossvals) or 'none'})")
        if other.crossval.task != run.crossval.task:
            fail(spec, f"run[{i}].crossval.baseline", f"{baseline!r} is cross-validated on {other.crossval.task}, "
                                                       f"this run on {run.crossval.task}")


def load(path: str | Path) -> Spec:
    """Read and check the spec file at `path`."""
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: study spec not found")
    text = path.read_text()
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{path}: not valid TOML: {e}") from None
    keys_of(path, "the spec", doc, ("title", "threads", "overrides", "data", "budget", "evaluate", "run"))
    for table in ("budget", "run"):
        if table not in doc:
            fail(path, f"[{table}]" if table != "run" else "[[run]]", "missing")
    if not isinstance(doc["run"], list) or not doc["run"] or not all(isinstance(r, dict) for r in doc["run"]):
        fail(path, "[[run]]", "expected one or more [[run]] tables")
    pretrains = any("crossval" not in r for r in doc["run"])
    if pretrains and "evaluate" not in doc:
        fail(path, "[evaluate]", "missing (the runs that pretrain are evaluated on its tasks)")
    evaluation = _evaluation(path, doc.get("evaluate", {}), pretrains)
    common = strings(path, "overrides", doc.get("overrides", []))
    runs = tuple(_run(path, i, r, common, evaluation) for i, r in enumerate(doc["run"]))
    names = [r.name for r in runs]
    for i, name in enumerate(names):
        if names.index(name) != i:
            fail(path, f"run[{i}].name", f"{name!r} is the name of run[{names.index(name)}] too")
    data_kind, data = _data(path, doc["data"]) if "data" in doc else (None, None)
    learners = [i for i, r in enumerate(runs) if r.crossval is None and r.task is None]
    if data_kind is None and learners:
        fail(path, "[data]", f"missing: run[{learners[0]}] ({runs[learners[0]].recipe}) pretrains on it")
    unit, budget, curve = _budget(path, doc["budget"])
    _check_budget(path, runs, unit, curve)
    _check_inits(path, runs)
    _check_baselines(path, runs)
    for j, pair in enumerate(evaluation.compare):
        for name in pair:
            if name not in names:
                fail(path, f"evaluate.compare[{j}]", f"{name!r} names no run (runs: {', '.join(names)})")
            if runs[names.index(name)].crossval is not None:
                fail(path, f"evaluate.compare[{j}]", f"{name!r} is a crossval run (crossval.baseline compares those)")
        shared = set(runs[names.index(pair[0])].seeds) & set(runs[names.index(pair[1])].seeds)
        if pair[0] == pair[1] or not shared:
            fail(path, f"evaluate.compare[{j}]", f"{pair}: two different runs with a seed in common")
    threads = typed(path, "threads", doc.get("threads", 1), int, lambda v: v >= 1, "an integer >= 1")
    return Spec(path, text, data_kind, data, unit, budget, curve, evaluation, runs, threads,
                typed(path, "title", doc.get("title", ""), str))
