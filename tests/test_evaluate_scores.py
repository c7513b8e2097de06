"""Normalized scores: relative to the best model (or a reference table), zeros and errors handled."""
import math

import pytest
import torch

import audiorep
from audiorep.evaluate.scores import normalize


def test_normalize_to_best_with_zero_scores_and_error_rates():
    table = {"acc": {"a": 0.8, "b": 0.4, "c": 0.0}, "er": {"a": 0.5, "b": 0.25}, "dead": {"a": 0.0, "b": 0.0}}
    out = normalize(table, {"acc": True, "er": False, "dead": True})
    assert out["acc"] == {"a": 1.0, "b": 0.5, "c": 0.0}  # a zero score counts as 0, not missing
    assert out["er"] == {"a": 0.5, "b": 1.0}  # lower error is better
    assert all(math.isnan(v) for v in out["dead"].values())
    ref = normalize({"acc": {"a": 0.8}}, {"acc": True}, reference={"acc": {"hear-best": 1.6}})
    assert ref["acc"]["a"] == 0.5


def test_random_init_of_a_saved_encoder_is_fresh_weights(tmp_path):
    enc = audiorep.load("passt-tiny")
    seeded = enc.backbone.blocks[0].attn.qkv.weight.detach().clone()  # presets without weights: the seeded init
    with torch.no_grad():
        enc.backbone.blocks[0].attn.qkv.weight.add_(1.0)  # as if trained
    enc.save(tmp_path / "enc")
    fresh = audiorep.load(str(tmp_path / "enc"), random_init=True)
    assert fresh.config == enc.config
    assert not torch.equal(fresh.backbone.blocks[0].attn.qkv.weight, enc.backbone.blocks[0].attn.qkv.weight)
    assert torch.equal(fresh.backbone.blocks[0].attn.qkv.weight, seeded)  # the same random init every time


def test_categories_come_from_data_never_from_names(tmp_path):
    from audiorep.evaluate.scores import category, load_categories

    assert category("kws12", {"task_name": "kws12"}) == "other"  # no fragment guessing
    assert category("esc50-v2.0.0-full", {"task_name": "esc50"}) == "general"  # the built-in HEAR 2021 table
    assert category("esc50-v2.0.0-full", {"task_name": "esc50", "category": "music"}) == "music"  # metadata
    assert category("esc50-v2.0.0-full", {"task_name": "esc50", "category": "music"}, {"esc50": "speech"}) == "speech"
    good = tmp_path / "c.csv"
    good.write_text("task,category\nkws12,speech\n")
    assert category("kws12", {"task_name": "kws12"}, load_categories(good)) == "speech"
    bad = tmp_path / "bad.csv"
    bad.write_text("task,category\nkws12,speech\ndrums,percussion\n")
    with pytest.raises(ValueError, match="bad.csv:3: category 'percussion'"):
        load_categories(bad)
