"""Paths read from data never leave their folder: manifests, task split entries, shard
members; each refusal names the file and field, and nothing is written anywhere."""
import io
import json
import re
import tarfile

import numpy as np
import pytest

from audiorep import audio, cli
from audiorep.data import clips_from, manifest_clips, task_clips
from audiorep.data.shards import read_samples
from audiorep.tasks.format import TaskWriter, load_task, make_metadata
from test_safety_fs import changed_outside, tree

SR = 16000


@pytest.fixture
def world(tmp_path):
    """tmp/inside (the data folder), tmp/secret.wav (a file outside it)."""
    inside = tmp_path / "inside"
    audio.write(inside / "a.wav", np.zeros(SR // 4, np.float32), SR)
    audio.write(tmp_path / "secret.wav", np.zeros(SR // 4, np.float32), SR)
    return tmp_path, inside


@pytest.mark.parametrize("row, why", [("../secret.wav", "leads out of"), ("sub/../../secret.wav", "leads out of"),
                                      ("{secret}", "is an absolute path")])
def test_manifest_rows_that_leave_the_manifest_folder_are_refused(world, row, why):
    root, inside = world
    row = row.format(secret=root / "secret.wav")
    (inside / "m.csv").write_text(f"path,labels\na.wav,x\n{row},y\n")
    (inside / "m.jsonl").write_text(json.dumps({"path": "a.wav"}) + "\n" + json.dumps({"path": row}) + "\n")
    with pytest.raises(ValueError, match=f"m.csv:3: path: .* {why}"):
        manifest_clips(inside / "m.csv")
    with pytest.raises(ValueError, match=f"m.jsonl:2: path: .* {why}"):
        clips_from(inside / "m.jsonl")


def test_manifest_rows_inside_are_read(world):
    _, inside = world
    (inside / "m.jsonl").write_text(json.dumps({"path": "a.wav", "labels": ["x"]}) + "\n")
    assert [c.path for c in manifest_clips(inside / "m.jsonl")] == [str(inside / "a.wav")]


def test_pretrain_on_an_escaping_manifest_fails_in_one_line_and_writes_nothing(world, capsys):
    root, inside = world
    (inside / "m.csv").write_text("path\n../secret.wav\n")
    before = tree(root)
    code = cli.main(["pretrain", "audiomae", "--data", str(inside / "m.csv"), "--out", str(root / "run"),
                     "--preset", "audiomae-tiny", "steps=1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "m.csv:2: path: '../secret.wav' leads out of" in err
    assert changed_outside(before, tree(root)) == []


def small_task(folder):
    meta = make_metadata("tiny", "scene", "multiclass", ["top1_acc"], 0.25)
    with TaskWriter(folder, meta) as w:
        for split in ("train", "valid", "test"):
            w.add(split, np.zeros(SR // 4, np.float32), ["x"])
    return folder


def test_a_task_split_entry_that_climbs_out_is_refused(world):
    root, inside = world
    task = small_task(inside / "task")
    entries = json.loads((task / "train.json").read_text())
    entries["../../../../secret.wav"] = ["x"]
    (task / "train.json").write_text(json.dumps(entries))
    with pytest.raises(ValueError, match=r"train.json: entry: '../../../../secret.wav' is not a plain name"):
        task_clips(task, "train")


def shard(path, members):
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("member", ["../000001.flac", "/tmp/000001.flac"])
def test_shard_members_with_escaping_names_are_refused(tmp_path, member):
    shard(tmp_path / "s.tar", [("000000.json", b"{}"), (member, b"x")])
    before = tree(tmp_path)
    with pytest.raises(ValueError, match=f"s.tar: member: '{member}'"):
        list(read_samples(tmp_path / "s.tar"))
    assert changed_outside(before, tree(tmp_path)) == []


def edit_task(task, meta=None, entries=None):
    """Apply hostile edits to a written task: metadata fields, extra train.json entries."""
    if meta:
        m = json.loads((task / "task_metadata.json").read_text())
        m.update(meta)
        (task / "task_metadata.json").write_text(json.dumps(m))
    if entries:
        e = json.loads((task / "train.json").read_text())
        e.update(entries)
        (task / "train.json").write_text(json.dumps(e))


@pytest.mark.parametrize("meta, entries, message", [
    ({"task_name": "{root}/elsewhere"}, None, "task_name: '.*elsewhere' is not a plain name"),
    ({"task_name": ".."}, None, "task_name: '..' is not a plain name"),
    (None, {"../../../secret.wav": ["x"]}, "train.json: entry: '../../../secret.wav' is not a plain name"),
    ({"split_mode": "presplit_kfold", "nfolds": 3, "splits": ["fold00", "fold01", "../x"]}, None,
     "splits entry: '../x' is not a plain name"),
])
def test_tasks_check_rejects_escaping_names_naming_the_field(world, capsys, meta, entries, message):
    root, inside = world
    task = small_task(inside / "task")
    edit_task(task, meta and {k: v.format(root=root) if isinstance(v, str) else v for k, v in meta.items()}, entries)
    assert cli.main(["tasks", "check", str(task), "--no-audio"]) == 1
    assert re.search(message, capsys.readouterr().out)


def test_evaluate_on_a_hostile_task_writes_only_under_out(world, capsys):
    root, inside = world
    small_task(inside / "tasks" / "good")
    bad = small_task(inside / "tasks" / "bad")
    edit_task(bad, {"task_name": str(root / "elsewhere")}, {"../../../../secret.wav": ["x"]})
    before = tree(root)
    code = cli.main(["evaluate", "--model", "logmel", "--no-references", "--mode", "knn", "--tasks",
                     str(inside / "tasks"), "--out", str(root / "out")])
    assert code == 1 and "FAILED bad: " in capsys.readouterr().err
    assert changed_outside(before, tree(root), "out") == []
    results = json.loads((root / "out" / "results.json").read_text())
    assert "good" in results["results"]["logmel"] and "bad" not in results["results"]["logmel"]


def test_import_rows_that_leave_the_csv_folder_or_have_no_label_are_skipped(world, capsys):
    root, inside = world
    for i in range(6):
        audio.write(inside / f"{i}.wav", np.zeros(SR // 4, np.float32), SR)
    rows = [f"{i}.wav,{'ab'[i % 2]}" for i in range(6)] + ["../secret.wav,a", f"{root / 'secret.wav'},b", "5.wav,"]
    (inside / "rows.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    before = tree(root)
    assert cli.main(["tasks", "import", str(inside / "rows.csv"), str(root / "out" / "task")]) == 0
    err = capsys.readouterr().err
    assert "rows.csv:8: path: '../secret.wav' leads out of" in err and "rows.csv:9: path: " in err
    assert "rows.csv:10: no label" in err
    assert changed_outside(before, tree(root), "out") == []
    task = load_task(root / "out" / "task")
    assert task.prediction_type == "multiclass" and sum(len(v) for v in task.splits.values()) == 6
