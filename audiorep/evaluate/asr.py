"""An ASR task through one model: all-layer frames (cached, memory-mapped) -> SUPERB's CTC head
-> WER/CER on test with a bootstrap interval over utterances.

    OUT/embeddings/<model>/<task>/   task_metadata.json, labelvocabulary.csv, <split>.json and
                                     <split>.layers.* (layer_store.py), embedding-info.json
    OUT/predictions/asr/<model>/<task>.json   the result (also read by the report)

The head is trained on train, the kept check chosen by validation WER (greedy decoding),
test decoded greedily and, with a language model, by beam search; the primary score is
the test WER of the LM decoding when there is one, else of greedy decoding (lower is
better). Characters of valid/test transcripts outside the vocabulary stay in the
references, and are counted and named in the result (`oov`); training utterances too short
for their transcript under CTC are skipped, counted and named (`skipped_too_short`).
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from audiorep import audio
from audiorep.files import write_json
from audiorep.tasks.asr_task import (METADATA_FILE, VOCABULARY_FILE, AsrTask, characters, check_asr_task,
                                     load_asr_task)

from . import asr_decode as dec
from . import bootstrap as bs
from . import layer_store as store
from .asr_head import AsrConfig, log_probs, train_asr
from .embeddings import ModelSpec, cache_key, load_hear_model
from .layer_features import hear_frames, layer_frames, layer_names
from .layer_weights import plot_layer_weights

SPLITS = ("train", "valid", "test")
MAX_NAMED = 20


@dataclass(frozen=True)
class AsrRun:
    head: AsrConfig = field(default_factory=AsrConfig)
    beam: dec.BeamConfig | None = None
    bootstrap: int = bs.N_BOOTSTRAP


# ---------------------------------------------------------------- embedding


def _frames(module, model, path: Path, device: str) -> tuple[np.ndarray, np.ndarray]:
    encoder = getattr(model, "encoder", None)  # an audiorep model: every layer
    if encoder is not None:
        wave, _ = audio.read(path, encoder.sample_rate)
        x, t = layer_frames(encoder, torch.from_numpy(wave))
    else:
        wave, _ = audio.read(path, int(model.sample_rate))
        x, t = hear_frames(module, model, torch.from_numpy(wave).to(device))
    return x.cpu().numpy(), t.cpu().numpy()


def embed_asr_task(task: AsrTask, spec: ModelSpec, out: Path, device: str = "cpu", loaded=None) -> dict:
    """Every split's all-layer frames into `out` (reused when made from the same model and task)."""
    key = cache_key(task, spec)
    info_path = out / "embedding-info.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    if info.get("cache_key") != key and out.exists():
        shutil.rmtree(out)
        info = {}
    info.setdefault("seconds", {})
    todo = [s for s in SPLITS if not store.is_complete(out, s)]
    if todo:
        module, model = loaded or load_hear_model(spec, device)
        encoder = getattr(model, "encoder", None)
        names = layer_names(encoder) if encoder is not None else ["timestamp"]
        out.mkdir(parents=True, exist_ok=True)
        for name in (METADATA_FILE, VOCABULARY_FILE, *(f"{s}.json" for s in SPLITS)):
            shutil.copyfile(task.path / name, out / name)
        for split in todo:
            start = time.perf_counter()
            writer = store.LayerWriter(out, split, names)
            try:
                for clip in sorted(task.splits[split]):
                    writer.add(clip, *_frames(module, model, task.audio_path(split, clip), device))
            except BaseException:
                writer.abort()
                raise
            writer.close()
            info["seconds"][split] = time.perf_counter() - start
        info.update(cache_key=key, model=spec.name, module=spec.module, model_file_path=spec.path,
                    random_init=spec.random_init, layers=names)
        write_json(info_path, info)
    return info


# ---------------------------------------------------------------- evaluation


def _labels(texts: list[str], vocabulary: list[str]) -> list[list[int]]:
    index = {c: i + 1 for i, c in enumerate(vocabulary)}  # 0 is the blank
    return [[index[c] for c in characters(t)] for t in texts]


def _named(names: list[str]) -> dict:
    return {"count": len(names), "clips": names[:MAX_NAMED]}


def evaluate_asr(emb_dir: Path, task: AsrTask, run: AsrRun, out_file: Path) -> dict:
    """Train, select and test the CTC head on one model's stored frames; the result is written
    to `out_file` and reused when made with the same settings and embeddings."""
    info = json.loads((emb_dir / "embedding-info.json").read_text())
    settings = json.loads(json.dumps({**asdict(run), "embeddings": info.get("cache_key")}))
    settings["head"].pop("device")
    if out_file.exists():
        cached = json.loads(out_file.read_text())
        if cached.get("settings") == settings:
            return cached
    start = time.perf_counter()
    data = {s: store.read_layers(emb_dir, s) for s in SPLITS}
    texts = {s: [" ".join(task.splits[s][f].split()) for f in data[s].files] for s in SPLITS}
    vocab = task.vocabulary
    decoder = dec.BeamDecoder(vocab, run.beam) if run.beam else None

    def hypotheses(head, split: str, beam: bool = False) -> list[str]:
        lps = log_probs(head, data[split].frames, len(data[split]), run.head.batch_size)
        return [decoder(lp) if beam else dec.greedy(lp, vocab) for lp in lps]

    train = data["train"]
    seconds = [audio.info(task.audio_path("train", f)).duration for f in train.files] if run.head.bucketing else None
    trained = train_asr(train.frames, train.lengths, _labels(texts["train"], vocab), train.files, len(vocab),
                        lambda head: dec.error_rates(texts["valid"], hypotheses(head, "valid"))["wer"], run.head,
                        seconds)
    decodings = {"greedy": hypotheses(trained.head, "test")}
    if decoder is not None:
        decodings["lm"] = hypotheses(trained.head, "test", beam=True)
    primary = "lm" if decoder is not None else "greedy"
    scores = {}
    for kind, hyps in decodings.items():
        for metric, value in dec.error_rates(texts["test"], hyps).items():
            scores[metric if kind == primary else f"{metric}_{kind}"] = value
    counts = dec.edit_counts(texts["test"], decodings[primary])
    boot = None
    if run.bootstrap:
        reps = dec.resampled(counts, bs.draws(len(texts["test"]), run.bootstrap, f"{task.name}/test"), "wer")
        boot = {"n": run.bootstrap, "level": bs.LEVEL, "interval": bs.interval(reps),
                "replicates": [round(float(v), 6) for v in reps]}
    weights = trained.head.layer_weights.report(data["train"].layers) if trained.head.layer_weights else None
    oov = {s: task.oov(s) for s in ("valid", "test")}
    result = {
        "task": task.name, "embedding_type": "sequence", "primary": "wer", "maximize": False, "mode": "asr",
        "settings": settings, "score": scores["wer"], "score_std": None, "n": 1, "bootstrap": boot,
        "scores": {m: {"mean": v, "std": None, "n": 1} for m, v in scores.items()},
        "decoding": primary, "layer_weights": weights,
        "selection": {"step": trained.step, "val_wer": trained.val_wer,
                      "history": [{"step": s, "train_loss": lo, "val_wer": w} for s, lo, w in trained.history]},
        "skipped_too_short": _named(trained.skipped),
        "oov": {s: {"count": len(v), "clips": dict(list(v.items())[:MAX_NAMED])} for s, v in oov.items()},
        "examples": [{"clip": f, "reference": r, "hypothesis": h} for f, r, h in
                     list(zip(data["test"].files, texts["test"], decodings[primary]))[:10]],
        "embedding_dim": int(data["train"].data.shape[2]),
        "layers": data["train"].layers,
        "train_seconds": trained.seconds, "probe_seconds": time.perf_counter() - start,
    }
    if weights:
        plot_layer_weights({info.get("model", "model"): weights}, out_file.with_suffix(".layers.png"),
                           f"{task.name}: layer weights")
    write_json(out_file, result)
    return result


# ---------------------------------------------------------------- `audiorep evaluate`


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ASR tasks (prediction_type transcription) in `audiorep evaluate`."""
    d = AsrConfig()
    g = p.add_argument_group("ASR tasks (SUPERB's protocol; defaults are SUPERB's)")
    g.add_argument("--lm", help="ARPA n-gram file: test is also decoded by beam search with it, and that WER is "
                                "the score (needs `pip install audiorep[asr]`)")
    g.add_argument("--lm-alpha", type=float, default=dec.BeamConfig.alpha, help="language model weight")
    g.add_argument("--lm-beta", type=float, default=dec.BeamConfig.beta, help="word insertion bonus")
    g.add_argument("--beam", type=int, default=dec.BeamConfig.beam_width, help="beam width")
    g.add_argument("--asr-steps", type=int, default=d.steps)
    g.add_argument("--asr-eval-every", type=int, default=d.eval_every, help="steps between validation checks")
    g.add_argument("--asr-batch", type=int, default=d.batch_size, help="utterances per step")
    g.add_argument("--asr-lr", type=float, default=d.lr)
    g.add_argument("--asr-width", type=int, default=d.lstm_dim, help="projection and LSTM width (SUPERB: 1024)")
    g.add_argument("--asr-no-pair-average", action="store_true", help="keep the encoder's frame rate")
    g.add_argument("--asr-last-layer", action="store_true", help="the last layer only, no learned layer weights")
    g.add_argument("--asr-no-specaug", action="store_true", help="no SpecAugment on the training features")
    g.add_argument("--asr-specaug-max", type=int, nargs=2, metavar=("DIMS", "FRAMES"),
                   help="SpecAugment's mask widths (exclusive bounds; s3prl's 50 40 are sized for 768-1024-dim "
                        "features of ~12 s utterances: scale them to small features or short clips)")
    g.add_argument("--asr-no-bucketing", action="store_true",
                   help="shuffled batches of --asr-batch utterances instead of s3prl's length buckets")


def run_from_args(args: argparse.Namespace) -> AsrRun:
    """ValueError naming the option for a bad value or a bad --lm file."""
    d = AsrConfig()
    specaug = d.specaug
    if args.asr_specaug_max:
        dims, frames = args.asr_specaug_max
        if min(dims, frames) < 0:
            raise ValueError(f"--asr-specaug-max {dims} {frames}: expected widths >= 0")
        specaug = replace(specaug, freq_mask_max=dims, time_mask_max=frames)
    head = AsrConfig(project_dim=args.asr_width, lstm_dim=args.asr_width, lr=args.asr_lr, batch_size=args.asr_batch,
                     steps=args.asr_steps, eval_every=args.asr_eval_every, pair_average=not args.asr_no_pair_average,
                     layer_weights=not args.asr_last_layer, seed=args.seed, device=args.device,
                     specaug=None if args.asr_no_specaug else specaug, bucketing=not args.asr_no_bucketing)
    beam = None
    if args.lm:
        dec.check_arpa(args.lm)
        beam = dec.BeamConfig(str(Path(args.lm).absolute()), args.lm_alpha, args.lm_beta, args.beam)
    return AsrRun(head, beam, args.bootstrap)


def check(path: Path) -> tuple[AsrTask | None, str | None]:
    """-> (task, None) or (None, why it cannot be evaluated), as the CLI's check of HEAR tasks."""
    problems = check_asr_task(path)
    if problems:
        return None, "; ".join(problems[:5]) + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else "")
    return load_asr_task(path), None


def evaluate_task(task: AsrTask, spec: ModelSpec, out: Path, run: AsrRun, device: str = "cpu",
                  loaded=None) -> tuple[dict, dict]:
    """One ASR task for one model under `out` (the evaluate tree) -> (embedding info, result)."""
    key = task.path.name
    emb_dir = out / "embeddings" / spec.name / key
    info = embed_asr_task(task, spec, emb_dir, device, loaded)
    run = replace(run, head=replace(run.head, device=device))
    return info, evaluate_asr(emb_dir, task, run, out / "predictions" / "asr" / spec.name / f"{key}.json")
