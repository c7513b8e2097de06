"""PaSST presets of the released checkpoints (hops, 20/30 s, OpenMIC) and the paper's training
patchout per hop (presets.PATCHOUT), as the supervised objective applies it."""
import audiorep
from audiorep import config, presets
from audiorep.commands import presets as presets_command
from audiorep.encoder import Encoder
from audiorep.objectives import Supervised, SupervisedConfig

TINY = ["backbone.dim=64", "backbone.depth=2", "backbone.heads=4"]


def tiny(name):
    return Encoder(config.override(presets.get(name), TINY))


def test_released_geometries():
    """10 s = 1000 / 2000 / 3200 frames at hops 320 / 160 / 100; 20 s and 30 s time tables."""
    for name, frames, grid in [("passt-s", 1000, (99, 12)), ("passt-s-hop5", 2000, (199, 12)),
                               ("passt-s-hop3", 3200, (319, 12)), ("passt-s-20s", 2000, (199, 12)),
                               ("passt-s-30s", 3000, (299, 12))]:
        enc = tiny(name)
        seconds = 30 if name == "passt-s-30s" else 20 if name == "passt-s-20s" else 10
        assert enc.frontend.num_frames(seconds * 32000) == frames
        assert enc.backbone.grid(enc.config.backbone.max_frames) == grid
        assert enc.span_samples >= seconds * 32000
    assert tiny("passt-s-openmic").config.num_classes == 20
    released = {("passt-s-hop3", "audioset"), ("passt-s-30s", "audioset"), ("passt-s-openmic", "openmic")}
    assert released <= set(presets.WEIGHTS)


def test_paper_patchout_per_hop_gives_the_paper_sequence_lengths():
    """Patchout counts as objective fractions: 10 ms keeps 59 x 8 patches (474 tokens with cls
    and dist), the 3.125 ms model 169 x 6 (1016 tokens)."""
    for name, tokens in [("passt-s", 474), ("passt-s-hop3", 1016)]:
        drop_t, drop_f = presets.PATCHOUT[name]
        enc = tiny(name)
        T, F = enc.backbone.grid(enc.config.backbone.max_frames)
        objective = Supervised(enc, SupervisedConfig(patchout_time=drop_t / T, patchout_freq=drop_f / F))
        keep = objective.patchout(2, (T, F))
        assert keep.shape == (2, tokens - 2)


def test_presets_command_shows_the_training_patchout(capsys):
    presets_command.main([])
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("passt-s-hop3 "))
    assert "3.125 ms" in line and "training patchout: 150 time x 6 freq" in line
    assert audiorep.list_presets().index("passt-s-hop3") >= 0


def test_the_passt_recipe_takes_the_papers_patchout_for_the_preset():
    """presets.PATCHOUT's counts become the objective's fractions of the preset's patch grid
    (round(grid x fraction) = the counts); presets without counts and recipes without patchout get none."""
    from audiorep import presets
    from audiorep.config import override
    from audiorep.encoder import Encoder
    from audiorep.objectives import RECIPES
    from audiorep.runs import preset_patchout
    for name, counts in presets.PATCHOUT.items():
        encoder = Encoder(presets.get(name))
        cfg = override(RECIPES["passt"].config(), preset_patchout(RECIPES["passt"], encoder))
        n_time, n_freq = encoder.backbone.grid(encoder.backbone.cfg.max_frames)
        assert (round(n_time * cfg.patchout_time), round(n_freq * cfg.patchout_freq)) == counts, name
    assert preset_patchout(RECIPES["passt"], Encoder(presets.get("passt-tiny"))) == []
    assert preset_patchout(RECIPES["audiomae"], Encoder(presets.get("audiomae-tiny"))) == []
