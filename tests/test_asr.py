"""ASR downstream (SUPERB protocol): CTC head, layer weighting, decoding, metrics, bad input."""
import json
import re

import numpy as np
import pytest
import torch

from audiorep.evaluate import asr_decode as dec
from audiorep.evaluate.asr_head import AsrConfig, AsrHead, ctc_min_frames, pair_average, train_asr, trainable
from audiorep.evaluate.asr_specaug import SpecAugConfig
from audiorep.evaluate.layer_weights import LayerWeights, train_weighted_probe
from audiorep.evaluate.probes import GridPoint
from audiorep.tasks.asr_task import check_asr_task, load_asr_task, make_metadata, write_asr_task
from audiorep.tasks.format import TaskFormatError

VOCAB = ["|", "a", "b", "c", "d"]
TINY = dict(project_dim=32, lstm_dim=32, dropout=0.0, lr=1e-2, batch_size=8, pair_average=True)


def toy_clip(text: str, rng, frames_per_char: int = 4, layers: int = 3, dim: int = 8) -> np.ndarray:
    """[T, L, D]: each symbol a one-hot pattern held for a few frames in the last layer;
    the other layers are noise."""
    symbols = ["|" if c == " " else c for c in text]
    x = rng.normal(0, 1, (len(symbols) * frames_per_char, layers, dim)).astype(np.float32)
    for k, s in enumerate(symbols):
        x[k * frames_per_char:(k + 1) * frames_per_char, -1] = 0.1 * rng.normal(size=dim)
        x[k * frames_per_char:(k + 1) * frames_per_char, -1, VOCAB.index(s)] += 3.0
    return x


def toy_words(rng, n: int) -> list[str]:
    letters = VOCAB[1:]
    return [" ".join("".join(rng.choice(letters, size=rng.integers(1, 4))) for _ in range(rng.integers(1, 4)))
            for _ in range(n)]


def ids(text: str) -> list[int]:
    return [VOCAB.index("|" if c == " " else c) + 1 for c in text]


# s3prl's SpecAugment widths are absolute (50 of 768+ dims, 40 of ~100+ frames); the toy's 8 dims and
# 2 frames a character get widths in proportion
TOY_SPECAUG = SpecAugConfig(warp_window=1, freq_masks=1, freq_mask_max=2, time_masks=1, time_mask_max=2)


# (buckets of 16 are halved: 8 utterances a step, as the earlier batches)
@pytest.mark.parametrize("switches", [dict(specaug=None, bucketing=False), dict(specaug=TOY_SPECAUG, batch_size=16)],
                         ids=["earlier", "specaug+buckets"])
def test_ctc_learns_a_toy_task_to_zero_wer(one_thread, switches):
    rng = np.random.default_rng(0)
    train_texts, test_texts = toy_words(rng, 48), toy_words(rng, 16)
    train = [toy_clip(t, rng) for t in train_texts]
    test = [toy_clip(t, rng) for t in test_texts]
    cfg = AsrConfig(**{**TINY, "lr": 3e-2, **switches}, steps=80, eval_every=20)

    def wer(head):
        from audiorep.evaluate.asr_head import log_probs
        hyps = [dec.greedy(lp, VOCAB) for lp in log_probs(head, lambda i: test[i], len(test), 16)]
        return dec.error_rates(test_texts, hyps)["wer"]

    trained = train_asr(lambda i: train[i], [len(c) for c in train], [ids(t) for t in train_texts],
                        [f"c{i}" for i in range(48)], len(VOCAB), wer, cfg, [len(c) / 100 for c in train])
    # augmented, 80 steps leave a word or two wrong (0.07 kept; 0.04 at step 120)
    limit = 0.0 if switches.get("specaug") is None else 0.15
    assert trained.val_wer <= limit
    assert trained.history[0][1] > trained.history[-1][1]  # the CTC loss went down
    assert wer(trained.head) <= limit


def test_weighted_sum_gradients_reach_the_layer_weights():
    head = AsrHead(3, 8, len(VOCAB), AsrConfig(**TINY))
    x = torch.randn(2, 10, 3, 8)
    lp, lengths = head(x, torch.tensor([10, 7]))
    assert lp.shape == (2, 5, len(VOCAB) + 1) and lengths.tolist() == [5, 3]
    lp.sum().backward()
    grad = head.layer_weights.weights.grad
    assert grad is not None and grad.abs().min() > 0
    weights = LayerWeights(3)
    assert torch.allclose(weights(x), x.mean(-2))  # zero logits: the plain mean of the layers


def test_weighted_probe_learns_which_layer_holds_the_labels(one_thread):
    rng = np.random.default_rng(0)
    n, classes = 300, 3
    y = rng.integers(0, classes, n)
    x = rng.normal(size=(n, 3, 6)).astype(np.float32)
    x[:, 1, :classes] += 4 * np.eye(classes)[y]  # only layer 1 knows the class
    onehot = np.eye(classes, dtype=np.float32)[y]
    point = GridPoint(hidden_layers=1, lr=1e-2, init="xavier_uniform", hidden_dim=16, max_epochs=30, check_every=3,
                      batch_size=64)
    acc = lambda logits: float((logits.argmax(1) == y[200:]).mean())  # noqa: E731
    best = train_weighted_probe(x[:200], onehot[:200], x[200:], acc, True, point)
    w = best.model.layer_weights.softmax()
    assert best.val_score > 0.9 and w[1] > w[0] and w[1] > w[2]


def test_pair_average_and_ctc_lengths():
    x = torch.arange(10.0).reshape(1, 5, 1, 2)
    y, n = pair_average(x, torch.tensor([5]))
    assert y[0, :, 0, 0].tolist() == [1.0, 5.0] and n.tolist() == [2]
    assert ctc_min_frames([1, 2, 2, 3, 3, 3]) == 6 + 3
    keep, skipped = trainable([20, 6], [[1, 2, 2], [1, 2, 2, 3]], ["long", "short"], AsrConfig(**TINY))
    assert keep == [0] and skipped == ["short"]  # 6 frames -> 3 after pair averaging < 4 symbols


def test_jiwer_numbers_match_hand_computed_error_rates():
    refs, hyps = ["the cat sat", "a dog"], ["the bat sat down", "dog"]
    # utterance 1: cat->bat (S) + down (I) = 2 of 3 words; utterance 2: a deleted = 1 of 2 words
    rates = dec.error_rates(refs, hyps)
    assert rates["wer"] == pytest.approx(3 / 5)
    # characters: c->b (S) + " down" (5 I) = 6 of 11; "a " deleted = 2 of 5
    assert rates["cer"] == pytest.approx(8 / 16)
    counts = dec.edit_counts(refs, hyps)
    assert counts["word_errors"].tolist() == [2, 1] and counts["words"].tolist() == [3, 2]
    assert dec.resampled(counts, np.array([[0, 0], [1, 1], [0, 1]]), "wer").tolist() == \
        pytest.approx([4 / 6, 2 / 4, 3 / 5])


def write_arpa(path, unigrams: dict[str, float], bigrams: dict[str, float]) -> str:
    lines = ["\\data\\", f"ngram 1={len(unigrams) + 3}", f"ngram 2={len(bigrams)}", "", "\\1-grams:",
             "-1.0\t<unk>\t0", "-1.0\t<s>\t-0.3", "-1.0\t</s>\t0"]
    lines += [f"{p}\t{w}\t-0.3" for w, p in unigrams.items()]
    lines += ["", "\\2-grams:"] + [f"{p}\t{w}" for w, p in bigrams.items()] + ["", "\\end\\", ""]
    path.write_text("\n".join(lines))
    return str(path)


def frames_for(spoken: list[tuple[str, dict[str, float]]], vocab: list[str]) -> np.ndarray:
    """Log-probs [T, V + 1]: per frame, the given symbol probabilities (rest: blank)."""
    out = []
    for _, probs in spoken:
        p = np.full(len(vocab) + 1, 1e-4)
        for sym, v in probs.items():
            p[0 if sym == "" else vocab.index(sym) + 1] = v
        p[0] = max(p[0], 1 - p.sum() + p[0])
        out.append(p / p.sum())
    return np.log(np.array(out))


def test_lm_beam_search_beats_greedy_where_the_acoustics_are_ambiguous(tmp_path):
    pytest.importorskip("pyctcdecode")
    pytest.importorskip("kenlm")
    vocab = ["|", "a", "c", "s", "t", "z"]
    # "cat sat" where the acoustics lean to "zat" on the second word's first letter
    frames = [("c", {"c": 0.9}), ("", {"": 0.9}), ("a", {"a": 0.9}), ("t", {"t": 0.9}), ("|", {"|": 0.9}),
              ("s?", {"z": 0.5, "s": 0.45}), ("a", {"a": 0.9}), ("t", {"t": 0.9})]
    lp = frames_for(frames, vocab)
    assert dec.greedy(lp, vocab) == "cat zat"
    arpa = write_arpa(tmp_path / "lm.arpa", {"cat": -0.5, "sat": -0.5}, {"<s> cat": -0.1, "cat sat": -0.1,
                                                                          "sat </s>": -0.1})
    beam = dec.BeamDecoder(vocab, dec.BeamConfig(arpa, alpha=1.0, beta=1.0))
    assert beam(lp) == "cat sat"
    rates = [dec.error_rates(["cat sat"], [hyp])["wer"] for hyp in (beam(lp), dec.greedy(lp, vocab))]
    assert rates == [0.0, 0.5]


def test_missing_or_malformed_language_model_is_named(tmp_path):
    with pytest.raises(dec.LanguageModelError, match="missing"):
        dec.check_arpa(tmp_path / "none.arpa")
    bad = tmp_path / "bad.arpa"
    bad.write_text("hello\nworld\n")
    with pytest.raises(dec.LanguageModelError, match="bad.arpa: not an ARPA"):
        dec.BeamDecoder(VOCAB, dec.BeamConfig(str(bad)))
    pytest.importorskip("pyctcdecode")
    pytest.importorskip("kenlm")
    broken = tmp_path / "broken.arpa"
    broken.write_text("\\data\\\nngram 1=2\n\n\\1-grams:\n-1.0 <s>\n")  # spaces where ARPA needs tabs
    with pytest.raises(dec.LanguageModelError, match="broken.arpa: kenlm cannot read it"):
        dec.BeamDecoder(VOCAB, dec.BeamConfig(str(broken)))


# ---------------------------------------------------------------- the task format


def tone_task(tmp_path, texts: dict[str, list[str]], name="t"):
    rng = np.random.default_rng(0)
    examples = [(s, (0.1 * rng.normal(size=4000)).astype(np.float32), t, None) for s, ts in texts.items() for t in ts]
    return write_asr_task(tmp_path / name, make_metadata("toy"), iter(examples))


def test_task_round_trip_vocabulary_and_oov_rule(tmp_path):
    path = tone_task(tmp_path, {"train": ["ab  ba", "a"], "valid": ["ab"], "test": ["abc d"]})
    task = load_asr_task(path)
    assert task.vocabulary == ["|", "a", "b"] and task.splits["train"]["00000.wav"] == "ab ba"
    assert task.oov("test") == {"00000.wav": ["c", "d"]} and check_asr_task(path) == []
    # a train transcript with a character outside the vocabulary file is refused, naming it
    data = json.loads((path / "train.json").read_text())
    data["00001.wav"] = "ax"
    (path / "train.json").write_text(json.dumps(data))
    with pytest.raises(TaskFormatError, match=r"train.json: 00001.wav: characters 'x' not in labelvocabulary.csv"):
        load_asr_task(path)


@pytest.mark.parametrize("text, why", [("   ", "empty transcript"), ("a|b", "'|' is reserved for the word boundary"),
                                       (3, "transcript must be a string")])
def test_bad_transcripts_are_named(tmp_path, text, why):
    path = tone_task(tmp_path, {"train": ["ab"], "valid": ["ab"], "test": ["ab"]})
    (path / "test.json").write_text(json.dumps({"00000.wav": text}))
    with pytest.raises(TaskFormatError, match=re.escape(f"test.json: 00000.wav: {why}")):
        load_asr_task(path)
    with pytest.raises(TaskFormatError, match="empty transcript"):
        tone_task(tmp_path, {"train": ["ab", " "], "valid": ["a"], "test": ["b"]}, name="u")
