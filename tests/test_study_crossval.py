"""Crossval runs in a study spec: their errors, a tiny crossval study end to end (two runs at
once) whose numbers are those of calling crossval() directly, its resume after kill -9, and the
paired difference to the baseline run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_study import error, write_spec, write_tones

from audiorep import presets, study
from audiorep.config import override
from audiorep.crossval import crossval, summarize
from audiorep.encoder import Encoder
from audiorep.objectives import RECIPES
from audiorep.study import crossvals
from audiorep.study.spec import load
from audiorep.tasks.format import load_task, make_metadata
from audiorep.runs import split_overrides

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """DATA/tasks/tones: a 3-class, 3-fold task of noisy 0.5 s tones; DATA/tasks/onsets: an event task's metadata."""
    root = tmp_path_factory.mktemp("cvdata")
    meta = make_metadata("tones", "scene", "multiclass", ["top1_acc"], 0.5, "presplit_kfold", 3)
    write_tones(root / "tasks" / "tones", meta, {"fold00": 6, "fold01": 6, "fold02": 6}, 0.5)
    (root / "tasks" / "onsets").mkdir()
    (root / "tasks" / "onsets" / "task_metadata.json").write_text(json.dumps(
        make_metadata("onsets", "event", "multilabel", ["event_onset_200ms_fms"], 1.0)))
    return root


def run(name: str, overrides: str, cv: str, seeds: int = 2) -> str:
    return (f'\n[[run]]\nname = "{name}"\nrecipe = "eat"\nsize = "tiny"\nseeds = {seeds}\n'
            f'overrides = [{overrides}]\ncrossval = {{ {cv} }}\n')


SPEC = """
title = "crossval test"
overrides = ["data.workers=0", "batch_size=4", "data.crop_s=0", "log_every=1"]
[budget]
steps = 4
[evaluate]
folder = "tasks"
""" + run("none", '"objective.wave.mixes="', 'task = "tones", folds = ["fold01"]') + run(
    "mixup", '"objective.wave.mixes=mixup", "objective.wave_mix_after_epochs=0"',
    'task = "tones", folds = ["fold01"], baseline = "none"')


def test_crossval_runs_read_naturally(data):
    spec = load(write_spec(data, SPEC))
    none, mixup = spec.runs
    assert spec.pretraining == () and spec.crossvals == (none, mixup) and spec.data_kind is None
    assert none.crossval.folds == ("fold01",) and none.crossval.metric == "top1_acc"
    assert mixup.crossval.baseline == "none" and mixup.seeds == (0, 1)
    assert mixup.overrides[-2:] == ("objective.wave.mixes=mixup", "objective.wave_mix_after_epochs=0")


@pytest.mark.parametrize("change, field, words", [
    (('task = "tones", folds = ["fold01"], baseline', 'task = "birds", baseline'), "run[1].crossval.task",
     "'birds' is not a task folder"),
    (('folds = ["fold01"], baseline', 'folds = ["fold07"], baseline'), "run[1].crossval.folds[0]",
     "tones has no fold 'fold07' (folds: fold00, fold01, fold02)"),
    (('task = "tones", folds = ["fold01"], baseline', 'task = "onsets", baseline'), "run[1].crossval.task",
     "crossval needs a scene task"),
    (('baseline = "none"', 'baseline = "nobody"'), "run[1].crossval.baseline", "'nobody' names no other crossval run"),
    (('baseline = "none"', 'metric = "x"'), "run[1].crossval", "unknown key 'metric'"),
    (('seeds = 2\noverrides = ["objective.wave.mixes=mixup"',
      'seeds = [1, 2]\noverrides = ["objective.wave.mixes=mixup"'), "run[1].seeds", "takes a count"),
    (('name = "mixup"', 'name = "mixup"\ntask = "tones"'), "run[1].task", "names its task in crossval.task"),
    (('name = "mixup"', 'name = "mixup"\ninit = "none"'), "run[1].init", "trains from scratch"),
    (("steps = 4", "minutes = 2"), "budget.minutes", "is a crossval run"),
    (("steps = 4", "steps = 4\ncurve = [2]"), "budget.curve", "no learning curve"),
    (('folder = "tasks"', 'folder = "tasks"\ntasks = ["tones"]'), "evaluate.tasks", "no pretrained encoder"),
])
def test_crossval_spec_errors_name_the_field(data, change, field, words):
    assert change[0] in SPEC
    message = error(data, SPEC.replace(*change))
    assert f"bad.toml: {field}:" in message and words in message, message


def test_crossval_of_a_self_supervised_recipe_is_refused(data):
    mae = run("mae", "", 'task = "tones"').replace('recipe = "eat"', 'recipe = "audiomae"')
    assert "run[2].crossval: crossval trains a classifier from scratch on the task: audiomae is self-supervised" in \
        error(data, SPEC + mae)


def test_epochs_are_for_crossval_runs_only(data):
    mae = '\n[[run]]\nname = "mae"\nrecipe = "audiomae"\nsize = "tiny"\n'
    text = SPEC.replace("steps = 4", "epochs = 2").replace('folder = "tasks"', 'folder = "tasks"\ntasks = ["tones"]')
    message = error(data, text + mae + '[data]\nfolder = "tasks/tones/16000/fold00"\n')
    assert "budget.epochs: epochs (passes over a fold's training clips) is a crossval budget; run[2] (mae)" in message
    assert "[data]: missing: run[2] (audiomae)" in error(data, SPEC.replace('folder = "tasks"', 'folder = "tasks"\n'
                                                                           'tasks = ["tones"]') + mae)


def test_epochs_or_audio_set_the_steps_of_each_fold(data, tmp_path):
    text = SPEC.replace("steps = 4", "epochs = 1.5").replace('folds = ["fold01"]', 'folds = ["fold00", "fold01"]')
    spec = load(write_spec(data, text, "epochs.toml"))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "tones").symlink_to(data / "tasks" / "tones")
    c = crossvals.plan(spec, spec.runs[0], tmp_path)
    assert c.epochs == 1.5 and c.steps == (5, 5)  # ceil(1.5 x 12 training clips / batch 4)
    cmd = crossvals.command(c, tmp_path)
    assert cmd[cmd.index("--epochs") + 1] == "1.5" and not any(x.startswith("steps=") for x in cmd)
    assert cmd[cmd.index("--folds") + 1] == "fold00,fold01" and cmd[-1] == "checkpoint_every=1"
    assert cmd[:4] == [sys.executable, "-m", "audiorep", "crossval"]
    spec = load(write_spec(data, text.replace('name = "none"', 'name = "none"\ntorchrun = 2'), "torchrun.toml"))
    cmd = crossvals.command(crossvals.plan(spec, spec.runs[0], tmp_path), tmp_path)  # ranks share the fold runs
    assert cmd[:5] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    encoder = Encoder(override(presets.get("eat-s"), split_overrides(list(spec.runs[0].overrides))["encoder"]))
    assert encoder.min_samples > 0.5 * encoder.sample_rate  # the 0.5 s clips are padded to what the encoder takes
    assert c.audio_per_step == pytest.approx(4 * encoder.min_samples / encoder.sample_rate)  # batch x crop
    spec = load(write_spec(data, text.replace("epochs = 1.5", "audio_s = 40"), "audio.toml"))
    c = crossvals.plan(spec, spec.runs[0], tmp_path)
    assert c.steps == (int(40 / c.audio_per_step),) * 2 and f"steps={c.steps[0]}" in crossvals.command(c, tmp_path)


def test_paired_difference_is_summarized_like_crossval(tmp_path):
    def runs(values):
        return [{"seed": s, "fold": f, "scores": {"test": {"top1_acc": v}}} for (s, f), v in values.items()]
    a = {(0, "fold00"): 0.5, (1, "fold00"): 0.7, (0, "fold01"): 0.4, (1, "fold01"): 0.8}
    b = {(0, "fold00"): 0.4, (1, "fold00"): 0.4, (0, "fold01"): 0.5, (2, "fold01"): 0.9}
    c = {(0, "fold02"): 0.3, (1, "fold02"): 0.5}
    for name, values in (("a", a), ("b", b), ("c", c)):
        folder = crossvals.folder(tmp_path, name)
        folder.mkdir(parents=True)
        (folder / "results.json").write_text(json.dumps({"runs": runs(values), "summary": summarize(runs(values))}))
    spec = load_free_spec(tmp_path)
    d = crossvals.difference(tmp_path, spec.runs[0], spec.runs[1])
    # shared (seed, fold): fold00 seeds 0, 1 -> +0.1, +0.3; fold01 seed 0 -> -0.1; per-fold means 0.2, -0.1
    assert d["pairs"] == 3 and d["mean"] == pytest.approx(0.05) and d["se"] == pytest.approx(0.15)
    d = crossvals.difference(tmp_path, spec.runs[0], spec.runs[2])  # no (seed, fold) in common: unpaired
    # a: fold means 0.6, 0.6 -> 0.6 +- 0; c: one fold, seeds 0.3, 0.5 -> 0.4 +- 0.1
    assert d["pairs"] == 0 and d["mean"] == pytest.approx(0.2) and d["se"] == pytest.approx(0.1)


def load_free_spec(root: Path):
    """A spec of crossval runs "a", "b" and "c" on tones (the task only read for its metadata)."""
    meta = make_metadata("tones", "scene", "multiclass", ["top1_acc"], 0.5, "presplit_kfold", 3)
    (root / "tasks" / "tones").mkdir(parents=True)
    (root / "tasks" / "tones" / "task_metadata.json").write_text(json.dumps(meta))
    cv = 'task = "tones"'
    text = '[budget]\nsteps = 1\n[evaluate]\nfolder = "tasks"\n' + "".join(run(name, "", cv) for name in "abc")
    return load(write_spec(root, text))


# ------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def finished(data):
    """The crossval spec run once, two runs at once (--jobs 2): (spec path, OUT, its text)."""
    spec = write_spec(data, SPEC)
    text = study.run(spec, data / "clean", jobs=2)
    return spec, data / "clean", text


def test_crossval_study_end_to_end(finished):
    _, out, text = finished
    for row in ("| none | eat (tiny) | tones (fold01) | test top1_acc | 2 |",
                "| mixup | eat (tiny) |", "vs none (paired, 2 runs)", "4 per fold"):
        assert row in text, row
    assert "Normalized score" not in text and not (out / "eval").exists()  # nothing pretrains: no probes
    for name in ("none", "mixup"):
        results = json.loads((out / "crossval" / name / "results.json").read_text())
        assert results["complete"] and len(results["runs"]) == 2  # an ordinary crossval folder: 2 seeds x 1 fold
        assert (out / "crossval" / name / "seed1" / "fold01" / "metrics.json").exists()
    cost_row = next(line for line in text.splitlines() if line.startswith("| mixup | 0."))
    assert float(cost_row.split("|")[-2]) > 0


def test_crossval_study_numbers_are_crossval_called_directly(finished, tmp_path):
    spec_path, out, text = finished
    spec = load(spec_path)
    mixup = spec.runs[1]
    task = load_task(out / "tasks" / "tones")
    direct = crossval(RECIPES["eat"], presets.get(mixup.preset), task, tmp_path / "direct", seeds=2,
                      overrides=[*mixup.overrides, "steps=4"], only=["fold01"])
    ours = json.loads((out / "crossval" / "mixup" / "results.json").read_text())
    assert ours["summary"] == direct["summary"]
    for seed in ("seed0", "seed1"):  # the same training (the study checkpoints more often): the same final weights
        mine, theirs = out / "crossval" / "mixup" / seed / "fold01", tmp_path / "direct" / seed / "fold01"
        configs = [json.loads((run / "config.json").read_text()) for run in (mine, theirs)]
        assert [c["train"].pop("checkpoint_every") for c in configs] == [1, 500] and configs[0] == configs[1]
        weights = [(run / "encoder" / "model.safetensors").read_bytes() for run in (mine, theirs)]
        assert weights[0] == weights[1]
    s = direct["summary"]["test/top1_acc"]
    assert f"| {s['mean']:.3f} +- {s['se']:.3f} |" in text


def test_a_killed_crossval_study_continues_to_the_same_table(finished, data):
    spec, clean, _ = finished
    out = data / "killed"
    env = dict(os.environ, PYTHONPATH=str(Path(study.__file__).parents[2]))
    command = [sys.executable, "-m", "audiorep", "study", str(spec), "--out", str(out), "--jobs", "2"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = out / "crossval" / "none" / "seed1" / "fold01" / "checkpoints"
    deadline = time.time() + 120
    while not (first.exists() and any(first.iterdir())) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # inside the first crossval: seed 0 scored, seed 1 training
    proc.wait()
    wait_for_holders(out)  # its crossval processes die with it (PR_SET_PDEATHSIG), a moment later
    assert not (out / "study.md").exists()
    assert not json.loads((out / "crossval" / "none" / "results.json").read_text())["complete"]
    study.run(spec, out, jobs=2)
    assert (out / "table.md").read_text() == (clean / "table.md").read_text()


def wait_for_holders(out: Path, seconds: float = 30) -> None:
    """Until no live process holds a lock under `out`."""
    from audiorep.files import LOCK, _alive
    deadline = time.time() + seconds
    while time.time() < deadline:
        pids = [int(t.split()[0]) for t in (p.read_text(errors="replace") for p in out.rglob(LOCK)) if t[:1].isdigit()]
        if not any(_alive(pid) for pid in pids):
            return
        time.sleep(0.05)
