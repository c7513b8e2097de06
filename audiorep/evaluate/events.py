"""Event tasks: frame probabilities -> events (HEAR post-processing) and sed_eval-compatible scores.

Post-processing, per file and label, as in the HEAR kit: frames sorted by timestamp,
median filter over `median_filter_ms` (width = round(ms / mean hop) frames, scipy's
rank filter with mirrored edges), threshold (> 0.5), runs of active frames become events
from the first to the last active timestamp, and events shorter than `min_duration` ms
are dropped. The grid of (median filter, min duration) is chosen on validation.

Scores follow sed_eval's definitions (tests compare with sed_eval):
- event-based (EventBasedMetrics, optimal matching): a reference and an estimated event
  match when labels agree, |onset difference| <= collar and, with offsets,
  |offset difference| <= max(collar, percentage_of_length * reference length); the number
  of true positives is a maximum bipartite matching per file; precision, recall and F are
  micro-averaged over all files (precision is NaN without estimated events, like sed_eval).
- segment-based error rate (SegmentBasedMetrics): per file, events are rasterized on a grid
  of `time_resolution` s (floor(onset) .. ceil(offset)) up to the last offset of either list;
  per segment S = min(Nref, Nsys) - Ntp, D = max(0, Nref - Nsys), I = max(0, Nsys - Nref);
  ER = (S + D + I) / Nref.
Times are in ms at the interface (HEAR), compared in seconds (ms / 1000) as sed_eval does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import product

import numpy as np

Event = dict  # {"label": str, "start": ms, "end": ms}
EventLists = dict  # file name -> [Event]


def median_filter(x: np.ndarray, width: int) -> np.ndarray:
    """[T, C] -> [T, C] median over `width` frames along time (scipy.ndimage.median_filter
    with size (width, 1), mode 'reflect': rank width // 2 of the sorted window)."""
    if width <= 1:
        return x
    before = width // 2
    after = width - 1 - before
    padded = np.pad(x, ((before, after), (0, 0)), mode="symmetric")  # [T + width - 1, C]
    windows = np.lib.stride_tricks.sliding_window_view(padded, width, axis=0)  # [T, C, width]
    return np.partition(windows, before, axis=-1)[..., before]


def frames_to_events(probs: np.ndarray, timestamps: np.ndarray, labels: list[str], median_filter_ms: float,
                     min_duration: float, threshold: float = 0.5) -> list[Event]:
    """Events of one file from its frame probabilities `probs` [T, C] at `timestamps` [T] (ms)."""
    order = np.argsort(timestamps, kind="stable")
    probs, timestamps = probs[order], timestamps[order]
    if median_filter_ms and len(timestamps) > 1:
        probs = median_filter(probs, int(round(median_filter_ms / np.mean(np.diff(timestamps)))))
    active = np.pad(probs > threshold, ((1, 1), (0, 0)))  # [T + 2, C]
    edges = np.diff(active.astype(np.int8), axis=0)  # [T + 1, C]: +1 at run starts, -1 after run ends
    starts_t, starts_c = np.nonzero(edges == 1)
    ends_t, ends_c = np.nonzero(edges == -1)
    # runs pair up in (label, time) order
    by_label_s, by_label_e = np.lexsort((starts_t, starts_c)), np.lexsort((ends_t, ends_c))
    starts_t, starts_c, ends_t = starts_t[by_label_s], starts_c[by_label_s], ends_t[by_label_e] - 1
    start_ms, end_ms = timestamps[starts_t], timestamps[ends_t]
    keep = end_ms - start_ms >= min_duration
    events = [{"label": labels[c], "start": float(s), "end": float(e)}
              for c, s, e in zip(starts_c[keep], start_ms[keep], end_ms[keep])]
    events.sort(key=lambda ev: ev["start"])
    return events


@dataclass
class FrameIndex:
    """Where each file's frames are in a split's rows: rows sorted by (file, timestamp)."""

    names: list[str]         # file names, in order of first appearance
    order: np.ndarray        # [N] row permutation grouping files, time-sorted within a file
    bounds: np.ndarray       # [F + 1] file f is order[bounds[f]:bounds[f + 1]]
    timestamps: np.ndarray   # [N] ms, in `order`

    @classmethod
    def build(cls, files: list[str], timestamps: np.ndarray) -> "FrameIndex":
        names, file_idx = np.unique(np.asarray(files), return_inverse=True)
        first = np.full(len(names), len(files))
        np.minimum.at(first, file_idx, np.arange(len(files)))
        rank = np.argsort(np.argsort(first))  # files in order of first appearance
        order = np.lexsort((timestamps, rank[file_idx]))
        counts = np.bincount(rank[file_idx], minlength=len(names))
        return cls([str(n) for n in names[np.argsort(rank)]], order, np.r_[0, np.cumsum(counts)],
                   np.asarray(timestamps, dtype=np.float64)[order])


def postprocess_grid(probs: np.ndarray, index: FrameIndex, labels: list[str],
                     grid: dict[str, list[float]]) -> dict[tuple, EventLists]:
    """Frame probabilities [N, C] of a split -> {(median_filter_ms, min_duration): {file: events}}."""
    probs = probs[index.order]
    out = {}
    for mf, md in product(grid["median_filter_ms"], grid["min_duration"]):
        out[(mf, md)] = {
            name: frames_to_events(probs[a:b], index.timestamps[a:b], labels, mf, md)
            for name, a, b in zip(index.names, index.bounds[:-1], index.bounds[1:])
        }
    return out


def _as_arrays(events: list[Event], label_index: dict[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (label ids, onsets s, offsets s) of a list of events."""
    lab = np.array([label_index[str(e["label"])] for e in events], dtype=np.int64)
    on = np.array([e["start"] / 1000.0 for e in events], dtype=np.float64)
    off = np.array([e["end"] / 1000.0 for e in events], dtype=np.float64)
    return lab, on, off


def _max_matching(compat: np.ndarray) -> int:
    """Size of a maximum matching of the bipartite graph `compat` [Nref, Nest] (augmenting paths)."""
    match_of_est = np.full(compat.shape[1], -1)
    neighbours = [np.flatnonzero(row) for row in compat]

    def augment(r: int, seen: np.ndarray) -> bool:
        for e in neighbours[r]:
            if not seen[e]:
                seen[e] = True
                if match_of_est[e] < 0 or augment(match_of_est[e], seen):
                    match_of_est[e] = r
                    return True
        return False

    return sum(augment(r, np.zeros(compat.shape[1], bool)) for r in range(compat.shape[0]) if len(neighbours[r]))


def event_counts(reference: EventLists, estimated: EventLists, labels: list[str], t_collar: float,
                 evaluate_offset: bool = False, percentage_of_length: float = 0.5) -> dict[str, np.ndarray]:
    """Per file of either list: [true positives, reference events, estimated events] (sed_eval
    EventBasedMetrics before micro-averaging)."""
    label_index = {str(label): i for i, label in enumerate(labels)}
    out = {}
    for name in sorted(set(reference) | set(estimated)):
        r_lab, r_on, r_off = _as_arrays(reference.get(name, []), label_index)
        e_lab, e_on, e_off = _as_arrays(estimated.get(name, []), label_index)
        n_tp = 0
        if len(r_lab) and len(e_lab):
            compat = (r_lab[:, None] == e_lab[None]) & (np.abs(r_on[:, None] - e_on[None]) <= t_collar)
            if evaluate_offset:
                tolerance = np.maximum(t_collar, percentage_of_length * (r_off - r_on))[:, None]
                compat &= np.abs(r_off[:, None] - e_off[None]) <= tolerance
            n_tp = _max_matching(compat)
        out[name] = np.array([n_tp, len(r_lab), len(e_lab)], dtype=np.float64)
    return out


def f_measure(tp, n_ref, n_sys) -> dict[str, float]:
    """Micro-averaged F-measure, precision and recall from summed counts."""
    precision = tp / n_sys if n_sys else math.nan
    recall = tp / n_ref if n_ref else math.nan
    f = 0.0 if precision == 0 and recall == 0 else 2 * precision * recall / (precision + recall)
    return {"f_measure": float(f), "precision": float(precision), "recall": float(recall)}


def event_based_scores(reference: EventLists, estimated: EventLists, labels: list[str], t_collar: float,
                       evaluate_offset: bool = False, percentage_of_length: float = 0.5) -> dict[str, float]:
    """Micro-averaged event-based F-measure, precision, recall (sed_eval EventBasedMetrics)."""
    counts = event_counts(reference, estimated, labels, t_collar, evaluate_offset, percentage_of_length)
    return f_measure(*sum(counts.values(), np.zeros(3)))


def _event_roll(events: list[Event], label_index: dict[str, int], resolution: float, length: int) -> np.ndarray:
    roll = np.zeros((length, len(label_index)), dtype=bool)  # [segments, C]
    for e in events:
        a = int(math.floor(e["start"] / 1000.0 / resolution))
        b = int(math.ceil(e["end"] / 1000.0 / resolution))
        roll[a:b, label_index[str(e["label"])]] = True
    return roll


def segment_counts(reference: EventLists, estimated: EventLists, labels: list[str],
                   time_resolution: float = 1.0) -> dict[str, np.ndarray]:
    """Per file of either list: [substitutions, deletions, insertions, reference activity]
    (sed_eval SegmentBasedMetrics before summing)."""
    label_index = {str(label): i for i, label in enumerate(labels)}
    out = {}
    for name in sorted(set(reference) | set(estimated)):
        ref, est = reference.get(name, []), estimated.get(name, [])
        last = max([e["end"] / 1000.0 for e in ref + est] + [0.0])
        length = int(math.ceil(last / time_resolution))
        r = _event_roll(ref, label_index, time_resolution, length)
        s = _event_roll(est, label_index, time_resolution, length)
        nr, ns, tp = r.sum(1), s.sum(1), (r & s).sum(1)  # [segments]
        out[name] = np.array([np.sum(np.minimum(nr, ns) - tp), np.sum(np.maximum(0, nr - ns)),
                              np.sum(np.maximum(0, ns - nr)), nr.sum()], dtype=np.float64)
    return out


def error_rate(subs, dels, ins, n_ref) -> float:
    return float((subs + dels + ins) / (n_ref + np.spacing(1)))


def segment_error_rate(reference: EventLists, estimated: EventLists, labels: list[str],
                       time_resolution: float = 1.0) -> float:
    """Overall segment-based error rate (sed_eval SegmentBasedMetrics)."""
    return error_rate(*sum(segment_counts(reference, estimated, labels, time_resolution).values(), np.zeros(4)))


EVENT_METRICS = {
    # name -> (kind, parameters); f-measure metrics also report precision and recall
    "event_onset_200ms_fms": ("event", {"t_collar": 0.2}),
    "event_onset_50ms_fms": ("event", {"t_collar": 0.05}),
    "event_onset_offset_50ms_fms": ("event", {"t_collar": 0.05, "evaluate_offset": True, "percentage_of_length": 0.2}),
    "event_onset_offset_50ms_20perc_fms": ("event", {"t_collar": 0.05, "evaluate_offset": True,
                                                     "percentage_of_length": 0.2}),
    "segment_1s_er": ("segment", {"time_resolution": 1.0}),
}


def metric_counts(name: str, reference: EventLists, estimated: EventLists,
                  labels: list[str]) -> tuple[list[str], np.ndarray]:
    """(files, counts [F, k]): what metric `name` sums over files; `score_of_counts` turns a
    sum of rows into the score (so a bootstrap over files only re-adds rows)."""
    kind, params = EVENT_METRICS[name]
    counts = (segment_counts if kind == "segment" else event_counts)(reference, estimated, labels, **params)
    files = sorted(counts)
    return files, np.stack([counts[f] for f in files]) if files else np.zeros((0, 4 if kind == "segment" else 3))


def score_of_counts(name: str, counts: np.ndarray) -> np.ndarray:
    """Summed counts [..., k] -> primary score [...] of metric `name` (NaN where undefined)."""
    kind, _ = EVENT_METRICS[name]
    with np.errstate(invalid="ignore", divide="ignore"):
        if kind == "segment":
            subs, dels, ins, n_ref = np.moveaxis(counts, -1, 0)
            return (subs + dels + ins) / (n_ref + np.spacing(1))
        tp, n_ref, n_sys = np.moveaxis(counts, -1, 0)
        precision = np.where(n_sys > 0, tp / n_sys, np.nan)
        recall = np.where(n_ref > 0, tp / n_ref, np.nan)
        f = 2 * precision * recall / (precision + recall)
        return np.where((precision == 0) & (recall == 0), 0.0, f)


def event_metric(name: str, reference: EventLists, estimated: EventLists, labels: list[str]) -> dict[str, float]:
    """Score `name` -> {"score": primary value, and the sub-scores}."""
    if name not in EVENT_METRICS:
        raise ValueError(f"unknown event metric {name!r} (known: {', '.join(EVENT_METRICS)})")
    kind, params = EVENT_METRICS[name]
    if kind == "segment":
        return {"score": segment_error_rate(reference, estimated, labels, **params)}
    scores = event_based_scores(reference, estimated, labels, **params)
    return {"score": scores["f_measure"], **scores}
