"""One-line errors everywhere: a refused pickle shows the unpickler's reason (never torch's
advice to load it anyway), an offline command says what to do in one line, and
`python -m audiorep` reads a folder in the working directory as the console script does."""
from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys

import numpy as np
import soundfile as sf
import torch

from audiorep import cli


class RunsCode:
    def __reduce__(self):
        return (print, ("this must never be printed",))


def test_refused_pickle_shows_the_reason_and_no_advice(tmp_path, capsys):
    cases = {"call.pt": {"model": {"w": torch.zeros(1)}, "x": RunsCode()},
             "global.pt": {"model": {"w": torch.zeros(1)}, "when": datetime.date(2020, 1, 1)}}
    reasons = {"call.pt": "GLOBAL print", "global.pt": "GLOBAL datetime.date"}
    for name, content in cases.items():
        torch.save(content, tmp_path / name)
        code = cli.main(["convert", str(tmp_path / name), "--preset", "audiomae-tiny", "--out", str(tmp_path / "o")])
        captured = capsys.readouterr()
        err = captured.err
        assert code == 2 and err.count("\n") == 1 and "never be printed" not in captured.out + err
        assert "refused by the weights-only unpickler" in err and reasons[name] in err
        assert "weights_only" not in err and "trust" not in err and "safe_globals" not in err
        assert not (tmp_path / "o").exists()


def test_offline_encodecmae_pretrain_is_one_line(tmp_path, capsys, monkeypatch):
    """The default targets need EnCodec's weights; offline, the command prints one line saying what to use."""
    import transformers

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files.\nCheck your connection.")

    monkeypatch.setattr(transformers.EncodecModel, "from_pretrained", offline)
    for i in range(2):
        noise = 0.1 * np.random.default_rng(i).standard_normal(24000)
        sf.write(tmp_path / f"{i}.wav", noise.astype("float32"), 24000)
    code = cli.main(["pretrain", "encodecmae", "--preset", "encodecmae-tiny", "--data", str(tmp_path),
                     "--out", str(tmp_path / "run"), "steps=1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("audiorep pretrain: error: cannot load facebook/encodec_24khz")
    assert "objective.targets=encodec_random" in err[0]


def test_python_m_reads_a_folder_in_the_working_directory_as_a_path(tmp_path):
    """`python -m audiorep evaluate --model RUN` with RUN in the working directory evaluates that
    folder (an importable namespace package under `python -m` before the fix)."""
    from audiorep.models import load
    from audiorep.tasks.importer import import_task

    load("audiomae-tiny", random_init=True).save(tmp_path / "RUN")
    t = np.arange(8000) / 16000
    for label, hz in (("a", 200), ("b", 500)):
        (tmp_path / "src" / label).mkdir(parents=True)
        for i in range(3):
            sf.write(tmp_path / "src" / label / f"{i}.wav", 0.1 * np.sin(2 * np.pi * (hz + 10 * i) * t), 16000)
    import_task(tmp_path / "src", tmp_path / "tasks" / "ab", folds=3)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "audiorep", "evaluate", "--model", "RUN", "--tasks", "tasks",
                           "--out", "eval", "--mode", "knn", "--no-references"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert not results.get("failed"), results.get("failed")
    assert (tmp_path / "eval" / "embeddings" / "RUN" / "ab").is_dir()
