"""Paths read from data never leave their folder: manifests, task split entries, shard
members; each refusal names the file and field, and nothing is written anywhere."""
import io
import json
import tarfile

import numpy as np
import pytest

from audiorep import audio, cli
from audiorep.data import clips_from, manifest_clips, task_clips
from audiorep.data.shards import read_samples
from audiorep.tasks.format import TaskWriter, make_metadata
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
    with pytest.raises(ValueError, match=r"train.json entry: '16000/train/../../../../secret.wav' leads out of"):
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
