"""The EnCodec tokenizer (transformers.EncodecModel, random weights offline): 8 codebooks at
75 Hz, codebooks drawn from the data's residuals, error shrinking codebook by codebook.
Separate from test_encodecmae.py: importing transformers alone takes seconds."""
import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
from audiorep.frontends.codec import EncodecTokenizer  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer():
    return EncodecTokenizer(pretrained=False, seed=0)


def test_codebooks_are_drawn_from_the_data_and_each_removes_error(tokenizer, monkeypatch):
    g = torch.Generator().manual_seed(0)
    projection = torch.randn(320, 4, generator=g) @ torch.randn(4, 128, generator=g)  # latents on a 4-d subspace
    # a stand-in encoder (frames of 320 samples, projected) keeps this test fast; the network is tested below
    monkeypatch.setattr(tokenizer, "latents", lambda wave: wave[: len(wave) // 320 * 320].view(-1, 320) @ projection)
    waves = [torch.from_numpy(np.random.default_rng(i).standard_normal(320 * 600).astype(np.float32)) for i in range(3)]
    tokenizer.fit(waves[:2], torch.Generator().manual_seed(0))
    seen = torch.cat([tokenizer.latents(w) for w in waves[:2]])
    assert (seen[:, None] == tokenizer.codebook(0)[None, :5]).all(-1).any(0).all()  # entries are data frames
    codes, errors = tokenizer.quantize(tokenizer.latents(waves[2]))  # unseen audio
    assert codes.shape == (8, 600) and len(codes[0].unique()) > 100
    assert errors[-1] < 0.8 * errors[0]
    with pytest.raises(ValueError, match="1024 frames"):
        tokenizer.fit(waves[:1], torch.Generator().manual_seed(0))


def test_the_network_gives_8_codes_per_320_samples(tokenizer, one_thread):
    tokenizer.load_state({f"codebook{q}": torch.randn(1024, 128) for q in range(8)})
    codes = tokenizer.encode(torch.randn(12000) * 0.1)
    assert codes.shape == (8, 38) and codes.dtype == torch.long and int(codes.max()) < 1024  # ceil(12000 / 320)


def test_a_batch_of_crops_is_tokenized_crop_by_crop(tokenizer, one_thread):
    """Context "crop" (as released): each crop is encoded alone; EnCodec's causal convolutions
    and LSTM make the codes of a crop differ from those the whole clip gives the same span."""
    g = torch.Generator().manual_seed(1)
    t = torch.arange(336000)
    wave = torch.sin(t * 0.05 * (1 + t / 336000)) * 0.3 + 0.05 * torch.randn(len(t), generator=g)  # a chirp in noise
    tokenizer.fit([wave], g)  # codebooks drawn from this audio's own latents (1050 frames)
    wave = wave[:48000]
    crops = torch.stack([wave[:12000], wave[24000:36000]])  # the second starts 75 codes into the clip
    codes = tokenizer.encode_batch(crops)
    assert codes.shape == (2, 8, 38)
    assert (codes[1] == tokenizer.encode(crops[1])).float().mean() > 0.99  # batched = alone (float rounding)
    in_clip = tokenizer.encode(wave)[:, 75:75 + 38]
    assert (codes[1] != in_clip).any()
