"""One task's downstream evaluation on cached embeddings: HEAR folds, probe selection, test scores.

As in hear-eval-kit: the grid is searched on the first data split only; the best point
(primary validation score) is then trained on every other split; each split's model is
scored on its test split; scores are averaged over splits (mean and sample std). K-fold
tasks rotate sorted folds: test = fold i, validation = fold i+1 (mod k), train = the rest.
Event tasks choose the post-processing (median filter, min duration) on validation at each
check and test with the one chosen at the kept epoch. What a task's metadata changes, as in
heareval 2021.1.3: `evaluation_params.task_specific_param_grid` (after the kit's own per-task
table KIT_TASK_GRIDS) updates the grid (`probes.hear_grid`), so it can change epochs, the
validation interval, patience, batch size and the model; `use_scoring_for_early_stopping:
false` picks epochs and grid points by validation loss (lower is better) and post-processes
events with the grid's single point; `evaluation_params.event_postprocessing_grid` is the
post-processing grid; `split_mode`, `nfolds` and `splits` give the folds. A finished task's
results file is reused on reruns with the same settings.

The probe trainings of a task are units (`Unit`: a seed's grid point on the first split, or the
chosen point on another split) that ranks of a torchrun evaluate share (`train_units`) and whose
outcomes are kept on disk (probe_parts.py); `assemble` then selects and scores exactly as one
process does: a point draws its init and dropout from its own generator (its grid index), so
its result does not depend on the rank, or the other points, it trained with.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from audiorep.files import write_json
from audiorep.tasks.format import (KFOLD_MODES, METADATA_FILE, VOCABULARY_FILE, multi_hot, param_grid,
                                   postprocessing_grid, read_vocabulary, scoring_for_early_stopping, split_names)

from . import bootstrap as bs
from . import events as ev
from . import probe_parts, probes
from .probe_parts import Unit
from .embeddings import EmbeddingError, load_split
from .metrics import RESAMPLED, SCENE_METRICS

MODES = ("mlp", "linear", "knn")
MINIMIZED = {"segment_1s_er"}
# heareval's TASK_SPECIFIC_PARAM_GRID: grid updates it applies by task name before the metadata's own
KIT_TASK_GRIDS = {"dcase2016_task2": {"check_val_every_n_epoch": [10]}}


@dataclass(frozen=True)
class ProtocolConfig:
    mode: str = "mlp"
    grid_points: int = 8
    seeds: tuple[int, ...] = (42,)
    max_epochs: int | None = None  # a cap on every grid point's max_epochs (None: the grid's own)
    bootstrap: int = bs.N_BOOTSTRAP  # resamples of the test clips for confidence intervals (0 = none)
    device: str = "cpu"


def task_grid(metadata: dict) -> dict[str, list]:
    """What the task changes in the kit's grid: the kit's per-task table, then its metadata."""
    return {**KIT_TASK_GRIDS.get(metadata["task_name"], {}), **param_grid(metadata)}


def grid_overrides(metadata: dict, cfg: ProtocolConfig) -> dict[str, list]:
    """What the task (and the linear mode) change in the kit's grid."""
    return {**task_grid(metadata), **({"hidden_layers": [0]} if cfg.mode == "linear" else {})}


def grid_points(metadata: dict, cfg: ProtocolConfig, seed: int) -> list[probes.GridPoint]:
    """The first `cfg.grid_points` points of the task's grid for `seed`, max_epochs capped by `cfg`."""
    points = probes.hear_grid(cfg.grid_points, seed, grid_overrides(metadata, cfg))
    if cfg.max_epochs is not None:
        points = [replace(p, max_epochs=min(p.max_epochs, cfg.max_epochs)) for p in points]
    return points


def validation_interval(metadata: dict) -> int:
    """The most epochs between two validations of any point of the task's grid."""
    return max({**probes.KIT_GRID, **task_grid(metadata)}["check_val_every_n_epoch"])


def data_splits(metadata: dict) -> list[dict[str, list[str]]]:
    """The kit's train/valid/test rotation."""
    if metadata["split_mode"] == "trainvaltest":
        return [{"train": ["train"], "valid": ["valid"], "test": ["test"]}]
    if metadata["split_mode"] not in KFOLD_MODES:
        raise ValueError(f"unknown split_mode {metadata['split_mode']!r}")
    folds = sorted(split_names(metadata))
    k = len(folds)
    return [{"train": [f for f in folds if f not in (folds[i], folds[(i + 1) % k])],
             "valid": [folds[(i + 1) % k]], "test": [folds[i]]} for i in range(k)]


class TaskData:
    """All splits of one task's embeddings folder in memory, with targets and event references."""

    def __init__(self, emb_dir: Path):
        self.dir = emb_dir
        meta_path = emb_dir / METADATA_FILE
        if not meta_path.exists():
            raise EmbeddingError(f"{meta_path}: missing (not an embeddings folder)")
        self.meta = json.loads(meta_path.read_text())
        self.vocab = read_vocabulary(emb_dir / VOCABULARY_FILE)
        self.event = self.meta["embedding_type"] == "event"
        self.multiclass = self.meta["prediction_type"] == "multiclass"
        self.metrics = list(self.meta["evaluation"])
        self.primary = self.metrics[0]
        self.maximize = self.primary not in MINIMIZED
        self.postprocessing = postprocessing_grid(self.meta)
        self.grid = task_grid(self.meta)
        self.scoring = scoring_for_early_stopping(self.meta)
        names = sorted({s for split in data_splits(self.meta) for part in split.values() for s in part})
        self.splits = {s: load_split(emb_dir, s, self.event) for s in names}
        self.y = {s: multi_hot(d.labels, self.vocab, d.files or [f"{s} row {i}" for i in range(len(d.labels))])
                  for s, d in self.splits.items()}
        if self.event:
            self.index = {s: ev.FrameIndex.build(d.files, d.timestamps) for s, d in self.splits.items()}
            self.reference = {s: json.loads((emb_dir / f"{s}.json").read_text()) for s in names}

    def rows(self, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        if len(names) == 1:
            return self.splits[names[0]].x, self.y[names[0]]
        return (np.concatenate([self.splits[s].x for s in names]), np.concatenate([self.y[s] for s in names]))

    def _events_of(self, names: list[str]) -> tuple[ev.FrameIndex, dict]:
        """Frame index and reference events of one or more splits, rows in `names` order."""
        if len(names) == 1:
            return self.index[names[0]], self.reference[names[0]]
        files = [f for s in names for f in self.splits[s].files]
        stamps = np.concatenate([self.splits[s].timestamps for s in names])
        reference = {k: v for s in names for k, v in self.reference[s].items()}
        return ev.FrameIndex.build(files, stamps), reference

    def score_fn(self, names: list[str]) -> probes.ScoreFn:
        """Primary score of probabilities on the rows of `names`; events: best post-processing."""
        if not self.event:
            metric, y = SCENE_METRICS[self.primary], self.rows(names)[1]
            return lambda probs: (metric(probs, y), None)
        index, reference = self._events_of(names)

        def score(probs: np.ndarray) -> tuple[float, Any]:
            scored = []
            for pp, estimated in ev.postprocess_grid(probs, index, self.vocab, self.postprocessing).items():
                s = ev.event_metric(self.primary, reference, estimated, self.vocab)["score"]
                s = 0.0 if math.isnan(s) else s
                scored.append(((s if self.maximize else -s), pp))
            best, pp = max(scored)  # ties: the larger setting, as the kit's reverse sort
            return (best if self.maximize else -best), pp

        return score

    @property
    def monitor(self) -> str:
        """What picks epochs and grid points, in the kit's log names."""
        return f"val_{self.primary}" if self.scoring else "val_loss"

    def monitor_fn(self, names: list[str]) -> tuple[probes.ScoreFn, bool]:
        """-> (score of validation logits on the rows of `names`, higher is better): the primary score of
        the probabilities, or with use_scoring_for_early_stopping false the loss (events: post-processed
        with the grid's single point)."""
        if self.scoring:
            score = self.score_fn(names)
            return (lambda logits: score(probes.probabilities(torch.from_numpy(logits), self.multiclass).numpy()),
                    self.maximize)
        y = self.rows(names)[1]
        pp = self.postprocessing
        point = (pp["median_filter_ms"][0], pp["min_duration"][0]) if self.event else None
        return (lambda logits: (probes.validation_loss(logits, y, self.multiclass), point)), False

    def _estimated(self, names: list[str], probs: np.ndarray, postprocessing: Any) -> tuple[dict, dict]:
        """(reference, estimated events) of the rows of `names` post-processed with one setting."""
        index, reference = self._events_of(names)
        mf, md = postprocessing
        grid = {"median_filter_ms": [mf], "min_duration": [md]}
        return reference, ev.postprocess_grid(probs, index, self.vocab, grid)[(mf, md)]

    def test_scores(self, names: list[str], probs: np.ndarray, postprocessing: Any) -> dict[str, float]:
        """Every metric of the task on the test rows."""
        if not self.event:
            y = self.rows(names)[1]
            return {m: SCENE_METRICS[m](probs, y) for m in self.metrics}
        reference, estimated = self._estimated(names, probs, postprocessing)
        out = {}
        for m in self.metrics:
            for key, value in ev.event_metric(m, reference, estimated, self.vocab).items():
                if key != "f_measure":  # the score itself
                    out[m if key == "score" else f"{m}_{key}"] = value
        return out

    def replicates(self, names: list[str], probs: np.ndarray, postprocessing: Any, n: int) -> np.ndarray:
        """The primary score on `n` bootstrap resamples of the test split `names` [n]: clips
        (scene tasks) or files (event tasks), drawn alike for every model (bootstrap.py)."""
        key = f"{self.meta['task_name']}/{'|'.join(names)}"
        if not self.event:
            y = self.rows(names)[1]
            return RESAMPLED[self.primary](probs, y, bs.draws(len(y), n, key))
        reference, estimated = self._estimated(names, probs, postprocessing)
        files, counts = ev.metric_counts(self.primary, reference, estimated, self.vocab)  # [F, k]
        return ev.score_of_counts(self.primary, counts[bs.draws(len(files), n, key)].sum(1))  # [n]

    def grid_overrides(self, cfg: ProtocolConfig) -> dict[str, list]:
        return grid_overrides(self.meta, cfg)

    def grid_points(self, cfg: ProtocolConfig, seed: int) -> list[probes.GridPoint]:
        return grid_points(self.meta, cfg, seed)


def plan_units(metadata: dict, cfg: ProtocolConfig) -> tuple[list[Unit], list[Unit]]:
    """-> (the grid points on the first split, the chosen points on the other splits): the second
    list can train only once the first is done. kNN has no units (assemble() runs it)."""
    if cfg.mode == "knn":
        return [], []
    n_splits = len(data_splits(metadata))
    first = [Unit(seed, 0, i) for seed in cfg.seeds for i in range(len(grid_points(metadata, cfg, seed)))]
    return first, [Unit(seed, k, None) for seed in cfg.seeds for k in range(1, n_splits)]


def task_settings(emb_dir: Path, cfg: ProtocolConfig) -> dict:
    """What a task's results depend on besides the task: the settings of `cfg` and the embeddings."""
    settings = json.loads(json.dumps({k: v for k, v in asdict(cfg).items() if k != "device"}))
    info = emb_dir / "embedding-info.json"  # results are reused only for the same embeddings
    settings["embeddings"] = json.loads(info.read_text()).get("cache_key") if info.exists() else None
    return settings


def cached_result(out_file: Path, settings: dict) -> dict | None:
    """The task's results file when it was made with `settings`."""
    if out_file.exists():
        cached = json.loads(out_file.read_text())
        if cached.get("settings") == settings:
            return cached
    return None


def parts_dir(out_file: Path) -> Path:
    return out_file.with_name(out_file.stem + ".points")


def _read_part(parts: Path, settings: dict, cfg: ProtocolConfig, unit: Unit,
               point: probes.GridPoint) -> probe_parts.Part | None:
    return probe_parts.read(parts, unit, probe_parts.key(settings["embeddings"], cfg.mode, unit, point))


def _chosen(meta: dict, cfg: ProtocolConfig, seed: int, parts: Path, settings: dict,
            ) -> tuple[int, list[probe_parts.Part]]:
    """-> (index of the grid point chosen on the first split, the parts of the whole grid)."""
    grid = grid_points(meta, cfg, seed)
    found = [_read_part(parts, settings, cfg, Unit(seed, 0, i), p) for i, p in enumerate(grid)]
    missing = [i for i, part in enumerate(found) if part is None]
    if missing:
        raise RuntimeError(f"{parts}: seed {seed}: grid points {missing} of the first split are not trained")
    maximize = scoring_for_early_stopping(meta) and meta["evaluation"][0] not in MINIMIZED  # as monitor_fn
    return found.index(probes.select_best(found, maximize)), found


def _train_and_write(data: TaskData, cfg: ProtocolConfig, units: list[Unit], points: list[probes.GridPoint],
                     parts: Path, settings: dict) -> None:
    """Train `points` (those of `units`, of one seed and split) together, in one `train_grid` per
    schedule they use, each from its unit's generator; write each one's part."""
    start = time.perf_counter()
    split = data_splits(data.meta)[units[0].split]
    score_fn, maximize = data.monitor_fn(split["valid"])
    train, x_va, x_te = data.rows(split["train"]), data.rows(split["valid"])[0], data.rows(split["test"])[0]
    results: list[probes.ProbeResult | None] = [None] * len(points)
    for schedule in dict.fromkeys(p.schedule for p in points):
        pos = [i for i, p in enumerate(points) if p.schedule == schedule]
        trained = probes.train_grid([points[i] for i in pos], *train, x_va, score_fn, data.multiclass, maximize,
                                    probes.ProbeConfig(seed=units[0].seed, device=cfg.device),
                                    desc=f"{data.meta['task_name']} {'|'.join(split['test'])}",
                                    ids=[units[i].generator for i in pos])
        for i, r in zip(pos, trained):
            results[i] = r
    probs = probes.predict(results, x_te, data.multiclass, cfg.device)  # [R, N, C]
    seconds = (time.perf_counter() - start) / len(points)
    for unit, point, r, p in zip(units, points, results, probs):
        part = probe_parts.Part(asdict(point), r.val_score, r.epoch, r.epochs_run, r.extra, seconds, p)
        probe_parts.write(parts, unit, probe_parts.key(settings["embeddings"], cfg.mode, unit, point), part)


def train_units(emb_dir: Path, cfg: ProtocolConfig, units: list[Unit], parts: Path, settings: dict) -> None:
    """Train those of `units` (of one task) whose part is not on disk yet: a seed's grid points on
    the first split together; a unit of another split once the first split's grid is done. The
    embeddings are read only when something trains."""
    meta = json.loads((emb_dir / METADATA_FILE).read_text())
    data = None
    for seed in dict.fromkeys(u.seed for u in units):
        grid = grid_points(meta, cfg, seed)
        first = [u for u in units if u.seed == seed and u.split == 0
                 and _read_part(parts, settings, cfg, u, grid[u.point]) is None]
        if first:
            data = data or TaskData(emb_dir)
            _train_and_write(data, cfg, first, [grid[u.point] for u in first], parts, settings)
        for u in [u for u in units if u.seed == seed and u.split > 0]:
            chosen = grid[_chosen(meta, cfg, seed, parts, settings)[0]]
            if _read_part(parts, settings, cfg, u, chosen) is None:
                data = data or TaskData(emb_dir)
                _train_and_write(data, cfg, [u], [chosen], parts, settings)


def _run_seed(data: TaskData, cfg: ProtocolConfig, seed: int, parts: Path, settings: dict,
              ) -> tuple[list[dict], dict, list[np.ndarray], float]:
    """-> (test scores per split, selection info, bootstrap replicates per split, probe seconds) for
    one seed, from the trained parts (kNN: trained here)."""
    start = time.perf_counter()
    splits = data_splits(data.meta)
    per_split, selection, boot = [], {}, []
    chosen, seconds = None, 0.0
    if cfg.mode != "knn":
        best, grid_parts = _chosen(data.meta, cfg, seed, parts, settings)
        chosen = grid_points(data.meta, cfg, seed)[best]
        selection["grid"] = [{**part.point, "val_score": part.val_score, "epoch": part.epoch,
                              "epochs_run": part.epochs_run} for part in grid_parts]
        seconds = sum(part.seconds for part in grid_parts)
    for k, split in enumerate(splits):
        x_te = data.rows(split["test"])[0]
        if cfg.mode == "knn":
            train = data.rows(split["train"])
            x_va = data.rows(split["valid"])[0]
            ks = (chosen,) if chosen else probes.KNN_KS
            knn, val, extra = probes.select_knn(*train, x_va, data.score_fn(split["valid"]), data.maximize, ks,
                                                cfg.device)
            chosen = chosen or knn
            probs = probes.knn_probabilities(*train, x_te, (knn,), cfg.device)[0]
            info = {"k": knn, "val_score": val}
        else:
            part = grid_parts[best] if k == 0 else _read_part(parts, settings, cfg, Unit(seed, k, None), chosen)
            if part is None:
                raise RuntimeError(f"{parts}: seed {seed}: split {k} is not trained")
            seconds += part.seconds if k else 0.0
            probs, val, extra = part.probs, part.val_score, part.extra
            info = {"val_score": val, "epoch": part.epoch, "epochs_run": part.epochs_run}
        scores = data.test_scores(split["test"], probs, extra)
        if cfg.bootstrap:
            boot.append(data.replicates(split["test"], probs, extra, cfg.bootstrap))
        per_split.append({"test": "|".join(split["test"]), **info,
                          "postprocessing": list(extra) if extra is not None else None, "scores": scores})
    selection["chosen"] = chosen if isinstance(chosen, int) else asdict(chosen)
    return per_split, selection, boot, seconds + time.perf_counter() - start


def bootstrap_summary(replicates: list[np.ndarray]) -> dict | None:
    """Replicates of every (split, seed) -> the task's: their mean per resample, and its interval."""
    if not replicates:
        return None
    with np.errstate(invalid="ignore"):
        mean = np.mean(np.stack(replicates), axis=0)  # [n]
    return {"n": len(mean), "level": bs.LEVEL, "interval": bs.interval(mean),
            "replicates": [round(float(v), 6) for v in mean]}


def summarize(runs: list[dict]) -> dict[str, dict[str, float]]:
    names = runs[0]["scores"].keys()
    out = {}
    for m in names:
        values = np.array([r["scores"][m] for r in runs], dtype=np.float64)
        with np.errstate(invalid="ignore"):  # d-prime is inf at a perfect AUC, as in the kit
            out[m] = {"mean": float(np.mean(values)),
                      "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
                      "n": int(len(values))}
    return out


def evaluate_task(emb_dir: Path, cfg: ProtocolConfig, out_file: Path) -> dict:
    """Evaluate one embeddings folder in this process; the result is written to `out_file` (and
    reused when it was made with the same settings: mode, grid points, seeds, epoch cap)."""
    settings = task_settings(emb_dir, cfg)
    cached = cached_result(out_file, settings)
    if cached is not None:
        return cached
    if cfg.mode not in MODES:
        raise ValueError(f"mode {cfg.mode!r}: expected one of {MODES}")
    first, rest = plan_units(json.loads((emb_dir / METADATA_FILE).read_text()), cfg)
    train_units(emb_dir, cfg, first + rest, parts_dir(out_file), settings)
    return assemble(TaskData(emb_dir), cfg, settings, out_file)


def assemble(data: TaskData, cfg: ProtocolConfig, settings: dict, out_file: Path) -> dict:
    """The task's result from its trained parts (all of them on disk), written to `out_file`;
    probe_seconds sums the parts' training time and this."""
    parts = parts_dir(out_file)
    runs, selections, replicates, seconds = [], [], [], 0.0
    for seed in cfg.seeds:
        per_split, selection, boot, spent = _run_seed(data, cfg, seed, parts, settings)
        runs += [{**r, "seed": seed} for r in per_split]
        selections.append({"seed": seed, **selection})
        replicates += boot
        seconds += spent
    summary = summarize(runs)
    result = {
        "task": data.meta["task_name"], "embedding_type": data.meta["embedding_type"],
        "primary": data.primary, "maximize": data.maximize, "mode": cfg.mode, "settings": settings,
        "score": summary[data.primary]["mean"], "score_std": summary[data.primary]["std"],
        "n": summary[data.primary]["n"], "bootstrap": bootstrap_summary(replicates),
        "protocol": {"monitor": data.monitor if cfg.mode != "knn" else f"val_{data.primary}",
                     "grid": {**probes.KIT_GRID, **data.grid_overrides(cfg)}, "max_epochs_cap": cfg.max_epochs,
                     "postprocessing_grid": data.postprocessing if data.event else None,
                     "splits": data_splits(data.meta)},
        "scores": summary, "runs": runs, "selection": selections,
        "embedding_dim": int(next(iter(data.splits.values())).x.shape[1]),
        "probe_seconds": seconds,
    }
    write_json(out_file, result)
    return result
