"""Bootstrap intervals and paired comparisons (evaluate/bootstrap.py), through `audiorep evaluate` too."""
import json

import numpy as np
import pytest

from audiorep.evaluate import bootstrap as bs
from audiorep.evaluate import cli
from audiorep.evaluate import events as ev
from audiorep.evaluate.metrics import RESAMPLED, SCENE_METRICS
from test_evaluate_e2e import tasks, tiny_hear_module  # noqa: F401 -- fixtures


def predictions(correct: np.ndarray, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(probs, one-hot targets) whose top-1 is right exactly where `correct` is."""
    n = len(correct)
    label = np.arange(n) % classes
    guess = np.where(correct, label, (label + 1) % classes)
    return np.eye(classes)[guess] * 0.9 + 0.05, np.eye(classes)[label]


def test_hand_computed_case():
    probs, y = predictions(np.array([True, False, True, True]))
    ids = np.array([[0, 0, 0, 0], [1, 1, 2, 3], [0, 1, 2, 3]])  # all right; the wrong clip twice; the set itself
    assert RESAMPLED["top1_acc"](probs, y, ids).tolist() == [1.0, 0.5, 0.75]
    assert bs.interval(np.arange(101)) == pytest.approx([2.5, 97.5])  # numpy's linear percentiles of 0..100
    assert bs.interval([np.nan, 1.0, np.inf, 1.0]) == [1.0, 1.0]  # non-finite replicates are dropped
    d = bs.paired([0.8, 0.65, 0.9, 0.8], [0.7, 0.7, 0.8, 0.6])  # differences .1, -.05, .1, .2
    assert d["difference"] == pytest.approx(0.0875) and d["p_better"] == pytest.approx(0.75)
    assert d["interval"] == pytest.approx([-0.05 + 0.075 * 0.15, 0.1 + 0.925 * 0.1])  # sorted -.05 .1 .1 .2
    assert not d["significant"]  # the interval reaches below 0
    tie = bs.paired([0.8, 0.7], [0.7, 0.7])  # a tie counts half
    assert tie["p_better"] == pytest.approx(0.75)
    lower = bs.paired([0.1, 0.2], [0.3, 0.4], maximize=False)  # an error rate: lower is better
    assert lower["p_better"] == 1.0 and lower["significant"]


def test_draws_are_shared_by_every_model_and_differ_between_splits():
    assert (bs.draws(50, 20, "task/fold00") == bs.draws(50, 20, "task/fold00")).all()
    assert not (bs.draws(50, 20, "task/fold00") == bs.draws(50, 20, "task/fold01")).all()


def test_interval_covers_the_true_accuracy_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    covered = 0
    for trial in range(200):
        probs, y = predictions(rng.random(200) < 0.7)
        low, high = bs.interval(RESAMPLED["top1_acc"](probs, y, bs.draws(200, 400, f"coverage/{trial}")))
        covered += low <= 0.7 <= high
    assert 0.89 <= covered / 200 <= 0.99, covered


def test_paired_test_rarely_separates_two_equally_good_models():
    rng = np.random.default_rng(1)
    positives = 0
    for trial in range(200):
        ids = bs.draws(150, 400, f"pair/{trial}")
        a = RESAMPLED["top1_acc"](*predictions(rng.random(150) < 0.7), ids)
        b = RESAMPLED["top1_acc"](*predictions(rng.random(150) < 0.7), ids)
        positives += bs.paired(a, b)["significant"]
    assert positives / 200 <= 0.09, positives  # nominal 5%
    same = RESAMPLED["top1_acc"](*predictions(rng.random(150) < 0.7), bs.draws(150, 400, "same"))
    d = bs.paired(same, same)
    assert d["difference"] == 0 and d["p_better"] == 0.5 and not d["significant"]


@pytest.mark.parametrize("metric", ["event_onset_200ms_fms", "segment_1s_er"])
def test_event_resamples_equal_the_metric_on_the_resampled_files(metric):
    labels = ["a", "b"]
    reference = {"f1": [{"label": "a", "start": 100, "end": 900}], "f2": [{"label": "b", "start": 0, "end": 2000}],
                 "f3": [{"label": "a", "start": 500, "end": 700}, {"label": "b", "start": 1500, "end": 2500}]}
    estimated = {"f1": [{"label": "a", "start": 150, "end": 950}], "f2": [{"label": "a", "start": 0, "end": 2000}],
                 "f3": [{"label": "b", "start": 1550, "end": 2400}]}
    files, counts = ev.metric_counts(metric, reference, estimated, labels)
    assert files == ["f1", "f2", "f3"]
    for ids in ([0, 0, 2], [1, 1, 1], [2, 0, 1]):  # a file drawn twice counts twice
        ref = {f"{k}:{files[i]}": reference[files[i]] for k, i in enumerate(ids)}
        est = {f"{k}:{files[i]}": estimated[files[i]] for k, i in enumerate(ids)}
        expected = ev.event_metric(metric, ref, est, labels)["score"]
        assert ev.score_of_counts(metric, counts[ids].sum(0)) == pytest.approx(expected)


def test_evaluate_reports_intervals_and_paired_comparisons(tasks, tmp_path, tiny_hear_module):  # noqa: F811
    out = tmp_path / "run"
    argv = ["--model", tiny_hear_module, "--tasks", str(tasks), "--out", str(out), "--max-epochs", "4",
            "--grid-points", "1", "--bootstrap", "200", "--compare", "logmel", "tiny_hear"]
    assert cli.main(argv) == 0
    doc = json.loads((out / "results.json").read_text())
    for model in ("tiny_hear", "logmel"):
        for task, r in doc["results"][model].items():
            low, high = r["bootstrap"]["interval"]
            assert len(r["bootstrap"]["replicates"]) == 200, (model, task)
            if np.isnan(r["score"]):  # no event found at all: F is undefined (sed_eval), so is its interval
                assert np.isnan(low) and np.isnan(high)
            else:
                assert low <= r["score"] + 0.1 and high >= r["score"] - 0.1 and low <= high, (model, task)
        assert doc["overall_means"][model]["interval"][0] <= doc["overall_means"][model]["mean"] + 1e-9
    (comparison,) = doc["comparisons"]
    assert comparison["a"] == "logmel" and set(comparison["tasks"]) == {"tones", "bursts"}
    tones = doc["results"]
    diff = np.array(tones["logmel"]["tones"]["bootstrap"]["replicates"]) - tones["tiny_hear"]["tones"]["bootstrap"]["replicates"]
    assert comparison["tasks"]["tones"]["difference"] == pytest.approx(diff.mean(), abs=1e-5)
    report = (out / "report.md").read_text()
    assert "## Paired comparisons" in report and "| logmel | tiny_hear | all tasks |" in report
    assert "**" in report  # the best model of each task is marked


def test_compare_names_must_be_evaluated_models(tasks, tmp_path, tiny_hear_module, capsys):  # noqa: F811
    with pytest.raises(SystemExit):
        cli.main(["--model", tiny_hear_module, "--tasks", str(tasks), "--out", str(tmp_path / "x"),
                  "--compare", "logmel", "nobody"])
    assert "no model labelled 'nobody'" in capsys.readouterr().err
    assert not (tmp_path / "x" / "results.json").exists()


@pytest.mark.parametrize("few_groups", [0, 256])  # counted by cumsums / by matrix products
@pytest.mark.parametrize("name", sorted(RESAMPLED))
def test_resampled_metrics_equal_the_metric_on_each_resample(name, few_groups, monkeypatch):
    """Every scene metric on many resamples at once equals the metric on each resampled set
    (ties, a class without positives in some resamples, the chunking of large tasks)."""
    from audiorep.evaluate import metrics
    rng = np.random.default_rng(1)
    n, classes = 40, 5
    probs = np.round(rng.random((n, classes)), 1)  # many tied scores
    y = np.eye(classes)[rng.integers(0, classes, n)]
    y[:, 4] = 0
    y[[3, 7], 4] = 1  # a rare class: absent from some resamples
    if name == "mAP":
        y = np.maximum(y, rng.random((n, classes)) < 0.2)  # multi-label
    ids = bs.draws(n, 64, f"equal/{name}")
    expected = []
    for i in ids:
        with np.errstate(invalid="ignore", divide="ignore"):
            expected.append(SCENE_METRICS[name](probs[i], y[i]))
    monkeypatch.setattr(metrics, "CHUNK", 7 * n)  # 7 resamples at a time
    monkeypatch.setattr(metrics, "FEW_GROUPS", few_groups)
    got = RESAMPLED[name](probs, y, ids)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12, equal_nan=True)
    if name in ("aucroc", "d_prime"):
        assert np.isnan(got).any() and np.isfinite(got).any()  # the rare class's absence is NaN, as the kit's
