"""Tar shards as training data: ClipDataset's items (same crops for the same seed, views,
index, start, length), only the crop's span decoded, FLAC or WAV members, and every recipe
pretraining from shards and resuming exactly."""
from __future__ import annotations

import io
import itertools
import json

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

import audiorep
from audiorep import audio, cli, sizes
from audiorep.commands import pretrain
from audiorep.config import override
from audiorep.data import (Clip, ClipDataset, DataConfig, ShardStream, StepSampler, class_balanced_weights,
                           clips_from, list_shards, multi_hot, shard_vocabulary, write_shards)
from audiorep.data import shard_stream
from audiorep.data import shards as shard_files
from audiorep.data.shards import INDEX_STRIDE, read_samples, tar_writer
from audiorep.objectives import RECIPES
from audiorep.train import TrainConfig, make_loader

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
    for name, kept in (("foreign", {}), ("old", {k: v for k, v in record.items() if k not in ("frames", "labels")})):
        folder = tmp_path / name  # webdataset-written (no shards.json), or a shards.json without frames and labels
        folder.mkdir()
        for p in list_shards(shards):
            (folder / p.name).write_bytes(p.read_bytes())
        if kept:
            (folder / shard_files.SETTINGS_FILE).write_text(json.dumps(kept))
        assert len(stream_of(folder, cfg)) == len(files) and len(stream_of(folder, DataConfig())) == len(clips)
    stamp = (tmp_path / "old" / "shard-000000.tar").stat().st_mtime_ns
    write_shards(clips, tmp_path / "old", SR, per_shard=PER_SHARD, fmt=record["format"])  # a rerun records both
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


# ------------------------------------------------------------------------- class-balanced passes

SKEWED = ["rare"] * 3 + ["common"] * 28 + ["rare;common", ""]  # one clip with both labels, one without


@pytest.fixture(scope="module")
def skewed(tmp_path_factory):
    """33 tiny clips of a rare and a common class, 0.2 s and 0.45 s in turn (1 and 2 positions with
    repeat_s=0.2), in 9 shards; the same shards without shards.json (as webdataset writes them,
    the vocabulary beside them) and with an older shards.json that has no labels."""
    root = tmp_path_factory.mktemp("skewed")
    rows = ["path,labels"]
    for i, labels in enumerate(SKEWED):
        audio.write(root / f"{i}.wav", np.full(int((0.2, 0.45)[i % 2] * SR), i / 100, np.float32), SR)
        rows.append(f"{i}.wav,{labels}")
    (root / "m.csv").write_text("\n".join(rows) + "\n")
    write_shards(clips_from(root / "m.csv")[0], root / "shards", SR, per_shard=4, fmt="wav")
    record = json.loads((root / "shards" / shard_files.SETTINGS_FILE).read_text())
    for name, kept in (("foreign", None), ("old", {k: v for k, v in record.items() if k != "labels"})):
        (root / name).mkdir()
        for path in (root / "shards").iterdir():
            if path.name != shard_files.SETTINGS_FILE:
                (root / name / path.name).write_bytes(path.read_bytes())
        if kept:
            (root / name / shard_files.SETTINGS_FILE).write_text(json.dumps(kept))
    return root


def pass_positions(stream: ShardStream, consumer: int, consumers: int, passes: int) -> int:
    """Positions a reader emits in its first `passes` passes (its shards, their draws)."""
    return sum(int(shard_stream.draws(stream.plan().expected[s], stream.seed, epoch, s).sum())
               for epoch in range(passes) for s in stream.shard_order(epoch)[consumer::consumers])


@pytest.mark.parametrize("repeat_s", [0.0, 0.2])
def test_balanced_passes_draw_classes_as_the_balanced_sampler_expects(skewed, repeat_s, monkeypatch):
    """data.balanced on shards: per pass a sample fills k positions, E[k] = what StepSampler's
    class-balanced draws give its clip in an epoch of ClipDataset (repeats included); over many
    passes each class is drawn that often within a few standard errors, in 1 or 2 readers alike."""
    clips, vocabulary = clips_from(skewed / "m.csv")
    cfg = DataConfig(repeat_s=repeat_s, balanced=True)
    files = ClipDataset(clips, SR, 400, cfg, vocabulary)
    weights = class_balanced_weights(files.targets).double()  # [positions], as make_loader gives StepSampler
    want = np.bincount(files.clip_of, weights=weights.numpy()) * len(files) / weights.sum().item()  # [clips]
    stream = ShardStream(list_shards(skewed / "shards"), SR, 400, 1, cfg, vocabulary, seed=4, buffer=1)
    with monkeypatch.context() as patch:
        patch.setattr(shard_files, "shard_samples", lambda path, *a: pytest.fail(f"{path} scanned"))
        expected = np.concatenate(stream.plan().expected)  # from shards.json alone
        assert len(stream) == len(files)  # the positions of an unbalanced pass
    assert np.allclose(expected, want, rtol=1e-6)
    for name in ("foreign", "old"):  # labels read from the json members once
        other = ShardStream(list_shards(skewed / name), SR, 400, 1, cfg, shard_vocabulary(skewed / name))
        assert np.array_equal(np.concatenate(other.plan().expected), expected)
    unbalanced = stream.at(balanced=False)
    for epoch, s in ((0, 0), (1, 3), (7, 8)):  # unbalanced: every sample exactly its positions, as before
        assert np.array_equal(shard_stream.draws(unbalanced.plan().expected[s], 4, epoch, s),
                              unbalanced.plan().positions[s])

    passes = 300
    drawn = {1: np.zeros(len(clips)), 2: np.zeros(len(clips))}  # readers -> [clips] draws in `passes` passes
    for consumer, consumers in ((0, 1), (0, 2), (1, 2)):
        n = pass_positions(stream, consumer, consumers, passes)
        for index, _ in itertools.islice(stream._raw(consumer, consumers), n):  # buffer 1: pass after pass
            drawn[consumers][index // INDEX_STRIDE * 4 + index % INDEX_STRIDE] += 1
    assert np.array_equal(drawn[1], drawn[2])  # the same draws however many readers share the passes
    sampler = StepSampler(len(files), len(files), seed=4, weights=class_balanced_weights(files.targets))
    by_sampler = np.bincount(files.clip_of[[p for step in range(passes) for p, _ in sampler.batch(step)]],
                             minlength=len(clips))  # [clips] StepSampler's draws in as many epochs
    fraction = want - np.floor(want)
    for member in multi_hot(clips, vocabulary).T.numpy() > 0:  # [clips] of each class
        mean = passes * want[member].sum()
        spread = np.sqrt(passes * (fraction * (1 - fraction))[member].sum())  # stochastic rounding's
        assert abs(drawn[1][member].sum() - mean) < 4 * spread, (drawn[1][member].sum(), mean, spread)
        share = want[member].sum() / len(files)
        assert abs(by_sampler[member].sum() - mean) < 4 * np.sqrt(passes * len(files) * share * (1 - share))


def test_balanced_streams_resume_exactly_and_the_loop_balances_them(skewed):
    """Balanced batches resume bitwise at a micro-step (2 workers, repeats, a 4-sample buffer);
    make_loader balances a stream when data.balanced is set, as it does files; shards.json's
    labels are the json members'."""
    clips, vocabulary = clips_from(skewed / "m.csv")
    shards = list_shards(skewed / "shards")
    record = json.loads((skewed / "shards" / shard_files.SETTINGS_FILE).read_text())
    assert [[vocabulary[c] for c in tags] for p in shards for tags in record["labels"][p.name]] == \
        [json.loads(s["json"])["labels"] for p in shards for s in read_samples(p)]
    stream = ShardStream(shards, SR, 400, 2, DataConfig(repeat_s=0.2, balanced=True, gain_db=6), vocabulary,
                         buffer=4)
    ref = batches(stream, 2, 30)
    again = batches(stream.at(start=7), 2, 23)
    for a, b in zip(ref[7:], again):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a["index"], b["index"]) for a, b in zip(ref, batches(stream.at(balanced=False), 2, 30)))
    cfg = TrainConfig(batch_size=2, seed=5, data=DataConfig(balanced=True, workers=0))
    unset = ShardStream(shards, SR, 400, 1, DataConfig(), vocabulary, buffer=4)
    loader = make_loader(unset, cfg, 3, 0, 1)
    assert loader.dataset.balanced
    for a, b in zip(itertools.islice(loader, 4), batches(unset.at(balanced=True, batch=2, seed=5, start=3), 0, 4)):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_balanced_without_labels_is_refused_naming_the_setting(corpus, tmp_path):
    clips = [Clip(c.path) for c in clips_from(corpus / "m.csv")[0]]
    write_shards(clips, tmp_path / "unlabelled", SR, per_shard=4, fmt="wav")
    shards = list_shards(tmp_path / "unlabelled")
    assert shard_vocabulary(tmp_path / "unlabelled") is None
    cfg = TrainConfig(batch_size=2, data=DataConfig(balanced=True, workers=0))
    stream = ShardStream(shards, SR, 400, 1, DataConfig())
    with pytest.raises(ValueError, match=r"data.balanced=true needs labelled shards: .*unlabelled has no "
                                         r"labelvocabulary.csv .*data.balanced=false"):
        make_loader(stream, cfg, 0, 0, 1)
    with pytest.raises(ValueError, match="data.balanced=true needs labelled shards"):
        len(ShardStream(shards, SR, 400, 1, DataConfig(balanced=True)))
    with pytest.raises(ValueError, match="data.balanced=true needs labelled data: the training clips have no labels"):
        make_loader(ClipDataset(clips, SR, 400), cfg, 0, 0, 1)
    assert next(iter(make_loader(stream, TrainConfig(batch_size=2, data=DataConfig(workers=0)), 0, 0, 1)))


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
        add(f"c.{audio_ext}", good[audio_ext])
        add("c.json", b'{"labels": "odd"}')
    stream = ShardStream([tmp_path / "bad.tar"], SR, 400, 1, DataConfig(), ["even", "odd"])
    samples = list(stream.samples(0))
    not_a_list = r'bad.tar: sample c: json member: expected an object whose "labels" is a list'
    with pytest.raises(ValueError, match=not_a_list):
        shard_files.shard_samples(tmp_path / "bad.tar", labels=True)
    with pytest.raises(ValueError, match=not_a_list):
        stream.item(*samples[2], seed=1)
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
    if name == "passt":  # PaSST's recipe samples class-balanced: so do its batches from shards (make_loader)
        assert override(TrainConfig(), list(RECIPES[name].defaults)).data.balanced
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
