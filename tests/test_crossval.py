"""`audiorep crossval` on tiny generated tasks: every fold held out once, seeds, results.json
with mean +- s.e., exact resume of an interrupted study, and train/valid/test tasks."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from audiorep import crossval
from audiorep.backbones.conv import ConvConfig
from audiorep.encoder import EncoderConfig
from audiorep.frontends.waveform import WaveformConfig
from audiorep.objectives import Recipe, Supervised, SupervisedConfig
from audiorep.tasks.format import TaskWriter, load_task, make_metadata

SR = 16000
TONES = {"low": 400, "high": 3000}
ENCODER = EncoderConfig(name="eat-crossval-test", frontend=WaveformConfig(sample_rate=SR),
                        backbone=ConvConfig(channels=2, factors=(4, 4), dim=16, depth=1, heads=2, ff=32, clip_tokens=80),
                        head_norm=False, pool="prefix")
RECIPE = Recipe("eat-test", SupervisedConfig, Supervised, "none",
                defaults=("steps=4", "batch_size=4", "warmup_steps=1", "lr=3e-3", "ema=0.9", "checkpoint_every=2",
                          "log_every=1", "data.workers=0", "data.roll=false"),
                objective_defaults=("loss=auto", "label_smoothing=0.1", "mixup_alpha=0", "freq_mask=0", "time_mask=0",
                                    "patchout_time=0", "patchout_freq=0"))

pytestmark = pytest.mark.usefixtures("one_thread")


def tone(rng, freq):
    t = np.arange(int(0.3 * SR)) / SR
    return (0.5 * np.sin(2 * np.pi * freq * rng.uniform(0.95, 1.05) * t) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def tasks(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("crossval")
    rng = np.random.default_rng(0)
    meta = make_metadata("tones3", "scene", "multiclass", ["top1_acc"], 0.3, "presplit_kfold", 3)
    with TaskWriter(root / "kfold", meta, list(TONES)) as w:
        for fold in ("fold00", "fold01", "fold02"):
            for label in [*TONES, *TONES]:
                w.add(fold, tone(rng, TONES[label]), [label])
    meta = make_metadata("tones_tvt", "scene", "multiclass", ["top1_acc"], 0.3)
    with TaskWriter(root / "tvt", meta, list(TONES)) as w:
        for split, n in (("train", 4), ("valid", 2), ("test", 2)):
            for i in range(n):
                label = list(TONES)[i % 2]
                w.add(split, tone(rng, TONES[label]), [label])
    return root


def test_every_fold_held_out_once_with_seeds_and_exact_resume(tasks, tmp_path):
    task = load_task(tasks / "kfold")
    assert [(name, train, scored) for name, train, scored in crossval.folds(task)] == [
        ("fold00", ["fold01", "fold02"], {"test": "fold00"}),
        ("fold01", ["fold00", "fold02"], {"test": "fold01"}),
        ("fold02", ["fold00", "fold01"], {"test": "fold02"})]
    full = crossval.crossval(RECIPE, ENCODER, task, tmp_path / "full", seeds=2)
    assert full["complete"] and len(full["runs"]) == 6
    saved = json.loads((tmp_path / "full" / "results.json").read_text())
    assert saved == json.loads(json.dumps(full))
    s = full["summary"]["test/top1_acc"]
    accs = {(r["seed"], r["fold"]): r["scores"]["test"]["top1_acc"] for r in full["runs"]}
    per_fold = [np.mean([accs[0, f], accs[1, f]]) for f in ("fold00", "fold01", "fold02")]
    assert s["mean"] == pytest.approx(np.mean(per_fold))
    assert s["se"] == pytest.approx(np.std(per_fold, ddof=1) / np.sqrt(3))
    assert s["folds"]["fold01"] == pytest.approx(per_fold[1]) and set(s["seeds"]) == {"0", "1"}
    assert "test_ema/top1_acc" in full["summary"]  # the EMA weights are scored beside the trained ones
    assert (tmp_path / "full" / "seed1" / "fold02" / "encoder" / "model.safetensors").exists()

    part = crossval.crossval(RECIPE, ENCODER, task, tmp_path / "resumed", seeds=1, stop_after=2)
    assert part == {}  # interrupted inside the first run
    again = crossval.crossval(RECIPE, ENCODER, task, tmp_path / "resumed", seeds=1)  # resumes fold00 at step 2
    assert again["runs"] == full["runs"][:3]
    a, b = (load_file(str(tmp_path / run / "seed0" / "fold00" / "encoder" / "model.safetensors")) for run in ("full", "resumed"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # bitwise the weights of the uninterrupted run
    other_seed = load_file(str(tmp_path / "full" / "seed1" / "fold00" / "encoder" / "model.safetensors"))
    assert not torch.equal(a["backbone.project.weight"], other_seed["backbone.project.weight"])


def test_train_valid_test_task_scores_valid_and_test(tasks, tmp_path):
    task = load_task(tasks / "tvt")
    result = crossval.crossval(RECIPE, ENCODER, task, tmp_path / "run", overrides=["ema=0", "steps=2"])
    assert set(result["runs"][0]["scores"]) == {"valid", "test"}
    assert result["summary"]["test/top1_acc"]["se"] is None  # one run: no spread to report
    config = json.loads((tmp_path / "run" / "seed0" / "train_valid_test" / "config.json").read_text())
    assert config["train"]["steps"] == 2 and config["train"]["data"]["crop_s"] == 0.3  # overrides; crop = clip length


def test_command_line_runs_chosen_folds_and_refuses_bad_input(tasks, tmp_path, monkeypatch, capsys):
    from audiorep.commands import crossval as command
    from audiorep.objectives import RECIPES

    monkeypatch.setitem(RECIPES, RECIPE.name, RECIPE)
    tiny = ["encoder.frontend.sample_rate=16000", "encoder.backbone.channels=2", "encoder.backbone.factors=4,4",
            "encoder.backbone.dim=16", "encoder.backbone.depth=1", "encoder.backbone.heads=2", "encoder.backbone.ff=32",
            "ema=0", "steps=2"]
    argv = ["--recipe", "eat-test", "--preset", "eat-tiny", "--task", str(tasks / "kfold"),
            "--out", str(tmp_path / "cli"), "--folds", "fold01", *tiny]
    assert command.main(argv) == 0
    assert "tones3 test/top1_acc:" in capsys.readouterr().out
    results = json.loads((tmp_path / "cli" / "results.json").read_text())
    assert [r["fold"] for r in results["runs"]] == ["fold01"] and results["complete"]
    with pytest.raises(ValueError, match=r"no fold \['fold07'\]"):
        command.main(argv[:-len(tiny) - 2] + ["--folds", "fold07"])


def test_every_fold_is_checked_before_any_training(tasks, tmp_path):
    import shutil

    empty = tmp_path / "empty_fold"
    shutil.copytree(tasks / "kfold", empty)
    (empty / "fold02.json").write_text("{}")
    task = load_task(empty)
    with pytest.raises(ValueError, match=r"split 'fold02' \(training split of fold fold00\) has no clips"):
        crossval.crossval(RECIPE, ENCODER, task, tmp_path / "run")
    assert not (tmp_path / "run" / "seed0").exists()  # refused before the first fold trained
    kfold = load_task(tasks / "kfold")
    with pytest.raises(ValueError, match=r"fold fold00 \(8 training clips\): train.warmup_steps gives a warm-up of "
                                         r"10 steps.*steps=2"):
        crossval.crossval(RECIPE, ENCODER, kfold, tmp_path / "run", overrides=["schedule=onecycle", "warmup_steps=10"],
                          epochs=1)
    with pytest.raises(ValueError, match="--epochs 0"):
        crossval.crossval(RECIPE, ENCODER, kfold, tmp_path / "run", epochs=0)
    assert not (tmp_path / "run" / "seed0").exists()


def test_eat_recipe_schedules_scale_with_epochs():
    """`--epochs 300` on ESC-50 (1600 training clips): 3750 steps, a 375-step rise (10%), the EMA per epoch."""
    from audiorep.objectives import RECIPES
    from audiorep.schedules import beta1_at, ema_momentum, lr_at, warmup_of
    from audiorep.train import check_config

    class ESC50:
        metadata = {"sample_duration": 5.0}

    cfg = crossval.train_config(RECIPES["eat"], [], ESC50, 1600, 300, 0)
    check_config(cfg)
    assert cfg.steps == 3750 and warmup_of(cfg) == 375 and cfg.eps == 1e-4 and cfg.clip_grad == 1.0
    assert lr_at(374, cfg) == pytest.approx(3e-4) and lr_at(3749, cfg) < 1e-7  # peaks at 10%, anneals to the end
    assert beta1_at(0, cfg) == pytest.approx(0.95) and beta1_at(374, cfg) == pytest.approx(0.85)
    per_epoch = 1600 / 128
    assert ema_momentum(0, cfg, per_epoch) ** per_epoch == pytest.approx(0.01)  # two epochs of the short EMA
    assert ema_momentum(100, cfg, per_epoch) ** per_epoch == pytest.approx(0.995)
    release = crossval.train_config(RECIPES["eat"], [], ESC50, 1600, None, 0)
    assert release.steps == 42000 and warmup_of(release) == 4200


def test_scored_clips_are_each_scored_once_when_training_repeats_them_by_duration():
    from audiorep.data import ClipDataset, DataConfig
    from audiorep.data.datasets import Clip
    from audiorep.finetune import eval_dataset

    clips = [Clip("a.wav", duration=3.0, labels=("x",)), Clip("b.wav", duration=1.0, labels=("y",))]
    repeat = DataConfig(repeat_s=1.0)
    assert len(ClipDataset(clips, 16000, 16000, repeat, ["x", "y"])) == 4  # training: a three times, b once
    assert len(eval_dataset(clips, 16000, 16000, repeat, ["x", "y"])) == 2
