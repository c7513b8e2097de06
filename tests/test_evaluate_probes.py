"""Probe training: the kit's grid points, batched grid == each point alone == a plain torch MLP,
k-fold rotation, kNN."""
import dataclasses
import random

import numpy as np
import pytest
import torch

from audiorep.evaluate import probes
from audiorep.evaluate.protocol import data_splits


def _data(n=96, d=12, c=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    x = rng.standard_normal((n, d)).astype(np.float32) + 1.5 * np.eye(c, d)[labels].astype(np.float32)
    return x, np.eye(c, dtype=np.float32)[labels]


def _small_grid(n, **schedule):
    """The kit's grid points with 32 hidden units (and the schedule given), to keep tests fast."""
    return [dataclasses.replace(p, hidden_dim=32, **schedule) for p in probes.hear_grid(n, 42)]


def _accuracy(y):
    return lambda p: (float(np.mean(p.argmax(1) == y.argmax(1))), None)


def test_hear_grid_is_the_kits_sample():
    from sklearn.model_selection import ParameterGrid

    # the kit: ParameterGrid over its PARAM_GRID (single-valued keys omitted), random.shuffle after
    # seed_everything(42), first 8
    confs = list(ParameterGrid({"hidden_layers": [1, 2], "initialization": ["xavier_uniform", "xavier_normal"],
                                "lr": [3.2e-3, 1e-3, 3.2e-4, 1e-4]}))
    random.seed(42)
    random.shuffle(confs)
    kit = [(c["hidden_layers"], c["lr"], c["initialization"]) for c in confs[:8]]
    ours = [(p.hidden_layers, p.lr, p.init) for p in probes.hear_grid(8, 42)]
    assert ours == kit


def test_hear_grid_with_a_task_grid_is_the_kits_sample():
    from sklearn.model_selection import ParameterGrid

    # the kit's grid updated as FAST_PARAM_GRID does (two values of two schedule keys: 64 points)
    update = {"max_epochs": [10, 50], "check_val_every_n_epoch": [3, 10]}
    kit_grid = {**{k: list(v) for k, v in probes.KIT_GRID.items()}, **update,
                "hidden_norm": ["BatchNorm1d"], "optim": ["Adam"]}  # single-valued kit keys do not change the order
    confs = list(ParameterGrid(kit_grid))
    random.seed(42)
    random.shuffle(confs)
    kit = [(c["hidden_layers"], c["lr"], c["initialization"], c["max_epochs"], c["check_val_every_n_epoch"])
           for c in confs[:8]]
    ours = [(p.hidden_layers, p.lr, p.init, p.max_epochs, p.check_every) for p in probes.hear_grid(8, 42, update)]
    assert ours == kit and len({(m, c) for *_, m, c in ours}) > 1
    with pytest.raises(ValueError, match="optim"):
        probes.hear_grid(8, 42, {"optim": ["SGD"]})


def test_points_of_one_grid_share_their_schedule():
    x, y = _data(n=32)
    points = [_small_grid(1, max_epochs=3)[0], _small_grid(1, max_epochs=6)[0]]
    with pytest.raises(ValueError, match="share max_epochs"):
        probes.train_grid(points, x, y, x, _accuracy(y), multiclass=True)


def test_validation_loss_is_torchs_mean_loss():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((20, 4)).astype(np.float32) * 30  # saturated: probabilities would lose it
    y = np.eye(4, dtype=np.float32)[rng.integers(0, 4, 20)]
    ce = torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(y).argmax(1))
    assert probes.validation_loss(logits, y, multiclass=True) == pytest.approx(ce.item(), rel=1e-6)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(torch.from_numpy(logits), torch.from_numpy(y))
    assert probes.validation_loss(logits, y, multiclass=False) == pytest.approx(bce.item(), rel=1e-6)


def test_batched_grid_equals_each_point_alone():
    x, y = _data()
    points = _small_grid(8, max_epochs=9, batch_size=32, patience=2)
    cfg = probes.ProbeConfig(seed=7)
    together = probes.train_grid(points, x, y, x, _accuracy(y), multiclass=True, cfg=cfg)
    for i in (0, 5):
        # a grid point's generator is keyed by its position, so train it alone at the same position
        alone = probes.train_grid(points[: i + 1], x, y, x, _accuracy(y), multiclass=True, cfg=cfg)[i]
        assert alone.epoch == together[i].epoch
        for k, v in alone.state.items():
            torch.testing.assert_close(v, together[i].state[k], rtol=1e-4, atol=1e-5)


def test_stacked_mlp_equals_torch_module_with_adam():
    x, y = _data(n=64, d=10)
    point = probes.GridPoint(hidden_layers=2, lr=1e-3, init="xavier_normal", hidden_dim=16, dropout=0.0)
    stack = probes.MLPStack.init([point], [probes._generator(0, 0)], 10, 3, "cpu")
    t = {k: v[0].clone() for k, v in stack.t.items()}
    layers = []
    for i in range(2):
        lin = torch.nn.Linear(10 if i == 0 else 16, 16)
        lin.weight.data, lin.bias.data = t[f"w{i}"].T.clone(), t[f"b{i}"][0].clone()
        layers += [lin, torch.nn.BatchNorm1d(16), torch.nn.Dropout(0.0), torch.nn.ReLU()]
    out = torch.nn.Linear(16, 3)
    out.weight.data, out.bias.data = t["w2"].T.clone(), t["b2"][0].clone()
    model = torch.nn.Sequential(*layers, out)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for v in stack.params().values():
        v.requires_grad_(True)
    adam = probes.PointAdam(stack.params(), [1e-3])
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).argmax(1)
    for _ in range(3):
        for s in range(0, 64, 16):
            loss = torch.nn.functional.cross_entropy(model(xt[s:s + 16]), yt[s:s + 16])
            opt.zero_grad()
            loss.backward()
            opt.step()
            probes._loss(stack.forward(xt[s:s + 16], train=True, gens=[probes._generator(0, 0)]),
                         yt[s:s + 16], True).backward()
            adam.step()
    # the bias before a BatchNorm gets a zero gradient up to rounding, which Adam blows up to
    # +-lr steps, so it (and through it the running mean) differs by rounding noise between any
    # two implementations; everything that the training-mode output depends on must agree
    with torch.no_grad():
        torch.testing.assert_close(stack.forward(xt, train=True, gens=[probes._generator(0, 0)])[0], model(xt),
                                   rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(stack.t["w1"][0], layers[4].weight.T, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(stack.t["gamma1"][0, 0], layers[5].weight, rtol=1e-4, atol=1e-6)


def test_training_is_deterministic_and_learns():
    x, y = _data()
    cfg = probes.ProbeConfig(seed=3)
    points = _small_grid(2, max_epochs=60, batch_size=32)
    a = probes.train_grid(points, x, y, x, _accuracy(y), multiclass=True, cfg=cfg)
    b = probes.train_grid(points, x, y, x, _accuracy(y), multiclass=True, cfg=cfg)
    assert [r.val_score for r in a] == [r.val_score for r in b]
    best = probes.select_best(a)
    assert best.val_score > 0.75  # chance is 1/3
    probs = probes.predict([best], x, multiclass=True)[0]
    assert probs.shape == y.shape and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_early_stopping_keeps_first_best_and_stops_after_patience():
    x, y = _data()
    scores = iter([0.5, 0.7, 0.7, 0.6, 0.9, 0.9] + [0.1] * 50)
    points = _small_grid(1, max_epochs=300, check_every=3, patience=3, batch_size=32)
    r = probes.train_grid(points, x, y, x, lambda p: (next(scores), None), True)[0]
    assert r.val_score == 0.9 and r.epoch == 4 * 3 + 2  # fifth check, 0-based epoch 14
    assert r.epochs_run == (5 + 3) * 3  # three checks without a strict improvement after it


@pytest.mark.parametrize("scores, kept, val, checks", [
    ([0.5, float("nan"), 0.9], 0, 0.5, 2),         # NaN stops the point; the best so far is kept
    ([float("nan"), 0.9], 0, -float("inf"), 1),     # a first NaN is kept (as the worst score) and stops
    ([0.5, float("inf"), 0.9], 1, float("inf"), 2),  # infinity is kept, then stops (check_finite)
])
def test_non_finite_scores_stop_as_lightning_does(scores, kept, val, checks):
    x, y = _data(n=32)
    it = iter(scores + [0.0] * 50)
    r = probes.train_grid(_small_grid(1, max_epochs=60, check_every=3, patience=5, batch_size=32), x, y, x,
                          lambda p: (next(it), None), True)[0]
    assert r.epoch == kept * 3 + 2 and r.val_score == val and len(r.history) == checks


def test_kfold_rotation_matches_the_kit():
    meta = {"split_mode": "new_split_kfold", "nfolds": 5, "splits": ["fold03", "fold00", "fold01", "fold02", "fold04"]}
    splits = data_splits(meta)
    assert splits[0] == {"train": ["fold02", "fold03", "fold04"], "valid": ["fold01"], "test": ["fold00"]}
    assert splits[4] == {"train": ["fold01", "fold02", "fold03"], "valid": ["fold00"], "test": ["fold04"]}
    assert sorted(s["test"][0] for s in splits) == sorted(meta["splits"])
    assert data_splits({"split_mode": "trainvaltest"}) == [{"train": ["train"], "valid": ["valid"], "test": ["test"]}]


def test_knn_votes():
    xt = np.array([[1, 0], [0.9, 0.1], [0, 1]], dtype=np.float32)
    yt = np.eye(2, dtype=np.float32)[[0, 0, 1]]
    p = probes.knn_probabilities(xt, yt, np.array([[0.1, 1.0]], dtype=np.float32), (1, 3))
    np.testing.assert_allclose(p[0, 0], [0, 1])
    np.testing.assert_allclose(p[1, 0], [2 / 3, 1 / 3])


def test_dropout_masks_drop_the_share_asked_from_each_points_generator():
    stack = probes.MLPStack({}, 1, torch.tensor([0.1, 0.0, 0.5]))
    gens = [probes._generator(0, i) for i in range(3)]
    masks = stack._dropout_mask(torch.Size([1000, 1001]), gens)
    for m, p in zip(masks, (0.1, 0.0, 0.5)):
        assert set(m.unique().tolist()) <= {0.0, torch.tensor(1 / (1 - p)).item()}
        assert abs((m == 0).float().mean().item() - p) < 2e-3  # 1M draws: std of the share < 5e-4
    again = stack._dropout_mask(torch.Size([1000, 1001]), [probes._generator(0, 0)])
    assert torch.equal(again[0], masks[0])
    assert not torch.equal(masks[0][:10], masks[0][10:20])
