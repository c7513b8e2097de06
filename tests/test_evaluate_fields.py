"""Each task_metadata.json field heareval honours changes what runs; invalid fields are named;
one broken task never stops the others; the report (overall and category means, spreads only
with n > 1, display names, categories file, reference column)."""
import json
import re

import numpy as np
import pytest

from audiorep.evaluate import cli
from audiorep.evaluate.embeddings import embed_task, parse_model
from audiorep.evaluate.protocol import ProtocolConfig, evaluate_task
from audiorep.tasks import cli as tasks_cli
from audiorep.tasks.format import TaskFormatError, TaskWriter, load_task, make_metadata, metadata_warnings, split_names

SR = 16000
SMALL = {"task_specific_param_grid": {"hidden_dim": [16]}}  # tiny probes; the other fields as the kit's


def _scene(out, name="tones", nfolds=3, split_mode="new_split_kfold", **extra):
    rng = np.random.default_rng(0)
    meta = make_metadata(name, "scene", "multiclass", ["top1_acc", "mAP"], 0.25, split_mode,
                         nfolds if split_mode != "trainvaltest" else None, **{"evaluation_params": SMALL, **extra})
    t = np.arange(SR // 4) / SR
    with TaskWriter(out, meta, ["lo", "hi"]) as w:
        for split in split_names(meta):
            for i in range(4):
                f = (300, 1200)[i % 2] * (1 + 0.02 * rng.standard_normal())
                w.add(split, (0.3 * np.sin(2 * np.pi * f * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32),
                      [("lo", "hi")[i % 2]])
    return out


def _events(out, name="beeps", **params):
    rng = np.random.default_rng(1)
    meta = make_metadata(name, "event", "multilabel", ["event_onset_200ms_fms"], 1.0,
                         evaluation_params={**SMALL, **params})
    with TaskWriter(out, meta, ["beep"]) as w:
        for split in ("train", "valid", "test"):
            for _ in range(2):
                x = 0.02 * rng.standard_normal(SR).astype(np.float32)
                x[4000:8000] += 0.3 * np.sin(2 * np.pi * 1000 * np.arange(4000) / SR).astype(np.float32)
                w.add(split, x, [{"label": "beep", "start": 250.0, "end": 500.0}])
    return out


def _run(task_dir, out, **cfg):
    emb = out / "emb"
    embed_task(load_task(task_dir), parse_model("logmel"), emb)
    return evaluate_task(emb, ProtocolConfig(**{"grid_points": 2, **cfg}), out / "result.json")


def _set(path, **changes):
    """Rewrite a task's metadata with `changes` (None removes a key)."""
    meta = json.loads((path / "task_metadata.json").read_text())
    meta.update(changes)
    (path / "task_metadata.json").write_text(json.dumps({k: v for k, v in meta.items() if v is not None}))
    return path


def test_task_specific_param_grid_sets_epochs_and_interval(tmp_path, one_thread):
    base = _run(_scene(tmp_path / "a"), tmp_path / "ra")
    grid = {"task_specific_param_grid": {"hidden_dim": [16], "max_epochs": [8], "check_val_every_n_epoch": [2]}}
    short = _run(_scene(tmp_path / "b", evaluation_params=grid), tmp_path / "rb")
    assert all(g["epochs_run"] % 3 == 0 and g["epochs_run"] > 8 for g in base["selection"][0]["grid"])
    assert all(g["epochs_run"] == 8 and g["check_every"] == 2 for g in short["selection"][0]["grid"])
    assert short["protocol"]["grid"]["max_epochs"] == [8] and all(r["epochs_run"] == 8 for r in short["runs"])


def test_a_grid_of_several_schedules_trains_each_with_its_own(tmp_path, one_thread):
    grid = {"task_specific_param_grid": {"hidden_dim": [16], "max_epochs": [3, 6]}}
    r = _run(_scene(tmp_path / "t", evaluation_params=grid), tmp_path / "r", grid_points=6)
    points = r["selection"][0]["grid"]
    assert {g["max_epochs"] for g in points} == {3, 6}
    assert all(g["epochs_run"] == g["max_epochs"] for g in points)
    assert r["runs"][1]["epochs_run"] == r["selection"][0]["chosen"]["max_epochs"]


def test_use_scoring_for_early_stopping_false_picks_by_validation_loss(tmp_path, one_thread):
    scored = _run(_scene(tmp_path / "a"), tmp_path / "ra")
    loss = _run(_scene(tmp_path / "b", use_scoring_for_early_stopping=False), tmp_path / "rb")
    assert scored["protocol"]["monitor"] == "val_top1_acc" and loss["protocol"]["monitor"] == "val_loss"
    grid = loss["selection"][0]["grid"]
    assert loss["selection"][0]["chosen"]["lr"] == min(grid, key=lambda g: g["val_score"])["lr"]
    assert all(0 <= g["val_score"] <= 1 for g in scored["selection"][0]["grid"])
    assert [g["val_score"] for g in grid] != [g["val_score"] for g in scored["selection"][0]["grid"]]


def test_event_postprocessing_grid_is_the_tasks(tmp_path, one_thread):
    grid = {"task_specific_param_grid": {"hidden_dim": [16], "max_epochs": [6]}}
    default = _run(_events(tmp_path / "a", **grid), tmp_path / "ra")
    own = _run(_events(tmp_path / "b", **grid, event_postprocessing_grid={"median_filter_ms": [0],
                                                                          "min_duration": [0]}), tmp_path / "rb")
    assert default["runs"][0]["postprocessing"][0] == 250 and own["runs"][0]["postprocessing"] == [0, 0]


def test_the_kits_own_task_table_sets_dcase_2016s_interval(tmp_path, one_thread):
    grid = {"task_specific_param_grid": {"hidden_dim": [16], "max_epochs": [20]}}
    dcase = _run(_events(tmp_path / "a", name="dcase2016_task2", **grid), tmp_path / "ra")
    other = _run(_events(tmp_path / "b", name="other_events", **grid), tmp_path / "rb")
    assert {g["check_every"] for g in dcase["selection"][0]["grid"]} == {10}
    assert {g["check_every"] for g in other["selection"][0]["grid"]} == {3}


@pytest.mark.parametrize("split_mode, nfolds, tests", [
    ("new_split_kfold", 3, ["fold00", "fold01", "fold02"]), ("presplit_kfold", 4, ["fold00", "fold01", "fold02", "fold03"]),
    ("trainvaltest", None, ["test"])])
def test_split_mode_and_nfolds_set_the_runs(tmp_path, one_thread, split_mode, nfolds, tests):
    grid = {"task_specific_param_grid": {"hidden_dim": [16], "max_epochs": [3]}}
    r = _run(_scene(tmp_path / "t", nfolds=nfolds, split_mode=split_mode, evaluation_params=grid), tmp_path / "r")
    assert [x["test"] for x in r["runs"]] == tests and r["n"] == len(tests)


@pytest.mark.parametrize("change, message", [
    ({"evaluation_params": {"task_specific_param_grid": {"optim": ["SGD"]}}}, "task_specific_param_grid.optim cannot"),
    ({"evaluation_params": {"task_specific_param_grid": {"lr": 0.1}}}, "task_specific_param_grid.lr must be"),
    ({"evaluation_params": {"event_postprocessing_grid": {"median_filter_ms": [250]}}}, "needs min_duration"),
    ({"use_scoring_for_early_stopping": "no"}, "use_scoring_for_early_stopping must be true or false"),
    ({"use_scoring_for_early_stopping": False}, "needs a single event_postprocessing_grid point"),
    ({"split_mode": "new_split_kfold", "nfolds": 2}, "nfolds >= 3"),
    ({"splits": ["train", "valid"]}, "splits ['train', 'valid'] do not match"),
    ({"evaluation": ["top1_acc"]}, "is for scene tasks"),
    ({"evaluation": ["f1"]}, "unknown metric 'f1'"),
    ({"category": "birds"}, "category is 'birds'"),
])
def test_invalid_metadata_names_the_field(change, message):
    args = {"task_name": "e", "embedding_type": "event", "prediction_type": "multilabel",
            "evaluation": ["event_onset_200ms_fms"], "sample_duration": 1.0, **change}
    with pytest.raises(TaskFormatError, match=re.escape(message)):
        make_metadata(**args)


def test_unknown_fields_are_warnings(tmp_path, capsys):
    meta = {**make_metadata("t", "scene", "multiclass", ["top1_acc"], 1.0), "licence": "cc-by",
            "evaluation_params": {"note": "x"}}
    assert metadata_warnings(meta) == ["field 'licence' is not a HEAR 2021 or audiorep field; ignored",
                                       "evaluation_params.note is not read by heareval or audiorep; ignored"]
    task = _set(_scene(tmp_path / "t"), licence="cc-by")
    assert tasks_cli.main(["check", str(task)]) == 0
    assert "warning: field 'licence'" in capsys.readouterr().out


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """Two good tasks, one with invalid metadata, one with a label outside its vocabulary."""
    root = tmp_path_factory.mktemp("suite")
    grid = {"task_specific_param_grid": {"hidden_dim": [16], "max_epochs": [6]}}
    _scene(root / "kws12", name="kws12", evaluation_params=grid)
    _scene(root / "drums_real", name="drums_real", split_mode="trainvaltest", evaluation_params=grid)
    _set(_scene(root / "broken_meta", name="broken_meta", evaluation_params=grid), evaluation=["f1"])
    bad = _scene(root / "broken_labels", name="broken_labels", evaluation_params=grid)
    (bad / "fold00.json").write_text(json.dumps({**json.loads((bad / "fold00.json").read_text()), "00000.wav": ["zebra"]}))
    return root


def test_broken_tasks_are_reported_and_the_others_run(suite, tmp_path, one_thread, capsys):
    categories = tmp_path / "cats.csv"
    categories.write_text("task,category\nkws12,speech\n")
    reference = tmp_path / "hear.csv"
    reference.write_text("model,task,score\npublished,kws12,0.9\npublished,drums_real,0.5\n")
    code = cli.main(["--model", "mel=logmel", "--tasks", str(suite), "--out", str(tmp_path / "run"), "--no-references",
                     "--categories", str(categories), "--reference-table", str(reference),
                     "--reference-model", "published"])
    assert code == 1  # some tasks failed
    doc = json.loads((tmp_path / "run" / "results.json").read_text())
    assert sorted(doc["failed"]) == ["broken_labels", "broken_meta"]
    assert "unknown metric 'f1'" in doc["failed"]["broken_meta"] and "'zebra'" in doc["failed"]["broken_labels"]
    assert sorted(doc["results"]["mel"]) == ["drums_real", "kws12"]
    assert doc["categories"] == {"kws12": "speech", "drums_real": "other"}  # from the file; unknown: never guessed
    assert doc["overall_means"]["mel"]["n"] == 2 and doc["category_means"]["speech"]["mel"]["n"] == 1
    assert doc["reference"] == {"published": {"kws12": 0.9, "drums_real": 0.5}}
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Failed" in report and "| broken_meta |" in report
    kws, drums = (next(line for line in report.splitlines() if line.startswith(f"| {t} |")) for t in ("kws12", "drums_real"))
    assert "(n=3)" in kws and "±" in kws  # three folds
    assert "±" not in drums and "n=" not in drums  # one run: no spread
    assert kws.endswith("| 0.900 |") and "HEAR 2021: published" in report
    assert "| all tasks |" in report and "green triangle = mean" in report
    assert "FAILED broken_meta" in capsys.readouterr().err


def test_model_names_must_be_distinct(tmp_path):
    with pytest.raises(SystemExit):
        cli.main(["--model", "a/final", "--model", "b/final", "--tasks", str(tmp_path), "--out", str(tmp_path / "o")])
    assert [m.label for m in cli.model_list(["x=a/final", "y=b/final"], references=False)] == ["x", "y"]
    assert [m.label for m in cli.model_list(["runs/passt/final"], references=True)] == ["final", "logmel",
                                                                                        "random-final"]


def test_a_cached_result_is_reused_only_with_the_same_settings(tmp_path, one_thread):
    task = _scene(tmp_path / "t", evaluation_params={"task_specific_param_grid": {"hidden_dim": [16], "max_epochs": [3]}})
    first = _run(task, tmp_path / "r")
    assert _run(task, tmp_path / "r") == first
    assert _run(task, tmp_path / "r", seeds=(42, 43))["n"] == 2 * first["n"]
