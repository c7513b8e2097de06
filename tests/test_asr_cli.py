"""`audiorep evaluate` with ASR tasks beside HEAR tasks, --layer-weights, --lm errors; `tasks import --asr`."""
import json

import numpy as np
import pytest

from audiorep.evaluate import cli as evaluate_cli
from audiorep.tasks import cli as tasks_cli
from audiorep.tasks.format import TaskWriter, make_metadata

from test_asr_import import fake_subset
from test_asr_layers import chirp_task

TINY_ASR = ["--asr-steps", "4", "--asr-eval-every", "2", "--asr-width", "16", "--asr-batch", "4", "--asr-lr", "1e-2"]


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    root, rng = tmp_path_factory.mktemp("tasks"), np.random.default_rng(0)
    chirp_task(root, rng)
    meta = make_metadata("tones", "scene", "multiclass", ["top1_acc"], 0.5)
    with TaskWriter(root / "tones", meta, ["high", "low"]) as w:
        for split in ("train", "valid", "test"):
            for label, f in (("low", 300), ("high", 2500)):
                for _ in range(3):
                    t = np.arange(8000) / 16000
                    wave = 0.3 * np.sin(2 * np.pi * f * t) + 0.01 * rng.standard_normal(8000)
                    w.add(split, wave.astype(np.float32), [label])
    return root


def test_evaluate_runs_asr_tasks_beside_hear_tasks(tasks, tmp_path, one_thread):
    out = tmp_path / "eval"
    rc = evaluate_cli.main(["--model", "random:encodecmae-tiny", "--tasks", str(tasks), "--out", str(out),
                            "--grid-points", "1", "--max-epochs", "3", "--bootstrap", "20", "--layer-weights",
                            *TINY_ASR])
    assert rc == 0
    doc = json.loads((out / "results.json").read_text())
    asr_result = doc["results"]["random-encodecmae-tiny"]["toy"]
    assert asr_result["primary"] == "wer" and asr_result["maximize"] is False and doc["tasks"]["toy"]["warnings"] == []
    assert set(doc["results"]["logmel"]) == {"toy", "tones"}  # the log-mel reference runs the ASR task too
    tones = doc["results"]["random-encodecmae-tiny"]["tones"]
    assert tones["mode"] == "mlp+layer-weights" and len(tones["layer_weights"]) == 3
    assert doc["results"]["logmel"]["tones"]["mode"] == "mlp"  # one layer: the usual probes
    report = (out / "report.md").read_text()
    assert "| toy | wer | speech |" in report
    assert (out / "predictions" / "asr" / "random-encodecmae-tiny" / "toy.layers.png").exists()


def test_a_bad_language_model_stops_before_anything_runs(tasks, tmp_path, capsys):
    bad = tmp_path / "lm.arpa"
    bad.write_text("not an arpa\n")
    for lm, why in ((tmp_path / "none.arpa", "none.arpa: language model file missing"), (bad, "lm.arpa: not an ARPA")):
        with pytest.raises(SystemExit):
            evaluate_cli.main(["--model", "logmel", "--no-references", "--tasks", str(tasks), "--out",
                               str(tmp_path / "o"), "--lm", str(lm)])
        assert why in capsys.readouterr().err
    assert not (tmp_path / "o" / "results.json").exists()


def test_tasks_import_and_check_librispeech_folders(tmp_path, capsys):
    src = tmp_path / "LibriSpeech"
    fake_subset(src, "train-clean-100", {"1-2-0000": "A B", "1-2-0001": ""})
    fake_subset(src, "dev-clean", {"1-2-0002": "B A"})
    fake_subset(src, "test-clean", {"1-2-0003": "AB"})
    assert tasks_cli.main(["import", str(src), str(tmp_path / "ls"), "--asr"]) == 0
    out = capsys.readouterr()
    assert "imported 3 clips" in out.out and "1-2-0001: empty transcript" in out.err
    assert tasks_cli.main(["check", str(tmp_path / "ls")]) == 0
    assert "transcription, 3 characters, 3 clips" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        tasks_cli.main(["import", str(src), str(tmp_path / "x"), "--asr", "dev=dev-clean"])
    assert "SPLIT=FOLDER" in capsys.readouterr().err
