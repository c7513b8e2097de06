"""`audiorep embed` never maps two inputs to one output: same stem with another extension,
one name in two given folders, names that flatten alike, a name that looks like another
output; the index names each output's source, and a later run into the same folder never
overwrites an earlier source's output."""
import json

import numpy as np
import pytest

import audiorep
from audiorep import audio, cli
from test_safety_fs import changed_outside, tree

SR = 16000


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    audiorep.load("audiomae-tiny").save(folder)
    return folder


def clip(path, freq):
    t = np.arange(SR // 2) / SR
    audio.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), SR)


def embed(model, *args):
    return cli.main(["embed", *map(str, args), "--model", str(model), "--kind", "timestamp"])


def check_outputs(out, encoder):
    """Every index entry's outputs exist, belong to no other entry and hold its source's embedding."""
    index = json.loads((out / "index.json").read_text())
    names = [n for rec in index["files"].values() for n in (rec["npy"], rec["timestamps_ms"])]
    assert len(names) == len(set(names))
    for source, rec in index["files"].items():
        wave, _ = audio.read(source)
        emb, ts = audiorep.timestamp_embeddings(encoder, wave, SR)
        np.testing.assert_allclose(np.load(out / rec["npy"]), emb[0].numpy(), atol=1e-5)
        np.testing.assert_allclose(np.load(out / rec["timestamps_ms"]), ts[0].numpy())
    return index


def test_colliding_inputs_get_outputs_of_their_own(model, tmp_path, one_thread):
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    sources = {a / "dog.wav": 200, a / "dog.flac": 300, b / "dog.wav": 400, a / "x" / "y.wav": 500,
               a / "x__y.wav": 600, a / "z.wav": 700, a / "z.timestamps_ms.wav": 800, a / ".dog.npy.tmp.wav": 900}
    for path, freq in sources.items():
        clip(path, freq)
    before = tree(tmp_path)
    assert embed(model, a, b, "--out", out) == 0
    assert changed_outside(before, tree(tmp_path), "out") == []
    index = check_outputs(out, audiorep.load(str(model)))
    assert set(index["files"]) == {str(p) for p in sources}
    assert index["files"][str(a / "z.wav")]["npy"] == "z.npy"  # plain names stay plain when nothing clashes
    name = {p: index["files"][str(p)]["npy"] for p in sources}
    assert name[a / "dog.flac"] == "dog.flac.npy"  # the extension tells same stems apart
    assert all(name[p].startswith("dog.wav-") for p in (a / "dog.wav", b / "dog.wav"))  # then the source's hash
    assert name[a / "x" / "y.wav"] != name[a / "x__y.wav"]
    assert name[a / "z.timestamps_ms.wav"].startswith("z.timestamps_ms-")


def test_a_later_run_never_overwrites_an_earlier_sources_output(model, tmp_path, one_thread):
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    clip(a / "dog.wav", 200)
    clip(b / "dog.wav", 900)
    assert embed(model, a, "--out", out) == 0
    first = (out / "dog.npy").read_bytes()
    assert embed(model, b, "--out", out) == 0
    assert (out / "dog.npy").read_bytes() == first
    index = check_outputs(out, audiorep.load(str(model)))
    assert set(index["files"]) == {str(a / "dog.wav"), str(b / "dog.wav")}


def test_a_file_given_twice_is_embedded_once(model, tmp_path, one_thread):
    clip(tmp_path / "a" / "dog.wav", 200)
    assert embed(model, tmp_path / "a", tmp_path / "a" / "dog.wav", "--out", tmp_path / "out") == 0
    assert sorted(p.name for p in (tmp_path / "out").glob("*.npy")) == ["dog.npy", "dog.timestamps_ms.npy"]
