"""`audiorep demo` end to end at the reduced CI size: suite subset, corpus, pretraining, evaluation, report."""
from __future__ import annotations

from audiorep import demo


def test_demo_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert demo.main(["--size", "tiny", "--out", str(out), "--steps", "12"]) == 0
    text = (out / "demo.md").read_text()
    for row in ("| pretrained |", "| random init |", "| log-mel |", "keywords", "sound_classes"):
        assert row in text
    assert "random init on the mean normalized score" in text
    assert (out / "pretrain" / "encoder" / "model.safetensors").exists()
    assert (out / "eval" / "report.md").exists()
