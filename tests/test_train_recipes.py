"""The recipes through the command-line entry points: pretrain audiomae / passt, finetune, CLI resume."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

import audiorep
from audiorep.commands import finetune, pretrain
from audiorep.tasks.format import TaskWriter, make_metadata

SR = 16000
TONES = {"low": 300, "mid": 1200, "high": 4000}
MAE_TINY = ["objective.decoder_dim=32", "objective.decoder_depth=2", "objective.decoder_heads=2",
            "objective.meta_hidden=16"]
COMMON = ["batch_size=8", "warmup_steps=2", "log_every=1", "data.crop_s=0.64", "data.workers=0"]


def tone(freq: float, seconds: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.4 * np.sin(2 * np.pi * freq * rng.uniform(0.9, 1.1) * t) + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> Path:
    """A 3-class scene task of 0.8 s tones: 12 train, 6 valid, 6 test clips."""
    out = tmp_path_factory.mktemp("task") / "tones"
    rng = np.random.default_rng(0)
    meta = make_metadata("tones", "scene", "multiclass", ["top1_acc"], 0.8)
    with TaskWriter(out, meta, list(TONES)) as writer:
        for split, n in (("train", 12), ("valid", 6), ("test", 6)):
            for i in range(n):
                label = list(TONES)[i % 3]
                writer.add(split, tone(TONES[label], 0.8, rng), [label])
    return out


pytestmark = pytest.mark.usefixtures("one_thread")


def losses(run: Path) -> list[float]:
    with open(run / "log.csv", newline="") as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


def test_audiomae_pretrain_overfits_and_resumes_exactly(tmp_path, task):
    corpus = task / "16000" / "train"
    args = ["audiomae", "--data", str(corpus), "--preset", "audiomae-tiny", "steps=32", "lr=2e-3",
            "checkpoint_every=4", *COMMON, *MAE_TINY]
    assert pretrain.main([*args, "--out", str(tmp_path / "full")]) == 0
    curve = losses(tmp_path / "full")
    assert np.mean(curve[-4:]) < 0.85 * np.mean(curve[:4]), curve
    pretrain.main([*args, "--out", str(tmp_path / "resumed"), "--stop-after", "10"])
    pretrain.main([*args, "--out", str(tmp_path / "resumed")])  # continues from step 8: masks are re-drawn alike
    a, b = audiorep.load(str(tmp_path / "full")), audiorep.load(str(tmp_path / "resumed"))
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


def test_passt_supervised_overfits(tmp_path, task):
    args = ["passt", "--data", str(task), "--preset", "passt-tiny", "--out", str(tmp_path / "passt"),
            "steps=30", "lr=1e-3", "batch_size=12", "warmup_steps=3", "log_every=1", "data.crop_s=0.8",
            "data.workers=0", "data.balanced=false", "objective.loss=ce", "objective.mixup_alpha=0",
            "objective.time_mask=0", "objective.freq_mask=0", "objective.patchout_time=0.2",
            "objective.patchout_freq=0", "data.gain_db=0", "data.roll=false"]
    assert pretrain.main(args) == 0
    curve = losses(tmp_path / "passt")
    assert np.mean(curve[-4:]) < 0.6 * np.mean(curve[:4]), curve
    assert audiorep.load(str(tmp_path / "passt")).config.num_classes == 3


def test_finetune_saves_an_encoder_with_the_task_head(tmp_path, task, capsys):
    args = ["--model", "audiomae-tiny", "--task", str(task), "--out", str(tmp_path / "ft"), "steps=20",
            "batch_size=12", "lr=2e-3", "warmup_steps=2", "data.workers=0", "objective.mixup_alpha=0"]
    assert finetune.main(args) == 0
    printed = capsys.readouterr().out
    assert "tones valid: top1_acc" in printed and "tones test: top1_acc" in printed
    encoder = audiorep.load(str(tmp_path / "ft"))
    assert encoder.config.num_classes == 3 and encoder.head[1].out_features == 3
    metrics = (tmp_path / "ft" / "metrics.json").read_text()
    assert '"valid"' in metrics and '"test"' in metrics
