"""All-layer frames of every backbone kind, the per-layer store, and an ASR task end to end."""
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import audiorep
from audiorep.evaluate import asr, layer_store
from audiorep.evaluate.asr_head import AsrConfig
from audiorep.evaluate.embeddings import EmbeddingError, parse_model
from audiorep.evaluate.layer_features import layer_frames, layer_names
from audiorep.tasks.asr_task import load_asr_task, make_metadata, write_asr_task


@pytest.mark.parametrize("preset", ["audiomae-tiny", "eat-tiny", "encodecmae-tiny"])
def test_all_layers_in_one_forward_per_window(preset, one_thread):
    encoder = audiorep.load(preset, random_init=True).eval()
    calls = []
    encoder.backbone.register_forward_hook(lambda m, i, o: calls.append(o))
    wave = torch.randn(encoder.span_samples + encoder.span_samples // 2)
    x, times = layer_frames(encoder, wave)
    L = encoder.backbone.num_layers
    assert x.shape[1:] == (L + 1, encoder.backbone.dim) and len(x) == len(times)
    assert len(calls) == 1 and len(calls[0].hidden) == L  # both windows in one batched forward
    assert bool((times.diff() > 0).all()) and times[-1] < len(wave) / encoder.sample_rate
    single, _ = layer_frames(encoder, wave[:encoder.span_samples])
    out = encoder.backbone(encoder.frontend(wave[None, :encoder.span_samples]), layers=list(range(L)))
    uniq, inverse = torch.unique(out.times, return_inverse=True)
    first = out.hidden[0][0, out.prefix:][inverse == 0].mean(0)  # block 0, the earliest tokens
    last = out.patches[0][inverse == len(uniq) - 1].mean(0)      # the final output, the latest tokens
    assert torch.allclose(single[0, 0], first, atol=1e-5) and torch.allclose(single[-1, -1], last, atol=1e-5)
    assert layer_names(encoder)[-1] == "output" and len(layer_names(encoder)) == L + 1
    assert len(encoder(wave[None, :encoder.span_samples], layers="all").hidden) == L
    with pytest.raises(ValueError, match="layers='every': expected block indices or 'all'"):
        encoder(wave[None, :encoder.span_samples], layers="every")


def test_layer_store_round_trip_and_truncation(tmp_path):
    w = layer_store.LayerWriter(tmp_path, "train", ["a", "b"])
    clips = [np.random.default_rng(i).normal(size=(n, 2, 3)).astype(np.float32) for i, n in enumerate((4, 1, 6))]
    for i, c in enumerate(clips):
        w.add(f"{i}.wav", c, np.arange(len(c)) * 0.02)
    with pytest.raises(EmbeddingError, match="expected"):
        w.add("bad.wav", np.zeros((3, 3, 3), np.float32), np.zeros(3))
    w.close()
    split = layer_store.read_layers(tmp_path, "train")
    assert split.files == ["0.wav", "1.wav", "2.wav"] and split.layers == ["a", "b"]
    for i, c in enumerate(clips):
        np.testing.assert_allclose(split.frames(i), c, atol=2e-3)  # float16 on disk
    assert split.times(2)[-1] == pytest.approx(0.1)
    with open(tmp_path / "train.layers.f16", "r+b") as f:
        f.truncate(10)
    with pytest.raises(EmbeddingError, match="train.layers.f16: 10 bytes"):
        layer_store.read_layers(tmp_path, "train")
    with pytest.raises(EmbeddingError, match="valid.layers.json: missing"):
        layer_store.read_layers(tmp_path, "valid")


def chirp_task(tmp_path, rng) -> Path:
    """Words of two letters; each letter a tone (a: 400 Hz, b: 1200 Hz), 0.15 s each."""
    tone = {c: np.sin(2 * np.pi * f * np.arange(2400) / 16000).astype(np.float32) * 0.3
            for c, f in (("a", 400), ("b", 1200), (" ", 0))}

    def clip(text):
        return np.concatenate([np.zeros(1600, np.float32)] + [tone[c] for c in text] + [np.zeros(1600, np.float32)])

    texts = {"train": ["ab ba", "aa b", "b ab", "ba", "ab", "a b"], "valid": ["ba ab", "a"],
             "test": ["b a", "ab ab", "abc"]}
    examples = [(s, clip(t.replace("c", "")), t, None) for s, ts in texts.items() for t in ts]
    examples.append(("train", clip("a")[:800], "abab ab", None))  # 50 ms for 7 characters: too short under CTC
    return write_asr_task(tmp_path / "toy", make_metadata("toy_asr"), iter(examples))


@pytest.mark.parametrize("model", ["logmel", "random:encodecmae-tiny"])
def test_asr_task_end_to_end(tmp_path, model, one_thread):
    task = load_asr_task(chirp_task(tmp_path, np.random.default_rng(0)))
    spec = parse_model(model)
    emb_dir = tmp_path / "emb"
    info = asr.embed_asr_task(task, spec, emb_dir)
    layers = info["layers"]
    assert (len(layers) == 1) == (model == "logmel")
    run = asr.AsrRun(AsrConfig(project_dim=16, lstm_dim=16, batch_size=4, steps=6, eval_every=3, lr=1e-2),
                     bootstrap=50)
    out = tmp_path / "pred" / "toy.json"
    result = asr.evaluate_asr(emb_dir, task, run, out)
    assert result["primary"] == "wer" and result["maximize"] is False
    assert result["skipped_too_short"] == {"count": 1, "clips": ["00006.wav"]}
    assert result["oov"]["test"] == {"count": 1, "clips": {"00002.wav": ["c"]}}
    low, high = result["bootstrap"]["interval"]
    assert low <= high and len(result["bootstrap"]["replicates"]) == 50
    weights = result["layer_weights"]
    assert set(weights) == set(layers) and sum(weights.values()) == pytest.approx(1, abs=1e-5)
    assert out.with_suffix(".layers.png").exists()
    assert json.loads(out.read_text())["score"] == result["score"]
    mtime = (emb_dir / "train.layers.f16").stat().st_mtime_ns
    asr.embed_asr_task(task, spec, emb_dir)  # cached: nothing embedded again
    assert (emb_dir / "train.layers.f16").stat().st_mtime_ns == mtime
    assert asr.evaluate_asr(emb_dir, task, run, out)["probe_seconds"] == result["probe_seconds"]  # reused
    assert result["settings"]["head"]["specaug"]["time_masks"] == 2 and result["settings"]["head"]["bucketing"]
    plain = asr.AsrRun(replace(run.head, specaug=None, bucketing=False), bootstrap=50)
    again = asr.evaluate_asr(emb_dir, task, plain, out)  # another setting: trained again, not reused
    assert again["probe_seconds"] != result["probe_seconds"] and again["settings"]["head"]["specaug"] is None


def test_asr_task_with_a_language_model_scores_the_lm_decoding(tmp_path, one_thread):
    pytest.importorskip("pyctcdecode")
    pytest.importorskip("kenlm")
    from audiorep.evaluate.asr_decode import BeamConfig
    from test_asr import write_arpa

    task = load_asr_task(chirp_task(tmp_path, np.random.default_rng(0)))
    emb_dir = tmp_path / "emb"
    asr.embed_asr_task(task, parse_model("logmel"), emb_dir)
    arpa = write_arpa(tmp_path / "lm.arpa", {"ab": -0.3, "ba": -0.3, "a": -0.5, "b": -0.5}, {"<s> ab": -0.2})
    run = asr.AsrRun(AsrConfig(project_dim=16, lstm_dim=16, batch_size=4, steps=2, eval_every=2), BeamConfig(arpa),
                     bootstrap=10)
    result = asr.evaluate_asr(emb_dir, task, run, tmp_path / "toy.json")
    assert result["decoding"] == "lm" and {"wer", "cer", "wer_greedy", "cer_greedy"} == set(result["scores"])
    assert result["score"] == result["scores"]["wer"]["mean"]
