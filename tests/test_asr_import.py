"""LibriSpeech-style folders -> an ASR task, the asr_en builder, bad rows named."""
import numpy as np
import pytest

from audiorep import audio
from audiorep.tasks import suite
from audiorep.tasks.asr_task import check_asr_task, load_asr_task
from audiorep.tasks.format import TaskFormatError
from audiorep.tasks.librispeech import import_librispeech, parse_splits


def fake_subset(root, subset, lines: dict[str, str], missing=(), broken=()):
    chapter = root / subset / "19" / "198"
    chapter.mkdir(parents=True)
    (chapter / "19-198.trans.txt").write_text("".join(f"{u} {t}\n" for u, t in lines.items()))
    for i, uid in enumerate(lines):
        if uid in missing:
            continue
        if uid in broken:
            (chapter / f"{uid}.flac").write_bytes(b"not audio")
        else:
            audio.write(chapter / f"{uid}.flac", 0.1 * np.sin(np.arange(8000 + 100 * i) / 7), 16000)


def test_librispeech_import(tmp_path):
    src = tmp_path / "LibriSpeech"
    fake_subset(src, "train-clean-100", {"19-198-0000": "HE SAID", "19-198-0001": "", "19-198-0002": "NO AUDIO",
                                         "19-198-0003": "IT'S OK"}, missing={"19-198-0002"})
    fake_subset(src, "dev-clean", {"19-198-0010": "SAID HE", "19-198-0011": "BROKEN"}, broken={"19-198-0011"})
    fake_subset(src, "test-clean", {"19-198-0020": "HE'S X"})
    report = import_librispeech(src, tmp_path / "ls")
    assert report.written == 4 and check_asr_task(report.path) == []
    assert any("19-198-0001: empty transcript" in p for p in report.problems)
    assert any("19-198-0002: no audio file" in p for p in report.problems)
    assert any("19-198-0011.flac" in p for p in report.problems)
    task = load_asr_task(report.path)
    assert task.splits["train"] == {"19-198-0000.wav": "HE SAID", "19-198-0003.wav": "IT'S OK"}
    assert task.vocabulary == ["|", "'", "A", "D", "E", "H", "I", "K", "O", "S", "T"]
    assert task.oov("test") == {"19-198-0020.wav": ["X"]}
    strict = import_librispeech(src, tmp_path / "strict", strict=True)  # bad lines: nothing written
    assert strict.path is None and len(strict.problems) == 2 and not (tmp_path / "strict").exists()
    fixed = tmp_path / "fixed"
    fake_subset(fixed, "train-clean-100", {"1-2-0000": "A B"})
    fake_subset(fixed, "dev-clean", {"1-2-0001": "A"}, broken={"1-2-0001"})
    fake_subset(fixed, "test-clean", {"1-2-0002": "B"})
    with pytest.raises(TaskFormatError, match="not written"):  # unreadable audio, found while writing
        import_librispeech(fixed, tmp_path / "strict", strict=True)
    assert not (tmp_path / "strict").exists() and not list(tmp_path.glob(".strict*"))
    with pytest.raises(TaskFormatError, match="other-100: missing"):
        import_librispeech(src, tmp_path / "x", parse_splits(["train=other-100"]))
    with pytest.raises(ValueError, match="SPLIT=FOLDER"):
        parse_splits(["dev=dev-clean"])


def test_asr_en_holds_out_sentences_and_talkers(tmp_path):
    path = suite.build_task("asr_en", tmp_path / "asr_en", seed=0, size="tiny", progress=False)
    task = load_asr_task(path)
    assert check_asr_task(path) == [] and task.metadata["prediction_type"] == "transcription"
    train, test = set(task.splits["train"].values()), set(task.splits["test"].values())
    assert train and test and not train & test
    assert set("".join(train)) <= set("abcdefghijklmnopqrstuvwxyz ")
