"""Offline task suite, HEAR format, importer and CLI (audiorep.tasks)."""
from __future__ import annotations

import csv
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiorep.tasks import cli, instruments, scaffold, suite, verify
from audiorep.tasks.format import (METADATA_FILE, TaskFormatError, TaskWriter, check_task, load_task,
                                   make_metadata, multi_hot, read_vocabulary, split_names, write_vocabulary)
from audiorep.tasks.importer import import_task

SEED = 3


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny_suite(tmp_path_factory) -> Path:
    """The whole suite at the test-only "tiny" size, built once per module."""
    out = tmp_path_factory.mktemp("suite")
    suite.build_suite(out, SEED, "tiny")
    return out


# ---------------------------------------------------------------- format


def _write_tiny_task(out: Path, event: bool = False) -> Path:
    meta = make_metadata("t", "event" if event else "scene", "multilabel" if event else "multiclass",
                         ["event_onset_200ms_fms"] if event else ["top1_acc"], 0.5)
    wave = np.sin(np.linspace(0, 400, 8000)).astype(np.float32) * 0.1
    with TaskWriter(out, meta, ["a", "b"]) as w:
        for split in split_names(meta):
            for label in ("a", "b"):
                w.add(split, wave, [{"label": label, "start": 10.0, "end": 200.0}] if event else [label])
    return out


def test_written_task_loads_and_checks(tmp_path):
    task = load_task(_write_tiny_task(tmp_path / "t"))
    assert task.vocabulary == ["a", "b"] and task.split_names == ["train", "valid", "test"]
    assert task.items("train") == [("16000/train/00000.wav", ["a"]), ("16000/train/00001.wav", ["b"])]
    assert check_task(task.path) == []
    assert (tmp_path / "t" / "labelvocabulary.csv").read_text() == "idx,label\n0,a\n1,b\n"


@pytest.mark.parametrize("breakage, message", [
    ("missing_wav", "missing (listed in train.json)"),
    ("label_outside", "'zebra' is not in labelvocabulary.csv"),
    ("event_past_end", "past the clip end"),
    ("bad_json", "not valid JSON"),
    ("bad_metadata", "split_mode is 'random'"),
    ("wrong_length", "sample_duration says 0.5 s"),
])
def test_check_rejects_broken_tasks(tmp_path, breakage, message):
    path = _write_tiny_task(tmp_path / "t", event=breakage == "event_past_end")
    train = path / "train.json"
    if breakage == "missing_wav":
        (path / "16000" / "train" / "00000.wav").unlink()
    elif breakage == "label_outside":
        train.write_text(json.dumps({"00000.wav": ["zebra"], "00001.wav": ["b"]}))
    elif breakage == "event_past_end":
        train.write_text(json.dumps({"00000.wav": [{"label": "a", "start": 100, "end": 900}], "00001.wav": []}))
    elif breakage == "bad_json":
        train.write_text("{not json")
    elif breakage == "bad_metadata":
        meta = json.loads((path / METADATA_FILE).read_text())
        (path / METADATA_FILE).write_text(json.dumps({**meta, "split_mode": "random"}))
    elif breakage == "wrong_length":
        sf.write(path / "16000" / "train" / "00000.wav", np.zeros(4000, np.float32), 16000)
    problems = check_task(path)
    assert any(message in p for p in problems), problems
    assert cli.main(["check", str(path)]) == 1


def test_vocabulary_and_multi_hot(tmp_path):
    write_vocabulary(tmp_path / "v.csv", ["a", "b, with comma"])
    assert read_vocabulary(tmp_path / "v.csv") == ["a", "b, with comma"]
    y = multi_hot([["a"], ["b, with comma", "a"], []], ["a", "b, with comma"], ["x.wav", "y.wav", "z.wav"])
    assert y.dtype == np.float32 and y.tolist() == [[1, 0], [1, 1], [0, 0]]
    with pytest.raises(TaskFormatError, match="y.wav: label 'zebra' is not in the vocabulary"):
        multi_hot([["a"], ["zebra"]], ["a"], ["x.wav", "y.wav"])


def test_interrupted_write_leaves_old_task(tmp_path):
    out = _write_tiny_task(tmp_path / "t")
    before = _tree_digest(out)
    meta = make_metadata("t", "scene", "multiclass", ["top1_acc"], None)
    with pytest.raises(RuntimeError), TaskWriter(out, meta, ["a"], overwrite=True) as w:
        w.add("train", np.zeros(100, np.float32), ["a"])
        raise RuntimeError("interrupted")
    assert _tree_digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t"]
    with pytest.raises(FileExistsError):
        TaskWriter(out, meta, ["a"])


def test_load_task_names_file(tmp_path):
    path = _write_tiny_task(tmp_path / "t")
    (path / "labelvocabulary.csv").write_text("index,name\n0,a\n")
    with pytest.raises(TaskFormatError, match="labelvocabulary.csv: header"):
        load_task(path)


# ---------------------------------------------------------------- engines


def test_espeak_is_repeatable_in_fresh_processes():
    code = ("import hashlib; from audiorep.tasks import speech; "
            "w=[speech.synthesize(t, speech.Voice(l, 'm3', 200, 60), seed=7) for t, l in (('stop', 'en'), ('neun', 'de'))]; "
            "print(hashlib.sha256(b''.join(x.tobytes() for x in w)).hexdigest())")
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
            for _ in range(2)}
    assert len(runs) == 1


def test_soundfont_render_depends_only_on_its_notes():
    a = [instruments.Note(40, 60, 0.0, 0.3)]
    first = instruments.render(a, 0.5)
    instruments.render([instruments.Note(5, 72, 0.0, 0.4), instruments.Note(0, 38, 0.1, 0.2, drum=True)], 0.5)
    assert np.array_equal(first, instruments.render(a, 0.5))
    assert first.shape == (8000,) and np.abs(first).max() > 0.01


def test_pools_are_disjoint_between_splits():
    voices = scaffold.voice_pools(SEED)
    programs = scaffold.program_pools(SEED)
    for a, b in (("train", "valid"), ("train", "test"), ("valid", "test")):
        assert not set(voices[a]) & set(voices[b])
        for family in instruments.FAMILIES:
            assert not set(programs[a][family]) & set(programs[b][family])
    assert all(scaffold.PIANO_PROGRAM not in p for pools in programs.values() for p in pools.values())


# ---------------------------------------------------------------- the suite


def test_every_built_task_checks(tiny_suite):
    assert sorted(p.name for p in tiny_suite.iterdir()) == sorted(suite.TASKS)
    for name in suite.TASKS:
        assert check_task(tiny_suite / name) == [], name
        meta = load_task(tiny_suite / name).metadata
        assert meta["evaluation"] and meta["embedding_type"] in ("scene", "event")
        if meta["embedding_type"] == "event":
            assert meta["evaluation_params"]["event_postprocessing_grid"]["median_filter_ms"] == [250]
    assert cli.main(["check", str(tiny_suite)]) == 0


def test_rebuild_is_byte_identical_and_independent_of_other_tasks(tiny_suite, tmp_path):
    names = ["piano_transcription", "keywords"]  # a different set and order than the fixture's build
    suite.build_suite(tmp_path, SEED, "tiny", tasks=names, workers=1)
    for name in names:
        assert _tree_digest(tmp_path / name) == _tree_digest(tiny_suite / name), name


def test_labels_match_the_audio(tiny_suite):
    pitch = verify.pitch_agreement(load_task(tiny_suite / "pitch"))
    assert pitch["n"] > 40 and pitch["chroma"] > 0.8
    events = verify.event_agreement(load_task(tiny_suite / "scene_events"))
    assert events["n"] > 20 and events["events_above_gap"] > 0.95


def test_corpus_writes_clips_and_manifest(tmp_path):
    out = suite.build_corpus(tmp_path / "corpus", hours=20 / 3600, seed=SEED)
    clips = sorted((out / "16000").glob("*.wav"))
    assert len(clips) == 2 and sf.info(clips[0]).duration == pytest.approx(10.0)
    assert json.loads((out / "manifest.json").read_text())["seed"] == SEED


# ---------------------------------------------------------------- import


def _wav(path: Path, seconds: float = 0.5, sr: int = 22050, channels: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    x = 0.1 * np.sin(2 * np.pi * 330 * t)
    sf.write(path, np.stack([x] * channels, 1) if channels > 1 else x, sr)
    return path


def test_import_class_folders_with_folds(tmp_path):
    src = tmp_path / "src"
    for label in ("dog", "cat"):
        for i in range(5):
            _wav(src / label / f"{i}.wav", sr=44100, channels=2)
    (src / "dog" / "broken.wav").write_bytes(b"RIFF not really a wav")
    report = import_task(src, tmp_path / "out", folds=5)
    assert report.written == 10
    assert any("broken.wav" in p for p in report.problems)
    assert check_task(tmp_path / "out") == []
    task = load_task(tmp_path / "out")
    assert task.split_mode == "new_split_kfold" and task.vocabulary == ["cat", "dog"]
    assert sf.info(task.audio_path("fold00", sorted(task.splits["fold00"])[0])).samplerate == 16000


def test_import_csv_multilabel_with_bad_rows(tmp_path):
    rows = [["path", "label", "split"]]
    for i, split in enumerate(["train", "train", "valid", "test"]):
        rows.append([str(_wav(tmp_path / f"a{i}.wav").name), "x;y" if i % 2 else "x", split])
    rows += [["a0.wav", "", "train"], ["missing.wav", "x", "train"], ["a1.wav", "y", "holdout"]]
    with open(tmp_path / "data.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    report = import_task(tmp_path / "data.csv", tmp_path / "out", duration=0.5)
    text = "\n".join(report.problems)
    assert "data.csv:6: no label" in text and "missing.wav" in text and "holdout" in text
    task = load_task(tmp_path / "out")
    assert task.prediction_type == "multilabel" and check_task(task.path) == []
    before = _tree_digest(tmp_path / "out")
    with pytest.raises(FileExistsError):
        import_task(tmp_path / "data.csv", tmp_path / "out")
    assert _tree_digest(tmp_path / "out") == before


def test_import_csv_events(tmp_path):
    _wav(tmp_path / "s.wav", seconds=2.0)
    rows = [["path", "label", "start", "end", "fold"], ["s.wav", "bark", "0.1", "0.5", "0"],
            ["s.wav", "bark", "1.5", "3.0", "0"], ["s.wav", "howl", "0.6", "0.9", "0"],
            [str(_wav(tmp_path / "q.wav").name), "", "", "", "1"], [str(_wav(tmp_path / "r.wav").name), "", "", "", "2"]]
    with open(tmp_path / "ev.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    assert cli.main(["import", str(tmp_path / "ev.csv"), str(tmp_path / "out")]) == 0
    task = load_task(tmp_path / "out")
    assert task.embedding_type == "event" and task.split_mode == "presplit_kfold" and task.metadata["nfolds"] == 3
    assert task.splits["fold00"]["s.wav"] == [{"label": "bark", "start": 100.0, "end": 500.0},
                                              {"label": "howl", "start": 600.0, "end": 900.0}]
    assert check_task(task.path) == []
    shutil.rmtree(tmp_path / "out")
    assert cli.main(["import", str(tmp_path / "ev.csv"), str(tmp_path / "out"), "--strict"]) == 1
    assert not (tmp_path / "out").exists()
    two_folds = tmp_path / "two.csv"
    two_folds.write_text("path,label,fold\ns.wav,bark,0\nq.wav,howl,1\n")
    report = import_task(two_folds, tmp_path / "two")
    assert report.path is None and "2 folds; k-fold tasks need at least 3" in report.problems[-1]


def _csv(path: Path, rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def test_import_keeps_a_repeated_row_once_and_skips_a_conflicting_one(tmp_path):
    """A repeated row is kept once and reported; a second row giving one file other labels is
    skipped and reported, never merged into a multi-label task."""
    for i in range(4):
        _wav(tmp_path / f"a{i}.wav", seconds=0.2)
    rows = [["path", "label", "split"], ["a0.wav", "x", "train"], ["a0.wav", "x", "train"], ["a1.wav", "y", "valid"],
            ["a1.wav", "x", "valid"], ["a2.wav", "x", "test"], ["a3.wav", "y", "train"]]
    report = import_task(_csv(tmp_path / "scene.csv", rows), tmp_path / "scene")
    text = "\n".join(report.problems)
    assert "scene.csv:3: repeats line 2" in text and "scene.csv:5: a1.wav is labelled ['y'] on line 4" in text
    task = load_task(tmp_path / "scene")
    assert task.prediction_type == "multiclass" and task.splits["valid"] == {"a1.wav": ["y"]}
    assert report.written == 4 and check_task(task.path) == []

    events = [["path", "label", "start", "end", "fold"], ["a0.wav", "bark", "0.0", "0.1", "0"],
              ["a0.wav", "bark", "0.0", "0.1", "0"], ["a1.wav", "", "", "", "1"], ["a2.wav", "howl", "0.1", "0.2", "2"]]
    report = import_task(_csv(tmp_path / "ev.csv", events), tmp_path / "ev")
    assert any("ev.csv:3: repeats line 2" in p for p in report.problems)
    assert load_task(tmp_path / "ev").splits["fold00"]["a0.wav"] == [{"label": "bark", "start": 0.0, "end": 100.0}]
    assert import_task(tmp_path / "ev.csv", tmp_path / "strict", strict=True).path is None


def test_import_never_writes_a_task_with_an_empty_split(tmp_path):
    """Generated class folders: new splits reach every split from three clips on (any mix of labels),
    and whatever cannot fill them is refused, naming the empty splits; what is written checks."""
    rng = np.random.default_rng(0)
    for trial in range(8):
        counts = rng.integers(1, 4, size=rng.integers(1, 4))  # clips per label
        src = tmp_path / f"src{trial}"
        for label, n in enumerate(counts):
            for i in range(n):
                _wav(src / f"c{label}" / f"{i}.wav", seconds=0.05)
        folds = 3 if trial % 2 else None
        report = import_task(src, tmp_path / f"out{trial}", folds=folds, seed=trial)
        if counts.sum() >= 3:
            task = load_task(report.path)
            assert all(task.splits[s] for s in task.split_names) and check_task(report.path) == [], (counts, folds)
        else:
            assert report.path is None and "empty; every split needs at least one clip" in report.problems[-1]
            assert not (tmp_path / f"out{trial}").exists()
    rows = [["path", "label", "split"]] + [[_wav(tmp_path / f"a{i}.wav", seconds=0.05).name, "x", s]
                                           for i, s in enumerate(["train", "valid", "train"])]
    report = import_task(_csv(tmp_path / "no_test.csv", rows), tmp_path / "no_test")
    assert report.path is None and "3 clips leave test empty" in report.problems[-1]


def test_task_writer_with_check_never_puts_a_rejected_task_in_place(tmp_path):
    meta = make_metadata("t", "scene", "multiclass", ["top1_acc"], None)
    with pytest.raises(TaskFormatError, match="not written, `tasks check` would reject it: .*valid.json: no files"):
        with TaskWriter(tmp_path / "t", meta, ["a"], check=True) as writer:
            writer.add("train", np.zeros(160, np.float32), ["a"])
            writer.add("test", np.zeros(160, np.float32), ["a"])
    assert not (tmp_path / "t").exists() and not (tmp_path / ".t.partial").exists()
