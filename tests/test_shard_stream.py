"""Tar shards as training data: ClipDataset's items (same crops for the same seed, views,
index, start, length), only the crop's span decoded, FLAC or WAV members, and every recipe
pretraining from shards and resuming exactly."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

import audiorep
from audiorep import audio, cli, sizes
from audiorep.commands import pretrain
from audiorep.data import (Clip, ClipDataset, DataConfig, ShardStream, clips_from, list_shards, shard_vocabulary,
                           write_shards)
from audiorep.data import shards as shard_files
from audiorep.data.shards import INDEX_STRIDE, read_samples, tar_writer
from audiorep.objectives import RECIPES

SR = 16000
PER_SHARD = 3
SECONDS = [0.3, 1.0, 2.5, 0.7, 1.6, 2.0, 0.5, 1.2, 2.2, 0.9]  # some shorter than the crops below


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """10 labelled clips of noise (every sample tells where it came from) and their manifest."""
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    rows = ["path,labels"]
    for i, seconds in enumerate(SECONDS):
        audio.write(root / f"{i}.wav", (0.3 * rng.standard_normal(int(seconds * SR))).astype(np.float32), SR)
        rows.append(f"{i}.wav,{'odd' if i % 2 else 'even'}")
    (root / "m.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module", params=["flac", "wav"])
def shards(request, corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"shards-{request.param}")
    write_shards(clips_from(corpus / "m.csv")[0], out, SR, per_shard=PER_SHARD, fmt=request.param)
    return out


def index_of(clip: int) -> int:
    """write_shards puts clip n at position n % per_shard of shard n // per_shard."""
    return clip // PER_SHARD * INDEX_STRIDE + clip % PER_SHARD


def stream_of(shards, cfg: DataConfig, views: int = 1, crop: int = 4000, **placement) -> ShardStream:
    return ShardStream(list_shards(shards), SR, crop, 2, cfg, shard_vocabulary(shards), buffer=4,
                       views=views).at(**placement)


CASES = [(DataConfig(gain_db=6, roll=True), 1), (DataConfig(roll=False, roll_clip=0.5), 2),
         (DataConfig(gain_db=3, roll=True, roll_clip=1.0), 3)]


@pytest.mark.parametrize("cfg, views", CASES)
def test_items_are_clip_dataset_items_for_the_same_seed(corpus, shards, cfg, views):
    clips, vocabulary = clips_from(corpus / "m.csv")
    files = ClipDataset(clips, SR, 4000, cfg, vocabulary, views)
    stream = stream_of(shards, cfg, views)
    samples = [s for path in list_shards(shards) for s in read_samples(path)]
    assert [s["__key__"] for s in samples] == [f"{i:09d}" for i in range(len(clips))]
    for i, sample in enumerate(samples):
        for seed in (None, 11, 12, 13):
            a, b = files[(i, seed)] if seed is not None else files[i], stream.item(index_of(i), sample, seed)
            assert b["wave"].shape == ((4000,) if views == 1 else (views, 4000))
            for k in ("wave", "start", "length", "target"):
                assert torch.equal(a[k], b[k]), (i, seed, k)
            assert b["index"] == index_of(i)


def test_only_the_crops_span_is_decoded_unless_the_clip_rolls(shards, monkeypatch):
    decoded = []
    read = sf.SoundFile.read
    monkeypatch.setattr(sf.SoundFile, "read", lambda self, *a, **k: decoded.append(len(x := read(self, *a, **k))) or x)
    sample = list(read_samples(list_shards(shards)[0]))[2]  # clip 2: 2.5 s
    stream_of(shards, DataConfig(), views=2, crop=SR // 4).item(2, sample, 5)
    assert decoded == [SR // 4, SR // 4]
    decoded.clear()
    stream_of(shards, DataConfig(roll_clip=1.0), views=2, crop=SR // 4).item(2, sample, 5)
    assert decoded == [round(2.5 * SR)]  # the whole clip once, both views cut from it


def batches(stream: ShardStream, workers: int, n: int) -> list[dict]:
    out = []
    for batch in DataLoader(stream, batch_size=None, num_workers=workers):
        out.append(batch)
        if len(out) == n:
            return out


def test_views_index_start_length_through_the_loader_and_resume(corpus, shards, monkeypatch):
    clips, _ = clips_from(corpus / "m.csv")
    waves = {index_of(i): audio.read(c.path, SR)[0] for i, c in enumerate(clips)}
    stream = stream_of(shards, DataConfig(roll=False), views=2)
    assert [len(shard_files.shard_samples(p)) for p in list_shards(shards)] == [3, 3, 3, 1]  # from the tar headers
    with monkeypatch.context() as patch:
        patch.setattr(shard_files, "shard_samples", lambda path, *a: pytest.fail(f"{path} scanned"))
        assert len(stream) == len(clips)  # from the shards.json write_shards wrote
    ref = batches(stream, 2, 10)
    seen = set()
    for b in ref:
        assert b["wave"].shape == (2, 2, 4000) and b["start"].shape == b["length"].shape == (2, 2)
        assert b["index"].dtype == torch.int64 and b["target"].shape == (2, 2)
        for wave, index, starts, lengths, target in zip(b["wave"], b["index"], b["start"], b["length"], b["target"]):
            clip = waves[int(index)]
            seen.add(int(index))
            assert target.tolist() == ([0.0, 1.0] if list(waves).index(int(index)) % 2 else [1.0, 0.0])
            for view, start, length in zip(wave, starts.tolist(), lengths.tolist()):
                assert length == min(4000, len(clip) - start)  # the crop is the clip's audio from `start`
                assert torch.equal(view[:length], torch.from_numpy(clip[start:start + length]))
                assert not view[length:].any()
    assert seen == set(waves)
    again = batches(stream.at(start=4), 2, 6)  # resumed at micro-step 4: the same batches, indexes included
    for a, b in zip(ref[4:], again):
        assert all(torch.equal(a[k], b[k]) for k in a)
    ranks = [batches(stream.at(rank=r, world=2), 0, 5) for r in range(2)]  # any world: index names one clip
    for b in ranks[0] + ranks[1]:
        for wave, index, start, length in zip(b["wave"], b["index"], b["start"], b["length"]):
            clip = waves[int(index)]
            assert torch.equal(wave[0, :length[0]], torch.from_numpy(clip[start[0]:start[0] + length[0]]))


REPEAT_S = 0.5  # SECONDS -> 1, 2, 5, 1, 3, 4, 1, 2, 4, 1 positions


def test_repeats_fill_clip_dataset_positions_and_resume_exactly(corpus, shards, tmp_path, monkeypatch):
    """data.repeat_s: a sample fills as many positions of a pass as its clip in ClipDataset, each
    with its own crop; len() is ClipDataset's, from shards.json or from the headers of shards
    without it (foreign ones, or written before frames were recorded); resume stays exact."""
    clips, vocabulary = clips_from(corpus / "m.csv")
    cfg = DataConfig(repeat_s=REPEAT_S, roll=False)
    files = ClipDataset(clips, SR, 4000, cfg, vocabulary)
    assert len(files) == 24
    want = {index_of(i): n for i, n in enumerate(np.bincount(files.clip_of).tolist())}
    stream = stream_of(shards, cfg)
    with monkeypatch.context() as patch:
        patch.setattr(shard_files, "shard_samples", lambda path, *a: pytest.fail(f"{path} scanned"))
        assert len(stream) == len(files)  # from the frames write_shards recorded
    record = json.loads((shards / shard_files.SETTINGS_FILE).read_text())
    assert record["frames"] == {p.name: [x.frames for x in shard_files.shard_samples(p, lengths=True)]
                                for p in list_shards(shards)}
    for name, kept in (("foreign", {}), ("old", {k: v for k, v in record.items() if k != "frames"})):
        folder = tmp_path / name  # webdataset-written (no shards.json), or a shards.json without frames
        folder.mkdir()
        for p in list_shards(shards):
            (folder / p.name).write_bytes(p.read_bytes())
        if kept:
            (folder / shard_files.SETTINGS_FILE).write_text(json.dumps(kept))
        assert len(stream_of(folder, cfg)) == len(files) and len(stream_of(folder, DataConfig())) == len(clips)
    stamp = (tmp_path / "old" / "shard-000000.tar").stat().st_mtime_ns
    write_shards(clips, tmp_path / "old", SR, per_shard=PER_SHARD, fmt=record["format"])  # a rerun records them
    assert json.loads((tmp_path / "old" / shard_files.SETTINGS_FILE).read_text()) == record
    assert (tmp_path / "old" / "shard-000000.tar").stat().st_mtime_ns == stamp
    one_pass = batches(stream.at(buffer=1), 0, len(files) // 2)  # buffer 1: the first len() positions are one pass
    starts: dict[int, list[int]] = {}
    for b in one_pass:
        for index, start in zip(b["index"].tolist(), b["start"].tolist()):
            starts.setdefault(index, []).append(start)
    assert {i: len(s) for i, s in starts.items()} == want
    assert all(len(set(s)) == len(s) for s in starts.values())  # each repeat its own crop
    ref = batches(stream, 2, 16)  # more than a pass through a 4-sample buffer, 2 workers
    again = batches(stream.at(start=5), 2, 11)
    for a, b in zip(ref[5:], again):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_member_formats(corpus, tmp_path):
    clips = clips_from(corpus / "m.csv")[0][:2]
    for fmt in ("flac", "wav"):
        write_shards(clips, tmp_path / fmt, SR, fmt=fmt)
    flac, wav = (list(read_samples(list_shards(tmp_path / fmt)[0])) for fmt in ("flac", "wav"))
    assert sorted(wav[0]) == ["__key__", "json", "wav"] and sorted(flac[0]) == ["__key__", "flac", "json"]
    for a, b in zip(flac, wav):
        assert np.array_equal(sf.read(io.BytesIO(a["flac"]))[0], sf.read(io.BytesIO(b["wav"]))[0])
    with pytest.raises(ValueError, match="shard format 'mp3': expected one of"):
        write_shards(clips, tmp_path / "mp3", SR, fmt="mp3")


def test_shards_command_writes_resumes_and_refuses_other_settings(corpus, tmp_path, capsys):
    out = tmp_path / "shards"
    args = [str(corpus / "m.csv"), str(out), "--sample-rate", str(SR), "--per-shard", "4"]
    assert cli.main(["shards", *args]) == 0
    assert "10 clips in 3 shards" in capsys.readouterr().out
    shards = list_shards(out)
    assert [s.name for s in shards] == [f"shard-{i:06d}.tar" for i in range(3)]
    assert shard_vocabulary(out) == ["even", "odd"]
    assert sorted(next(read_samples(shards[0]))) == ["__key__", "json", "wav"]  # the command's default: WAV
    stamp = shards[1].stat().st_mtime_ns
    shards[2].unlink()  # as if stopped while writing the last shard
    assert cli.main(["shards", *args]) == 0
    assert shards[2].exists() and shards[1].stat().st_mtime_ns == stamp  # complete shards are kept
    assert cli.main(["shards", *args, "--format", "flac"]) == 2
    assert "shards.json: these shards were written with other settings (format); use another" in capsys.readouterr().err


def test_bad_members_are_named_by_shard_and_key(shards, tmp_path):
    good = next(read_samples(list_shards(shards)[0]))
    audio_ext = next(k for k in good if k not in ("__key__", "json"))
    with tar_writer(tmp_path / "bad.tar") as add:
        add(f"a.{audio_ext}", good[audio_ext])
        add("a.json", b'{"labels": ["loud"]}')
        add(f"b.{audio_ext}", b"not audio")
    stream = ShardStream([tmp_path / "bad.tar"], SR, 400, 1, DataConfig(), ["even", "odd"])
    samples = list(stream.samples(0))
    with pytest.raises(ValueError, match=r"bad.tar: sample a: label 'loud' is not in the vocabulary"):
        stream.item(*samples[0], seed=1)
    with pytest.raises(audio.AudioError, match=r"bad.tar: sample b: cannot decode audio \(.*the member"):
        stream.item(*samples[1], seed=1)


# ------------------------------------------------------------------------- every recipe from shards

QUICK = ["steps=3", "batch_size=2", "checkpoint_every=1", "log_every=1", "warmup_steps=1", "data.workers=0"]
SHARD_OVERRIDES = {"encodecmae": ["objective.target_context=crop", "objective.targets=fbank_kmeans",
                              "objective.kmeans_k=8"]}  # its default data.repeat_s=4 kept


@pytest.fixture(scope="module")
def train_shards(corpus, tmp_path_factory):
    """8 short clips and one of 9 s: twice per pass with encodecmae's data.repeat_s=4."""
    out = tmp_path_factory.mktemp("train-shards")
    audio.write(out / "long.wav", 0.1 * np.sin(np.arange(9 * SR, dtype=np.float32) / 7), SR)
    clips = [*clips_from(corpus / "m.csv")[0][:8], Clip(str(out / "long.wav"), labels=("odd",))]
    write_shards(clips, out, SR, per_shard=2, fmt="wav")
    assert len(ShardStream(list_shards(out), SR, 400, 1, DataConfig(repeat_s=4))) == 10
    return out


@pytest.mark.parametrize("name", ["passt", "audiomae", "asit", "encodecmae", "eat"])
def test_every_recipe_pretrains_from_shards_and_resumes_exactly(name, train_shards, tmp_path, one_thread):
    assert name in RECIPES
    size = sizes.get(name, "tiny")
    args = [name, "--data", str(train_shards), "--preset", size.preset, *size.overrides, *QUICK,
            *SHARD_OVERRIDES.get(name, [])]
    assert pretrain.main([*args, "--out", str(tmp_path / "full")]) == 0
    pretrain.main([*args, "--out", str(tmp_path / "resumed"), "--stop-after", "2"])
    halfway = audiorep.load(str(tmp_path / "resumed")).state_dict()
    pretrain.main([*args, "--out", str(tmp_path / "resumed")])
    a, b = audiorep.load(str(tmp_path / "full")), audiorep.load(str(tmp_path / "resumed"))
    for (key, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), key
    assert any(not torch.equal(x, halfway[k]) for k, x in b.state_dict().items())  # step 3 trained
    for run in ("full", "resumed"):
        log = (tmp_path / run / "log.csv").read_text().splitlines()
        assert [row.split(",")[0] for row in log[1:]] == ["1", "2", "3"]


def test_per_clip_cached_targets_are_refused_for_shards(train_shards, tmp_path, one_thread):
    size = sizes.get("encodecmae", "tiny")  # objective.target_context=clip
    args = ["encodecmae", "--data", str(train_shards), "--preset", size.preset, *size.overrides, *QUICK,
            "--out", str(tmp_path / "run")]
    with pytest.raises(ValueError, match="objective.target_context=clip .* use objective.target_context=crop"):
        pretrain.main(args)
