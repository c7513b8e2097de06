"""HEAR scene and timestamp tasks with a learned layer weighting (`audiorep evaluate --layer-weights`).

For an audiorep encoder, beside the kit's files of its embeddings folder, every row gets the
frames of all layers (layer_features.py, stored by layer_store.py in the kit's row order):
a scene row the per-layer mean of its clip's frames, an event row each layer's frame nearest
its timestamp. The protocol is protocol.py's (same folds, grid points, selection on the first
split, validation monitor, event post-processing, test metrics, bootstrap), with the probe
of each grid point trained by `layer_weights.train_weighted_probe` (a LayerWeights in front
of the HEAR MLP; points are trained one after another, not stacked). The result carries the
softmax layer weights (mean over splits and seeds, and per run) and a plot of them.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from audiorep import audio
from audiorep.embed import nearest
from audiorep.files import write_json
from audiorep.tasks.format import SAMPLE_RATE, Task

from . import layer_store as store
from . import probes
from .embeddings import EmbeddingError, load_split
from .layer_features import layer_frames, layer_names
from .layer_weights import plot_layer_weights, train_weighted_probe
from .protocol import ProtocolConfig, TaskData, bootstrap_summary, data_splits, summarize


def _row_groups(files: list[str], stamps: np.ndarray | None):
    """(file name, its rows' timestamps in ms or None), in row order (an event file's rows are consecutive)."""
    if stamps is None:
        yield from ((Path(f).name, None) for f in files)
        return
    start = 0
    for end in range(1, len(files) + 1):
        if end == len(files) or files[end] != files[start]:
            yield files[start], stamps[start:end]
            start = end


def embed_layers(task: Task, emb_dir: Path, model) -> None:
    """Per-layer rows of every split of an embeddings folder the kit's files are already in."""
    encoder = getattr(model, "encoder", None)
    if encoder is None:
        raise EmbeddingError(f"{type(model).__name__}: layer weights need an audiorep encoder (its layers)")
    event = task.embedding_type == "event"
    rate = SAMPLE_RATE if SAMPLE_RATE in task.sample_rates else max(task.sample_rates)
    for split in task.split_names:
        if store.is_complete(emb_dir, split):
            continue
        rows = load_split(emb_dir, split, event)
        if rows.files is None:
            raise EmbeddingError(f"{emb_dir}/{split}: no file names for the rows (not embedded by audiorep)")
        writer = store.LayerWriter(emb_dir, split, layer_names(encoder))
        try:
            for name, ms in _row_groups(rows.files, rows.timestamps):
                wave, _ = audio.read(task.audio_path(split, name, rate), encoder.sample_rate)
                frames, times = layer_frames(encoder, torch.from_numpy(wave))  # [T, L, D], [T] s
                if ms is None:
                    writer.add(name, frames.mean(0, keepdim=True).numpy(), np.zeros(1))
                else:
                    picked = frames[nearest(times, torch.from_numpy(ms / 1000).to(times.dtype))]
                    writer.add(name, picked.numpy(), ms / 1000)
        except BaseException:
            writer.abort()
            raise
        writer.close()


class LayerTaskData(TaskData):
    """TaskData whose rows are [N, L, D] per-layer arrays."""

    def __init__(self, emb_dir: Path):
        super().__init__(emb_dir)
        self.layers = {s: store.read_layers(emb_dir, s) for s in self.splits}
        for s, d in self.layers.items():
            if d.data.shape[0] != len(self.y[s]):
                raise EmbeddingError(f"{emb_dir}/{s}.layers.json: {d.data.shape[0]} rows, the split has "
                                     f"{len(self.y[s])}")
        self.layer_names = next(iter(self.layers.values())).layers

    def rows(self, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        x = np.concatenate([np.asarray(self.layers[s].data, dtype=np.float32) for s in names])
        return x, np.concatenate([self.y[s] for s in names])


def _train(data: LayerTaskData, split: dict, point: probes.GridPoint, seed: int, device: str):
    """-> (trained WeightedResult, validation extra, test probabilities)."""
    monitor, maximize = data.monitor_fn(split["valid"])
    x_tr, y_tr = data.rows(split["train"])
    x_va, x_te = data.rows(split["valid"])[0], data.rows(split["test"])[0]
    best = train_weighted_probe(x_tr, y_tr, x_va, lambda lg: monitor(lg)[0], data.multiclass, point, seed,
                                maximize, device)
    with torch.no_grad():
        logits_va = best.model(torch.from_numpy(x_va).to(device)).cpu().numpy()
        probs = probes.probabilities(best.model(torch.from_numpy(x_te).to(device)).cpu(), data.multiclass).numpy()
    return best, monitor(logits_va)[1], probs


def evaluate_weighted(emb_dir: Path, cfg: ProtocolConfig, out_file: Path) -> dict:
    """protocol.evaluate_task with layer-weighted probes (mlp and linear modes)."""
    if cfg.mode == "knn":
        raise ValueError("--layer-weights trains the weights with a probe: use --mode mlp or linear, not knn")
    start = time.perf_counter()
    data = LayerTaskData(emb_dir)
    runs, replicates, weights, selections = [], [], [], []
    for seed in cfg.seeds:
        chosen = None
        for split in data_splits(data.meta):
            candidates = [chosen] if chosen else data.grid_points(cfg, seed)
            trained = [(p, *_train(data, split, p, seed, cfg.device)) for p in candidates]
            sign = 1 if data.monitor_fn(split["valid"])[1] else -1  # validation loss: lower is better
            point, best, extra, probs = max(trained, key=lambda t: sign * t[1].val_score)  # ties: the first
            if chosen is None:
                chosen = point
                selections.append({"seed": seed, "chosen": asdict(point),
                                   "grid": [{**asdict(p), "val_score": b.val_score, "epoch": b.epoch}
                                            for p, b, _, _ in trained]})
            w = best.model.layer_weights.report(data.layer_names)
            weights.append(w)
            runs.append({"test": "|".join(split["test"]), "seed": seed, "val_score": best.val_score,
                         "epoch": best.epoch, "layer_weights": w,
                         "scores": data.test_scores(split["test"], probs, extra)})
            if cfg.bootstrap:
                replicates.append(data.replicates(split["test"], probs, extra, cfg.bootstrap))
    summary = summarize(runs)
    mean_weights = {n: round(float(np.mean([w[n] for w in weights])), 6) for n in data.layer_names}
    result = {
        "task": data.meta["task_name"], "embedding_type": data.meta["embedding_type"], "primary": data.primary,
        "maximize": data.maximize, "mode": f"{cfg.mode}+layer-weights", "score": summary[data.primary]["mean"],
        "score_std": summary[data.primary]["std"], "n": summary[data.primary]["n"],
        "bootstrap": bootstrap_summary(replicates), "scores": summary, "runs": runs, "selection": selections,
        "layer_weights": mean_weights, "embedding_dim": int(data.layers[next(iter(data.layers))].data.shape[2]),
        "probe_seconds": time.perf_counter() - start,
    }
    plot_layer_weights({emb_dir.parent.name: mean_weights}, out_file.with_suffix(".layers.png"),
                       f"{data.meta['task_name']}: layer weights")
    write_json(out_file, result)
    return result


def evaluate_task(task: Task, emb_dir: Path, cfg: ProtocolConfig, out_file: Path,
                  load: Callable[[], tuple[Any, Any]]) -> dict:
    """Per-layer rows (the model from `load()` only when some split lacks them), then evaluate_weighted."""
    if not all(store.is_complete(emb_dir, s) for s in task.split_names):
        embed_layers(task, emb_dir, load()[1])
    return evaluate_weighted(emb_dir, cfg, out_file)
