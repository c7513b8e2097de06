"""CTC decoding and ASR metrics.

Greedy: the most likely symbol of every frame, repeats merged, blanks dropped, "|" read as a
space. With an n-gram language model (an ARPA file, or KenLM's binary of one): beam search
through `pyctcdecode` + `kenlm` (`pip install audiorep[asr]`, imported only when a language
model is given), lexicon-free, score = log p(CTC) + alpha log p(LM) + beta * words.
Metrics through `jiwer`: WER over words and CER over characters (spaces included), both
corpus-level (total edits over total reference length, as s3prl), and per utterance counts
so that bootstrap resamples of utterances re-add them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from audiorep.tasks.asr_task import WORD_BOUNDARY

from .asr_head import BLANK

KENLM_BINARY_MAGIC = b"mmap lm "


class LanguageModelError(ValueError):
    """An ARPA file that is missing or cannot be read; the message names it."""


def greedy(log_probs: np.ndarray, vocabulary: list[str]) -> str:
    """[T, V + 1] (index 0 the blank, i the symbol vocabulary[i - 1]) -> text."""
    best = log_probs.argmax(-1)
    ids = [int(s) for k, s in enumerate(best) if s != BLANK and (k == 0 or s != best[k - 1])]
    return "".join(" " if vocabulary[i - 1] == WORD_BOUNDARY else vocabulary[i - 1] for i in ids).strip()


def check_arpa(path: str | Path) -> Path:
    """The file exists and starts as an ARPA file ("\\data\\" then "ngram N=count" lines) or a
    KenLM binary; LanguageModelError naming it otherwise."""
    path = Path(path)
    if not path.is_file():
        raise LanguageModelError(f"{path}: language model file missing")
    with open(path, "rb") as f:
        head = f.read(4096)
    if head.startswith(KENLM_BINARY_MAGIC):
        return path
    lines = [line.strip() for line in head.decode("utf-8", "replace").splitlines() if line.strip()]
    if not lines or lines[0] != "\\data\\" or len(lines) < 2 or not lines[1].startswith("ngram 1="):
        raise LanguageModelError(f"{path}: not an ARPA n-gram file (expected '\\data\\' then 'ngram 1=N' "
                                 f"lines, found {lines[:2]})")
    return path


@dataclass(frozen=True)
class BeamConfig:
    arpa: str
    alpha: float = 0.5        # LM weight (pyctcdecode's default)
    beta: float = 1.0         # word insertion bonus (pyctcdecode's default)
    beam_width: int = 5       # SUPERB's beam


class BeamDecoder:
    def __init__(self, vocabulary: list[str], cfg: BeamConfig):
        path = check_arpa(cfg.arpa)
        try:
            from pyctcdecode import build_ctcdecoder
        except ImportError as e:
            raise ImportError(f"beam search with a language model needs pyctcdecode and kenlm "
                              f"(pip install 'audiorep[asr]'): {e}") from None
        labels = [""] + [" " if c == WORD_BOUNDARY else c for c in vocabulary]  # "" = the blank
        try:
            self.decoder = build_ctcdecoder(labels, kenlm_model_path=str(path), alpha=cfg.alpha, beta=cfg.beta)
        except (OSError, RuntimeError, ValueError) as e:
            raise LanguageModelError(f"{path}: kenlm cannot read it ({e})") from None
        if self.decoder._language_model is None:  # pyctcdecode falls back to no LM when kenlm is absent
            raise ImportError("beam search with a language model needs kenlm (pip install 'audiorep[asr]')")
        self.beam_width = cfg.beam_width

    def __call__(self, log_probs: np.ndarray) -> str:
        return " ".join(self.decoder.decode(log_probs, beam_width=self.beam_width).split())


def _jiwer():
    try:
        import jiwer
    except ImportError as e:
        raise ImportError(f"ASR metrics need jiwer (pip install 'audiorep[asr]'): {e}") from None
    return jiwer


def edit_counts(references: list[str], hypotheses: list[str]) -> dict[str, np.ndarray]:
    """Per utterance: word_errors, words, char_errors, chars [n] each."""
    jiwer = _jiwer()
    out = {k: np.zeros(len(references)) for k in ("word_errors", "words", "char_errors", "chars")}
    for i, (ref, hyp) in enumerate(zip(references, hypotheses)):
        w = jiwer.process_words(ref, hyp)
        c = jiwer.process_characters(ref, hyp)
        out["word_errors"][i] = w.substitutions + w.deletions + w.insertions
        out["words"][i] = w.hits + w.substitutions + w.deletions
        out["char_errors"][i] = c.substitutions + c.deletions + c.insertions
        out["chars"][i] = c.hits + c.substitutions + c.deletions
    return out


def error_rates(references: list[str], hypotheses: list[str]) -> dict[str, float]:
    """Corpus WER and CER (jiwer over all utterances at once)."""
    jiwer = _jiwer()
    return {"wer": float(jiwer.wer(references, hypotheses)), "cer": float(jiwer.cer(references, hypotheses))}


def resampled(counts: dict[str, np.ndarray], ids: np.ndarray, metric: str) -> np.ndarray:
    """WER or CER on each resample of utterances `ids` [b, n] -> [b]."""
    errors, total = ("word_errors", "words") if metric == "wer" else ("char_errors", "chars")
    return counts[errors][ids].sum(1) / counts[total][ids].sum(1)
