"""Invalid values are refused at the boundary, naming the field: embedding settings (Python
and `--set`), sample rates of the wrong type, audio arrays of a non-PCM dtype; integer PCM
arrays are scaled as audio.read scales the same samples from a file."""
import numpy as np
import pytest
import soundfile as sf
import torch

import audiorep
from audiorep import audio, cli
from audiorep.data import manifest_clips
from audiorep.encoder import EmbedConfig
from test_safety_fs import changed_outside, tree

SR = 16000


@pytest.fixture(scope="module")
def model():
    return audiorep.load("audiomae-tiny")


@pytest.mark.parametrize("field, value", [
    ("levels", ()), ("levels", ("M", "M")), ("levels", ("X",)), ("levels", "LM"), ("layers", (-1,)),
    ("layers", (1.5,)), ("rf_ms", ()), ("rf_ms", (0.0,)), ("rf_ms", (float("nan"),)), ("hop_ms", 0.0),
    ("hop_ms", -5.0), ("hop_ms", "10"), ("scene_hop_s", 0.0), ("scene_window_s", -1.0), ("batch_size", 0),
    ("batch_size", 2.5), ("batch_size", True), ("timestamps", "frames"), ("scene_pad", "zeros")])
def test_embed_settings_are_checked_by_field(field, value):
    with pytest.raises(ValueError, match=f"EmbedConfig.{field}="):
        EmbedConfig(**{field: value})


@pytest.mark.parametrize("setting, field", [("hop_ms=0", "hop_ms"), ("batch_size=0", "batch_size"),
                                            ("rf_ms=-160", "rf_ms"), ("levels=M,M", "levels"), ("layers=7", "layers"),
                                            ("levels=H", "levels"), ("hop_ms=0.05", "hop_ms")])
def test_embed_command_refuses_bad_settings_in_one_line_writing_nothing(tmp_path, capsys, setting, field, one_thread):
    audio.write(tmp_path / "src" / "a.wav", np.zeros(SR // 2, np.float32), SR)
    before = tree(tmp_path)
    code = cli.main(["embed", str(tmp_path / "src"), "--model", "audiomae-tiny", "--out", str(tmp_path / "out"),
                     "--set", setting])
    err = capsys.readouterr().err.strip()
    assert code == 2 and f"EmbedConfig.{field}=" in err and "\n" not in err
    assert changed_outside(before, tree(tmp_path)) == []


@pytest.mark.parametrize("rate", [16000.5, "16000", None, 0, -16000, True])
def test_sample_rates_of_the_wrong_type_or_value_are_refused(model, rate):
    with pytest.raises(ValueError, match="sample_rate="):
        audiorep.scene_embeddings(model, np.zeros(SR, np.float32), rate)


def test_whole_float_and_numpy_integer_rates_are_accepted(model):
    wave = np.random.default_rng(0).uniform(-0.5, 0.5, SR).astype(np.float32)
    ref = audiorep.scene_embeddings(model, wave, SR)
    torch.testing.assert_close(audiorep.scene_embeddings(model, wave, 16000.0), ref)
    torch.testing.assert_close(audiorep.scene_embeddings(model, wave, np.int64(SR)), ref)


@pytest.mark.parametrize("subtype, dtype", [("PCM_16", np.int16), ("PCM_32", np.int32), ("PCM_U8", np.uint8)])
def test_integer_pcm_is_scaled_as_reading_the_same_samples_from_a_file(tmp_path, subtype, dtype):
    info = np.iinfo(dtype)
    pcm = np.random.default_rng(1).integers(info.min, info.max, SR, dtype=dtype, endpoint=True)
    stored = (pcm.astype(np.int16) - 128) * 256 if dtype == np.uint8 else pcm  # soundfile writes no uint8 arrays
    sf.write(tmp_path / "x.wav", stored, SR, subtype=subtype)
    np.testing.assert_array_equal(audio.as_float(pcm), audio.read(tmp_path / "x.wav")[0])


def test_int16_arrays_and_tensors_embed_like_their_file(model, tmp_path):
    pcm = np.random.default_rng(2).integers(-20000, 20000, SR).astype(np.int16)
    sf.write(tmp_path / "x.wav", pcm, SR, subtype="PCM_16")
    ref = audiorep.scene_embeddings(model, audio.read(tmp_path / "x.wav")[0], SR)
    torch.testing.assert_close(audiorep.scene_embeddings(model, pcm, SR), ref)
    torch.testing.assert_close(audiorep.scene_embeddings(model, torch.from_numpy(pcm), SR), ref)


@pytest.mark.parametrize("dtype", [np.int64, np.bool_, np.complex64, object])
def test_non_pcm_dtypes_are_refused(model, dtype):
    with pytest.raises(audio.AudioError, match=f"dtype {np.dtype(dtype)}"):
        audiorep.scene_embeddings(model, np.zeros(SR, dtype=dtype), SR)


@pytest.mark.parametrize("row, why", [("a.wav,-1,,x", "offset=-1.0: expected seconds >= 0"),
                                      ("a.wav,0,0,x", "duration=0.0: expected seconds > 0"),
                                      ("a.wav,0,nan,x", "duration=nan"), ("a.wav,zero,,x", "bad offset")])
def test_manifest_offsets_and_durations_are_checked_by_row(tmp_path, row, why):
    (tmp_path / "m.csv").write_text(f"path,offset,duration,labels\n{row}\n")
    with pytest.raises(ValueError, match=f"m.csv:2: {why}"):
        manifest_clips(tmp_path / "m.csv")


@pytest.mark.parametrize("option, value", [("--grid-points", "0"), ("--seeds", "0"), ("--max-epochs", "-3"),
                                           ("--batch-seconds", "0")])
def test_evaluator_settings_are_refused_naming_the_option(tmp_path, capsys, option, value):
    before = tree(tmp_path)
    with pytest.raises(SystemExit) as stop:
        cli.main(["evaluate", "--model", "logmel", "--tasks", str(tmp_path), "--out", str(tmp_path / "out"),
                  option, value])
    assert stop.value.code == 2 and f"{option} {float(value) if option == '--batch-seconds' else value}: expected" \
        in capsys.readouterr().err
    assert changed_outside(before, tree(tmp_path)) == []


def test_a_hop_shorter_than_one_sample_is_refused_when_given(model):
    """audiomae-tiny runs at 16 kHz: one sample is 0.0625 ms (rounded up to a whole sample before)."""
    from dataclasses import replace

    with pytest.raises(ValueError, match=r"EmbedConfig.hop_ms=0.05: shorter than one sample at 16000 Hz"):
        audiorep.Encoder(replace(model.config, embed=EmbedConfig(hop_ms=0.05)))
    assert audiorep.Encoder(replace(model.config, embed=EmbedConfig(hop_ms=0.0625))).config.embed.hop_ms == 0.0625
    with pytest.raises(ValueError, match=r"EmbedConfig.hop_ms=0.05: shorter than one sample"):  # the API's own cfg too
        audiorep.timestamp_embeddings(model, torch.zeros(16000), 16000, EmbedConfig(hop_ms=0.05))


def test_max_epochs_below_a_tasks_validation_interval_is_refused_before_any_work(tmp_path, capsys):
    import json

    from audiorep.evaluate.cli import check_epochs
    from audiorep.tasks.importer import import_task

    for label in ("a", "b"):
        for i in range(3):
            audio.write(tmp_path / "src" / label / f"{i}.wav", np.zeros(SR // 4, np.float32), SR)
    task = import_task(tmp_path / "src", tmp_path / "tasks" / "ab").path
    before = tree(tmp_path)
    with pytest.raises(SystemExit) as stop:
        cli.main(["evaluate", "--model", "logmel", "--tasks", str(tmp_path / "tasks"), "--out", str(tmp_path / "out"),
                  "--max-epochs", "2"])
    assert stop.value.code == 2
    assert "--max-epochs 2: task ab validates every 3 epochs (check_val_every_n_epoch)" in capsys.readouterr().err
    assert changed_outside(before, tree(tmp_path)) == []
    meta = json.loads((task / "task_metadata.json").read_text())
    meta["evaluation_params"] = {"task_specific_param_grid": {"check_val_every_n_epoch": [1]}}
    (task / "task_metadata.json").write_text(json.dumps(meta))
    check_epochs(task, 2)  # validated every epoch: 2 epochs are fine
