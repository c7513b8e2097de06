"""Audio-MAE objective vs the official MaskedAutoencoderViT (../shared/parity/audiomae_small).

The fixture's official-named weights go through the same path as a released checkpoint:
a `.pth` whose dict holds them under `model`, read by `MAE.load_audiomae` (encoder via
convert.from_audiomae, decoder via decoder_from_audiomae)."""
import pytest
import torch
from conftest import load_fixture

from audiorep import presets
from audiorep.encoder import Encoder
from audiorep.layers import sincos_table
from audiorep.masking import masked_from_keep
from audiorep.objectives.mae import MAE, MAEConfig, reconstruction_loss

TOL = dict(atol=1e-4, rtol=1e-4)
# the fixture's decoder: decoder_mode=1 hard-codes 16 window blocks with 16 heads
DECODER = dict(decoder_dim=32, decoder_depth=16, decoder_heads=16, decoder="local", window=(4, 4), shift=(2, 0))


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    sd, inp, out, meta = load_fixture("audiomae_small")
    path = tmp_path_factory.mktemp("audiomae") / "pretrained.pth"
    torch.save({"model": sd, "epoch": 32}, path)
    return path, sd, inp, out


def build(path, masking):
    mae = MAE(Encoder(presets.get("audiomae-tiny")), MAEConfig(masking=masking, **DECODER))
    mae.load_audiomae(path)
    return mae.eval()


def run(mae, imgs, noise):
    feats = imgs[:, 0].transpose(1, 2)  # official [B, 1, T, F] -> ours [B, F, T]
    grid = mae.encoder.backbone.grid(feats.shape[-1])
    with torch.no_grad():
        keep, ids_restore = mae.mask(feats.shape[0], grid, noise=noise)
        latent = mae.encode(feats, keep).tokens
        pred = mae.decode(latent, ids_restore, grid)
    masked = masked_from_keep(keep, grid[0] * grid[1])
    target = mae.patchify(feats)
    losses = {norm: reconstruction_loss(pred, target, masked, norm) for norm in (False, True)}
    return latent, masked, ids_restore, pred, losses


def test_fixed_sincos_tables_match_the_released_ones(fixture):
    _, sd, _, _ = fixture
    for key, dim in (("pos_embed", 64), ("decoder_pos_embed", 32)):
        torch.testing.assert_close(sd[key][0, 1:].view(64, 8, dim), sincos_table(64, 8, dim), atol=1e-6, rtol=0)


def test_unstructured_mask(fixture):
    path, _, inp, out = fixture
    latent, masked, ids_restore, pred, losses = run(build(path, "random"), inp["imgs"], inp["noise"])
    torch.testing.assert_close(latent, out["latent"], **TOL)
    assert torch.equal(masked.float(), out["mask"])
    assert torch.equal(ids_restore, out["ids_restore"])
    torch.testing.assert_close(pred, out["pred"], **TOL)
    torch.testing.assert_close(losses[False].view(1), out["loss"], **TOL)
    torch.testing.assert_close(losses[True].view(1), out["loss_norm_pix"], **TOL)


def test_time_freq_mask(fixture):
    path, _, inp, out = fixture
    noise = (inp["noise_t_2d"], inp["noise_f_2d"])
    latent, masked, ids_restore, pred, losses = run(build(path, "time_freq"), inp["imgs"], noise)
    torch.testing.assert_close(latent, out["latent_2d"], **TOL)
    assert torch.equal(masked.float(), out["mask_2d"])
    assert torch.equal(ids_restore, out["ids_restore_2d"])
    torch.testing.assert_close(pred[:, :16], out["pred_2d_row0"], **TOL)
    torch.testing.assert_close(losses[False].view(1), out["loss_2d"], **TOL)
