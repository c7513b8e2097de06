"""Scene metrics against scikit-learn and hand values; event metrics and post-processing
against sed_eval / scipy and hand-made cases."""
import math
import sys
import types

import numpy as np
import pytest

from audiorep.evaluate import events as ev
from audiorep.evaluate import metrics


def test_top1_chroma_hand_values():
    target = np.eye(24)[[0, 1, 13, 5]]
    pred = np.eye(24)[[0, 2, 1, 17]] + 0.01  # right, wrong, octave error, octave error
    assert metrics.top1_acc(pred, target) == 0.25
    assert metrics.chroma_acc(pred, target) == 0.75


@pytest.mark.parametrize("ties", [False, True])
def test_map_auc_dprime_match_sklearn(ties):
    from scipy import stats
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(0)
    target = (rng.random((60, 5)) < 0.3).astype(np.float32)
    target[0], target[1] = 1, 0  # every class has positives and negatives
    pred = rng.random((60, 5))
    if ties:
        pred = np.round(pred, 1)
    assert metrics.mean_average_precision(pred, target) == pytest.approx(
        average_precision_score(target, pred, average="macro"), abs=1e-12)
    assert metrics.aucroc(pred, target) == pytest.approx(roc_auc_score(target, pred, average="macro"), abs=1e-12)
    d = np.mean(stats.norm().ppf(roc_auc_score(target, pred, average=None)) * np.sqrt(2))
    assert metrics.d_prime(pred, target) == pytest.approx(d, abs=1e-9)


def test_roc_scores_nan_for_single_valued_class():
    target = np.array([[1, 0], [1, 0], [1, 1]], dtype=np.float32)
    assert math.isnan(metrics.d_prime(np.random.rand(3, 2), target))


def test_median_filter_matches_scipy():
    from scipy.ndimage import median_filter

    x = np.random.default_rng(1).random((37, 3))
    for width in (1, 2, 4, 5, 10):
        np.testing.assert_array_equal(ev.median_filter(x, width), median_filter(x, size=(width, 1)))


def test_frames_to_events_hand_case():
    ts = np.arange(12) * 50.0  # ms
    p = np.zeros((12, 2))
    p[2:7, 0] = 0.9   # 100..300 ms: 200 ms long
    p[9, 0] = 0.9     # one frame: 0 ms long, dropped by any min duration > 0
    p[4:7, 1] = 0.6   # 200..300 ms: 100 ms
    out = ev.frames_to_events(p, ts, ["a", "b"], median_filter_ms=0, min_duration=100)
    assert out == [{"label": "a", "start": 100.0, "end": 300.0}, {"label": "b", "start": 200.0, "end": 300.0}]
    assert ev.frames_to_events(p, ts, ["a", "b"], 0, 125) == [{"label": "a", "start": 100.0, "end": 300.0}]
    # a 150 ms median filter (3 frames) closes a one-frame gap and removes the lone frame
    q = np.zeros((12, 1))
    q[[2, 3, 5, 6], 0] = 0.9
    q[9, 0] = 0.9
    assert ev.frames_to_events(q, ts, ["a"], 150, 0) == [{"label": "a", "start": 100.0, "end": 300.0}]
    # shuffled rows give the same events
    perm = np.random.default_rng(0).permutation(12)
    assert ev.frames_to_events(p[perm], ts[perm], ["a", "b"], 0, 100) == out


def _sed_eval():
    """sed_eval imports dcase_util, which imports pkg_resources (gone from setuptools >= 81): a stub
    with the two functions it calls at import time is enough for the metrics."""
    if "pkg_resources" not in sys.modules:
        try:
            import pkg_resources  # noqa: F401
        except ImportError:
            stub = types.ModuleType("pkg_resources")
            stub.require = lambda *a, **k: []
            stub.parse_requirements = lambda *a, **k: []
            stub.resource_filename = lambda *a, **k: ""
            sys.modules["pkg_resources"] = stub
    return pytest.importorskip("sed_eval")


def _random_events(rng, files, labels, n):
    out = {}
    for f in files:
        evs = []
        for _ in range(rng.integers(0, n)):
            s = float(np.round(rng.uniform(0, 9000), -1))
            evs.append({"label": labels[rng.integers(len(labels))], "start": s, "end": s + float(rng.uniform(20, 1500))})
        out[f] = evs
    return out


def _sed_eval_scores(sed_eval, metric_cls, params, reference, estimated, labels):
    import dcase_util

    def container(x):
        return dcase_util.containers.MetaDataContainer([
            {"event_label": e["label"], "event_onset": e["start"] / 1000.0, "event_offset": e["end"] / 1000.0,
             "file": f} for f, evs in x.items() for e in evs])

    ref, est = container(reference), container(estimated)
    m = metric_cls(event_label_list=labels, **params)
    for f in estimated:
        m.evaluate(reference_event_list=ref.filter(filename=f), estimated_event_list=est.filter(filename=f))
    return m.results_overall_metrics()


def _jitter(rng, e):
    start = max(0.0, e["start"] + float(rng.normal(0, 80)))
    return {**e, "start": start, "end": max(start + 10, e["end"] + float(rng.normal(0, 150)))}


@pytest.mark.parametrize("name", ["event_onset_200ms_fms", "event_onset_50ms_fms", "event_onset_offset_50ms_20perc_fms"])
def test_event_based_matches_sed_eval(name):
    sed_eval = _sed_eval()
    rng = np.random.default_rng(3)
    labels = ["dog", "car", "bell"]
    files = [f"{i}.wav" for i in range(8)]
    reference = _random_events(rng, files, labels, 12)
    # estimates: jittered copies of the references (so collars matter) plus random ones
    estimated = {f: [_jitter(rng, e) for e in evs if rng.random() < 0.8] + _random_events(rng, [f], labels, 4)[f]
                 for f, evs in reference.items()}
    kind, params = ev.EVENT_METRICS[name]
    kit_params = {"evaluate_onset": True, "evaluate_offset": False, **params}  # as hear-eval-kit passes them
    ours = ev.event_metric(name, reference, estimated, labels)
    theirs = _sed_eval_scores(sed_eval, sed_eval.sound_event.EventBasedMetrics, kit_params, reference, estimated,
                              labels)
    f = theirs["f_measure"]
    assert ours["score"] == pytest.approx(f["f_measure"], abs=1e-12)
    assert ours["precision"] == pytest.approx(f["precision"], abs=1e-12)
    assert ours["recall"] == pytest.approx(f["recall"], abs=1e-12)


def test_segment_error_rate_matches_sed_eval():
    sed_eval = _sed_eval()
    rng = np.random.default_rng(4)
    labels = ["dog", "car", "bell"]
    files = [f"{i}.wav" for i in range(6)]
    reference = _random_events(rng, files, labels, 8)
    estimated = _random_events(rng, files, labels, 8)
    theirs = _sed_eval_scores(sed_eval, sed_eval.sound_event.SegmentBasedMetrics, {"time_resolution": 1.0},
                              reference, estimated, labels)
    assert ev.segment_error_rate(reference, estimated, labels) == pytest.approx(
        theirs["error_rate"]["error_rate"], abs=1e-12)


def test_event_matching_is_maximum_not_greedy():
    # est 0 could take ref 0 or 1; greedy-by-reference would give 1 match, optimal gives 2
    reference = {"f": [{"label": "a", "start": 0, "end": 100}, {"label": "a", "start": 300, "end": 400}]}
    estimated = {"f": [{"label": "a", "start": 150, "end": 250}, {"label": "a", "start": 490, "end": 600}]}
    s = ev.event_based_scores(reference, estimated, ["a"], t_collar=0.2)
    assert s["f_measure"] == 1.0
    assert math.isnan(ev.event_based_scores(reference, {"f": []}, ["a"], 0.2)["precision"])
