"""Broken files give one-line errors naming the file: truncated or foreign weights, non-JSON
configs, a run without an encoder yet, weights holding NaN/Inf, an unreadable newest
checkpoint (the previous one is used, saying so), FIFOs among inputs (skipped, never
opened), truncated WAVs (warned), a command whose optional extra is missing."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

import audiorep
from audiorep import audio, cli
from audiorep.files import checkpoints
from test_safety_fs import changed_outside, tree

SR = 16000


@pytest.fixture
def saved(tmp_path):
    audiorep.load("audiomae-tiny").save(tmp_path / "enc")
    audio.write(tmp_path / "src" / "a.wav", np.zeros(SR // 2, np.float32), SR)
    return tmp_path


def embed_error(root, model, capsys, *extra):
    """(exit code, stderr) of `audiorep embed` with `model`; asserts nothing changed outside out/."""
    before = tree(root)
    code = cli.main(["embed", str(root / "src"), "--model", str(model), "--out", str(root / "out"), *extra])
    assert changed_outside(before, tree(root), "out") == []
    return code, capsys.readouterr().err.strip()


def nan_weights(path):
    state = load_file(str(path))
    name = sorted(k for k, v in state.items() if v.is_floating_point())[0]
    state[name][0] = float("nan")
    save_file(state, str(path), metadata={"format": "audiorep"})
    return name


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:5000]),
     "model.safetensors: not a readable safetensors file"),
    (lambda d: (d / "model.safetensors").write_text("hello"), "model.safetensors: not a readable safetensors file"),
    (lambda d: (d / "config.json").write_text("{not json"), "config.json: not valid JSON"),
    (lambda d: (d / "config.json").write_text('{"backbone": {"kind": "vit", "wings": 2}}'),
     "config.json: not an encoder config"),
    (lambda d: (d / "model.safetensors").unlink(), "not a saved encoder (model.safetensors missing)"),
    (nan_weights, "NaN/Inf values; refusing"),
])
def test_a_broken_encoder_folder_is_named_in_one_line(saved, capsys, damage, message, one_thread):
    damage(saved / "enc") if damage is not nan_weights else damage(saved / "enc" / "model.safetensors")
    code, err = embed_error(saved, saved / "enc", capsys)
    assert code == 2 and message in err and str(saved / "enc") in err and "\n" not in err
    assert not (saved / "out").exists()


def test_weights_with_nan_are_refused_when_given_to_a_preset(saved, capsys, one_thread):
    name = nan_weights(saved / "enc" / "model.safetensors")
    with pytest.raises(ValueError, match=f"model.safetensors: {name} holds 1 NaN/Inf"):
        audiorep.load("audiomae-tiny", weights=str(saved / "enc" / "model.safetensors"))


def test_a_non_checkpoint_file_given_as_weights_is_named(saved, capsys, one_thread):
    (saved / "w.pt").write_text("not a checkpoint")
    code, err = embed_error(saved, "audiomae-tiny", capsys, "--weights", str(saved / "w.pt"))
    assert code == 2 and f"{saved / 'w.pt'}: not a readable weights-only checkpoint" in err and "\n" not in err


def test_a_run_without_an_encoder_yet_is_named(saved, capsys):
    run = saved / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"recipe": "audiomae", "train": {}}))
    code, err = embed_error(saved, run, capsys)
    assert code == 2 and f"{run}: a training run without an encoder yet" in err


def pretrain(root, *extra):
    return cli.main(["pretrain", "audiomae", "--data", str(root / "src"), "--out", str(root / "run"),
                     "--preset", "audiomae-tiny", "steps=3", "batch_size=2", "warmup_steps=1",
                     "checkpoint_every=1", "data.workers=0", "data.crop_s=0.5", *extra])


def test_an_unreadable_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys, one_thread):
    """(that a resumed run ends with the weights of an uninterrupted one is test_train's)"""
    for i in range(3):
        audio.write(tmp_path / "src" / f"{i}.wav", np.random.default_rng(i).uniform(-.3, .3, SR).astype(np.float32), SR)
    assert pretrain(tmp_path, "--stop-after", "2") == 0
    newest = checkpoints(tmp_path / "run")[-1]
    (newest / "objective.pt").write_bytes((newest / "objective.pt").read_bytes()[:1000])  # a torn write
    capsys.readouterr()
    assert pretrain(tmp_path) == 0
    err = capsys.readouterr().err
    assert f"{newest}: unreadable checkpoint" in err and "falling back to the previous one" in err
    assert "from step_0000001" in err and checkpoints(tmp_path / "run")[-1].name == "step_0000003"

    for ckpt in checkpoints(tmp_path / "run"):
        (ckpt / "objective.pt").write_bytes(b"")
    assert pretrain(tmp_path) == 2
    assert f"{tmp_path / 'run' / 'checkpoints'}: no checkpoint is readable" in capsys.readouterr().err


def test_fifos_among_inputs_are_skipped_not_opened(saved, capsys, one_thread):
    os.mkfifo(saved / "src" / "pipe.wav")
    os.mkfifo(saved / "named.wav")
    signal.alarm(120)  # a blocked open would hang here: fail instead
    try:
        code = cli.main(["embed", str(saved / "src"), str(saved / "named.wav"), "--model", str(saved / "enc"),
                         "--out", str(saved / "out")])
    finally:
        signal.alarm(0)
    err = capsys.readouterr().err
    index = json.loads((saved / "out" / "index.json").read_text())
    assert code == 1 and set(index["files"]) == {str(saved / "src" / "a.wav")}
    assert {os.path.basename(k) for k in index["errors"]} == {"pipe.wav", "named.wav"}
    assert f"{saved / 'named.wav'}: not a regular file" in err


def test_a_truncated_wav_is_read_as_far_as_it_goes_with_a_warning(tmp_path):
    audio.write(tmp_path / "x.wav", np.full(SR, 0.25, np.float32), SR)
    data = (tmp_path / "x.wav").read_bytes()
    (tmp_path / "x.wav").write_bytes(data[:len(data) // 2])
    with pytest.warns(UserWarning, match=f"{tmp_path / 'x.wav'}: truncated file"):
        wave, _ = audio.read(tmp_path / "x.wav")
    assert 0 < len(wave) < SR


def test_a_command_whose_optional_extra_is_missing_names_the_extra(tmp_path):
    shadow = tmp_path / "shadow" / "espeakng_loader"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(textwrap.dedent("""\
        raise ModuleNotFoundError("No module named 'espeakng_loader'", name="espeakng_loader")
    """))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "shadow"), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-m", "audiorep", "tasks", "build", str(tmp_path / "suite"), "--tasks",
                           "keywords", "--workers", "1"], capture_output=True, text=True, env=env, timeout=300)
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert last == ("audiorep tasks: error: this command needs the optional package 'espeakng_loader': "
                    "pip install 'audiorep[suite]'")


def test_an_output_folder_that_is_a_file_is_named_in_one_line(saved, capsys):
    (saved / "out").write_text("a file")
    code, err = embed_error(saved, saved / "enc", capsys)
    assert code == 2 and str(saved / "out") in err and "\n" not in err
    assert (saved / "out").read_text() == "a file"
