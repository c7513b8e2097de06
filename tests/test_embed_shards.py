"""`audiorep embed` over tar shards (WebDataset layout, written by tarfile and by
webdataset.ShardWriter): the embeddings of the same audio given as files; `--format shards`
writes one tar per input shard keyed like it; reruns skip whole shards; bad shards and bad
samples are errors naming the shard and the key while the rest is embedded."""
from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import audiorep
from audiorep import cli
from audiorep.data import is_shards, list_shards
from audiorep.data.shards import ShardError, expand_braces, read_samples

SR = 16000
pytestmark = pytest.mark.usefixtures("one_thread")


def flac(i: int) -> bytes:
    t = np.arange(SR // 4 + 400 * i) / SR
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t)).astype(np.float32), SR, format="FLAC")
    return buf.getvalue()


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def sample(i: int, ext: str = "flac") -> list[tuple[str, bytes]]:
    return [(f"clip{i}.{ext}", flac(i)), (f"clip{i}.json", json.dumps({"labels": [str(i)]}).encode()),
            (f"clip{i}.cls", str(i % 2).encode())]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """shards/000.tar (clip0, clip1), shards/001.tar (clip2, clip3 with its members in a folder);
    the same audio as files; a saved tiny model."""
    root = tmp_path_factory.mktemp("shards")
    write_tar(root / "shards" / "000.tar", sample(0) + sample(1))
    write_tar(root / "shards" / "001.tar", sample(2) + [(f"d/{n}", b) for n, b in sample(3)])
    for i in range(4):
        (root / "files").mkdir(exist_ok=True)
        (root / "files" / f"clip{i}.flac").write_bytes(flac(i))
    audiorep.load("audiomae-tiny").save(root / "model")
    return root


def embed(*args) -> int:
    return cli.main(["embed", *map(str, args)])


def test_shard_samples_embed_like_the_same_audio_as_files(corpus, tmp_path):
    model = corpus / "model"
    assert embed(corpus / "files", "--model", model, "--out", tmp_path / "files", "--kind", "timestamp") == 0
    pattern = str(corpus / "shards" / "{000..001}.tar")  # quoted: expanded by audiorep, as webdataset does
    assert embed(pattern, "--model", model, "--out", tmp_path / "shards", "--kind", "timestamp") == 0
    names = {"000__clip0": "clip0", "000__clip1": "clip1", "001__clip2": "clip2", "001__d__clip3": "clip3"}
    for stem, clip in names.items():
        for suffix in (".npy", ".timestamps_ms.npy"):
            got = (tmp_path / "shards" / f"{stem}{suffix}").read_bytes()
            assert got == (tmp_path / "files" / f"{clip}{suffix}").read_bytes(), stem
    index = json.loads((tmp_path / "shards" / "index.json").read_text())
    assert index["files"] == {} and index["errors"] == {}
    assert set(index["shards"][str(corpus / "shards" / "001.tar")]["samples"]) == {"clip2", "d/clip3"}


def test_format_shards_writes_one_tar_per_input_keyed_like_it_and_skips_done_shards(corpus, tmp_path):
    model, out = corpus / "model", tmp_path / "out"
    shards = [corpus / "shards" / f"00{i}.tar" for i in range(2)]
    assert embed(*shards, "--model", model, "--out", out, "--format", "shards", "--kind", "timestamp") == 0
    assert embed(corpus / "files", "--model", model, "--out", tmp_path / "files", "--kind", "timestamp") == 0
    got = {s["__key__"]: s for s in read_samples(out / "001.tar")}
    assert sorted(got) == ["clip2", "d/clip3"]
    assert set(got["d/clip3"]) == {"__key__", "npy", "timestamps_ms.npy", "json", "cls"}  # audio left out
    assert got["d/clip3"]["npy"] == (tmp_path / "files" / "clip3.npy").read_bytes()
    assert got["clip2"]["timestamps_ms.npy"] == (tmp_path / "files" / "clip2.timestamps_ms.npy").read_bytes()
    assert json.loads(got["clip2"]["json"]) == {"labels": ["2"]} and got["clip2"]["cls"] == b"0"
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["000.tar", "001.tar", "index.json"]

    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    assert embed(*shards, "--model", model, "--out", out, "--format", "shards", "--kind", "timestamp") == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")} == stamps  # whole shards skipped
    os.utime(shards[1], ns=(stamps["001.tar"] + 10**9,) * 2)  # a changed shard is done again, alone
    assert embed(*shards, "--model", model, "--out", out, "--format", "shards", "--kind", "timestamp") == 0
    now = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    assert now["000.tar"] == stamps["000.tar"] and now["001.tar"] != stamps["001.tar"]


def test_webdataset_shardwriter_shards_are_read(corpus, tmp_path):
    wds = pytest.importorskip("webdataset")
    with wds.ShardWriter(str(tmp_path / "wds-%06d.tar"), maxcount=2, verbose=0) as writer:
        for i in range(3):
            writer.write({"__key__": f"clip{i}", "wav": wav_bytes(i), "json": {"i": i}, "txt": f"clip {i}"})
    out = tmp_path / "out"
    assert embed(str(tmp_path / "wds-{000000..000001}.tar"), "--model", corpus / "model", "--out", out,
                 "--format", "shards") == 0
    got = {s["__key__"]: s for name in ("wds-000000.tar", "wds-000001.tar") for s in read_samples(out / name)}
    assert sorted(got) == ["clip0", "clip1", "clip2"] and got["clip2"]["txt"] == b"clip 2"
    x, _ = sf.read(io.BytesIO(wav_bytes(1)), dtype="float32")
    expect = audiorep.scene_embeddings(audiorep.load(str(corpus / "model")), x, SR)[0].numpy()
    np.testing.assert_allclose(np.load(io.BytesIO(got["clip1"]["npy"])), expect, atol=1e-6)


def wav_bytes(i: int) -> bytes:
    x, _ = sf.read(io.BytesIO(flac(i)), dtype="float32")
    buf = io.BytesIO()
    sf.write(buf, x, SR, format="WAV", subtype="FLOAT")
    return buf.getvalue()


def test_bad_samples_and_broken_tars_are_errors_naming_shard_and_key(corpus, tmp_path, capsys):
    src = tmp_path / "src"
    write_tar(src / "a.tar", sample(0) + [("nosound.json", b"{}")] + sample(1)
              + [("two.wav", flac(2)), ("two.flac", flac(2)), ("junk.flac", b"fLaC not really")]
              + [("x/y.flac", flac(3)), ("x__y.flac", flac(3))])
    whole = write_tar(tmp_path / "whole.tar", sample(2) + sample(3)).read_bytes()
    (src / "b.tar").write_bytes(whole[:len(whole) // 2])  # a download cut short
    out = tmp_path / "out"
    assert embed(src / "a.tar", src / "b.tar", "--model", corpus / "model", "--out", out) == 1
    errors = json.loads((out / "index.json").read_text())["errors"]
    a, b = str(src / "a.tar"), str(src / "b.tar")
    assert sorted(errors) == sorted([f"{a}#nosound", f"{a}#two", f"{a}#junk", f"{a}#x__y", b])
    assert "key 'nosound': no audio member (has .json)" in errors[f"{a}#nosound"]
    assert "key 'two': 2 audio members" in errors[f"{a}#two"]
    assert "key 'junk': cannot decode audio (Error opening the member" in errors[f"{a}#junk"]  # no object address
    assert "key 'x__y': its output name a__x__y.npy is taken" in errors[f"{a}#x__y"]
    assert errors[b].startswith(f"{b}: unreadable tar") and "truncated or corrupt" in errors[b]
    assert sorted(p.name for p in out.glob("*.npy")) == ["a__clip0.npy", "a__clip1.npy", "a__x__y.npy", "b__clip2.npy"]
    capsys.readouterr()
    stamp = (out / "a__clip0.npy").stat().st_mtime_ns
    assert embed(src / "a.tar", src / "b.tar", "--model", corpus / "model", "--out", out) == 1  # still reported
    assert json.loads((out / "index.json").read_text())["errors"] == errors
    assert (out / "a__clip0.npy").stat().st_mtime_ns == stamp and "b.tar: unreadable tar" in capsys.readouterr().err


def test_a_tar_without_its_end_is_refused_after_its_complete_samples(tmp_path):
    whole = write_tar(tmp_path / "whole.tar", sample(0) + sample(1)).read_bytes()
    for cut in (len(whole) - 10240, 3 * 512 + len(flac(0)) // 512 * 512):
        (tmp_path / "cut.tar").write_bytes(whole[:cut])
        got = []
        with pytest.raises(ShardError, match="cut.tar: unreadable tar"):
            got.extend(s["__key__"] for s in read_samples(tmp_path / "cut.tar"))
        assert got in ([], ["clip0"])


def test_inputs_that_cannot_be_embedded_as_asked_are_refused(corpus, tmp_path, capsys):
    model = corpus / "model"
    assert embed(corpus / "shards" / "000.tar", corpus / "files", "--model", model, "--out", tmp_path / "o") == 2
    assert "not both" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        embed(corpus / "files", "--model", model, "--out", tmp_path / "o", "--format", "shards")
    assert "--format shards: the inputs are not tar shards" in capsys.readouterr().err
    write_tar(tmp_path / "other" / "000.tar", sample(0))
    other = tmp_path / "other" / "000.tar"
    assert embed(corpus / "shards" / "000.tar", other, "--model", model, "--out", tmp_path / "o") == 2
    assert "two input shards are named 000.tar" in capsys.readouterr().err
    assert embed(corpus / "shards" / "{000..002}.tar", "--model", model, "--out", tmp_path / "o") == 2
    assert "002.tar: no such shard" in capsys.readouterr().err
    assert embed(corpus / "shards" / "000.tar", "--model", model, "--out", corpus / "shards", "--format", "shards") == 2
    assert "holds the input shard" in capsys.readouterr().err
    assert expand_braces("s/{a,b}-{08..10}.tar") == [f"s/{x}-{n}.tar" for x in "ab" for n in ("08", "09", "10")]


def test_training_reads_the_same_brace_patterns(corpus):
    pattern = str(corpus / "shards" / "{000..001}.tar")
    assert is_shards(pattern) and list_shards(pattern) == [corpus / "shards" / f"00{i}.tar" for i in range(2)]
    with pytest.raises(FileNotFoundError, match="002.tar: no such shard"):
        list_shards(str(corpus / "shards" / "{000..002}.tar"))
