"""Caches reuse only identical work: embed's index is keyed by the model's identity (config +
weights), the settings and each input's size and mtime; random-init encoders are the same
model in every run (seed 0) and leave the caller's random state alone."""
import json
import os

import numpy as np
import pytest
import torch

import audiorep
from audiorep import audio, cli
from audiorep.models import identity
from audiorep.tasks.format import TaskWriter, make_metadata

SR = 16000


def clip(path, freq):
    t = np.arange(SR // 2) / SR
    audio.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), SR, subtype="FLOAT")


def test_random_init_is_one_model_and_leaves_the_callers_rng_alone(one_thread):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = audiorep.load("audiomae-tiny", random_init=True)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(456)
    assert identity(audiorep.load("audiomae-tiny", random_init=True)) == identity(first)
    trained = audiorep.load("audiomae-tiny")
    with torch.no_grad():
        trained.backbone.norm.weight.add_(1e-3)
    assert identity(trained) != identity(first)


def test_embed_reuses_only_identical_work(tmp_path, one_thread):
    src, out, model = tmp_path / "src", tmp_path / "out", tmp_path / "model"
    clip(src / "a.wav", 300)
    clip(src / "b.wav", 600)
    audiorep.load("audiomae-tiny").save(model)
    run = ["embed", str(src), "--model", str(model), "--out", str(out)]

    def stamps():
        return {n: (out / n).stat().st_mtime_ns for n in ("a.npy", "b.npy")}

    assert cli.main(run) == 0
    done = stamps()
    assert cli.main(run) == 0 and stamps() == done  # same model, settings and files: nothing recomputed

    clip(src / "b.wav", 900)  # same name, same size, new content
    os.utime(src / "b.wav", ns=(done["b.npy"] + 10**9, done["b.npy"] + 10**9))
    assert cli.main(run) == 0
    now = stamps()
    assert now["a.npy"] == done["a.npy"] and now["b.npy"] != done["b.npy"]
    expect = audiorep.scene_embeddings(audiorep.load(str(model)), audio.read(src / "b.wav")[0], SR)[0]
    np.testing.assert_allclose(np.load(out / "b.npy"), expect.numpy(), atol=1e-5)

    other = audiorep.load("audiomae-tiny")
    with torch.no_grad():
        other.backbone.norm.bias.add_(0.5)
    other.save(model)  # new weights under the same --model path
    assert cli.main(run) == 0
    assert all(t != now[n] for n, t in stamps().items())
    expect = audiorep.scene_embeddings(other, audio.read(src / "a.wav")[0], SR)[0]
    np.testing.assert_allclose(np.load(out / "a.npy"), expect.numpy(), atol=1e-5)

    again = stamps()
    assert cli.main(run + ["--set", "hop_ms=25"]) == 0  # other settings
    assert all(t != again[n] for n, t in stamps().items())
    assert json.loads((out / "index.json").read_text())["setup"]["embed"]["hop_ms"] == 25


def test_two_random_init_runs_write_the_same_embeddings(tmp_path, one_thread):
    clip(tmp_path / "src" / "a.wav", 300)
    for out in ("one", "two"):
        assert cli.main(["embed", str(tmp_path / "src"), "--model", "audiomae-tiny", "--random-init",
                         "--out", str(tmp_path / out)]) == 0
    assert (tmp_path / "one" / "a.npy").read_bytes() == (tmp_path / "two" / "a.npy").read_bytes()


@pytest.mark.parametrize("bad", ["not json", "[]", '{"setup": 1, "files": []}'])
def test_a_broken_index_means_recomputing_not_a_crash(tmp_path, bad, capsys, one_thread):
    clip(tmp_path / "src" / "a.wav", 300)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "index.json").write_text(bad)
    assert cli.main(["embed", str(tmp_path / "src"), "--model", "audiomae-tiny", "--out", str(tmp_path / "out")]) == 0
    assert "recomputing every file" in capsys.readouterr().err
    assert set(json.loads((tmp_path / "out" / "index.json").read_text())["files"]) == {str(tmp_path / "src" / "a.wav")}


def test_evaluate_reuses_embeddings_and_results_only_for_the_same_task_content(tmp_path, one_thread):
    meta = make_metadata("tiny", "scene", "multiclass", ["top1_acc"], 0.25)
    rng = np.random.default_rng(0)
    with TaskWriter(tmp_path / "tasks" / "tiny", meta, ["hi", "lo"]) as w:
        for split in ("train", "valid", "test"):
            for i in range(4):
                t = np.arange(SR // 4) / SR
                w.add(split, (0.3 * np.sin(2 * np.pi * (300 if i % 2 else 3000) * t)
                              + 0.01 * rng.standard_normal(len(t))).astype(np.float32), ["lo" if i % 2 else "hi"])
    out = tmp_path / "out"
    run = ["evaluate", "--model", "logmel", "--no-references", "--mode", "knn", "--tasks", str(tmp_path / "tasks"),
           "--out", str(out)]
    emb, result = out / "embeddings" / "logmel" / "tiny", out / "predictions" / "knn" / "logmel" / "tiny.json"

    def stamps():
        return {p.name: p.stat().st_mtime_ns for p in [*emb.glob("*.npy"), result]}

    assert cli.main(run) == 0
    first = stamps()
    assert cli.main(run) == 0 and stamps() == first  # same task, model and settings: reused
    test = tmp_path / "tasks" / "tiny" / "test.json"
    test.write_text(json.dumps({k: ["hi" if v == ["lo"] else "lo"] for k, v in json.loads(test.read_text()).items()}))
    assert cli.main(run) == 0  # the labels changed: embeddings and results are made again
    assert all(t != first[n] for n, t in stamps().items())
    assert json.loads(result.read_text())["score"] <= 0.5  # scored against the new (swapped) labels


def test_evaluate_cache_key_follows_the_hear_module_code(tmp_path, monkeypatch):
    """A HEAR module named without a weights path: editing its source changes the cache key."""
    import importlib
    import sys

    from audiorep.evaluate.embeddings import cache_key, parse_model
    from audiorep.tasks.format import load_task
    task = tmp_path / "task"
    meta = make_metadata("t", "scene", "multiclass", ["top1_acc"], 0.5)
    with TaskWriter(task, meta, ["a"]) as w:
        for split in ("train", "valid", "test"):
            w.add(split, np.zeros(8000, np.float32), ["a"])
    (tmp_path / "my_hear.py").write_text("SIZE = 1\n")
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    monkeypatch.delitem(sys.modules, "my_hear", raising=False)
    importlib.import_module("my_hear")
    spec = parse_model("my_hear")
    before = cache_key(load_task(task), spec)
    assert cache_key(load_task(task), spec) == before
    (tmp_path / "my_hear.py").write_text("SIZE = 22\n")  # edited code
    assert cache_key(load_task(task), spec) != before


def test_evaluate_cache_key_follows_the_packages_above_a_one_line_hear_module():
    """audiorep.hear.passt.base is one line: what it runs lives in audiorep/hear/passt/__init__.py."""
    from audiorep.evaluate.embeddings import module_stamp
    from audiorep.hear import passt

    stamp = module_stamp("audiorep.hear.passt.base")
    assert stamp[0].endswith("base.py")
    assert [s[0] for s in stamp[4:]] == [passt.__file__, audiorep.hear.__file__, audiorep.__file__]
