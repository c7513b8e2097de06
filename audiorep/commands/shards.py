"""`audiorep shards DATA OUT --sample-rate SR`: training data as tar shards (WebDataset layout).

DATA is what `pretrain --data` reads (a HEAR task folder's train split, a folder of audio, a
.csv/.jsonl manifest); OUT gets shard-000000.tar, ... with KEY.wav or KEY.flac (16-bit mono at
SR) + KEY.json (labels, source) per clip, labelvocabulary.csv for labelled data, and
shards.json (the settings, each shard's sample count, every sample's frames and labels: the
epoch length of `pretrain`, with data.repeat_s too, and data.balanced's class counts, without
reading the shards). WAV decodes several times faster than FLAC (docs/scaling.md), FLAC is
about half the size. Rerun the same command to resume: complete shards are kept (and their
frames and labels recorded if an older version wrote them).
"""
from __future__ import annotations

import argparse

from ..data import clips_from, write_shards
from ..data.shards import FORMATS


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="audiorep shards", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="task folder, folder of audio or .csv/.jsonl manifest")
    p.add_argument("out", help="folder for the shards")
    p.add_argument("--sample-rate", type=int, required=True, help="the training encoder's rate (no resampling then)")
    p.add_argument("--format", choices=list(FORMATS), default="wav", help="audio member format (both 16-bit)")
    p.add_argument("--per-shard", type=int, default=1000, help="clips per shard")
    p.add_argument("--split", default="train", help="the split of a task folder")
    args = p.parse_args(argv)
    if args.sample_rate < 1 or args.per_shard < 1:
        p.error("--sample-rate and --per-shard must be positive")
    clips, _ = clips_from(args.data, args.split)
    paths = write_shards(clips, args.out, args.sample_rate, args.per_shard, args.format)
    print(f"{len(clips)} clips in {len(paths)} shards under {args.out} ({args.format}, {args.sample_rate} Hz)")
    return 0
