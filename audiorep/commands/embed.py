"""`audiorep embed PATHS... --model NAME --out DIR`: one .npy per file (+ timestamps) and index.json;
tar shards in (WebDataset layout) and, with `--format shards`, out; any number of processes."""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import inspect
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..audio import AudioError, audio_files
from ..config import override
from ..data.shards import decode, expand_braces, read_samples, tar_writer
from ..dist import World, agree, barrier, joined, out_lock, share
from ..embed import check_settings, embed_blocks, embed_file
from ..files import save_npy
from ..models import identity, load
from .embed_index import (INDEX, TIMESTAMPS, Journal, finish, fold, output_stems, outputs, read_index, sample_stem,
                          shard_stems, taken_names, unique, wait_for_ranks)

METADATA = ("json", "cls", "txt")  # shard members copied next to a sample's embedding (by last suffix)


def main(argv: list[str] | None = None) -> int:
    """`audiorep embed PATHS... --model NAME --out DIR`: one .npy per file plus index.json,
    which records the source, size and mtime of every output; a rerun with the same model,
    weights and settings skips files that are unchanged.

    PATHS may be tar shards in the WebDataset layout (`shards/{000..099}.tar`, braces expanded
    here too when quoted): each sample's audio member is embedded, to SHARD__KEY.npy, or with
    `--format shards` to OUT/SHARD.tar holding KEY.npy (+ KEY.timestamps_ms.npy) and the
    sample's .json/.cls/.txt members. Shards are done, and skipped on a rerun, whole.

    Under `torchrun --nproc-per-node N [--nnodes M]` the W = N x M ranks share the files or
    shards (rank r takes the r-th and every W-th after it), each on its own device (`--device auto`: cuda:LOCAL_RANK when
    CUDA is present); OUT must be one folder all ranks see. Rank 0 holds OUT's lock and writes
    the one index.json, the same bytes a single process writes. After a kill -9 of any rank,
    the same command continues where it stopped, with this or any other number of processes:
    every finished output is kept (outputs of one input never depend on the others)."""
    p = argparse.ArgumentParser(prog="audiorep embed", description=inspect.cleandoc(main.__doc__),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", help="audio files or folders (searched recursively), or .tar shards")
    p.add_argument("--model", default="passt-s", help="preset name or saved encoder/run directory")
    p.add_argument("--weights", help="checkpoint path or URL for a preset (official or audiorep)")
    p.add_argument("--random-init", action="store_true", help="no weights: the architecture at random init (seed 0)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--kind", choices=("scene", "timestamp"), default="scene")
    p.add_argument("--format", choices=("npy", "shards"), default="npy",
                   help="npy: one file per input (HEAR layout); shards: one tar per input shard")
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="override embedding settings, e.g. levels=L,M rf_ms=160,640 hop_ms=10")
    p.add_argument("--block-minutes", type=float, default=10.0, help="stream long files in blocks of this size")
    p.add_argument("--device", default="cpu", help="cpu, cuda, auto (cuda:LOCAL_RANK when present) or a torch device")
    args = p.parse_args(argv)
    if not args.block_minutes > 0:
        p.error(f"--block-minutes {args.block_minutes}: expected a number of minutes > 0")
    with joined(args.device) as w:
        return embed_all(args, w, p)


def embed_all(args: argparse.Namespace, w: World, p: argparse.ArgumentParser) -> int:
    """This rank's share of the inputs; rank 0 also writes the index."""
    agree(vars(args), w, "the arguments of audiorep embed")
    skipped: list[Path] = []
    files, shards = inputs(args.paths, skipped)
    if args.format == "shards" and not shards:
        p.error("--format shards: the inputs are not tar shards (shards are written one per input shard)")
    digest = hashlib.sha256("\n".join(map(os.path.abspath, files + shards)).encode()).hexdigest()
    agree((len(files) + len(shards), digest), w, "the inputs found (count, hash; do all ranks see the same files?)")

    encoder = load_encoder(args, w) if w.main else None  # rank 0 first: it may download weights
    barrier(w)
    if encoder is None:
        encoder = load_encoder(args, w)
    cfg = override(encoder.config.embed, args.set).check_rate(encoder.sample_rate)
    check_settings(encoder, cfg)
    setup = {"identity": identity(encoder), "kind": args.kind, "embed": dataclasses.asdict(cfg),
             **({"format": args.format} if shards else {})}  # indexes of file inputs read as before shards existed
    setup = json.loads(json.dumps(setup))
    out = Path(args.out)
    if args.format == "shards":
        inside = [s for s in shards if s.resolve().parent == out.resolve()]
        if inside:
            raise ValueError(f"--out {out} holds the input shard {inside[0]}: its output would replace it; "
                             "choose another --out")
    run, named = Run(encoder, cfg, args, out), shard_stems(shards)  # bad shard names refused before OUT is touched
    with out_lock(out, w):
        index = fold(out, setup) if w.main else None
        barrier(w)
        index = index or read_index(out / INDEX, setup)
        taken = taken_names(index)
        stems = {**output_stems(files, [Path(q) for q in args.paths], taken), **named}
        journal = Journal(out, w.rank, setup)
        do = run.shard if shards else run.file
        for path in tqdm(share(files + shards, w), desc="embedding", unit="shard" if shards else "file",
                         disable=not w.main):
            do(path, stems[path], index, taken, journal)
        journal.close()
        if not w.main:
            return 0
        wait_for_ranks(out, w.size)
        errors = {os.path.abspath(f): f"{f}: not a regular file (FIFO, device or socket), skipped" for f in skipped}
        index = finish(out, setup, args.model, {"files": set(map(os.path.abspath, files)),
                                                "shards": set(map(os.path.abspath, shards))}, errors)
    samples = sum(len(rec.get("samples", {})) for rec in index["shards"].values())
    print(f"{len(index['files']) + samples} embedded, {len(index['errors'])} failed -> {out}")
    for err in index["errors"].values():
        print(f"  {err}", file=sys.stderr)
    return 1 if index["errors"] else 0


def inputs(paths: list[str], skipped: list[Path]) -> tuple[list[Path], list[Path]]:
    """(audio files, tar shards) named by PATHS; a path with braces that is not a file is
    expanded (`{000..099}`, `{a,b}`). Files and shards are not mixed in one run."""
    named = [q for p in paths for q in ([p] if Path(p).exists() or "{" not in p else expand_braces(p))]
    tars = [Path(q) for q in named if q.endswith(".tar")]
    missing = [t for t in tars if not t.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise FileNotFoundError(f"{missing[0]}: no such shard{more}")
    rest = [q for q in named if not q.endswith(".tar")]
    if tars and rest:
        raise ValueError(f"{rest[0]} and {tars[0]}: give either audio files and folders or .tar shards, not both "
                         "(embed them into separate --out folders)")
    return unique(audio_files(rest, skipped)) if rest else [], unique(tars)


def load_encoder(args, w: World):
    return load(args.model, weights=args.weights, random_init=args.random_init).to(w.device).eval()


@dataclasses.dataclass
class Run:
    """What every input is embedded with, and how one file or one shard is done."""

    encoder: object
    cfg: object
    args: argparse.Namespace
    out: Path

    def embed(self, blocks):
        return embed_blocks(self.encoder, blocks, self.args.kind, self.cfg, self.args.block_minutes * 60)

    def file(self, path: Path, stem: str, index: dict, taken: dict, journal: Journal) -> None:
        source, stat = os.path.abspath(path), path.stat()
        record = {"npy": f"{stem}.npy", "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        if self.reused("files", source, record, index, journal):
            return
        try:
            emb, ts = embed_file(self.encoder, path, self.args.kind, self.cfg, self.args.block_minutes * 60)
        except (AudioError, ValueError) as e:
            tqdm.write(f"audiorep embed: skipped {e}", file=sys.stderr)
            journal.error(source, str(e))
            return
        journal.record("files", source, {**record, **self.save(stem, emb, ts)})

    def reused(self, kind: str, source: str, record: dict, index: dict, journal: Journal) -> bool:
        """An earlier run's outputs of this unchanged input (same size, mtime, names; files present), kept."""
        done = index[kind].get(source, {})
        if {k: done.get(k) for k in record} != record or not all((self.out / n).exists() for n in outputs(done)):
            return False
        journal.record(kind, source, done)
        return True

    def save(self, stem: str, emb, ts) -> dict:
        """Per-file outputs: STEM.npy (+ STEM.timestamps_ms.npy); their part of the record."""
        save_npy(self.out / f"{stem}.npy", emb)
        if ts is None:
            return {"shape": list(emb.shape)}
        save_npy(self.out / f"{stem}{TIMESTAMPS}", ts)
        return {"shape": list(emb.shape), "timestamps_ms": f"{stem}{TIMESTAMPS}"}

    def shard(self, path: Path, stem: str, index: dict, taken: dict, journal: Journal) -> None:
        """Every sample of one shard; a bad sample or a tar that breaks off is an error in the
        shard's record (kept with it, reported on every run), the rest is embedded."""
        source, stat = os.path.abspath(path), path.stat()
        record = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        if self.reused("shards", source, record, index, journal):
            return
        record.update(samples={}, errors={})
        if self.args.format == "shards":
            record["tar"] = path.name
        keys: set[str] = set()
        names: set[str] = set()  # output stems given in this shard
        tar = tar_writer(self.out / path.name, mtime=int(stat.st_mtime))  # members stamped like their input
        with tar if self.args.format == "shards" else contextlib.nullcontext() as add:
            try:
                for sample in read_samples(path):
                    key = sample["__key__"]
                    where = f"{path}: key {key!r}"
                    try:
                        if key in keys:
                            raise ValueError(f"{where}: the key appears twice (its members are not adjacent)")
                        keys.add(key)
                        name = None if add else self.claim(stem, key, where, f"{source}#{key}", taken, names)
                        record["samples"][key] = self.sample(sample, where, name, add)
                    except (AudioError, ValueError) as e:
                        tqdm.write(f"audiorep embed: skipped {e}", file=sys.stderr)
                        record["errors"][f"{source}#{key}"] = str(e)
            except ValueError as e:  # ShardError, or a member name that leaves the shard
                tqdm.write(f"audiorep embed: {e}", file=sys.stderr)
                record["errors"][source] = str(e)
        journal.record("shards", source, record)

    @staticmethod
    def claim(stem: str, key: str, where: str, source: str, taken: dict, names: set[str]) -> str:
        """SHARD__KEY, unless another sample (of this shard, or of an earlier run) has it."""
        name = sample_stem(stem, key, where)
        owner = taken.get(f"{name}.npy", source)
        if owner != source or name in names:
            by = owner if owner != source else "another key of this shard"
            raise ValueError(f"{where}: its output name {name}.npy is taken (by {by}); "
                             "embed into a separate --out folder")
        names.add(name)
        return name

    def sample(self, sample: dict, where: str, name: str | None, add) -> dict:
        """One sample embedded: to NAME.npy, or (add) as members of the output shard."""
        key = sample["__key__"]
        emb, ts = self.embed([decode(sample, where, self.encoder.sample_rate)])
        if add is None:
            return self.save(name, emb, ts)
        add(f"{key}.npy", npy_bytes(emb))
        if ts is not None:
            add(f"{key}{TIMESTAMPS}", npy_bytes(ts))
        for ext, data in sample.items():
            if ext != "__key__" and ext.rpartition(".")[2] in METADATA:
                add(f"{key}.{ext}", data)
        return {"shape": list(emb.shape)}


def npy_bytes(array) -> bytes:
    """The bytes save_npy writes (float32 .npy), for a member of an output shard."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(array, dtype=np.float32))
    return buf.getvalue()

