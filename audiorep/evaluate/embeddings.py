"""Embedding step: a task's audio through any HEAR API module, cached in the HEAR kit's layout.

Models are named on the command line as
    passt-s, runs/x          an audiorep preset or saved encoder (module audiorep.hear)
    hearbaseline.naive       any importable HEAR module (load_model() without a path)
    some.module:FILE         a HEAR module with model_file_path FILE
    logmel                   the built-in log-mel statistics baseline
    random:SPEC              SPEC with random weights (load_model(..., random_init=True))
    NAME=SPEC                any of these, shown as NAME in the results and the report
Without NAME a model is shown as the preset, the module, or the last part of its path
(runs/x/final -> final; module:FILE -> module:FILE's file name).

For each split of a task the folder `<out>/embeddings/<model>/<task>/` holds what
hear-eval-kit's `heareval.predictions.runner` reads (and writes):
    task_metadata.json (with "splits"), labelvocabulary.csv, <split>.json (copies)
    <split>.embeddings.npy             raw float32 rows (the kit's np.memmap, no .npy header)
    <split>.embedding-dimensions.json  [rows, dim]
    <split>.target-labels.pkl          list (per row) of label lists, for the kit
    <split>.target-labels.json         the same as JSON, which we read
    <split>.filename-timestamps.json   event tasks: [["<split>/<file>", ms], ...] per row
    <split>.filenames.json             scene tasks: the file of each row (ours; the kit ignores it)
A row is a file (scene) or a timestamp of a file (event); files are in a fixed shuffled
order (seed 0) as in the kit. The dimensions file is written last: a split with it is
complete and is skipped on reruns; an interrupted split is redone.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import io
import json
import os
import pickle
import random
import re
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from audiorep import audio
from audiorep.files import write_bytes, write_json
from audiorep.tasks.format import METADATA_FILE, VOCABULARY_FILE, Task

BATCH_SECONDS = 120.0  # audio per model call (the kit's estimate: 0.7 * 120 s at 16 kHz)
LOGMEL = "audiorep.evaluate.logmel"
AUDIOREP_HEAR = "audiorep.hear"
EVENT_END_SLACK_MS = 1e-4  # the kit labels a frame at t with events start <= t < end + 1e-4


class EmbeddingError(RuntimeError):
    """A model or an embeddings folder that cannot be used; the message names it and the problem."""


# ---------------------------------------------------------------- models


@dataclass(frozen=True)
class ModelSpec:
    module: str
    path: str
    random_init: bool
    label: str  # the name shown in results and the report
    name: str   # folder-safe form of the label, used in the output tree

    @property
    def is_audiorep(self) -> bool:
        return self.module == AUDIOREP_HEAR

    def random_reference(self) -> "ModelSpec":
        """The same model with random weights (an audiorep model's built-in reference)."""
        return replace(self, random_init=True, label=f"random-{self.label}", name=f"random-{self.name}")


def _is_hear_module(name: str) -> bool:
    if not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", name):
        return False
    if name in sys.modules:
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def folder_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", label).strip("_.") or "model"


def parse_model(spec: str) -> ModelSpec:
    named = re.fullmatch(r"([^=/:\\]+)=(.+)", spec)
    label, spec = (named.group(1).strip(), named.group(2)) if named else (None, spec)
    random_init = spec.startswith("random:")
    body = spec[len("random:"):] if random_init else spec
    if body == "logmel":
        module, path, default = LOGMEL, "", "logmel"
    elif ":" in body and _is_hear_module(body.split(":", 1)[0]):
        module, path = body.split(":", 1)
        default = f"{module}:{Path(path).name}"
    elif _is_hear_module(body):
        module, path, default = body, "", body
    else:
        module, path, default = AUDIOREP_HEAR, body, Path(body).name or body
    label = label or (f"random-{default}" if random_init else default)
    return ModelSpec(module, path, random_init, label, folder_name(label))


def load_hear_model(spec: ModelSpec, device: str = "cpu") -> tuple[Any, Any]:
    """-> (HEAR module, model on `device`)."""
    module = importlib.import_module(spec.module)
    for fn in ("load_model", "get_scene_embeddings", "get_timestamp_embeddings"):
        if not hasattr(module, fn):
            raise EmbeddingError(f"{spec.module}: not a HEAR API module (no {fn})")
    kwargs = {"random_init": True} if spec.random_init else {}
    try:
        model = module.load_model(spec.path, **kwargs) if spec.path else module.load_model(**kwargs)
    except TypeError as e:
        if spec.random_init:
            raise EmbeddingError(f"{spec.module}.load_model does not take random_init ({e})") from None
        raise
    if isinstance(model, torch.nn.Module):
        model = model.to(device).eval()
    for attr in ("sample_rate", "scene_embedding_size", "timestamp_embedding_size"):
        if not hasattr(model, attr):
            raise EmbeddingError(f"{spec.module}: model has no {attr} (HEAR API)")
    return module, model


# ---------------------------------------------------------------- writing


def _frame_labels(events: list[dict], timestamps: np.ndarray) -> list[list[str]]:
    """Labels active at each timestamp [T] (ms)."""
    out: list[list[str]] = [[] for _ in timestamps]
    for ev in events:
        hit = np.flatnonzero((timestamps >= ev["start"]) & (timestamps < ev["end"] + EVENT_END_SLACK_MS))
        for t in hit:
            out[t].append(ev["label"])
    return out


def _audio_source(task: Task, sample_rate: int) -> int:
    """The task's audio folder to read for a model at `sample_rate` (resampled if not present)."""
    rates = task.sample_rates
    if not rates:
        raise EmbeddingError(f"{task.path}: no audio folder named by a sample rate")
    return sample_rate if sample_rate in rates else max(rates)


def _batches(names: list[str], task: Task, split: str, source_rate: int, sample_rate: int,
             batch_seconds: float):
    """Yield (names, audio [n, S]) of equal-length clips, about `batch_seconds` of audio each."""
    names_b: list[str] = []
    waves: list[np.ndarray] = []

    def flush():
        by_len: dict[int, list[int]] = {}
        for i, w in enumerate(waves):
            by_len.setdefault(len(w), []).append(i)
        for idx in by_len.values():
            yield [names_b[i] for i in idx], np.stack([waves[i] for i in idx])

    for name in names:
        wave, _ = audio.read(task.audio_path(split, name, source_rate), sample_rate)
        names_b.append(name)
        waves.append(wave)
        if sum(len(w) for w in waves) >= batch_seconds * sample_rate:
            yield from flush()
            names_b, waves = [], []
    if waves:
        yield from flush()


def _embed_split(task: Task, split: str, module: Any, model: Any, out: Path, device: str,
                 batch_seconds: float) -> None:
    event = task.embedding_type == "event"
    entries = task.splits[split]
    names = sorted(entries)
    random.Random(0).shuffle(names)
    source = _audio_source(task, model.sample_rate)
    raw = out / f".{split}.embeddings.npy.partial"
    rows, dim = 0, None
    labels: list[Any] = []
    where: list[Any] = []
    with open(raw, "wb") as f, torch.no_grad():
        for batch_names, wave in tqdm(_batches(names, task, split, source, model.sample_rate, batch_seconds),
                                      desc=f"{task.name}/{split}", leave=False):
            x = torch.from_numpy(wave).to(device)
            if event:
                emb, ts = module.get_timestamp_embeddings(x, model)
                emb, ts = emb.float().cpu().numpy(), ts.double().cpu().numpy()  # [n, T, D], [n, T]
                if emb.ndim != 3 or ts.shape != emb.shape[:2]:
                    raise EmbeddingError(f"{module.__name__}: timestamp embeddings {emb.shape} and timestamps "
                                         f"{ts.shape} do not match [n, T, D] / [n, T]")
                for name, e, t in zip(batch_names, emb, ts):
                    if not (np.isfinite(t).all() and (np.diff(t) > 0).all()):
                        raise EmbeddingError(f"{module.__name__}: timestamps of {split}/{name} do not increase "
                                             f"(first ones: {t[:4].tolist()} ms); frame labels would be wrong")
                    labels += _frame_labels(entries[name], t)
                    where += [[f"{split}/{name}", float(v)] for v in t]
                emb = emb.reshape(-1, emb.shape[-1])
            else:
                emb = module.get_scene_embeddings(x, model).float().cpu().numpy()  # [n, D]
                if emb.ndim != 2 or len(emb) != len(batch_names):
                    raise EmbeddingError(f"{module.__name__}: scene embeddings {emb.shape}, expected "
                                         f"[{len(batch_names)}, D]")
                labels += [list(entries[n]) for n in batch_names]
                where += batch_names
            if not np.isfinite(emb).all():
                raise EmbeddingError(f"{module.__name__}: NaN/Inf embeddings for {task.name}/{split} "
                                     f"(files {batch_names[:3]}...)")
            if dim is not None and emb.shape[1] != dim:
                raise EmbeddingError(f"{module.__name__}: embedding size changed from {dim} to {emb.shape[1]}")
            dim = emb.shape[1]
            rows += len(emb)
            f.write(np.ascontiguousarray(emb, dtype=np.float32).tobytes())
    os.replace(raw, out / f"{split}.embeddings.npy")
    write_bytes(out / f"{split}.target-labels.pkl", pickle.dumps(labels, protocol=4))
    write_json(out / f"{split}.target-labels.json", labels)
    write_json(out / (f"{split}.filename-timestamps.json" if event else f"{split}.filenames.json"), where)
    write_json(out / f"{split}.embedding-dimensions.json", [rows, dim])


def embed_task(task: Task, spec: ModelSpec, out: Path, device: str = "cpu",
               batch_seconds: float = BATCH_SECONDS, loaded: tuple[Any, Any] | None = None) -> dict:
    """Embed every split of `task` not yet in `out`; -> info (model, seconds per split).

    `loaded` = (module, model) reuses a model loaded once for several tasks.
    """
    todo = prepare_task(task, spec, out)
    if todo:
        loaded = loaded or load_hear_model(spec, device)
    done = {split: embed_split(task, split, out, device, batch_seconds, loaded) for split in todo}
    return record_task(spec, out, done)


def prepare_task(task: Task, spec: ModelSpec, out: Path) -> list[str]:
    """Make `out` ready for `task`'s embeddings by `spec` (a folder made from another model or
    task content is removed; metadata, vocabulary, split files and the cache key are written
    when a split is missing) -> the splits still to embed. The splits can then be embedded by
    different processes (`embed_split`), and their infos recorded by one (`record_task`)."""
    key = cache_key(task, spec)
    if out.exists() and not cached(task, spec, out, key, complete=False):  # another model or task content
        print(f"{out}: made from another model or task content; embedding again", file=sys.stderr)
        shutil.rmtree(out)
    todo = [s for s in task.split_names if not split_complete(out, s)]
    if todo:
        out.mkdir(parents=True, exist_ok=True)
        meta = dict(task.metadata)
        meta.setdefault("splits", task.split_names)
        write_json(out / METADATA_FILE, meta)
        shutil.copyfile(task.path / VOCABULARY_FILE, out / VOCABULARY_FILE)
        for split in todo:
            shutil.copyfile(task.path / f"{split}.json", out / f"{split}.json")
        info_path = out / "embedding-info.json"
        info = json.loads(info_path.read_text()) if info_path.exists() else {"seconds": {}}
        write_json(info_path, {**info, "cache_key": key})  # finished splits are kept when a run is interrupted
    return todo


def embed_split(task: Task, split: str, out: Path, device: str, batch_seconds: float,
                loaded: tuple[Any, Any]) -> dict:
    """Embed one split of a prepared folder with `loaded` = (module, model) -> {seconds, sample_rate}."""
    start = time.perf_counter()
    _embed_split(task, split, *loaded, out, device, batch_seconds)
    return {"seconds": time.perf_counter() - start, "sample_rate": int(loaded[1].sample_rate)}


def record_task(spec: ModelSpec, out: Path, done: dict[str, dict]) -> dict:
    """Add the splits embedded now (`done`: split -> embed_split's info) to the folder's
    embedding-info.json -> the info (model, seconds per split)."""
    info_path = out / "embedding-info.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {"seconds": {}}
    if done:
        info["seconds"].update({split: d["seconds"] for split, d in done.items()})
        info.update(model=spec.name, module=spec.module, model_file_path=spec.path, random_init=spec.random_init,
                    sample_rate=next(iter(done.values()))["sample_rate"])
        write_json(info_path, info)
    return info


MODEL_FILES = ("config.json", "model.safetensors", "encoder/config.json", "encoder/model.safetensors")


def model_stamps(path: str) -> list:
    """(name, size, mtime) of the files holding a model's weights: the file itself, an
    audiorep encoder or run folder's encoder files, else every file under the folder."""
    p = Path(path) if path else None
    if p is None or not p.exists():
        return []  # a preset or a module's own model: named by module and path
    if p.is_file():
        files = [p]
    else:
        files = [p / n for n in MODEL_FILES if (p / n).is_file()] or sorted(f for f in p.rglob("*") if f.is_file())
    return [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def _source_stamp(module: str) -> list:
    """[source file, size, mtime] of an importable module (Nones when it has no file)."""
    loaded = sys.modules.get(module)
    origin = getattr(loaded, "__file__", None)
    if loaded is None:
        try:
            found = importlib.util.find_spec(module)
            origin = found.origin if found else None
        except (ImportError, ValueError):
            origin = None
    stat = Path(origin).stat() if origin and Path(origin).is_file() else None
    return [origin, stat.st_size if stat else None, stat.st_mtime_ns if stat else None]


def module_stamp(module: str) -> list:
    """The HEAR module's source file and those of the packages above it (path, size, mtime:
    `audiorep.hear.passt.base` is one line, its behaviour lives in `audiorep.hear.passt`), and
    its distribution's version, so embeddings of edited or upgraded model code are not reused."""
    parts = module.split(".")
    try:
        version = importlib.metadata.version(parts[0])
    except importlib.metadata.PackageNotFoundError:
        version = None
    parents = [".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]
    return _source_stamp(module) + [version] + [_source_stamp(p) for p in parents]


def cache_key(task: Task, spec: ModelSpec) -> str:
    """sha256 of what a task's embeddings depend on: the model (module with its source file and
    version, path, random init, its weight files' sizes and mtimes) and the task (metadata,
    vocabulary, split files, and the size and mtime of every listed audio file)."""
    model = [spec.module, module_stamp(spec.module), spec.path, spec.random_init, model_stamps(spec.path)]
    h = hashlib.sha256(json.dumps(model).encode())
    for name in [METADATA_FILE, VOCABULARY_FILE] + [f"{s}.json" for s in task.split_names]:
        h.update(name.encode() + b"\0" + (task.path / name).read_bytes())
    for split in task.split_names:
        for rel, _ in task.items(split):
            st = (task.path / rel).stat()
            h.update(f"{rel} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def cached(task: Task, spec: ModelSpec, out: Path, key: str | None = None, complete: bool = True) -> bool:
    """Whether `out` holds embeddings of this task's content by this model (every split when
    `complete`): only those are reused."""
    info_path = out / "embedding-info.json"
    try:
        same = json.loads(info_path.read_text()).get("cache_key") == (key or cache_key(task, spec))
    except (OSError, ValueError, AttributeError):
        same = not any(out.glob("*.embedding-dimensions.json"))  # nothing finished yet: nothing to doubt
    return same and (not complete or all(split_complete(out, s) for s in task.split_names))


def split_complete(out: Path, split: str) -> bool:
    dims = out / f"{split}.embedding-dimensions.json"
    if not dims.exists():
        return False
    n, d = json.loads(dims.read_text())
    data = out / f"{split}.embeddings.npy"
    return data.exists() and data.stat().st_size == n * d * 4


# ---------------------------------------------------------------- reading


@dataclass
class SplitEmbeddings:
    x: np.ndarray                    # [N, D] float32
    labels: list[list[str]]          # per row
    files: list[str] | None          # the file of each row (event tasks; scene tasks embedded by us)
    timestamps: np.ndarray | None    # event tasks: [N] ms


class _LabelUnpickler(pickle.Unpickler):
    """Reads the kit's label pickles (lists of strings) and refuses anything else."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a labels pickle")


def _read_labels(emb_dir: Path, split: str) -> list[list[str]]:
    path = emb_dir / f"{split}.target-labels.json"
    if path.exists():
        return json.loads(path.read_text())
    pkl = emb_dir / f"{split}.target-labels.pkl"
    if not pkl.exists():
        raise EmbeddingError(f"{path}: missing (and no {pkl.name})")
    try:
        return _LabelUnpickler(io.BytesIO(pkl.read_bytes())).load()
    except pickle.UnpicklingError as e:
        raise EmbeddingError(f"{pkl}: {e}") from None


def load_split(emb_dir: Path, split: str, event: bool) -> SplitEmbeddings:
    """One split of an embeddings folder (ours or the kit's) into memory."""
    dims_path = emb_dir / f"{split}.embedding-dimensions.json"
    if not dims_path.exists():
        raise EmbeddingError(f"{dims_path}: missing (split {split!r} not embedded)")
    n, d = json.loads(dims_path.read_text())
    path = emb_dir / f"{split}.embeddings.npy"
    if not path.exists() or path.stat().st_size != n * d * 4:
        raise EmbeddingError(f"{path}: expected {n} x {d} float32 values as in {dims_path.name}")
    x = np.fromfile(path, dtype=np.float32).reshape(n, d)
    labels = _read_labels(emb_dir, split)
    if len(labels) != n:
        raise EmbeddingError(f"{emb_dir}/{split}.target-labels: {len(labels)} rows, embeddings have {n}")
    files = timestamps = None
    names_path = emb_dir / f"{split}.filenames.json"  # ours; the kit's scene folders lack it
    if not event and names_path.exists():
        files = [f"{split}/{name}" for name in json.loads(names_path.read_text())]
    if event:
        ft_path = emb_dir / f"{split}.filename-timestamps.json"
        if not ft_path.exists():
            raise EmbeddingError(f"{ft_path}: missing (needed for event tasks)")
        pairs = json.loads(ft_path.read_text())
        if len(pairs) != n:
            raise EmbeddingError(f"{ft_path}: {len(pairs)} rows, embeddings have {n}")
        files = [Path(p[0]).name for p in pairs]
        timestamps = np.array([p[1] for p in pairs], dtype=np.float64)
    return SplitEmbeddings(x, labels, files, timestamps)


def multi_hot(labels: list[list[str]], vocabulary: list[str], where: str) -> np.ndarray:
    """Label lists per row -> [N, C] float32 0/1."""
    index = {str(label): i for i, label in enumerate(vocabulary)}
    counts = np.fromiter((len(row) for row in labels), dtype=np.int64, count=len(labels))
    try:
        cols = np.fromiter((index[str(x)] for row in labels for x in row), dtype=np.int64, count=int(counts.sum()))
    except KeyError as e:
        raise EmbeddingError(f"{where}: label {e.args[0]!r} is not in {VOCABULARY_FILE}") from None
    y = np.zeros((len(labels), len(vocabulary)), dtype=np.float32)
    y[np.repeat(np.arange(len(labels)), counts), cols] = 1.0
    return y
