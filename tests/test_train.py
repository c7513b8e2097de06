"""The training loop with a tiny objective: schedules, param groups, overfit, exact resume, kill, DDP."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from audiorep import audio, load, presets
from audiorep.config import override
from audiorep.data import ClipDataset, DataConfig, clips_from
from audiorep.encoder import Encoder
from audiorep.schedules import SHORT_EMA, beta1_at, ema_momentum, lr_at, warmup_of, weight_decay_at
from audiorep.train import TrainConfig, check_config, checkpoints, clip_per_param, param_groups, train

CLASSES = ["low", "mid", "high"]
SR = 16000


class TagObjective(nn.Module):
    """Multi-label tagging of the pooled embedding: the smallest objective of the contract."""

    def __init__(self, encoder: Encoder, cfg=None, num_classes: int = len(CLASSES)):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.backbone.dim, num_classes)

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        out = self.encoder(batch["wave"])
        logits = self.head(self.encoder.pool(out))  # [B, C]
        loss = F.binary_cross_entropy_with_logits(logits, batch["target"])
        return loss, {"acc": float(((logits > 0) == (batch["target"] > 0)).float().mean())}


def tiny_encoder(seed: int = 0) -> Encoder:
    torch.manual_seed(seed)
    cfg = presets.get("audiomae-tiny")
    return Encoder(override(cfg, ["backbone.dim=32", "backbone.heads=2", "backbone.max_frames=48"]))


def make_corpus(folder: Path, n: int = 12) -> Path:
    """n clips of 1 s tones (class = pitch band, some clips two tones) and a CSV manifest."""
    rng = np.random.default_rng(0)
    t = np.arange(SR) / SR
    rows = ["path,offset,duration,labels"]
    for i in range(n):
        labels = [CLASSES[i % 3]] + ([CLASSES[(i + 1) % 3]] if i % 4 == 0 else [])
        wave = sum(0.3 * np.sin(2 * np.pi * {"low": 200, "mid": 1000, "high": 4000}[c] * t) for c in labels)
        audio.write(folder / f"{i:02d}.wav", (wave + 0.01 * rng.standard_normal(SR)).astype(np.float32), SR)
        rows.append(f"{i:02d}.wav,0.1,0.8,{';'.join(labels)}")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    return folder / "manifest.csv"


def small_config(**changes) -> TrainConfig:
    cfg = TrainConfig(steps=6, batch_size=4, lr=1e-3, warmup_steps=2, log_every=1, checkpoint_every=2,
                      data=DataConfig(crop_s=0.48, gain_db=6, workers=0))
    return replace(cfg, **changes)


def make_run(tmp: Path, manifest: Path, cfg: TrainConfig, name: str, stop_after=None, seed: int = 0):
    encoder = tiny_encoder(seed)
    clips, vocabulary = clips_from(manifest)
    data = ClipDataset(clips, SR, round(cfg.data.crop_s * SR), cfg.data, vocabulary)
    return train(TagObjective(encoder, num_classes=len(vocabulary)), data, cfg, tmp / name, {"test": name}, stop_after)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def test_schedule_warmup_then_cosine_to_min():
    cfg = TrainConfig(steps=100, lr=1.0, min_lr=0.1, warmup_steps=10)
    lrs = [lr_at(s, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] == pytest.approx(0.1, abs=1e-3)
    linear = replace(cfg, schedule="linear")
    assert lr_at(55, linear) == pytest.approx(1.0 - 0.9 * 0.5)


def test_onecycle_is_torchs_one_cycle_lr():
    cfg = TrainConfig(steps=300, lr=3e-4, warmup_steps=30, schedule="onecycle")
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=3e-4)
    ref = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-4, total_steps=300, pct_start=0.1, cycle_momentum=False)
    for step in range(300):
        assert lr_at(step, cfg) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9, abs=1e-15), step
        opt.step()
        if step < 299:
            ref.step()


def test_onecycle_with_warmup_frac_cycles_beta1_as_torch():
    """warmup_frac=0.1 over 300 steps is torch's pct_start=0.1; cycle_beta1 is its momentum cycle."""
    cfg = TrainConfig(steps=300, lr=3e-4, warmup_frac=0.1, warmup_steps=7, schedule="onecycle",
                      betas=(0.9, 0.99), cycle_beta1=(0.95, 0.85))
    opt = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=3e-4, betas=(0.9, 0.99))
    ref = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-4, total_steps=300, pct_start=0.1)
    for step in range(300):
        assert lr_at(step, cfg) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9, abs=1e-15), step
        assert beta1_at(step, cfg) == pytest.approx(opt.param_groups[0]["betas"][0], rel=1e-12), step
        opt.step()
        if step < 299:
            ref.step()
    assert beta1_at(29, cfg) == pytest.approx(0.85) and beta1_at(0, cfg) == beta1_at(299, cfg) == pytest.approx(0.95)
    assert beta1_at(5, replace(cfg, cycle_beta1=None)) == 0.9


def test_warmup_frac_scales_with_steps_and_a_warmup_as_long_as_the_run_is_refused():
    assert warmup_of(TrainConfig(steps=42000, warmup_frac=0.1)) == 4200
    assert warmup_of(TrainConfig(steps=3750, warmup_frac=0.1)) == 375  # crossval --epochs 300 on ESC-50
    assert warmup_of(TrainConfig(steps=3750, warmup_steps=4200)) == 4200
    lrs = [lr_at(s, TrainConfig(steps=3750, lr=1.0, warmup_frac=0.1, schedule="onecycle")) for s in range(3750)]
    assert max(lrs) == pytest.approx(1.0) and lrs[-1] < 1e-4  # peaks, then anneals
    with pytest.raises(ValueError, match=r"warmup_steps.*4200 steps.*steps=3750"):
        check_config(TrainConfig(steps=3750, warmup_steps=4200, schedule="onecycle"))
    with pytest.raises(ValueError, match=r"warmup_frac=0.95 x steps.*steps=10"):
        check_config(TrainConfig(steps=10, warmup_frac=0.95))
    with pytest.raises(ValueError, match="warmup_frac=1.5"):
        check_config(TrainConfig(steps=10, warmup_frac=1.5))
    with pytest.raises(ValueError, match="cycle_beta1"):
        check_config(TrainConfig(cycle_beta1=(0.95, 0.85)))  # cosine schedule: no cycle to follow
    with pytest.raises(ValueError, match="clip_mode"):
        check_config(TrainConfig(clip_mode="layer"))
    with pytest.raises(ValueError, match="ema=0.9 and train.ema_per_epoch"):
        check_config(TrainConfig(ema=0.9, ema_per_epoch=0.995))
    check_config(TrainConfig(steps=10, warmup_steps=100))  # a linear warm-up may still outlast a tiny run


def test_ema_per_epoch_with_the_short_start():
    cfg = TrainConfig(ema_per_epoch=0.995, ema_short_epochs=2)
    assert ema_momentum(0, cfg, 12.5) == pytest.approx(SHORT_EMA ** (1 / 12.5))
    assert ema_momentum(24, cfg, 12.5) == pytest.approx(SHORT_EMA ** (1 / 12.5))  # sample 3072 < 2 epochs of 1600
    assert ema_momentum(25, cfg, 12.5) == pytest.approx(0.995 ** (1 / 12.5))
    assert ema_momentum(25, cfg, 12.5) ** 12.5 == pytest.approx(0.995)  # one epoch decays by the per-epoch momentum
    assert ema_momentum(3, TrainConfig(ema=0.9), None) == 0.9


def test_per_param_clipping_clips_each_gradient_alone():
    grads = [torch.full((4,), 5.0), torch.full((9,), 0.01)]  # norms 10 and 0.03
    clip_per_param(grads, 1.0)
    assert float(grads[0].norm()) == pytest.approx(1.0, rel=1e-5) and torch.equal(grads[1], torch.full((9,), 0.01))


def test_release_options_reach_the_optimizer_and_resume_exactly(tmp_path, manifest):
    """eps, the beta1 cycle, per-parameter clipping and the per-epoch EMA in a run killed at step 5:
    the resumed run ends with bitwise the same weights and EMA; the saved optimizer holds eps and beta1."""
    cfg = small_config(steps=8, schedule="onecycle", warmup_frac=0.25, cycle_beta1=(0.95, 0.85), eps=1e-4,
                       clip_grad=0.05, clip_mode="per_param", ema_per_epoch=0.9, ema_short_epochs=1)
    full = make_run(tmp_path, manifest, cfg, "full")
    make_run(tmp_path, manifest, cfg, "resumed", stop_after=5)
    resumed = make_run(tmp_path, manifest, cfg, "resumed", seed=1)
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    ema = [(tmp_path / run / "encoder_ema" / "model.safetensors").read_bytes() for run in ("full", "resumed")]
    assert ema[0] == ema[1]
    saved = torch.load(tmp_path / "full" / "checkpoints" / "step_0000008" / "optimizer.pt", weights_only=True)
    group = saved["param_groups"][0]
    assert group["eps"] == 1e-4 and group["betas"][0] == pytest.approx(beta1_at(7, cfg)) and group["betas"][1] == 0.95
    rows = (tmp_path / "full" / "log.csv").read_text().splitlines()
    assert "beta1" in rows[0].split(",")
    globally = make_run(tmp_path, manifest, replace(cfg, clip_mode="global"), "global")
    assert not torch.equal(globally.head.weight, full.head.weight)  # the two clipping modes differ


def test_ema_averages_weights_and_batchnorm_statistics():
    from audiorep.ema import EMA
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema = EMA(net)
    net.train()(torch.randn(16, 3) * 5 + 2)  # moves running_mean / running_var, counts one batch
    with torch.no_grad():
        net[0].weight.add_(1.0)
    before = {k: v.clone() for k, v in ema.model.state_dict().items()}
    ema.update(net, 0.9)
    for name, value in net.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(ema.model.state_dict()[name], 0.9 * before[name] + 0.1 * value)
        else:
            assert torch.equal(ema.model.state_dict()[name], value), name  # num_batches_tracked copied


def test_weight_decay_schedule_cosine_to_end():
    cfg = TrainConfig(steps=11, weight_decay=0.04, weight_decay_end=0.4)
    wds = [weight_decay_at(s, cfg) for s in range(11)]
    assert wds[0] == pytest.approx(0.04) and wds[5] == pytest.approx(0.22) and wds[-1] == pytest.approx(0.4)
    assert weight_decay_at(7, replace(cfg, weight_decay_end=None)) == 0.04


def test_param_groups_no_decay_and_layer_decay():
    objective = TagObjective(tiny_encoder())
    depth, backbone = 2, objective.encoder.backbone
    assert backbone.layer_id("blocks.1.attn.qkv.weight") == 2
    assert backbone.layer_id("pos_embed.table") == 0
    assert backbone.layer_id("cls_token") == 0
    assert backbone.layer_id("norm.weight") == depth + 1
    groups = param_groups(objective, 0.05, 0.5)
    by_name = {n: g["layer"] for g in groups for n, p in objective.named_parameters() if any(p is q for q in g["params"])}
    assert by_name["head.weight"] == depth + 1 and by_name["encoder.backbone.blocks.0.mlp.fc1.weight"] == 1
    names = {id(p): n for n, p in objective.named_parameters()}
    for g in groups:
        for p in g["params"]:
            no_decay = p.ndim == 1 or "token" in names[id(p)] or "pos_embed" in names[id(p)]
            assert (g["weight_decay"] == 0.0) == no_decay, names[id(p)]
        assert g["lr_scale"] == pytest.approx(0.5 ** (depth + 1 - g["layer"]))
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in objective.parameters())


def test_overfit_loss_decreases_and_run_loads(tmp_path, manifest):
    cfg = small_config(steps=20, batch_size=12, lr=3e-3, warmup_steps=2, checkpoint_every=100,
                       data=DataConfig(crop_s=0.48, workers=0, roll=False))
    make_run(tmp_path, manifest, cfg, "overfit")
    log = (tmp_path / "overfit" / "log.csv").read_text().splitlines()
    losses = [float(row.split(",")[2]) for row in log[1:]]
    assert np.mean(losses[-3:]) < 0.65 * np.mean(losses[:3]), losses
    encoder = load(str(tmp_path / "overfit"))
    assert encoder.config.backbone.dim == 32
    assert [p.name for p in checkpoints(tmp_path / "overfit")] == ["step_0000020"]


def test_resume_is_exact_and_skips_partial_checkpoints(tmp_path, manifest):
    cfg = small_config()
    full = make_run(tmp_path, manifest, cfg, "full")
    make_run(tmp_path, manifest, cfg, "resumed", stop_after=5)  # checkpoints at 2 and 4, then "killed"
    ckpts = tmp_path / "resumed" / "checkpoints"
    assert [p.name for p in checkpoints(tmp_path / "resumed")] == ["step_0000002", "step_0000004"]
    (ckpts / ".step_0000006.tmp").mkdir()  # a half-written checkpoint
    (ckpts / ".step_0000006.tmp" / "objective.pt").write_bytes(b"garbage")
    (ckpts / "step_0000005").mkdir()  # a folder without state.json is not a checkpoint
    resumed = make_run(tmp_path, manifest, cfg, "resumed", seed=1)  # init differs: weights must come from step 4
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    rows = (tmp_path / "resumed" / "log.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [1, 2, 3, 4, 5, 6]


def test_resume_refuses_a_different_config(tmp_path, manifest):
    make_run(tmp_path, manifest, small_config(steps=2), "run")
    with pytest.raises(ValueError, match="different configuration"):
        make_run(tmp_path, manifest, small_config(steps=2, lr=5e-4), "run")


def test_non_finite_loss_is_skipped_then_stops(tmp_path, manifest):
    class Exploding(TagObjective):
        def forward(self, batch):
            loss, logs = super().forward(batch)
            return loss * float("nan"), logs

    cfg = small_config(steps=4, max_skipped=2)
    clips, vocabulary = clips_from(manifest)
    data = ClipDataset(clips, SR, round(cfg.data.crop_s * SR), cfg.data, vocabulary)
    objective = Exploding(tiny_encoder())
    before = {k: v.clone() for k, v in objective.state_dict().items()}
    with pytest.raises(FloatingPointError, match="non-finite"):
        train(objective, data, cfg, tmp_path / "nan")
    assert all(torch.equal(before[k], v) for k, v in objective.state_dict().items())


# a run that SIGKILLs itself right after saving step 3's checkpoint (killed mid-run on any machine)
RUN_SCRIPT = """
import sys
import torch
torch.set_num_threads(1)  # bitwise equality needs the same reduction order as the test process
sys.path.insert(0, {tests!r})
from pathlib import Path
from dying import die_after
from audiorep import train
die_after(train, "save_checkpoint", calls=3)  # checkpoints every step: step 3's
from test_train import make_run, small_config
make_run(Path({tmp!r}), Path({manifest!r}), small_config(steps={steps}, checkpoint_every=1), {name!r})
"""


def test_killed_process_resumes_to_the_same_weights(tmp_path, manifest):
    steps = 8
    script = RUN_SCRIPT.format(tests=str(Path(__file__).parent), tmp=str(tmp_path), manifest=str(manifest),
                               steps=steps, name="killed")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]), KILL_RANK="0")
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.DEVNULL, env=env)
    assert proc.wait(timeout=120) == -signal.SIGKILL
    done = [p.name for p in checkpoints(tmp_path / "killed")]
    assert done and done[-1] == "step_0000003", done
    resumed = make_run(tmp_path, manifest, small_config(steps=steps, checkpoint_every=1), "killed")
    full = make_run(tmp_path, manifest, small_config(steps=steps, checkpoint_every=1), "full")
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_ema_update_and_schedule(tmp_path, manifest):
    from audiorep.ema import EMA, momentum_at

    assert momentum_at(0, 100, 0.996) == pytest.approx(0.996) and momentum_at(100, 100, 0.996) == 1.0
    assert 0.996 < momentum_at(50, 100, 0.996) < 1.0
    net = nn.Linear(3, 2)
    ema = EMA(net)
    before = ema.model.weight.clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update(net, 0.9)
    torch.testing.assert_close(ema.model.weight, 0.9 * before + 0.1 * net.weight)
    assert not any(p.requires_grad for p in ema.parameters())
    make_run(tmp_path, manifest, small_config(steps=2, ema=0.5), "ema")
    assert load(str(tmp_path / "ema" / "encoder_ema")).config.backbone.dim == 32


@pytest.mark.parametrize("rule", ["matrices+tokens", "all"])
def test_decay_rules_of_the_releases(rule):
    """train.decay: DINO/ASiT decay every tensor of 2+ dimensions (cls and positions too); EnCodecMAE's
    AdamW decays every parameter; the recipes default to their release's rule."""
    from audiorep.objectives import RECIPES
    from audiorep.train import check_config
    objective = TagObjective(tiny_encoder())
    decayed = {id(p) for g in param_groups(objective, 0.05, 1.0, rule) if g["weight_decay"] > 0 for p in g["params"]}
    for name, p in objective.named_parameters():
        assert (id(p) in decayed) == (rule == "all" or p.ndim > 1), name
    assert any("cls_token" in n for n, p in objective.named_parameters() if id(p) in decayed)
    recipe = {"matrices+tokens": "asit", "all": "encodecmae"}[rule]
    assert f"decay={rule}" in RECIPES[recipe].defaults
    with pytest.raises(ValueError, match="train.decay='some'"):
        check_config(TrainConfig(decay="some"))
