"""`audiorep evaluate` end to end on tiny HEAR-format tasks (tones: 3-fold scene; bursts: event),
the hear-eval-kit embeddings layout, resume, and a HEAR module defined here."""
import json
import sys

import numpy as np
import pytest
import torch

from audiorep.evaluate import cli
from audiorep.tasks.format import TaskWriter, make_metadata
from conftest import install_hear_module

SR = 16000


def _tone(rng, f, seconds):
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * f * t) + 0.03 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    root = tmp_path_factory.mktemp("tasks")
    rng = np.random.default_rng(0)
    freqs = {"low": 300, "mid": 800, "high": 2000}
    meta = make_metadata("tones", "scene", "multiclass", ["top1_acc", "mAP", "d_prime"], 0.25,
                         "new_split_kfold", 3)
    with TaskWriter(root / "tones", meta, sorted(freqs)) as w:
        for fold in ("fold00", "fold01", "fold02"):
            for label, f in freqs.items():
                for _ in range(3):
                    w.add(fold, _tone(rng, f * (1 + 0.03 * rng.standard_normal()), 0.25), [label])
    meta = make_metadata("bursts", "event", "multilabel", ["event_onset_200ms_fms", "segment_1s_er"], 2.0)
    with TaskWriter(root / "bursts", meta, ["beep"]) as w:
        for split in ("train", "valid", "test"):
            for _ in range(3):
                x = 0.02 * rng.standard_normal(2 * SR).astype(np.float32)
                start = float(rng.uniform(0.2, 1.0))
                a = int(start * SR)
                x[a:a + SR // 2] += _tone(rng, 1000, 0.5)
                w.add(split, x, [{"label": "beep", "start": round(start * 1000, 1), "end": round(start * 1000 + 500, 1)}])
    return root


@pytest.fixture
def tiny_hear_module(monkeypatch):
    """A HEAR API module with a random conv front end; random_init is accepted like audiorep.hear."""
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(1, 8, 400, stride=160)

    def timestamps(audio, model):
        emb = conv(audio[:, None]).abs().transpose(1, 2)  # [n, T, 8]
        return emb, (torch.arange(emb.shape[1]) * 10.0 + 12.5).expand(len(audio), -1)

    return install_hear_module(monkeypatch, "tiny_hear", SR, 8, timestamps)


def test_evaluate_end_to_end_and_resume(tasks, tmp_path, tiny_hear_module, capsys):
    out = tmp_path / "run"
    argv = ["--model", tiny_hear_module, "--tasks", str(tasks), "--out", str(out), "--max-epochs", "6",
            "--grid-points", "2"]
    assert cli.main(argv) == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["models"] == ["tiny_hear", "logmel"]
    tones = doc["results"]["logmel"]["tones"]
    assert len(tones["runs"]) == 3 and tones["scores"]["top1_acc"]["n"] == 3  # one test score per fold
    assert [r["test"] for r in tones["runs"]] == ["fold00", "fold01", "fold02"]
    assert tones["score"] > 0.5  # log-mel separates pure tones (chance 1/3)
    bursts = doc["results"]["logmel"]["bursts"]
    assert set(bursts["scores"]) >= {"event_onset_200ms_fms", "event_onset_200ms_fms_precision", "segment_1s_er"}
    assert bursts["runs"][0]["postprocessing"][0] == 250
    assert doc["categories"] == {"tones": "other", "bursts": "other"}  # not in any table: never guessed
    report = (out / "report.md").read_text()
    assert "| tones |" in report and (out / "plots" / "categories.png").exists()

    # hear-eval-kit layout: raw float32 rows, dimensions, labels (pickle for the kit, JSON for us)
    emb = out / "embeddings" / "logmel" / "bursts"
    n, d = json.loads((emb / "test.embedding-dimensions.json").read_text())
    assert (emb / "test.embeddings.npy").stat().st_size == n * d * 4
    assert len(json.loads((emb / "test.filename-timestamps.json").read_text())) == n
    assert json.loads((emb / "task_metadata.json").read_text())["splits"] == ["train", "valid", "test"]
    assert (emb / "test.target-labels.pkl").exists()

    # rerun: embeddings and finished tasks are reused, so nothing is recomputed
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.npy")}
    results = {p: p.read_text() for p in (out / "predictions").rglob("*.json")}
    (out / "predictions" / "mlp" / "logmel" / "bursts.json").unlink()  # as if interrupted before it
    assert cli.main(argv) == 0
    assert stamps == {p: p.stat().st_mtime_ns for p in out.rglob("*.npy")}
    again = {p: p.read_text() for p in (out / "predictions").rglob("*.json")}
    for p, text in results.items():
        if p.name != "bursts.json" or "logmel" not in str(p):
            assert again[p] == text
    redone = json.loads(again[out / "predictions" / "mlp" / "logmel" / "bursts.json"])
    assert redone["score"] == json.loads(results[out / "predictions" / "mlp" / "logmel" / "bursts.json"])["score"]


@pytest.mark.parametrize("mode", ["linear", "knn"])
def test_other_modes(tasks, tmp_path, mode):
    out = tmp_path / mode
    assert cli.main(["--tasks", str(tasks / "tones"), "--out", str(out), "--mode", mode, "--max-epochs", "6",
                     "--grid-points", "2"]) == 0
    r = json.loads((out / "predictions" / mode / "logmel" / "tones.json").read_text())
    assert r["mode"] == mode and 0 <= r["score"] <= 1


def test_event_embeddings_with_broken_timestamps_are_refused(tasks, tmp_path, tiny_hear_module):
    # hearbaseline.torchcrepe returns all-zero timestamps: frame labels from them would be garbage
    from audiorep.evaluate import embeddings as emb
    from audiorep.tasks.format import load_task

    module = sys.modules[tiny_hear_module]
    module.get_timestamp_embeddings = lambda audio, model: (torch.ones(len(audio), 5, 8), torch.zeros(len(audio), 5))
    with pytest.raises(emb.EmbeddingError, match="timestamps of train/.* do not increase"):
        emb.embed_task(load_task(tasks / "bursts"), emb.parse_model(tiny_hear_module), tmp_path / "e")


def test_an_event_past_the_clip_end_fails_its_task_and_names_the_file(tasks, tmp_path, capsys):
    """evaluate checks each task as `tasks check` does, wav headers included."""
    import shutil
    bad = tmp_path / "tasks" / "bursts"
    shutil.copytree(tasks / "bursts", bad)
    entries = json.loads((bad / "test.json").read_text())
    name = sorted(entries)[0]
    entries[name][0]["end"] = 2500.0  # the clips are 2 s long
    (bad / "test.json").write_text(json.dumps(entries))
    code = cli.main(["--tasks", str(bad.parent), "--out", str(tmp_path / "out"), "--mode", "knn"])
    assert code == 1
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    assert "bursts" in json.dumps(doc["failed"]) and name in json.dumps(doc["failed"])
    assert "results" not in doc or not doc["results"].get("logmel", {}).get("bursts")
