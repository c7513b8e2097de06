"""`audiorep study`: the spec and its errors, recipe sizes, the plan, and a tiny study end to end
(killed and rerun: the same table; two studies on one folder refused; nothing written elsewhere)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from audiorep import presets, sizes, study
from audiorep.commands import presets as presets_command
from audiorep.config import override
from audiorep.files import folder_lock
from audiorep.objectives import RECIPES
from audiorep.study import plan
from audiorep.study.launch import Job, calibrate, command, copy_encoder, execute
from audiorep.study.spec import SpecError, load
from audiorep.tasks.format import TaskWriter, make_metadata
from audiorep.train import TrainConfig
from audiorep.runs import split_overrides

SR = 16000
TONES = {"low": 300, "mid": 420, "high": 600}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """DATA/tasks/tones: a 3-class task of noisy 1 s tones (trainvaltest); its train clips are the corpus."""
    root = tmp_path_factory.mktemp("data")
    meta = make_metadata("tones", "scene", "multiclass", ["top1_acc"], 1.0)
    write_tones(root / "tasks" / "tones", meta, {"train": 12, "valid": 6, "test": 12}, 1.0, mislabel=0.4)
    return root


def write_tones(path: Path, meta: dict, counts: dict[str, int], seconds: float, mislabel: float = 0.0) -> None:
    """A task of noisy tones (classes TONES) at `path`: counts[split] clips per split; a clip
    sounds like a random class with probability `mislabel` (label noise: scores < 1)."""
    rng = np.random.default_rng(0)
    with TaskWriter(path, meta, list(TONES)) as writer:
        for split, n in counts.items():
            for i in range(n):
                label = list(TONES)[i % 3]
                heard = label if rng.random() < 1 - mislabel else list(TONES)[rng.integers(3)]
                t = np.arange(round(SR * seconds)) / SR
                wave = 0.3 * np.sin(2 * np.pi * TONES[heard] * rng.uniform(0.9, 1.1) * t)
                wave += 0.3 * rng.standard_normal(len(t))
                writer.add(split, wave.astype(np.float32), [label])


RUNS = """
[[run]]
name = "mae"
recipe = "audiomae"
size = "tiny"
overrides = ["data.crop_s=0.96", "batch_size=4"]
"""
SPEC = """
title = "test study"
overrides = ["data.workers=0", "log_every=1"]
[data]
folder = "tasks/tones/16000/train"
[budget]
steps = 4
curve = [2]
[evaluate]
folder = "tasks"
mode = "knn"
grid_points = 1
bootstrap = 50
""" + RUNS


def write_spec(root: Path, text: str, name: str = "spec.toml") -> Path:
    (root / name).write_text(text)
    return root / name


def error(root: Path, text: str) -> str:
    with pytest.raises(SpecError) as e:
        load(write_spec(root, text, "bad.toml"))
    return str(e.value)


# ------------------------------------------------------------------------------ spec


def test_spec_reads_runs_sizes_and_budget(data):
    spec = load(write_spec(data, SPEC + '\n[[run]]\nrecipe = "passt"\nsize = "tiny"\ntask = "tones"\nseeds = [3, 5]\n'
                                        'paper = "x"\n'))
    mae, passt = spec.runs
    assert (spec.unit, spec.budget, spec.curve) == ("steps", 4, (2,))
    assert mae.preset == "audiomae-tiny" and mae.overrides[:len(sizes.get("audiomae", "tiny").overrides)] == \
        sizes.get("audiomae", "tiny").overrides
    own = ("data.workers=0", "log_every=1", "data.crop_s=0.96", "batch_size=4")
    assert mae.overrides[-4:] == own  # the size's, then the common ones, then the run's
    assert passt.name == "passt" and passt.seeds == (3, 5) and passt.task == "tones" and passt.paper == "x"
    assert spec.evaluation.folder == data / "tasks" and spec.evaluation.tasks == ("tones",)
    items = plan.trainings(spec, data / "out")
    assert [t.label for t in items] == ["mae-seed0", "passt-seed3", "passt-seed5"]
    assert items[1].data == str(data / "out" / "tasks" / "tones")
    assert items[0].audio_per_step == pytest.approx(4 * 0.96)


@pytest.mark.parametrize("change, field, words", [
    (('recipe = "audiomae"', 'recipe = "wav2vec"'), "run[0].recipe", "unknown recipe 'wav2vec'"),
    (('size = "tiny"', 'size = "huge"'), "run[0].size", "no size 'huge'"),
    (("[[run]]", "[[run]]\ncolour = 1"), "run[0]", "unknown key 'colour'"),
    (("title =", "titel ="), "the spec", "unknown key 'titel'"),
    (("steps = 4", "steps = 4\nminutes = 2"), "[budget]", "exactly one unit"),
    (("steps = 4", "steps = 0"), "budget.steps", "> 0"),
    (("curve = [2]", "curve = [9]"), "budget.curve[0]", "in (0, 4"),
    (("batch_size=4", "batch_size=4\", \"objective.decoder_width=3"), "run[0].overrides", "no field 'decoder_width'"),
    (("batch_size=4", "steps=9"), "run[0].overrides", "set by the study"),
    (('folder = "tasks/tones/16000/train"', 'folder = "nowhere"'), "data.folder", "does not exist"),
    (('mode = "knn"', 'mode = "svm"'), "evaluate.mode", "not one of"),
    (("[evaluate]", "[evaluate]\ntasks = [\"tones\", \"birds\"]"), "evaluate.tasks[1]", "'birds' is not a task folder"),
])
def test_spec_errors_name_the_field(data, change, field, words):
    message = error(data, SPEC.replace(*change))
    assert f"bad.toml: {field}:" in message and words in message, message


def test_spec_errors_init_and_supervised(data):
    init = error(data, SPEC + '[[run]]\nname = "st"\nrecipe = "audiomae"\ninit = "stage1"\n')
    assert "run[1].init: 'stage1' names no run" in init
    cycle = error(data, SPEC.replace('size = "tiny"', 'size = "tiny"\ninit = "b"') +
                  '[[run]]\nname = "b"\nrecipe = "audiomae"\ninit = "mae"\n')
    assert "run[0].init: a cycle: mae -> b -> mae" in cycle
    seeds = error(data, SPEC + '[[run]]\nname = "st"\nrecipe = "audiomae"\ninit = "mae"\nseeds = 2\n')
    assert "run[1].init: run 'mae' has no seed 1" in seeds
    assert "run[1].task: passt is supervised" in error(data, SPEC + '[[run]]\nrecipe = "passt"\n')
    assert "run[0].task: audiomae is self-supervised" in error(data, SPEC.replace('size = "tiny"',
                                                                                 'size = "tiny"\ntask = "tones"'))
    assert "run[1].name: 'mae' is the name of run[0] too" in error(data, SPEC + RUNS)
    assert "evaluate.compare[0]: 'x' names no run" in error(data, SPEC.replace(
        'bootstrap = 50', 'bootstrap = 50\ncompare = [["mae", "x"]]'))


def test_a_task_failing_tasks_check_is_named(data, tmp_path):
    broken = tmp_path / "tasks" / "tones"
    broken.mkdir(parents=True)
    (broken / "task_metadata.json").write_text("{}")
    spec = write_spec(tmp_path, SPEC.replace('folder = "tasks/tones/16000/train"', f'folder = "{data}/tasks/tones"'))
    with pytest.raises(SpecError, match=r"evaluate.tasks\[0\]: tones fails `audiorep tasks check`"):
        study.run(spec, tmp_path / "out")


def test_budget_in_audio_or_minutes_becomes_steps(data):
    spec = load(write_spec(data, SPEC.replace("steps = 4\ncurve = [2]", "audio_s = 384\ncurve = [96, 200]"), "a.toml"))
    assert plan.schedule(spec, 3.84) == (100, (24, 52, 100))  # grain 100 // 50 = 2 steps
    spec = load(write_spec(data, SPEC.replace("steps = 4\ncurve = [2]", "minutes = 1.5\ncurve = [0.5]"), "m.toml"))
    assert plan.schedule(spec, 3.84, seconds_per_step=0.5) == (180, (60, 180))
    assert plan.checkpoint_every((24, 52, 100)) == 4


def test_commands_start_from_the_init_run_and_use_torchrun(tmp_path):
    t = plan.Training("st-seed1", "st", 1, "encodecmae-st", "encodecmae-tiny", "DATA", ("lr=1e-3",), "mae-seed1", 2,
                      1.0)
    cmd = command(t, tmp_path, 100, 25, 50)
    assert cmd[:6] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"]
    assert cmd[6:9] == ["audiorep", "pretrain", "encodecmae-st"]
    assert cmd[cmd.index("--init") + 1] == str(tmp_path / "runs" / "mae-seed1")
    assert cmd[cmd.index("--stop-after") + 1] == "50"
    assert cmd[-4:] == ["lr=1e-3", "steps=100", "seed=1", "checkpoint_every=25"]


def test_jobs_run_after_their_deps_and_at_once():
    import threading
    order, both = [], threading.Barrier(2, timeout=10)  # a and b must run at the same time to pass it

    def job(name, meet=False):
        def work():
            if meet:
                both.wait()
            order.append(name)
        return work
    execute({"st": Job(("a",), job("st")), "a": Job((), job("a", True)), "b": Job((), job("b", True))}, workers=2)
    assert order.index("st") > order.index("a") and sorted(order) == ["a", "b", "st"]

    order.clear()  # one worker: what others wait on first, then the given order
    execute({"x": Job((), job("x")), "y": Job(("z",), job("y")), "z": Job((), job("z"))}, workers=1)
    assert order == ["z", "x", "y"]

    def fail():
        raise ValueError("boom")
    ran = []
    with pytest.raises(ValueError, match="boom"):
        execute({"a": Job((), fail), "after": Job(("a",), lambda: ran.append(1))}, workers=1)
    assert not ran


def test_minutes_are_calibrated_once_per_run(data, tmp_path):
    corpus = str(data / "tasks" / "tones" / "16000" / "train")
    t = plan.Training("mae-seed0", "mae", 0, "audiomae", "audiomae-tiny", corpus,
                      (*sizes.get("audiomae", "tiny").overrides, "data.workers=0", "data.crop_s=0.96", "batch_size=4"),
                      None, 0, 3.84)
    seconds = calibrate(t, tmp_path, 1)
    rows = (tmp_path / "calibrate" / "mae" / "log.csv").read_text().splitlines()
    assert 0 < seconds < 60 and len(rows) == 1 + 4  # header + steps 2, 4, 6, 8
    assert calibrate(t, tmp_path, 1) == seconds  # kept in OUT/state


def test_the_point_is_the_encoder_the_run_ships_not_its_ema(tmp_path):
    for part in ("encoder", "encoder_ema"):
        (tmp_path / "run" / part).mkdir(parents=True)
        (tmp_path / "run" / part / "config.json").write_text(part)
    copy_encoder(tmp_path / "run", tmp_path / "point")
    assert (tmp_path / "point" / "config.json").read_text() == "encoder"


# ------------------------------------------------------------------------------ sizes


def test_every_size_of_every_recipe_resolves():
    for recipe, table in sizes.SIZES.items():
        assert set(table) == {"tiny", "small", "base"} and recipe in RECIPES
        assert table["base"].overrides == () and table["base"].preset in presets.PRESETS
        for size in table.values():
            parts = split_overrides(list(size.overrides))
            override(presets.get(size.preset), parts["encoder"])
            override(RECIPES[recipe].config(), list(RECIPES[recipe].objective_defaults) + parts["objective"])
            override(TrainConfig(), list(RECIPES[recipe].defaults) + parts["train"])


def test_presets_command_lists_the_sizes(capsys):
    presets_command.main([])
    printed = capsys.readouterr().out
    assert "asit" in printed and "tiny" in printed and "objective.momentum=0.97" in printed


# ------------------------------------------------------------------------------ end to end


def listing(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def finished(data):
    """The test spec run once without interruption: (spec path, OUT)."""
    spec = write_spec(data, SPEC)
    before, cwd, home = listing(data / "tasks"), data / "cwd", os.getcwd()
    cwd.mkdir()
    os.chdir(cwd)  # the study and its training processes run here: nothing may land in it
    try:
        text = study.run(spec, data / "clean")
    finally:
        os.chdir(home)
    assert "# test study" in text
    assert listing(data / "tasks") == before and not any(cwd.iterdir())  # nothing written outside --out
    return spec, data / "clean"


def test_tiny_study_end_to_end(finished):
    _, out = finished
    text = (out / "study.md").read_text()
    for row in ("| mae | audiomae (tiny) | 1 |", "| init-mae | reference |", "| log-mel | reference |",
                "| tones |", "training GFLOP per audio second", "![curves](plots/curves.png)"):
        assert row in text, row
    assert (out / "points" / "mae-seed0@2" / "model.safetensors").exists()
    assert (out / "points" / "mae-seed0@4" / "model.safetensors").exists()
    assert (out / "runs" / "mae-seed0" / "config.json").exists()  # an ordinary run folder
    assert (out / "plots" / "curves.png").stat().st_size > 0 and (out / "plots" / "scores.png").stat().st_size > 0
    cost_row = next(line for line in text.splitlines() if line.startswith("| mae | 0."))
    assert float(cost_row.split("|")[-2]) > 0  # FLOP per audio second measured


def test_a_killed_study_continues_to_the_same_table(finished, data):
    spec, clean = finished
    out = data / "killed"
    env = dict(os.environ, PYTHONPATH=str(Path(study.__file__).parents[2]))
    proc = subprocess.Popen([sys.executable, "-m", "audiorep", "study", str(spec), "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "points" / "mae-seed0@2").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # between the two training segments (or inside the second)
    proc.wait()
    assert not (out / "study.md").exists()
    study.run(spec, out)
    assert (out / "table.md").read_text() == (clean / "table.md").read_text()


def test_two_studies_on_one_folder_and_another_spec_are_refused(finished, data):
    spec, clean = finished
    with folder_lock(data / "busy"):
        with pytest.raises(Exception, match="another run .* is using"):
            study.run(spec, data / "busy")
    other = write_spec(data, SPEC.replace("steps = 4", "steps = 5"), "other.toml")
    with pytest.raises(SpecError, match="holds a study of another spec"):
        study.run(other, clean)


@pytest.mark.parametrize("name", ["five-recipes-tiny", "asit-ablation", "encodecmae", "eat-mixes"])
def test_shipped_specs_load(name):
    spec = load(Path(__file__).parents[1] / "studies" / f"{name}.toml")
    assert spec.runs and all(run.size == "tiny" for run in spec.runs)


def test_cli_reports_a_bad_spec_in_one_line(data, tmp_path, capsys):
    from audiorep import cli
    bad = write_spec(data, SPEC.replace('recipe = "audiomae"', 'recipe = "wav2vec"'), "cli.toml")
    assert cli.main(["study", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("audiorep study: error: ") and "run[0].recipe" in err[0]
    assert not (tmp_path / "out").exists()  # refused before anything is written
