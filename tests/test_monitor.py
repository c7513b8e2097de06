"""Run-health numbers (audiorep/monitor.py): they separate healthy from collapsed representations."""
import math

import torch

from audiorep import presets
from audiorep.encoder import Encoder
from audiorep.monitor import entropy, perplexity, representation_stats
from audiorep.objectives import MAE, MAEConfig


def test_effective_rank_and_std_detect_collapse():
    g = torch.Generator().manual_seed(0)
    spread = torch.randn(256, 16, generator=g)
    healthy = representation_stats(spread)
    assert 14 < healthy["emb_rank"] <= 16 and abs(healthy["emb_std"] - 1) < 0.1
    line = torch.randn(256, 1, generator=g) * torch.randn(1, 16, generator=g)  # every row on one direction
    assert representation_stats(line)["emb_rank"] < 1.01
    same = torch.ones(256, 16) + 1e-7 * spread  # every input maps to (almost) one vector
    assert representation_stats(same, "x")["x_std"] < 1e-6
    assert representation_stats(spread[:1]) == {}  # one row has no spread to measure


def test_entropy_and_perplexity_bounds():
    assert math.isclose(entropy(torch.full((4, 8), 1 / 8)), math.log(8), rel_tol=1e-6)
    assert entropy(torch.eye(8)) < 1e-6
    assert math.isclose(perplexity(torch.arange(64) % 16, 32), 16, rel_tol=1e-5)
    assert math.isclose(perplexity(torch.zeros(50, dtype=torch.long), 32), 1.0, rel_tol=1e-6)


def test_mae_logs_representation_health():
    torch.manual_seed(0)
    enc = Encoder(presets.get("audiomae-tiny"))
    mae = MAE(enc, MAEConfig(decoder="global", decoder_dim=32, decoder_depth=1, decoder_heads=4))
    _, logs = mae({"wave": 0.1 * torch.randn(4, enc.sample_rate)})
    assert 1 <= logs["emb_rank"] <= 4 and logs["emb_std"] > 0
