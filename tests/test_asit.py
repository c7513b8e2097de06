"""ASiT: parity with the official FullPipeline (../shared/parity/asit_small) through the
converter, GMML corruption, centering and temperature schedules, the EMA teacher, and the
training loop (exact resume, 2-process DDP)."""
import numpy as np
import pytest
import torch
from conftest import load_fixture

from audiorep import audio, presets
from audiorep.config import override
from audiorep.convert import CONVERTERS, load_objective_weights
from audiorep.convert import asit as convert_asit
from audiorep.data import ClipDataset, DataConfig, clips_from
from audiorep.ema import momentum_at
from audiorep.encoder import Encoder
from audiorep.masking import gmml_corrupt
from audiorep.objectives.asit import ASiT, ASiTConfig, teacher_temp_at, update_center
from audiorep.train import TrainConfig, train

TOL = dict(atol=1e-4, rtol=1e-4)
# the fixture's heads: CLSHead(64, 256, 128, hidden 128, bottleneck 32), RECHead(hidden 96, bottleneck 32)
FIXTURE_HEADS = dict(global_dim=256, local_dim=128, head_hidden=128, head_bottleneck=32,
                     recon_hidden=96, recon_bottleneck=32)
TINY_HEADS = dict(global_dim=64, local_dim=32, head_hidden=32, head_bottleneck=16, recon_hidden=32, recon_bottleneck=16)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def asit_converter(monkeypatch):
    monkeypatch.setitem(CONVERTERS, "asit", convert_asit)


def tiny_asit(seed: int = 0, cls=ASiT, **changes) -> ASiT:
    torch.manual_seed(seed)
    cfg = override(presets.get("asit-tiny"), ["backbone.dim=32", "backbone.heads=2", "backbone.max_frames=64",
                                              "backbone.drop_path=0"])  # per-sample draws differ across processes
    return cls(Encoder(cfg), ASiTConfig(**{**TINY_HEADS, **changes}))


def tiny_batch(objective: ASiT, clips: int = 4, seed: int = 0) -> dict:
    """Two crops per clip: tones of different pitch per clip, [clips, 2, S]."""
    samples = objective.encoder.frontend.samples_for(64)
    t = torch.arange(samples) / objective.encoder.sample_rate
    g = torch.Generator().manual_seed(seed)
    f0 = 200.0 * (1 + torch.arange(clips))[:, None, None]
    wave = 0.3 * torch.sin(2 * torch.pi * f0 * t + torch.rand(clips, 2, 1, generator=g) * 6)
    return {"wave": wave + 0.01 * torch.randn(clips, 2, samples, generator=g)}


# ----------------------------------------------------------------------------- parity


@pytest.fixture(scope="module")
def fixture():
    return load_fixture("asit_small")


def official(fixture):
    sd, inp, out, _ = fixture
    objective = ASiT(Encoder(presets.get("asit-tiny")), ASiTConfig(**FIXTURE_HEADS))
    CONVERTERS["asit"] = convert_asit  # module-scoped use; the autouse fixture restores the table
    load_objective_weights(objective, sd, "asit")
    clean = inp["x_clean"][:, 0].transpose(1, 2)  # official [B, 1, T, F] -> ours [B, F, T]
    mask = inp["corruption_mask"][:, 0].transpose(1, 2).bool()
    return objective.eval(), clean, mask, out


def test_student_matches_the_official_pipeline(fixture):
    objective, clean, mask, out = official(fixture)
    with torch.no_grad():
        tokens = objective.encoder.backbone(clean.masked_fill(mask, 0.0))
        cls_out, data_out = objective.head_cls(tokens.tokens)
        recon = objective.head_recons(tokens.patches, tokens.grid)
        loss = objective.recon_loss(recon, clean, mask)
    torch.testing.assert_close(tokens.tokens, out["student_backbone_tokens"], **TOL)
    torch.testing.assert_close(cls_out, out["student_cls"], **TOL)
    torch.testing.assert_close(data_out.flatten(0, 1), out["student_data"], **TOL)  # official (b n) c
    torch.testing.assert_close(recon, out["student_recons"][:, 0].transpose(1, 2), **TOL)
    torch.testing.assert_close(loss.view(1), out["recloss"], **TOL)


def test_teacher_starts_as_the_converted_weights(fixture):
    objective, clean, _, out = official(fixture)
    token, t_cls, _ = objective.teach(clean)
    torch.testing.assert_close(t_cls, out["clean_cls"], **TOL)
    torch.testing.assert_close(token, out["clean_backbone_cls_token"], **TOL)


def test_official_checkpoint_file_loads_teacher_or_student(fixture, tmp_path):
    """The release saves {"student": DDP state_dict (module.*), "teacher": state_dict, "args":
    argparse.Namespace, ...}: the Namespace is allowed through weights_only loading, nothing else."""
    import argparse

    from audiorep.convert import load_weights

    sd, inp, out, _ = fixture
    path = tmp_path / "checkpoint.pth"
    torch.save({"student": {f"module.{k}": v for k, v in sd.items()}, "teacher": sd, "epoch": 3,
                "args": argparse.Namespace(lr=5e-4, arch="vit_small")}, path)
    clean = inp["x_clean"][:, 0].transpose(1, 2)
    for part in (None, "student"):  # the teacher by default
        encoder = Encoder(presets.get("asit-tiny")).eval()
        load_weights(encoder, path, "asit", part=part)
        with torch.no_grad():
            tokens = encoder.backbone(clean).tokens
        torch.testing.assert_close(tokens[:, 0], out["clean_backbone_cls_token"], **TOL)


def test_converter_refuses_what_does_not_fit(fixture):
    sd = fixture[0]
    assert convert_asit.matches(sd)
    assert not convert_asit.matches({k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")})
    short = Encoder(override(presets.get("asit-tiny"), ["backbone.max_frames=400"]))
    with pytest.raises(ValueError, match="pos_embed .* covers 296 patches"):
        convert_asit.to_audiorep(sd, short)
    with pytest.raises(ValueError, match="non-overlapping"):
        convert_asit.to_audiorep(sd, Encoder(presets.get("passt-tiny")))
    wide = ASiT(Encoder(presets.get("asit-tiny")), ASiTConfig(**{**FIXTURE_HEADS, "global_dim": 512}))
    with pytest.raises(ValueError, match="head_cls.cls_layer.weight_v"):
        load_objective_weights(wide, sd, "asit")
    backbone_only = {k: v for k, v in sd.items() if k.startswith("backbone.")}
    with pytest.raises(ValueError, match="no ASiT heads"):
        load_objective_weights(wide, backbone_only, "asit")


# ------------------------------------------------------------------------- corruption


def test_corrupted_share_is_the_releases():
    """Released: half the crops zeroed at U(0.5, 0.7), half pasted at 30%: mean share ~0.46
    (0.45 + the last rectangle's overshoot), where mixing both in every crop gave ~0.61."""
    torch.manual_seed(0)
    feats = torch.randn(64, 128, 592)  # [2B, F, T]: 32 clips x 2 views, asit-b's crop
    shares = torch.cat([tiny_asit().corrupt(feats)[1].float().mean((1, 2)) for _ in range(4)])  # [256]
    assert 0.43 < shares.mean() < 0.49


def test_each_crop_is_zeroed_or_alien_never_both():
    torch.manual_seed(0)
    x = (1.0 + torch.arange(128.0))[:, None, None].expand(128, 64, 96)  # clip i is all i + 1
    corrupted, mask = gmml_corrupt(x, ratio=0.7, alien_prob=0.5, alien_ratio=0.3)
    assert torch.equal(corrupted[~mask], x[~mask])
    share = mask.float().mean((1, 2))
    alien = []
    for i in range(128):
        values = corrupted[i][mask[i]].unique()
        assert len(values) == 1, f"clip {i}: one kind and one donor per crop"
        alien.append(values.item() != 0)
        if alien[-1]:  # another clip's pixels at exactly 30% (+ at most one rectangle)
            assert values.item() != i + 1 and 0.3 <= share[i] <= 0.3 + 0.3 * 0.3
        else:
            assert 0.5 <= share[i] <= 0.7 + 0.3 * 0.3
    assert 0.4 < sum(alien) / 128 < 0.6


def test_corruption_is_not_patch_aligned_unless_asked():
    torch.manual_seed(1)
    x = torch.randn(4, 128, 592)
    _, mask = gmml_corrupt(x, alien_prob=0.0)
    per_patch = mask.float().unflatten(1, (8, 16)).unflatten(3, (37, 16)).mean((2, 4))  # [B, F', T']
    assert ((per_patch > 0) & (per_patch < 1)).float().mean() > 0.1
    _, aligned = gmml_corrupt(x, align=16)
    per_patch = aligned.float().unflatten(1, (8, 16)).unflatten(3, (37, 16)).mean((2, 4))
    assert ((per_patch == 0) | (per_patch == 1)).all()


def test_alien_donor_is_another_clip_unless_the_release_is_asked():
    with pytest.raises(ValueError, match="another clip"):
        gmml_corrupt(torch.randn(1, 32, 64))
    _, mask = gmml_corrupt(torch.randn(1, 32, 64), alien_prob=0.0)
    assert mask.any()
    x = torch.randn(1, 32, 64)
    corrupted, mask = gmml_corrupt(x, alien_prob=1.0, alien_self=True)  # released: its own pixels, masked
    assert torch.equal(corrupted, x) and mask.float().mean() >= 0.3


# ------------------------------------------------------------------ centering, schedules


def test_center_is_an_ema_of_the_teacher_mean():
    center = torch.ones(3)
    teacher = torch.tensor([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]])
    update_center(center, teacher, 0.9)
    torch.testing.assert_close(center, 0.9 * torch.ones(3) + 0.1 * torch.tensor([2.0, 3.0, 4.0]))


def test_teacher_temperature_warms_up_linearly():
    cfg = ASiTConfig()
    assert teacher_temp_at(0, 100, cfg) == pytest.approx(0.04)
    assert teacher_temp_at(15, 100, cfg) == pytest.approx(0.055)
    assert teacher_temp_at(30, 100, cfg) == pytest.approx(0.07)
    assert teacher_temp_at(90, 100, cfg) == pytest.approx(0.07)
    objective = tiny_asit()
    objective.after_step(14, 100)
    assert float(objective.teacher_temp) == pytest.approx(0.055)


def test_global_loss_pairs_each_student_view_with_the_other_teacher_view():
    objective = tiny_asit()
    objective.teacher_temp.fill_(0.04)
    t0, t1 = torch.randn(2, 3, 64).unbind(0)
    crossed = torch.cat([t1, t0]) * 2.5  # student view 0 = teacher view 1 at the student's temperature
    straight = torch.cat([t0, t1]) * 2.5
    teacher = torch.cat([t0, t1])
    assert objective.global_loss(crossed, teacher) < objective.global_loss(straight, teacher) - 0.5


def test_centers_move_with_the_teacher_logits():
    objective = tiny_asit()
    objective(tiny_batch(objective))
    assert objective.center_cls.abs().sum() > 0 and objective.center_data.abs().sum() > 0


def test_logs_what_shows_a_collapsing_teacher():
    """Spread of the cls tokens, the teacher's target entropy and the centre norms, read
    before the losses move the centres."""
    import math

    from audiorep.monitor import entropy, representation_stats

    objective = tiny_asit()
    objective.center_cls.fill_(0.5)
    batch = tiny_batch(objective)
    feats = objective.features(batch["wave"])
    token, t_cls, t_data = objective.teach(feats)
    _, logs = objective(batch)
    assert logs["center_norm"] == pytest.approx(0.5 * math.sqrt(64))
    target = torch.softmax((t_cls - 0.5) / objective.teacher_temp, -1)
    assert logs["teacher_entropy"] == pytest.approx(entropy(target), rel=1e-5)
    assert 0 < logs["teacher_entropy_data"] <= math.log(32) and logs["center_data_norm"] == 0
    assert logs["teacher_emb_rank"] == pytest.approx(representation_stats(token)["emb_rank"], rel=1e-5)
    assert logs["emb_std"] > 0 and 1 <= logs["emb_rank"] <= 8
    recon_only = tiny_asit(w_local=0.0, w_global=0.0)
    _, logs = recon_only(tiny_batch(recon_only))
    assert "emb_rank" in logs and not any(k.startswith(("teacher_", "center")) for k in logs if k != "teacher_temp")


# ----------------------------------------------------------------------------- teacher


def test_teacher_gets_no_gradient_and_follows_the_momentum_schedule():
    objective = tiny_asit()
    loss, logs = objective(tiny_batch(objective))
    assert {"loss_recon", "loss_local", "loss_global"} <= set(logs)
    loss.backward()
    teacher = dict(objective.teacher.model.named_parameters())
    assert all(not p.requires_grad and p.grad is None for p in teacher.values())
    assert objective.encoder.backbone.cls_token.grad is not None
    before = {k: v.clone() for k, v in teacher.items()}
    with torch.no_grad():
        for p in objective.encoder.parameters():
            p.add_(0.1)
    objective.after_step(3, 10)
    m = momentum_at(3, 10, 0.996)
    assert 0.996 < m < 1
    student = dict(objective.encoder.named_parameters())
    for name, p in student.items():
        torch.testing.assert_close(teacher[f"encoder.{name}"], m * before[f"encoder.{name}"] + (1 - m) * p)


def test_ships_the_teacher_encoder_unless_told():
    assert tiny_asit().encoder_to_save() is not tiny_asit().encoder
    objective = tiny_asit(ship="student")
    assert objective.encoder_to_save() is objective.encoder


def test_loss_weights_and_paper_options():
    objective = tiny_asit(w_local=0.0, w_global=0.0)
    loss, logs = objective(tiny_batch(objective))
    assert set(k for k in logs if k.startswith("loss_")) == {"loss_recon"}
    assert not any(p.requires_grad for p in objective.head_cls.parameters())  # skipped heads are frozen (DDP)
    local_only = tiny_asit(w_global=0.0).head_cls
    assert not local_only.cls_layer.weight_v.requires_grad and local_only.data_layer.weight_v.requires_grad
    torch.testing.assert_close(loss, torch.tensor(2 * logs["loss_recon"]))
    objective = tiny_asit(local_corrupted_only=True, w_recon=1.0)
    loss, logs = objective(tiny_batch(objective))
    torch.testing.assert_close(loss, torch.tensor(logs["loss_recon"] + logs["loss_local"] + logs["loss_global"]))
    with pytest.raises(ValueError, match="all 0"):
        tiny_asit(w_recon=0.0, w_local=0.0, w_global=0.0)
    with pytest.raises(ValueError, match=r"\[B, 2, S\]"):
        objective({"wave": torch.zeros(2, 20960)})


def test_token_mask_marks_mostly_corrupted_patches():
    objective = tiny_asit()
    mask = torch.zeros(1, 128, 64, dtype=torch.bool)
    mask[0, :16, :16] = True         # patch (t 0, f 0) fully
    mask[0, 16:24, :16] = True       # patch (t 0, f 1) half
    mask[0, :4, 16:32] = True        # patch (t 1, f 0) a quarter
    tokens = objective.token_mask(mask)  # time-major: k = t * 8 + f
    assert tokens[0].nonzero().flatten().tolist() == [0, 1]


def test_a_few_steps_lower_every_loss():
    """With the teacher held still (momentum 1, center 0, final temperature) its targets are
    fixed, so the student must get closer to them and to the clean pixels. (With a moving
    teacher the distillation losses first rise, as centering flattens the teacher.)"""
    objective = tiny_asit(momentum=1.0, center_momentum=1.0, teacher_temp=0.07)
    batch = tiny_batch(objective)
    optimizer = torch.optim.AdamW([p for p in objective.parameters() if p.requires_grad], lr=3e-3)
    history = []
    for step in range(30):
        torch.manual_seed(step)
        loss, logs = objective(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        objective.after_step(step, 30)
        history.append(logs)
    for key in ("loss_recon", "loss_local", "loss_global"):
        first = sum(h[key] for h in history[:5]) / 5
        last = sum(h[key] for h in history[-5:]) / 5
        assert last < 0.9 * first, key


def test_recipe_trains_as_the_release():
    """Released: warm-up 10% of the run (10 of 100 epochs), each parameter's gradient clipped
    to norm 3 on its own, the whole clip rolled half the time before cropping, no roll per crop."""
    from audiorep.objectives import RECIPES
    from audiorep.schedules import warmup_of
    from audiorep.train import TrainConfig

    for steps, warmup in ((1000, 100), (300, 30)):
        cfg = override(TrainConfig(), [*RECIPES["asit"].defaults, f"steps={steps}"])
        assert warmup_of(cfg) == warmup
    assert (cfg.clip_mode, cfg.clip_grad) == ("per_param", 3.0)
    assert (cfg.data.roll, cfg.data.roll_clip) == (False, 0.5)


# ------------------------------------------------------------------- the training loop

SR = 32000
CROP_S = 0.655  # 64 frames at 32 kHz: 4 x 8 patches


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Eight 1 s clips: a tone each (pitch by clip) in a little noise."""
    folder = tmp_path_factory.mktemp("asit_corpus")
    rng = np.random.default_rng(0)
    t = np.arange(SR) / SR
    for i in range(8):
        wave = 0.3 * np.sin(2 * np.pi * 150 * (i + 1) * t) + 0.01 * rng.standard_normal(SR)
        audio.write(folder / f"{i}.wav", wave.astype(np.float32), SR)
    return folder


def train_run(out, corpus, cls=ASiT, stop_after=None, seed: int = 0, steps: int = 6):
    cfg = TrainConfig(steps=steps, batch_size=4, lr=1e-3, warmup_steps=2, log_every=1, checkpoint_every=2,
                      clip_grad=3.0, weight_decay=0.04, weight_decay_end=0.4,
                      data=DataConfig(crop_s=CROP_S, roll=True, workers=0))
    clips, _ = clips_from(corpus)
    data = ClipDataset(clips, SR, round(CROP_S * SR), cfg.data, views=2)
    return train(tiny_asit(seed, cls), data, cfg, out, {"test": "asit"}, stop_after)


def test_killed_run_resumes_to_the_same_weights(tmp_path, corpus):
    full = train_run(tmp_path / "full", corpus)
    train_run(tmp_path / "resumed", corpus, stop_after=5)  # checkpoints at 2 and 4, then "killed"
    resumed = train_run(tmp_path / "resumed", corpus, seed=1)  # another init: all must come from step 4
    state = resumed.state_dict()
    assert any(k.startswith("teacher.") for k in state) and "center_cls" in state
    for name, value in full.state_dict().items():
        assert torch.equal(value, state[name]), name
    shipped = Encoder.load(tmp_path / "resumed" / "encoder")
    for name, value in shipped.state_dict().items():
        assert torch.equal(value, full.teacher.model.encoder.state_dict()[name]), name


class FixedCorruption(ASiT):
    """The same zeroed pixels in every clip, so the split of a batch over processes cannot change them."""

    def corrupt(self, feats):
        mask = torch.zeros_like(feats, dtype=torch.bool)
        mask[:, 8:70, 5:40] = True
        mask[:, 90:, 30:] = True
        return feats.masked_fill(mask, 0.0), mask


DDP_SCRIPT = """
import sys
from pathlib import Path
import torch
torch.set_num_threads(1)
sys.path.insert(0, {tests!r})
from test_asit import ddp_run
ddp_run(Path({corpus!r}), Path({out!r}))
"""


def ddp_run(corpus, out) -> None:
    """3 loop steps of FixedCorruption ASiT on this process's share of batch 4; rank 0 saves the state."""
    import os

    import torch.distributed as dist

    trained = train_run(out / f"run{os.environ.get('WORLD_SIZE', '1')}", corpus, FixedCorruption, steps=3)
    world = dist.get_world_size() if dist.is_initialized() else 1
    if int(os.environ.get("RANK", "0")) == 0:
        torch.save(trained.state_dict(), out / f"world{world}.pt")
    if world > 1:
        dist.destroy_process_group()
    os.environ.pop("WORLD_SIZE", None)


def test_two_processes_match_one(tmp_path, corpus):
    import os
    import subprocess
    import sys
    from pathlib import Path

    tests = str(Path(__file__).parent)
    script = tmp_path / "ddp_worker.py"
    script.write_text(DDP_SCRIPT.format(tests=tests, corpus=str(corpus), out=str(tmp_path)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    env = dict(os.environ, PYTHONPATH=str(Path(tests).parent))
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    ddp_run(corpus, tmp_path)
    one, two = torch.load(tmp_path / "world1.pt"), torch.load(tmp_path / "world2.pt")
    assert one["center_cls"].abs().sum() > 0
    for name, value in one.items():
        torch.testing.assert_close(two[name], value, rtol=1e-4, atol=1e-5, msg=name)


def test_pretrain_finetune_and_embed_from_the_command_line(tmp_path, corpus):
    """`audiorep pretrain asit`, then `audiorep finetune` and embeddings from the run (the teacher's encoder)."""
    import audiorep
    from audiorep import cli, embed
    from audiorep.tasks.format import TaskWriter, make_metadata

    tiny = ["encoder.backbone.dim=32", "encoder.backbone.heads=2", "encoder.backbone.max_frames=64",
            *[f"objective.{k}={v}" for k, v in TINY_HEADS.items()]]
    common = ["batch_size=4", "warmup_steps=1", "log_every=1", "data.workers=0"]
    run = tmp_path / "asit"
    assert cli.main(["pretrain", "asit", "--data", str(corpus), "--out", str(run), "--preset", "asit-tiny",
                     "steps=3", *tiny, *common]) == 0
    rows = (run / "log.csv").read_text().splitlines()
    assert "loss_global" in rows[0] and len(rows) == 4
    task = tmp_path / "tones"
    rng = np.random.default_rng(0)
    with TaskWriter(task, make_metadata("tones", "scene", "multiclass", ["top1_acc"], 1.0), ["low", "high"]) as writer:
        for split, n in (("train", 4), ("valid", 2), ("test", 2)):
            for i in range(n):
                freq = 300.0 if i % 2 else 3000.0
                writer.add(split, (0.3 * np.sin(2 * np.pi * freq * np.arange(SR) / SR)
                                   + 0.01 * rng.standard_normal(SR)).astype(np.float32), ["low" if i % 2 else "high"])
    assert cli.main(["finetune", "--model", str(run), "--task", str(task), "--out", str(tmp_path / "ft"),
                     "steps=2", *common]) == 0
    encoder = audiorep.load(str(run))
    emb = embed.scene_embeddings(encoder, torch.zeros(2, SR), SR)
    assert emb.shape == (2, 32) and torch.isfinite(emb).all()
