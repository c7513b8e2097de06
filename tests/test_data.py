"""Clip lists, crops, the step sampler and tar shards: deterministic, sharded, resumable."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from audiorep import audio
from audiorep.data import (ClipDataset, DataConfig, ShardStream, StepSampler, class_balanced_weights, clips_from,
                           list_shards, manifest_clips, shard_vocabulary, write_shards)

SR = 16000


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """10 clips of 0.5 s; clip i is the constant i / 20 (so a crop tells which clip it came from)."""
    root = tmp_path_factory.mktemp("corpus")
    for i in range(10):
        audio.write(root / "sub" / f"{i}.wav", np.full(SR // 2, i / 20, np.float32), SR)
    rows = [{"path": f"sub/{i}.wav", "labels": ["odd" if i % 2 else "even"] + (["ten"] if i == 0 else [])}
            for i in range(10)]
    (root / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (root / "m.csv").write_text("path,offset,duration,labels\n" + "".join(
        f"sub/{i}.wav,0.1,0.3,{'odd' if i % 2 else 'even'}{';ten' if i == 0 else ''}\n" for i in range(10)))
    return root


def test_folder_and_manifests(corpus):
    clips, vocabulary = clips_from(corpus / "sub")
    assert len(clips) == 10 and vocabulary is None
    jsonl, vocab_j = clips_from(corpus / "m.jsonl")
    csv_, vocab_c = clips_from(corpus / "m.csv")
    assert vocab_j == vocab_c == ["even", "odd", "ten"]
    assert jsonl[0].labels == csv_[0].labels == ("even", "ten")
    assert (csv_[3].offset, csv_[3].duration) == (0.1, 0.3) and csv_[3].path == str(corpus / "sub" / "3.wav")
    bad = corpus / "bad.csv"
    bad.write_text("file,labels\nx.wav,a\n")
    with pytest.raises(ValueError, match="bad.csv: CSV header must have a 'path' column"):
        manifest_clips(bad)


def test_crops_are_a_function_of_the_key(corpus):
    clips, vocabulary = clips_from(corpus / "m.csv")
    ds = ClipDataset(clips, SR, 2400, DataConfig(gain_db=6, roll=True), vocabulary)
    a, b, c = ds[(3, 7)], ds[(3, 7)], ds[(3, 8)]
    assert a["wave"].shape == (2400,) and torch.equal(a["wave"], b["wave"])
    assert not torch.equal(a["wave"], c["wave"])  # another seed, another gain
    assert torch.equal(a["target"], torch.tensor([0.0, 1.0, 0.0]))
    plain = ds[3]["wave"]  # evaluation: first crop_samples, no gain
    assert torch.allclose(plain, torch.full((2400,), 3 / 20), atol=1e-4)
    short = ClipDataset(clips, SR, SR, DataConfig(roll=False), vocabulary)[3]["wave"]  # 0.3 s clip -> padded
    assert (short[: int(0.3 * SR) - 1] != 0).all() and (short[int(0.3 * SR) + 1:] == 0).all()


def test_step_sampler_epochs_ranks_and_resume():
    one = StepSampler(10, 4, seed=3)
    stream = [i for step in range(5) for i, _ in one.batch(step)]  # 20 positions = 2 epochs
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:]) == list(range(10))
    assert stream[:10] != stream[10:]
    ranks = [StepSampler(10, 4, seed=3, rank=r, world=2) for r in range(2)]
    for step in range(5):
        assert ranks[0].batch(step) + ranks[1].batch(step) == one.batch(step)
    resumed = StepSampler(10, 4, seed=3, start=3, steps=2)
    assert list(resumed) == [one.batch(3), one.batch(4)]
    assert len({s for step in range(5) for _, s in one.batch(step)}) == 20  # every item its own seed
    with pytest.raises(ValueError, match="not divisible"):
        StepSampler(10, 5, world=2)


def test_class_balanced_sampling_evens_out_classes():
    targets = torch.zeros(100, 2)
    targets[:90, 0] = 1
    targets[90:, 1] = 1  # class 1 is 9x rarer
    sampler = StepSampler(100, 100, seed=0, weights=class_balanced_weights(targets))
    drawn = torch.tensor([i for i, _ in sampler.batch(0) + sampler.batch(1)])
    share = targets[drawn, 1].mean().item()
    assert 0.35 < share < 0.65


def test_shards_round_trip_workers_and_resume(tmp_path, corpus):
    clips, _ = clips_from(corpus / "m.jsonl")
    write_shards(clips, tmp_path / "shards", SR, per_shard=3)
    shards = list_shards(tmp_path / "shards")
    assert [p.name for p in shards] == [f"shard-{i:06d}.tar" for i in range(4)]
    vocabulary = shard_vocabulary(tmp_path / "shards")
    assert vocabulary == ["even", "odd", "ten"]
    stream = ShardStream(shards, SR, 1600, batch=2, cfg=DataConfig(roll=False), vocabulary=vocabulary, buffer=4)

    def batches(start, workers, n):
        loader = DataLoader(stream.at(start=start), batch_size=None, num_workers=workers)
        out = []
        for batch in loader:
            out.append(batch)
            if len(out) == n:
                return out

    ref = batches(0, 2, 12)
    assert ref[0]["wave"].shape == (2, 1600) and ref[0]["target"].shape == (2, 3)
    ids = [round(float(w[800]) * 20) for b in ref[:5] for w in b["wave"]]  # 10 draws = one epoch per worker pair
    assert len(set(ids)) >= 6
    # the clip a wave came from must carry that clip's labels
    for b in ref:
        for w, t in zip(b["wave"], b["target"]):
            i = round(float(w[800]) * 20)
            assert t[1] == i % 2 and t[0] == 1 - i % 2
    again = batches(5, 2, 7)  # resume at micro-step 5: the same stream from there
    for a, b in zip(ref[5:], again):
        assert torch.equal(a["wave"], b["wave"]) and torch.equal(a["target"], b["target"])
    with pytest.raises(ValueError, match="4 shards for 6 readers"):
        next(iter(stream.at(world=6)))


def test_repeat_s_draws_each_clip_by_its_duration(tmp_path):
    """data.repeat_s (the EnCodecMAE release's compensate_lengths): clip c holds
    max(1, duration // repeat_s) positions of an epoch; items still name the clip."""
    seconds = [0.5, 2.5, 4.2]  # -> 1, 2, 4 positions with repeat_s = 1
    rows = []
    for i, s in enumerate(seconds):
        audio.write(tmp_path / f"{i}.wav", np.full(int(s * SR), i / 10, np.float32), SR)
        rows.append({"path": f"{i}.wav", "labels": ["long" if s > 2 else "short"]})
    rows.append({"path": "2.wav", "offset": 1.0, "duration": 1.5, "labels": ["long"]})  # manifest duration: 1
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    clips, vocabulary = clips_from(tmp_path / "m.jsonl")
    ds = ClipDataset(clips, SR, SR // 4, DataConfig(repeat_s=1.0, roll=False), vocabulary)
    assert len(ds) == 8 and ds.clip_of.tolist() == [0, 1, 1, 2, 2, 2, 2, 3]
    assert len(ClipDataset(clips, SR, SR // 4, DataConfig(roll=False), vocabulary)) == 4  # default: once each
    epoch = [i for i, _ in StepSampler(len(ds), 8, seed=1).batch(0)]  # one shuffled epoch of positions
    drawn = [ds[(p, s)]["index"] for p, s in StepSampler(len(ds), 8, seed=1).batch(0)]
    assert sorted(drawn) == [0, 1, 1, 2, 2, 2, 2, 3] and sorted(epoch) == list(range(8))
    item = ds[(5, 3)]
    assert item["index"] == 2 and torch.allclose(item["wave"], torch.full((SR // 4,), 0.2), atol=1e-3)
    assert ds.targets.shape == (8, 2) and torch.equal(item["target"], torch.tensor([1.0, 0.0]))
    assert class_balanced_weights(ds.targets).shape == (8,)  # the loop's balanced weights: per position
    with pytest.raises(ValueError, match="data.repeat_s=-1"):
        DataConfig(repeat_s=-1)


def test_roll_clip_shifts_the_whole_clip_before_cropping(tmp_path):
    """data.roll_clip = p (the ASiT release: 0.5): the whole clip rolls before the crops are cut,
    once per item (every view from the same rolled clip), about p of the items; "start" is the
    crop's first sample in the unrolled clip. roll (per crop) is off, so crop i of the ramp
    below shows where it came from."""
    n = SR // 2
    audio.write(tmp_path / "ramp.wav", (np.arange(n) / n).astype(np.float32), SR)
    clips = clips_from(tmp_path)[0]
    whole = ClipDataset(clips, SR, n, DataConfig(roll=False, roll_clip=0.5), views=2)  # crop = the whole clip
    items = [whole[(0, seed)] for seed in range(400)]
    rolled = [bool(it["start"][0] != 0) for it in items]
    assert 0.42 < np.mean(rolled) < 0.58
    for it in items:
        assert torch.equal(it["start"][0], it["start"][1])  # one roll per item, shared by the views
        assert abs(float(it["wave"][0, 0]) - float(it["start"][0]) / n) < 1e-3
    ramp = np.arange(n) / n
    part = ClipDataset(clips, SR, n // 4, DataConfig(roll=False, roll_clip=1.0))
    wrapped = 0
    for seed in range(200):
        it = part[(0, seed)]
        expected = ramp[(int(it["start"]) + np.arange(n // 4)) % n]  # the rolled clip, read from "start" on
        np.testing.assert_allclose(it["wave"].numpy(), expected, atol=1e-3)
        wrapped += int(it["start"]) + n // 4 > n
    assert wrapped > 10  # crops that run across the clip's end into its beginning
    plain = ClipDataset(clips, SR, n // 4, DataConfig(roll=False))
    assert all(int(plain[(0, seed)]["start"]) + n // 4 <= n for seed in range(50))  # default: no whole-clip roll
    with pytest.raises(ValueError, match="data.roll_clip=1.5"):
        DataConfig(roll_clip=1.5)
