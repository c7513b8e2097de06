"""Objectives: tiny overfits, masks/patchout keep what they claim, local attention stays local."""
from dataclasses import replace

import pytest
import torch

from audiorep import presets
from audiorep.augment import mixup, spec_augment
from audiorep.encoder import Encoder
from audiorep.objectives import RECIPES, MAE, MAEConfig, Supervised, SupervisedConfig
from audiorep.objectives.mae import GlobalBlock, WindowBlock

TINY_MAE = dict(decoder_dim=32, decoder_depth=2, decoder_heads=4)


def encoder(name: str) -> Encoder:
    torch.manual_seed(0)
    return Encoder(presets.get(name))


def waves(enc: Encoder, classes: list[int], seconds: float = 1.0) -> torch.Tensor:
    """One tone per class (300 Hz, 1.2 kHz, 4.8 kHz, ...) pulsing at 4 Hz, plus a little noise."""
    g = torch.Generator().manual_seed(1)
    t = torch.arange(int(seconds * enc.sample_rate)) / enc.sample_rate
    freqs = torch.tensor([300.0 * 4 ** c for c in classes])[:, None]
    tone = torch.sin(2 * torch.pi * freqs * t) * (0.6 + 0.4 * torch.sin(2 * torch.pi * 4 * t))
    return 0.3 * tone + 0.01 * torch.randn(len(classes), len(t), generator=g)


def fixed_loss(objective, batch) -> float:
    """Eval-mode loss with a fixed random draw (the same mask before and after training)."""
    objective.eval()
    torch.manual_seed(123)
    with torch.no_grad():
        loss = objective(batch)[0].item()
    objective.train()
    return loss


def overfit(objective, batch, steps: int = 30, lr: float = 3e-3) -> tuple[float, float]:
    """Train on one batch; -> fixed-draw eval loss (before, after)."""
    before = fixed_loss(objective, batch)
    torch.manual_seed(0)
    opt = torch.optim.AdamW(objective.parameters(), lr=lr)
    for _ in range(steps):
        loss, logs = objective(batch)
        assert all(isinstance(v, float) for v in logs.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return before, fixed_loss(objective, batch)


@pytest.mark.parametrize("kind", ["local", "global", "hybrid"])
def test_mae_overfits(kind):
    enc = encoder("audiomae-tiny")
    mae = MAE(enc, MAEConfig(decoder=kind, **TINY_MAE))
    before, after = overfit(mae, {"wave": waves(enc, [0, 2])})
    assert after < 0.85 * before, (before, after)


@pytest.mark.parametrize("preset, cfg", [  # time masks scaled to 1 s clips (PaSST: 192 of 1000 frames)
    ("passt-tiny", SupervisedConfig(time_mask=20)),  # the PaSST recipe: BCE, mixup, SpecAugment, patchout
    ("audiomae-tiny", SupervisedConfig(loss="ce", label_smoothing=0.1, mixup_alpha=0.5, time_mask=20,
                                       patchout_time=0.2, patchout_freq=0.2, patchout_random=0.1)),  # MAE fine-tuning
])
def test_supervised_overfits(preset, cfg):
    enc = encoder(preset)
    sup = Supervised(enc, cfg, num_classes=3)
    batch = {"wave": waves(enc, [0, 1, 2, 0]), "target": torch.eye(3)[[0, 1, 2, 0]]}
    before, after = overfit(sup, batch, steps=40, lr=1e-3)
    assert after < 0.8 * before, (before, after)


def test_recipes_build_with_the_training_loop_contract():
    for name in ("passt", "audiomae"):
        recipe = RECIPES[name]
        enc = encoder("passt-tiny" if name == "passt" else "audiomae-tiny")
        cfg = recipe.config() if name == "passt" else recipe.config(**TINY_MAE)
        objective = recipe.objective(enc, cfg, num_classes=4 if name == "passt" else 0)
        assert objective.encoder.config.name == enc.config.name and recipe.views == 1
        batch = {"wave": waves(enc, [0, 1]), "target": torch.eye(4)[:2]}
        loss, logs = objective(batch)
        assert loss.ndim == 0 and torch.isfinite(loss)


def test_mae_is_deterministic_for_a_seed():
    enc = encoder("audiomae-tiny")
    mae = MAE(enc, MAEConfig(**TINY_MAE))
    batch = {"wave": waves(enc, [0, 2])}
    torch.manual_seed(3)
    a = mae(batch)[0]
    torch.manual_seed(3)
    assert torch.equal(a, mae(batch)[0])


def test_mae_patchify_pixel_order():
    mae = MAE(encoder("audiomae-tiny"), MAEConfig(**TINY_MAE))
    feats = torch.randn(1, 128, 64)  # [B, F, T]: grid T' = 4, F' = 8
    patches = mae.patchify(feats)
    assert patches.shape == (1, 32, 256)
    t, f, p, q = 2, 5, 3, 11  # token k = t * F' + f; pixel (time p, freq q) at p * 16 + q
    assert patches[0, t * 8 + f, p * 16 + q] == feats[0, f * 16 + q, t * 16 + p]


@pytest.mark.parametrize("masking", ["random", "time_freq"])
def test_mae_mask_keeps_exactly_the_claimed_tokens(masking):
    mae = MAE(encoder("audiomae-tiny"), MAEConfig(masking=masking, mask_time=0.5, mask_freq=0.25, **TINY_MAE))
    grid, n = (8, 8), 64
    keep, ids_restore = mae.mask(3, grid)
    if masking == "random":
        assert keep.shape == (3, int(n * 0.2))
    else:  # whole time columns and freq rows: 4 times x 6 freqs
        assert keep.shape == (3, 24)
        for row in keep:
            assert len(set((row // 8).tolist())) == 4 and len(set((row % 8).tolist())) == 6
    for row in keep:
        assert len(set(row.tolist())) == keep.shape[1]
    # ids_restore is the inverse of an order that lists the kept tokens first
    order = ids_restore.argsort(dim=1)
    assert torch.equal(order[:, : keep.shape[1]], keep)
    assert torch.equal(order.gather(1, ids_restore), torch.arange(n).expand(3, -1))


def test_decoder_puts_kept_tokens_back_where_they_came_from():
    mae = MAE(encoder("audiomae-tiny"), MAEConfig(decoder_dim=32, decoder_depth=0, decoder_heads=4)).eval()
    mae.decoder.pos_embed.table.zero_()
    grid = (8, 8)
    keep, ids_restore = mae.mask(1, grid)
    tokens = torch.randn(1, 1 + keep.shape[1], 64)
    with torch.no_grad():
        pred = mae.decode(tokens, ids_restore, grid)[0]  # no blocks, no positions: pred depends on its token only
        alone = mae.decoder.pred(mae.decoder.norm(mae.decoder.embed(tokens[0, 1:])))
    torch.testing.assert_close(pred[keep[0]], alone)
    masked = torch.ones(64, dtype=torch.bool)
    masked[keep[0]] = False
    assert torch.allclose(pred[masked], pred[masked][:1].expand(int(masked.sum()), -1))


@pytest.mark.parametrize("shift, poked, reached", [
    ((0, 0), (0, 0), ({0, 1, 2, 3}, {0, 1, 2, 3})),
    ((2, 0), (0, 0), ({0, 1}, {0, 1, 2, 3})),           # rolled to the end: a region of its own
    ((2, 0), (2, 5), ({2, 3, 4, 5}, {4, 5, 6, 7})),
])
def test_window_attention_stays_in_its_window(shift, poked, reached):
    torch.manual_seed(0)
    block = WindowBlock(32, 4, 4.0, (4, 4), shift, 64, 1e-6).eval()
    grid = (8, 8)
    x = torch.randn(1, 64, 32)
    y = x.clone()
    y[0, poked[0] * 8 + poked[1]] += 1.0
    with torch.no_grad():
        changed = (block(x, grid) - block(y, grid)).abs().amax(-1)[0].view(grid) > 1e-6
    times, freqs = reached
    expected = torch.zeros(grid, dtype=torch.bool)
    expected[torch.tensor(sorted(times))[:, None], torch.tensor(sorted(freqs))[None]] = True
    assert torch.equal(changed, expected)


def test_decoder_kinds_select_their_blocks():
    enc = encoder("audiomae-tiny")
    kinds = {kind: [type(b) for b in MAE(enc, MAEConfig(decoder=kind, decoder_dim=32, decoder_depth=3,
                                                          decoder_heads=4)).decoder.blocks]
             for kind in ("local", "global", "hybrid")}
    assert kinds == {"local": [WindowBlock] * 3, "global": [GlobalBlock] * 3,
                     "hybrid": [WindowBlock, WindowBlock, GlobalBlock]}


def test_structured_and_unstructured_patchout_keep_what_they_claim():
    sup = Supervised(encoder("passt-tiny"), SupervisedConfig(patchout_time=0.4, patchout_freq=0.33))
    keep = sup.patchout(2, (99, 12))  # PaSST AudioSet: 40 of 99 time columns, 4 of 12 freq rows
    assert keep.shape == (2, 59 * 8)
    for row in keep:
        assert len(set((row // 12).tolist())) == 59 and len(set((row % 12).tolist())) == 8
        assert torch.equal(row, row.sort().values)
    sup = Supervised(encoder("passt-tiny"), replace(sup.cfg, patchout_random=0.5))
    keep = sup.patchout(2, (99, 12))
    assert keep.shape == (2, 236) and all(len(set(r.tolist())) == 236 for r in keep)
    sup = Supervised(encoder("passt-tiny"), SupervisedConfig(patchout_time=0, patchout_freq=0))
    assert sup.patchout(2, (99, 12)) is None


def test_head_refit_never_mutates_the_given_encoder():
    enc = encoder("passt-tiny")  # has a 10-class head
    sup = Supervised(enc, SupervisedConfig(), num_classes=5)
    assert sup.encoder.head[1].out_features == 5 and sup.encoder.config.num_classes == 5
    assert enc.head[1].out_features == 10 and enc.config.num_classes == 10
    torch.testing.assert_close(sup.encoder.backbone.cls_token, enc.backbone.cls_token)
    assert Supervised(enc, SupervisedConfig(), num_classes=10).encoder is enc  # a head that fits is kept
    enc = encoder("audiomae-tiny")  # no head: the objective's encoder gets one
    sup = Supervised(enc, SupervisedConfig(), num_classes=5)
    assert sup.encoder.head[1].out_features == 5 and not hasattr(enc, "head")
    with pytest.raises(ValueError):
        Supervised(encoder("audiomae-tiny"), SupervisedConfig())


def test_spec_augment_masks_one_band_per_axis():
    torch.manual_seed(0)
    x = torch.ones(8, 128, 300)
    y = spec_augment(x, freq_width=48, time_width=192)
    for ex in y:
        zero_f = (ex == 0).all(dim=1).nonzero().flatten()  # fully masked freq rows
        zero_t = (ex == 0).all(dim=0).nonzero().flatten()
        for band, limit in ((zero_f, 48), (zero_t, 192)):
            assert len(band) < limit
            if len(band):
                assert band[-1] - band[0] + 1 == len(band)  # contiguous
        assert int((ex == 0).sum()) == len(zero_f) * 300 + len(zero_t) * 128 - len(zero_f) * len(zero_t)


def test_mixup_soft_targets():
    torch.manual_seed(0)
    x = torch.arange(6.0)[:, None, None].expand(6, 2, 3)
    target = torch.eye(6)
    xm, tm = mixup(x, target, alpha=0.3)
    lam = tm.max(dim=1).values
    assert (lam >= 0.5).all() and torch.allclose(tm.sum(1), torch.ones(6))
    # each mixed input is the same combination of the two examples its target names
    torch.testing.assert_close(xm[:, 0, 0], tm @ torch.arange(6.0))
