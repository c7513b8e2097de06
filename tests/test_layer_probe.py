"""HEAR scene and event tasks with learned layer weights (evaluate --layer-weights)."""
import numpy as np
import pytest

from audiorep.evaluate import embeddings as emb
from audiorep.evaluate import layer_store
from audiorep.evaluate.layer_probe import embed_layers, evaluate_weighted
from audiorep.evaluate.protocol import ProtocolConfig
from audiorep.tasks.format import TaskWriter, load_task, make_metadata

SR = 16000


def tone(f, seconds, rng):
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * f * t) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    root, rng = tmp_path_factory.mktemp("tasks"), np.random.default_rng(0)
    meta = make_metadata("tones", "scene", "multiclass", ["top1_acc", "mAP"], 0.5, "new_split_kfold", 3)
    with TaskWriter(root / "tones", meta, ["high", "low"]) as w:
        for fold in ("fold00", "fold01", "fold02"):
            for label, f in (("low", 300), ("high", 2500)):
                for _ in range(3):
                    w.add(fold, tone(f, 0.5, rng), [label])
    meta = make_metadata("bursts", "event", "multilabel", ["event_onset_200ms_fms"], 1.5)
    with TaskWriter(root / "bursts", meta, ["beep"]) as w:
        for split in ("train", "valid", "test"):
            for _ in range(2):
                x = 0.01 * rng.standard_normal(int(1.5 * SR)).astype(np.float32)
                x[SR // 2:SR] += tone(1000, 0.5, rng)
                w.add(split, x, [{"label": "beep", "start": 500.0, "end": 1000.0}])
    return root


@pytest.mark.parametrize("name, mode", [("tones", "linear"), ("bursts", "mlp")])
def test_layer_weighted_probe_on_hear_tasks(tasks, tmp_path, name, mode, one_thread):
    task = load_task(tasks / name)
    spec = emb.parse_model("random:encodecmae-tiny")
    emb_dir = tmp_path / "emb"
    module, model = emb.load_hear_model(spec)
    emb.embed_task(task, spec, emb_dir, loaded=(module, model))
    embed_layers(task, emb_dir, model)
    for split in task.split_names:  # one per-layer row for each of the kit's rows
        rows = emb.load_split(emb_dir, split, task.embedding_type == "event")
        assert layer_store.read_layers(emb_dir, split).data.shape[:2] == (len(rows.x), 3)
    cfg = ProtocolConfig(mode=mode, grid_points=1, max_epochs=6, bootstrap=20)
    result = evaluate_weighted(emb_dir, cfg, tmp_path / "out" / f"{name}.json")
    assert result["mode"] == f"{mode}+layer-weights" and 0 <= result["score"] <= 1
    assert sum(result["layer_weights"].values()) == pytest.approx(1, abs=1e-5)
    assert list(result["layer_weights"]) == ["block0", "block1", "output"]
    assert len(result["runs"]) == (3 if name == "tones" else 1) and result["bootstrap"]["n"] == 20
    assert (tmp_path / "out" / f"{name}.layers.png").exists()


def test_layer_weights_need_an_audiorep_encoder(tasks, tmp_path):
    module, model = emb.load_hear_model(emb.parse_model("logmel"))
    with pytest.raises(emb.EmbeddingError, match="need an audiorep encoder"):
        embed_layers(load_task(tasks / "tones"), tmp_path, model)
