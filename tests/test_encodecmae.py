"""EnCodecMAE: frame backbone, time-gap masking, CodecMAE objective, target cache, converter.

Parity against ../shared/parity/encodecmae_small (the official EncodecMAE, mel input): the
fixture's official-named weights go through the converter as a hub checkpoint would (a
{imports, config, state_dict} dict read with torch.load(weights_only=True))."""
import dataclasses

import numpy as np
import pytest
import torch
from conftest import load_fixture

from audiorep.backbones import register_backbone
from audiorep.convert import CONVERTERS, encodecmae
from audiorep.backbones.frame import Frame, FrameConfig, interleaved_sincos
from audiorep.encoder import Encoder, EncoderConfig
from audiorep.frontends import FbankConfig
from audiorep.masking import packed_keep, time_gap_mask
from audiorep.objectives.codec_mae import CodecMAE, CodecMAEConfig, codec_loss

register_backbone(FrameConfig, Frame)
CONVERTERS.setdefault(encodecmae.FORMAT, encodecmae)
TOL = dict(atol=1e-4, rtol=1e-4)
FBANK = FbankConfig(sample_rate=24000, n_mels=256, frame_length_ms=26.56, frame_shift_ms=13.28,
                    remove_mean=False, mean=-6.12, scale=4.82)
TINY = FrameConfig(dim=64, depth=2, heads=4, ff_dim=128)
FIXTURE_OBJECTIVE = CodecMAEConfig(codebook_size=32, decoder_heads=4, decoder_ff_dim=128)


def tiny_encoder(**backbone) -> Encoder:
    return Encoder(EncoderConfig(name="encodecmae-test", frontend=FBANK, backbone=dataclasses.replace(TINY, **backbone),
                                 pool="tokens"))


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    sd, inp, out, meta = load_fixture("encodecmae_small")
    path = tmp_path_factory.mktemp("encodecmae") / "mel256-ec-small.pt"
    hub_file = {"imports": "encodecmae.models: encodecmae.models\n", "config": "MODEL_DIM=64\n", "state_dict": sd}
    torch.save(hub_file, path)
    torch.manual_seed(0)
    objective = CodecMAE(tiny_encoder(), FIXTURE_OBJECTIVE)
    objective.load_released(path)
    objective.gamma.copy_(torch.tensor(meta["constructor_args"]["QUANTIZER_WEIGHTS"]))
    return objective.eval(), sd, inp, out


def test_parity_masked_forward_and_loss(official, one_thread):
    objective, _, inp, out = official
    feats = inp["wav_features"].transpose(1, 2)  # official [B, T, C] -> ours [B, C, T]
    padding, masked = out["mae/feature_padding_mask"], inp["non_visible_mask"]
    keep = packed_keep(~masked & ~padding)
    backbone = objective.encoder.backbone
    with torch.no_grad():
        result = backbone(feats, keep=keep, padding=padding)
        assert torch.equal(result.padding, out["mae/visible_padding_mask"])
        valid = ~result.padding[..., None]
        x = backbone.proj(feats.transpose(1, 2)) + backbone.pos_scale * interleaved_sincos(torch.arange(225), 64)
        visible = x.gather(1, keep.clamp(min=0)[..., None].expand(-1, -1, 64)) * valid
        torch.testing.assert_close(visible, out["mae/visible_tokens"], **TOL)
        torch.testing.assert_close(result.tokens * valid, out["mae/visible_embeddings"] * valid, **TOL)
        decoder_in = objective.unmask(result.tokens, keep, 225)
        torch.testing.assert_close(decoder_in, out["mae/decoder_in"], **TOL)
        decoder_out, _ = objective.decoder.run(decoder_in, torch.arange(225), padding)
        torch.testing.assert_close(decoder_out, out["mae/decoder_out"], **TOL)
        logits = objective.predict(feats, masked, padding)
        torch.testing.assert_close(logits, out["mae/predicted_tokens"], **TOL)
        loss, parts = codec_loss(logits, inp["targets"].permute(1, 2, 0), masked, ~masked, objective.gamma, 0.9)
    torch.testing.assert_close(loss.view(1), out["mae/loss"], **TOL)
    for name in ["masked_loss", "unmasked_loss"] + [f"masked_loss_q{q}" for q in range(8)]:
        torch.testing.assert_close(parts[name].view(1), out[f"mae/{name}"], **TOL, msg=name)


def test_parity_extracted_activations(official, one_thread):
    objective, _, inp, out = official
    feats = inp["wav_features"].transpose(1, 2)
    with torch.no_grad():
        result = objective.encoder.backbone(feats, padding=out["mae/feature_padding_mask"], layers=[0, 1])
    acts = out["extract/visible_embeddings_activations"]
    torch.testing.assert_close(result.hidden[0], acts[0], **TOL)
    torch.testing.assert_close(result.tokens, acts[-1], **TOL)  # the released last activation is the final output
    torch.testing.assert_close(result.tokens, out["extract/visible_embeddings"], **TOL)


def test_converter_maps_every_official_weight_and_refuses_unshared_feed_forward(official):
    objective, sd, _, _ = official
    assert encodecmae.matches(sd)
    ours = {**{f"encoder.{k}": v for k, v in encodecmae.to_audiorep(sd, objective.encoder).items()},
            **encodecmae.objective_state(sd, objective)}
    official_params = sum(v.numel() for k, v in sd.items() if ".ff_layer." not in k)
    shared_ff = sum(v.numel() for k, v in sd.items() if k.startswith("visible_encoder.encoder_layers.0.ff_layer")
                    or k.startswith("decoder.encoder_layers.0.ff_layer"))
    assert sum(v.numel() for v in ours.values()) == official_params + shared_ff
    broken = dict(sd)
    key = "visible_encoder.encoder_layers.1.ff_layer.0.bias"
    broken[key] = sd[key] + 1
    with pytest.raises(ValueError, match="shares one feed-forward"):
        encodecmae.to_audiorep(broken, objective.encoder)


def test_time_gap_mask_ratio_and_gap_lengths():
    lengths = torch.tensor([300, 225, 200, 31, 7])
    torch.manual_seed(0)
    for _ in range(20):
        mask = time_gap_mask(lengths, 300, ratio=0.5, gap=15)
        assert torch.equal(mask.sum(1), (lengths * 0.5).long())  # exact count per clip length
        assert not (mask & (torch.arange(300) >= lengths[:, None])).any()  # never past a clip's end
        for row, n in zip(mask, lengths.tolist()):
            edges = torch.diff(torch.cat([torch.zeros(1), row.float(), torch.zeros(1)])).nonzero().flatten()
            runs = (edges[1::2] - edges[::2]).tolist()  # lengths of masked runs
            if n >= 15:  # runs are unions of whole gaps, except where the overshoot was unmasked
                assert sum(r < 15 for r in runs) <= 2, runs  # (inside one run: at most two short pieces)
    rate = time_gap_mask(torch.full((400,), 300), 300).float().mean(0)  # [T] how often each frame is masked
    assert rate.min() > 0  # every frame, edges included (their rate is lower: fewer spans cover them)
    assert 0.4 < rate[15:-15].min() and rate[15:-15].max() < 0.65


def test_variable_length_batch_gives_each_clip_its_own_result(one_thread):
    torch.manual_seed(0)
    encoder = tiny_encoder().eval()
    waves = torch.randn(2, 24000) * 0.1
    waves[1, 16000:] = 0
    feats = encoder.frontend(waves)
    T = feats.shape[-1]
    short = encoder.frontend.num_frames(16000)
    padding = torch.arange(T)[None] >= torch.tensor([T, short])[:, None]
    with torch.no_grad():
        batch = encoder.backbone(feats, padding=padding).tokens
        alone = encoder.backbone(encoder.frontend(waves[1:, :16000])).tokens
        torch.testing.assert_close(batch[1, :short], alone[0], atol=1e-5, rtol=1e-5)
        # and with masking: the kept frames of the short clip see only themselves
        masked = time_gap_mask(torch.tensor([T, short]), T)
        keep = packed_keep(~masked & ~padding)
        out = encoder.backbone(feats, keep=keep, padding=padding)
        k = int((keep[1] >= 0).sum())
        alone = encoder.backbone(feats[1:, :, :short], keep=keep[1:, :k]).tokens
        torch.testing.assert_close(out.tokens[1, :k], alone[0], atol=1e-5, rtol=1e-5)
        # and through the decoder and head: the short clip's predictions as if it were alone
        objective = CodecMAE(encoder, KMEANS).eval()
        logits = objective.predict(feats, masked, padding)
        alone = objective.predict(feats[1:, :, :short], masked[1:, :short], None)
        torch.testing.assert_close(logits[1, :short], alone[0], atol=1e-5, rtol=1e-5)


def test_frame_times_are_exact_hops():
    encoder = tiny_encoder(max_frames=300)
    out = encoder(torch.zeros(1, encoder.span_samples))
    assert out.tokens.shape[1] == 300 and encoder.backbone.hop_s == 318 / 24000
    expected = (torch.arange(300, dtype=torch.float64) + 1) * 318 / 24000  # a 637-sample frame is centred 318 in
    assert torch.equal(out.times, expected.float())


# ------------------------------------------------------------------ targets, cache, training step

def tone_corpus(folder, n=6, seconds=2.0, sr=24000):
    """n clips of tones and noise bursts (different pitches), the second half of each quieter."""
    from audiorep import audio
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    for i in range(n):
        x = 0.3 * np.sin(2 * np.pi * (150 + 90 * i) * t) + 0.05 * rng.standard_normal(len(t))
        x[len(t) // 2:] *= 0.3
        audio.write(folder / f"clip{i}.wav", x.astype(np.float32), sr)
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from audiorep.data import ClipDataset, DataConfig, folder_clips
    folder = tone_corpus(tmp_path_factory.mktemp("corpus"))
    return ClipDataset(folder_clips(folder), 24000, 24000, DataConfig(roll=False, workers=0))


KMEANS = CodecMAEConfig(targets="fbank_kmeans", target_context="clip", kmeans_k=8, kmeans_clips=4, kmeans_frames=2000,
                        gamma_clips=2, decoder_heads=4, decoder_ff_dim=128)


def test_fbank_kmeans_targets_train_one_step(corpus, tmp_path, one_thread):
    torch.manual_seed(0)
    objective = CodecMAE(tiny_encoder(), KMEANS)
    objective.prepare(corpus, "cpu", tmp_path)
    assert objective.gamma.tolist() == [1.0]
    batch = torch.utils.data.default_collate([corpus[(i, 7)] for i in range(4)])
    loss, logs = objective(batch)
    assert torch.isfinite(loss) and 0 < logs["masked_loss"] < 10 and 0 <= logs["masked_acc"] <= 1
    loss.backward()
    assert objective.encoder.backbone.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    state = objective.state_dict()  # the cache travels in the state: a resumed run finds it
    fresh = CodecMAE(tiny_encoder(), KMEANS)
    fresh.load_state_dict(state)
    assert fresh.cache.folder == objective.cache.folder


def test_targets_follow_the_crop_start(corpus, tmp_path):
    objective = CodecMAE(tiny_encoder(), KMEANS)
    objective.prepare(corpus, "cpu", tmp_path)
    cached = objective.cache.codes(0)[:, 0]  # [T'] codes of clip 0 on the fbank frame grid
    hop = 318
    codes, valid = objective.cache.lookup(torch.tensor([0, 0]), torch.tensor([0, 10 * hop]), 40, hop, 318.0)
    assert valid.all()
    assert torch.equal(codes[0, :, 0], torch.from_numpy(cached[:40]).long())
    assert torch.equal(codes[1, :, 0], torch.from_numpy(cached[10:50]).long())  # 10 frames later
    _, valid = objective.cache.lookup(torch.tensor([0]), torch.tensor([len(cached) * hop - 5 * hop]), 40, hop, 318.0)
    assert valid[0, :5].all() and not valid[0, 5:].any()  # past the clip's end: not scored


def test_target_cache_resumes_after_a_kill_and_kmeans_is_deterministic(corpus, tmp_path, monkeypatch):
    from audiorep.frontends.codec import KMeansTokenizer
    reference = CodecMAE(tiny_encoder(), KMEANS)
    reference.prepare(corpus, "cpu", tmp_path / "a")
    calls = []
    encode = KMeansTokenizer.encode

    def dies_on_the_fourth_clip(self, wave):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt  # killed mid-way
        return encode(self, wave)
    monkeypatch.setattr(KMeansTokenizer, "encode", dies_on_the_fourth_clip)
    with pytest.raises(KeyboardInterrupt):
        CodecMAE(tiny_encoder(), KMEANS).prepare(corpus, "cpu", tmp_path / "b")
    assert len(list((tmp_path / "b" / "targets" / "codes").rglob("*.npy"))) == 3
    calls.clear()
    resumed = CodecMAE(tiny_encoder(), KMEANS)
    resumed.prepare(corpus, "cpu", tmp_path / "b")
    assert len(calls) == len(corpus) - 3  # only the missing clips were tokenized
    for name in ("tokenizer.safetensors", "meta.json"):  # same seed: same k-means, same gamma
        assert (tmp_path / "a" / "targets" / name).read_bytes() == (tmp_path / "b" / "targets" / name).read_bytes()
    for i in range(len(corpus)):
        assert np.array_equal(reference.cache.codes(i), resumed.cache.codes(i))
    with pytest.raises(ValueError, match="other settings"):
        CodecMAE(tiny_encoder(), dataclasses.replace(KMEANS, kmeans_k=4)).prepare(corpus, "cpu", tmp_path / "a")




def test_presets_and_a_large_style_checkpoint_whose_heads_do_not_divide_the_width():
    """encodecmae-large is 1024 wide with 12 heads: the released projections are 12 x 85 =
    1020 channels. A checkpoint of that layout (here 26 wide, 4 heads: 24 channels) converts."""
    from audiorep import presets
    assert presets.FORMATS["encodecmae-base"] == "encodecmae"
    assert [presets.get(f"encodecmae-{s}").backbone.depth for s in ("small", "base", "large")] == [5, 10, 20]
    backbone = Frame(FrameConfig(in_features=256, dim=26, depth=2, heads=4, ff_dim=32), 318 / 24000)
    assert backbone.blocks[0].attn.qkv.weight.shape == (72, 26)
    ours = backbone.state_dict()
    official = {"wav_encoder.post_net.weight": ours["proj.weight"], "wav_encoder.post_net.bias": ours["proj.bias"],
                "masker.positional_encoder.scale": ours["pos_scale"],
                "visible_encoder.final_norm.weight": ours["norm.weight"],
                "visible_encoder.final_norm.bias": ours["norm.bias"]}
    for i in range(2):
        layer = f"visible_encoder.encoder_layers.{i}."
        for name, w in zip("qkv", ours[f"blocks.{i}.attn.qkv.weight"].chunk(3)):
            official[f"{layer}att_layer.w{name}.weight"] = w  # [24, 26]
        official[f"{layer}att_layer.wo.weight"] = ours[f"blocks.{i}.attn.proj.weight"]  # [26, 24]
        for part in ("norm1", "norm2"):
            for p in ("weight", "bias"):
                official[f"{layer}{part}.{p}"] = ours[f"blocks.{i}.{part}.{p}"]
        for theirs, mine in (("0", "fc1"), ("2", "fc2")):
            for p in ("weight", "bias"):
                official[f"{layer}ff_layer.{theirs}.{p}"] = ours[f"ff.{mine}.{p}"]
    converted = encodecmae.to_audiorep(official, None)
    assert converted.keys() == {f"backbone.{k}" for k in ours}
    assert all(torch.equal(converted[f"backbone.{k}"], v) for k, v in ours.items())
    with torch.no_grad():
        assert backbone(torch.randn(1, 256, 20)).tokens.shape == (1, 20, 26)


def test_faiss_kmeans_is_deterministic_for_a_seed(corpus, tmp_path):
    pytest.importorskip("faiss")
    faiss = dataclasses.replace(KMEANS, kmeans="faiss")
    for run in ("a", "b"):
        CodecMAE(tiny_encoder(), faiss).prepare(corpus, "cpu", tmp_path / run)
    same = [(tmp_path / r / "targets" / "tokenizer.safetensors").read_bytes() for r in ("a", "b")]
    assert same[0] == same[1]


def test_a_hub_file_loads_into_a_preset_through_audiorep_load(official, tmp_path, one_thread):
    """The released {imports, config, state_dict} file (here with an EnCodec tokenizer's
    weights inside, as the released ones have) -> audiorep.load(preset, weights=file)."""
    import audiorep
    _, sd, inp, out = official
    hub = {"imports": "encodecmae.models: encodecmae.models\n", "config": "MODEL_DIM=64\n",
           "state_dict": {**sd, "target_encoder.model.vq.layers.0._codebook.embed": torch.zeros(32, 128)}}
    torch.save(hub, tmp_path / "mel256-ec-tiny.pt")
    encoder = audiorep.load("encodecmae-tiny", weights=str(tmp_path / "mel256-ec-tiny.pt"),
                            overrides=["backbone.ff_dim=128"])
    with torch.no_grad():
        tokens = encoder.backbone(inp["wav_features"].transpose(1, 2), padding=out["mae/feature_padding_mask"]).tokens
    torch.testing.assert_close(tokens, out["extract/visible_embeddings"], **TOL)
