"""ASiT: parity with the official FullPipeline (../shared/parity/asit_small) through the
converter, GMML corruption, centering and temperature schedules, the EMA teacher."""
import pytest
import torch
from conftest import load_fixture

from audiorep import presets
from audiorep.config import override
from audiorep.convert import CONVERTERS, load_objective_weights
from audiorep.convert import asit as convert_asit
from audiorep.ema import momentum_at
from audiorep.encoder import Encoder
from audiorep.masking import gmml_corrupt
from audiorep.objectives.asit import ASiT, ASiTConfig, teacher_temp_at, update_center

TOL = dict(atol=1e-4, rtol=1e-4)
# the fixture's heads: CLSHead(64, 256, 128, hidden 128, bottleneck 32), RECHead(hidden 96, bottleneck 32)
FIXTURE_HEADS = dict(global_dim=256, local_dim=128, head_hidden=128, head_bottleneck=32,
                     recon_hidden=96, recon_bottleneck=32)
TINY_HEADS = dict(global_dim=64, local_dim=32, head_hidden=32, head_bottleneck=16, recon_hidden=32, recon_bottleneck=16)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def asit_converter(monkeypatch):
    monkeypatch.setitem(CONVERTERS, "asit", convert_asit)


def tiny_asit(seed: int = 0, **changes) -> ASiT:
    torch.manual_seed(seed)
    cfg = override(presets.get("asit-tiny"), ["backbone.dim=32", "backbone.heads=2", "backbone.max_frames=64"])
    return ASiT(Encoder(cfg), ASiTConfig(**{**TINY_HEADS, **changes}))


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
    t_cls, _ = objective.teach(clean)
    torch.testing.assert_close(t_cls, out["clean_cls"], **TOL)
    torch.testing.assert_close(objective.teacher.model.encoder.backbone(clean).tokens[:, 0],
                               out["clean_backbone_cls_token"], **TOL)


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


def test_corruption_ratio_and_zero_alien_split():
    torch.manual_seed(0)
    x = (1.0 + torch.arange(16.0))[:, None, None].expand(16, 128, 592)  # clip i is all i + 1
    corrupted, mask = gmml_corrupt(x, ratio=0.7, alien=0.3)
    share = mask.float().mean((1, 2))
    assert share.min() >= 0.5 and share.max() <= 0.7 + 0.3 * 0.3  # drawn in [0.5, 0.7], + at most one rectangle
    assert abs(share.mean() - 0.6) < 0.04
    alien = mask & (corrupted != 0)
    assert abs(alien.sum() / mask.sum() - 0.3) < 0.06
    assert torch.equal(corrupted[~mask], x[~mask])
    for i in range(16):  # alien pixels hold another clip's value, one donor per clip
        values = corrupted[i][alien[i]].unique()
        assert len(values) <= 1 and (len(values) == 0 or values.item() != i + 1)


def test_corruption_is_not_patch_aligned_unless_asked():
    torch.manual_seed(1)
    x = torch.randn(4, 128, 592)
    _, mask = gmml_corrupt(x, alien=0.0)
    per_patch = mask.float().unflatten(1, (8, 16)).unflatten(3, (37, 16)).mean((2, 4))  # [B, F', T']
    assert ((per_patch > 0) & (per_patch < 1)).float().mean() > 0.1
    _, aligned = gmml_corrupt(x, alien=0.0, align=16)
    per_patch = aligned.float().unflatten(1, (8, 16)).unflatten(3, (37, 16)).mean((2, 4))
    assert ((per_patch == 0) | (per_patch == 1)).all()


def test_corruption_refuses_alien_without_another_clip():
    with pytest.raises(ValueError, match="another clip"):
        gmml_corrupt(torch.randn(1, 32, 64))
    _, mask = gmml_corrupt(torch.randn(1, 32, 64), alien=0.0)
    assert mask.any()


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


def test_centers_move_with_the_teacher_logits():
    objective = tiny_asit()
    objective(tiny_batch(objective))
    assert objective.center_cls.abs().sum() > 0 and objective.center_data.abs().sum() > 0


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
    for step in range(40):
        torch.manual_seed(step)
        loss, logs = objective(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        objective.after_step(step, 40)
        history.append(logs)
    for key in ("loss_recon", "loss_local", "loss_global"):
        first = sum(h[key] for h in history[:5]) / 5
        last = sum(h[key] for h in history[-5:]) / 5
        assert last < 0.9 * first, key
