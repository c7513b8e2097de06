"""The public HEAR 2021 tasks, read and run as heareval 2021.1.3 runs them.

The metadata below is what hear-preprocess 2021.1.1 writes to task_metadata.json for six of
the 19 tasks (its task config with the default mode applied, `modes` removed and `tmp_dir`,
`mode`, `splits` added); the audio and labels are tiny stand-ins of the stated durations. Then
one test per metadata field that heareval honours, each showing that it changes what runs.
"""
import json

import numpy as np
import pytest
import torch

from audiorep.evaluate import cli
from audiorep.tasks import cli as tasks_cli
from audiorep.tasks.format import TaskWriter, check_task, fold_name, make_metadata, metadata_warnings
from conftest import install_hear_module

SR = 16000
HOP_S = 4.0  # few frames per 120 s clip keep the event probes cheap
TRAINVALTEST = ["train", "valid", "test"]


def _folds(k):
    return [fold_name(i) for i in range(k)]


def _urls(*splits):
    return [{"split": s, "url": f"https://example.org/{s}.zip", "md5": "0" * 32} for s in splits]


PUBLIC = {
    "maestro-v3.0.0-5h": {
        "task_name": "maestro", "version": "v3.0.0", "embedding_type": "event", "prediction_type": "multilabel",
        "split_mode": "new_split_kfold", "nfolds": 5, "sample_duration": 120.0,
        "evaluation": ["event_onset_50ms_fms", "event_onset_offset_50ms_20perc_fms"],
        "use_scoring_for_early_stopping": False,
        "evaluation_params": {"event_postprocessing_grid": {"median_filter_ms": [150], "min_duration": [50]},
                              "task_specific_param_grid": {"max_epochs": [50], "check_val_every_n_epoch": [1]}},
        "download_urls": _urls("train_test_valid"), "default_mode": "5h", "max_task_duration_by_fold": 4500.0,
        "tmp_dir": "_workdir", "mode": "5h", "splits": _folds(5)},
    "dcase2016_task2-hear2021-full": {
        "task_name": "dcase2016_task2", "version": "hear2021", "embedding_type": "event",
        "prediction_type": "multilabel", "split_mode": "trainvaltest", "sample_duration": 120.0,
        "evaluation": ["event_onset_200ms_fms", "segment_1s_er"],
        "download_urls": [{**u, "name": n} for u, n in zip(_urls("train", "train"), ("dev", "eval"))],
        "default_mode": "full", "split_percentage": {"valid": 20, "test": 20, "train": 60},
        "max_task_duration_by_split": {"train": None, "valid": None, "test": None},
        "tmp_dir": "_workdir", "mode": "full", "splits": TRAINVALTEST},
    "nsynth_pitch-v2.2.3-5h": {
        "task_name": "nsynth_pitch", "version": "v2.2.3", "embedding_type": "scene", "prediction_type": "multiclass",
        "split_mode": "trainvaltest", "sample_duration": 4.0, "pitch_range_min": 21, "pitch_range_max": 108,
        "evaluation": ["pitch_acc", "chroma_acc"], "download_urls": _urls(*TRAINVALTEST), "default_mode": "5h",
        "max_task_duration_by_split": {"train": 16000.0, "valid": 2000.0, "test": 2000.0},
        "tmp_dir": "_workdir", "mode": "5h", "splits": TRAINVALTEST},
    "vocal_imitation-v1.1.3-full": {
        "task_name": "vocal_imitation", "version": "v1.1.3", "embedding_type": "scene",
        "prediction_type": "multiclass", "split_mode": "new_split_kfold", "nfolds": 3, "sample_duration": 11.26,
        "evaluation": ["mAP", "d_prime", "aucroc", "top1_acc"], "download_urls": _urls("train"),
        "default_mode": "full", "max_task_duration_by_fold": None, "tmp_dir": "_workdir", "mode": "full",
        "splits": _folds(3)},
    "gunshot_triangulation-v1.0-full": {
        "task_name": "gunshot_triangulation", "version": "v1.0", "embedding_type": "scene",
        "prediction_type": "multiclass", "split_mode": "new_split_kfold", "nfolds": 7, "sample_duration": 1.5,
        "evaluation": ["top1_acc", "mAP", "d_prime", "aucroc"], "download_urls": _urls(*["train"] * 4),
        "default_mode": "full", "max_task_duration_by_fold": None, "tmp_dir": "_workdir", "mode": "full",
        "splits": _folds(7)},
    "beijing_opera-v1.0-hear2021-full": {
        "task_name": "beijing_opera", "version": "v1.0-hear2021", "embedding_type": "scene",
        "prediction_type": "multiclass", "split_mode": "new_split_kfold", "nfolds": 5, "sample_duration": 4.77,
        "evaluation": ["top1_acc", "mAP", "d_prime", "aucroc"], "download_urls": _urls("train"),
        "default_mode": "full", "max_task_duration_by_fold": None, "tmp_dir": "_workdir", "mode": "full",
        "splits": _folds(5)},
}
LABELS = ["a", "b", "c"]
SCENE4 = ["top1_acc", "mAP", "d_prime", "aucroc"]


def _published(task_name, version, mode, prediction, split_mode, nfolds, duration, evaluation, **extra):
    """The other task configurations of hear-preprocess 2021.1.1, as written to task_metadata.json."""
    kfold = split_mode != "trainvaltest"
    meta = {"task_name": task_name, "version": version, "embedding_type": "scene", "prediction_type": prediction,
            "split_mode": split_mode, "sample_duration": duration, "evaluation": evaluation,
            "download_urls": _urls("train"), "default_mode": mode, "tmp_dir": "_workdir", "mode": mode,
            "splits": _folds(nfolds) if kfold else TRAINVALTEST, **extra}
    if kfold:
        meta.update(nfolds=nfolds, max_task_duration_by_fold=None)
    else:
        meta["max_task_duration_by_split"] = {"train": None, "valid": None, "test": None}
    return meta


OTHERS = [
    _published("nsynth_pitch", "v2.2.3", "50h", "multiclass", "trainvaltest", None, 4.0, ["pitch_acc", "chroma_acc"],
               pitch_range_min=21, pitch_range_max=108),
    _published("speech_commands", "v0.0.2", "5h", "multiclass", "trainvaltest", None, 1.0, ["top1_acc"]),
    _published("speech_commands", "v0.0.2", "full", "multiclass", "trainvaltest", None, 1.0, ["top1_acc"]),
    _published("beehive_states_fold0", "v2", "5h", "multiclass", "trainvaltest", None, 30,
               ["aucroc", "mAP", "d_prime", "top1_acc"]),
    _published("beehive_states_fold1", "v2", "5h", "multiclass", "trainvaltest", None, 30,
               ["aucroc", "mAP", "d_prime", "top1_acc"]),
    _published("tfds_crema_d", "1.0.0", "full", "multiclass", "new_split_kfold", 5, 5, SCENE4,
               tfds_task_name="crema_d", tfds_task_version="1.0.0", extract_splits=["train", "test", "valid"]),
    _published("esc50", "v2.0.0", "full", "multiclass", "presplit_kfold", 5, 5, SCENE4),
    _published("fsd50k", "v1.0", "full", "multilabel", "trainvaltest", None, None, ["mAP", "d_prime", "aucroc", "top1_acc"]),
    _published("tfds_gtzan", "1.0.0", "full", "multiclass", "new_split_kfold", 10, 30.0, SCENE4,
               tfds_task_name="gtzan", tfds_task_version="1.0.0", extract_splits=["train"]),
    _published("tfds_gtzan_music_speech", "1.0.0", "full", "multiclass", "new_split_kfold", 10, 30.0, SCENE4,
               tfds_task_name="gtzan_music_speech", tfds_task_version="1.0.0", extract_splits=["train"]),
    _published("libricount", "v1.0.0-hear2021", "full", "multiclass", "new_split_kfold", 5, 5.0, SCENE4),
    _published("mridangam_stroke", "v1.5", "full", "multiclass", "new_split_kfold", 5, 0.81, SCENE4),
    _published("mridangam_tonic", "v1.5", "full", "multiclass", "new_split_kfold", 5, 0.81, SCENE4),
    _published("vox_lingua_top10", "hear2021", "full", "multiclass", "new_split_kfold", 5, 18.64, SCENE4),
    _published("coughvid", "v2.0", "full", "multiclass", "new_split_kfold", 5, 10.19, SCENE4),
]


def write_task(out, meta, clips_per_split=3, seed=0):
    """A task folder with `meta` as its task_metadata.json: tones whose pitch is the label."""
    rng = np.random.default_rng(seed)
    n = int(round(meta["sample_duration"] * SR))
    t = np.arange(n) / SR
    with TaskWriter(out, meta, LABELS) as w:
        for split in meta.get("splits") or TRAINVALTEST:
            for i in range(clips_per_split):
                label = LABELS[i % 3]
                wave = 0.05 * rng.standard_normal(n).astype(np.float32)
                if meta["embedding_type"] == "scene":
                    wave += (0.3 * np.sin(2 * np.pi * 300 * (1 + LABELS.index(label)) * t)).astype(np.float32)
                    w.add(split, wave, [label])
                    continue
                events = []
                for start in np.arange(2.0, meta["sample_duration"] - 6, 12.0):
                    a, b = int(start * SR), int((start + 6) * SR)
                    wave[a:b] += 0.3 * np.sin(2 * np.pi * 500 * t[:b - a]).astype(np.float32)
                    events.append({"label": label, "start": start * 1000, "end": (start + 6) * 1000})
                w.add(split, wave, events)
    return out


@pytest.fixture
def hop_module(monkeypatch):
    """A HEAR module: the level and zero-crossing rate (pitch) of each 4 s frame, or of the clip -> 2-d."""
    def features(frames):  # [..., S] -> [..., 2]
        level = frames.square().mean(-1).add(1e-6).log()
        zcr = (frames[..., 1:] * frames[..., :-1] < 0).float().mean(-1) * 10
        return torch.stack([level, zcr], -1)

    def timestamps(audio, model):
        frames = audio.unfold(1, int(HOP_S * SR), int(HOP_S * SR))  # [n, T, hop]
        ts = (torch.arange(frames.shape[1]) + 0.5) * HOP_S * 1000
        return features(frames), ts.expand(len(audio), -1)

    return install_hear_module(monkeypatch, "hop_hear", SR, 2, timestamps, scene=lambda audio, model: features(audio))


@pytest.fixture(scope="module")
def public_tasks(tmp_path_factory):
    root = tmp_path_factory.mktemp("hear2021")
    for name, meta in PUBLIC.items():
        write_task(root / name, meta, clips_per_split=1 if meta["sample_duration"] > 100 else 2)
    return root


def _evaluate(task, out, module, *extra):
    code = cli.main(["--model", module, "--tasks", str(task), "--out", str(out), "--no-references",
                     "--grid-points", "2", *extra])
    doc = json.loads((out / "results.json").read_text())
    return code, doc, doc["results"][module][task.name]


@pytest.mark.parametrize("meta", OTHERS, ids=lambda m: f"{m['task_name']}-{m['mode']}")
def test_every_other_public_configuration_is_read_without_warnings(meta):
    assert make_metadata(**meta) == meta and metadata_warnings(meta) == []


def test_tasks_check_accepts_the_public_tasks(public_tasks, capsys):
    for name, meta in PUBLIC.items():
        assert check_task(public_tasks / name) == [], name
        assert metadata_warnings(meta) == [], name
    assert tasks_cli.main(["check", str(public_tasks)]) == 0
    assert "warning" not in capsys.readouterr().out


def test_maestro_runs_its_own_grid_on_validation_loss(public_tasks, tmp_path, hop_module, one_thread):
    code, doc, maestro = _evaluate(public_tasks / "maestro-v3.0.0-5h", tmp_path, hop_module)
    assert code == 0 and doc["failed"] == {} and doc["categories"] == {"maestro-v3.0.0-5h": "music"}
    assert maestro["protocol"]["monitor"] == "val_loss"  # use_scoring_for_early_stopping: false
    grid = maestro["selection"][0]["grid"]
    assert [(g["max_epochs"], g["check_every"]) for g in grid] == [(50, 1)] * 2  # task_specific_param_grid
    assert maestro["selection"][0]["chosen"]["lr"] == min(grid, key=lambda g: g["val_score"])["lr"]  # lowest loss
    assert [r["test"] for r in maestro["runs"]] == _folds(5)
    assert all(r["postprocessing"] == [150, 50] and r["epochs_run"] <= 50 for r in maestro["runs"])
    assert set(maestro["scores"]) == {"event_onset_50ms_fms", "event_onset_50ms_fms_precision",
                                      "event_onset_50ms_fms_recall", "event_onset_offset_50ms_20perc_fms",
                                      "event_onset_offset_50ms_20perc_fms_precision",
                                      "event_onset_offset_50ms_20perc_fms_recall"}  # each metric once


@pytest.mark.parametrize("name, folds, primary", [
    ("dcase2016_task2-hear2021-full", None, "event_onset_200ms_fms"), ("nsynth_pitch-v2.2.3-5h", None, "pitch_acc"),
    ("vocal_imitation-v1.1.3-full", 3, "mAP"), ("gunshot_triangulation-v1.0-full", 7, "top1_acc"),
    ("beijing_opera-v1.0-hear2021-full", 5, "top1_acc")])
def test_public_task_runs_as_in_heareval(public_tasks, tmp_path, hop_module, one_thread, name, folds, primary):
    # epochs capped at 20 to keep the test short; the grid's own values are what the cap applies to
    code, doc, r = _evaluate(public_tasks / name, tmp_path, hop_module, "--max-epochs", "20")
    assert code == 0 and r["primary"] == primary and r["protocol"]["monitor"] == f"val_{primary}"
    assert set(r["scores"]) >= set(PUBLIC[name]["evaluation"])
    grid = r["selection"][0]["grid"]
    check = 10 if name.startswith("dcase") else 3  # the kit's own table gives DCASE 2016 its interval
    assert all(g["check_every"] == check and g["epochs_run"] == 20 // check * check for g in grid)
    assert r["protocol"]["grid"]["max_epochs"] == [500] and r["protocol"]["max_epochs_cap"] == 20
    tests = [x["test"] for x in r["runs"]]
    assert tests == (_folds(folds) if folds else ["test"])
    if folds:
        assert r["protocol"]["splits"][0] == {"train": _folds(folds)[2:], "valid": ["fold01"], "test": ["fold00"]}
    if name.startswith("dcase"):
        assert tuple(r["runs"][0]["postprocessing"]) in {(250, 125), (250, 250)} and "segment_1s_er" in r["scores"]
    assert doc["categories"][name] == {"dcase2016_task2-hear2021-full": "general", "nsynth_pitch-v2.2.3-5h": "music",
                                       "vocal_imitation-v1.1.3-full": "speech",
                                       "gunshot_triangulation-v1.0-full": "general",
                                       "beijing_opera-v1.0-hear2021-full": "music"}[name]
