"""`audiorep embed PATHS... --model NAME --out DIR`: one .npy per file (+ timestamps) and index.json."""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from ..audio import AudioError, audio_files
from ..config import override
from ..embed import check_settings, embed_file
from ..files import folder_lock, save_npy, write_json
from ..models import identity, load

TIMESTAMPS = ".timestamps_ms.npy"


def main(argv: list[str] | None = None) -> int:
    """`audiorep embed PATHS... --model NAME --out DIR`: one .npy per file plus index.json,
    which records the source, size and mtime of every output; a rerun with the same model,
    weights and settings skips files that are unchanged."""
    p = argparse.ArgumentParser(prog="audiorep embed", description=main.__doc__)
    p.add_argument("paths", nargs="+", help="audio files or folders (searched recursively)")
    p.add_argument("--model", default="passt-s", help="preset name or saved encoder/run directory")
    p.add_argument("--weights", help="checkpoint path or URL for a preset (official or audiorep)")
    p.add_argument("--random-init", action="store_true", help="no weights: the architecture at random init (seed 0)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--kind", choices=("scene", "timestamp"), default="scene")
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="override embedding settings, e.g. levels=L,M rf_ms=160,640 hop_ms=10")
    p.add_argument("--block-minutes", type=float, default=10.0, help="stream long files in blocks of this size")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    if not args.block_minutes > 0:
        p.error(f"--block-minutes {args.block_minutes}: expected a number of minutes > 0")

    encoder = load(args.model, weights=args.weights, random_init=args.random_init).to(args.device).eval()
    cfg = override(encoder.config.embed, args.set).check_rate(encoder.sample_rate)
    check_settings(encoder, cfg)
    out = Path(args.out)
    with folder_lock(out):
        skipped: list[Path] = []
        files = unique(audio_files(args.paths, skipped))
        setup = json.loads(json.dumps({"identity": identity(encoder), "kind": args.kind,
                                       "embed": dataclasses.asdict(cfg)}))
        index = read_index(out / "index.json", setup)
        index["model"] = args.model  # for the reader: outputs are reused by identity, whatever path named it
        index["errors"] = {os.path.abspath(f): f"{f}: not a regular file (FIFO, device or socket), skipped"
                           for f in skipped}
        taken = {name: src for src, rec in index["files"].items() for name in outputs(rec)}
        stems = output_stems(files, [Path(p) for p in args.paths], taken)
        for path in tqdm(files, desc="embedding", unit="file"):
            source, stem, stat = os.path.abspath(path), stems[path], path.stat()
            record = {"npy": f"{stem}.npy", "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
            done = index["files"].get(source, {})
            if {k: done.get(k) for k in record} == record and all((out / n).exists() for n in outputs(done)):
                continue
            index["files"].pop(source, None)
            try:
                emb, ts = embed_file(encoder, path, args.kind, cfg, args.block_minutes * 60)
            except (AudioError, ValueError) as e:
                index["errors"][source] = str(e)
                tqdm.write(f"audiorep embed: skipped {e}", file=sys.stderr)
                continue
            save_npy(out / f"{stem}.npy", emb)
            record["shape"] = list(emb.shape)
            if ts is not None:
                save_npy(out / f"{stem}{TIMESTAMPS}", ts)
                record["timestamps_ms"] = f"{stem}{TIMESTAMPS}"
            index["files"][source] = record
            write_json(out / "index.json", index)
        write_json(out / "index.json", index)
    print(f"{len(index['files'])} embedded, {len(index['errors'])} failed -> {out}")
    for err in index["errors"].values():
        print(f"  {err}", file=sys.stderr)
    return 1 if index["errors"] else 0


def read_index(path: Path, setup: dict) -> dict:
    """The index of earlier runs when they used this exact setup (the model's identity: its
    config and weights; the kind; the settings), else a fresh one (earlier outputs are then
    recomputed)."""
    if not path.exists():
        return {"setup": setup, "files": {}}
    try:
        index = json.loads(path.read_text())
        same = index.get("setup") == setup and isinstance(index.get("files"), dict)
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        print(f"audiorep embed: {path} is not a readable index; recomputing every file", file=sys.stderr)
        return {"setup": setup, "files": {}}
    if not same:
        print(f"audiorep embed: {path.parent} holds outputs of another model, weights or settings; "
              "recomputing every file", file=sys.stderr)
        return {"setup": setup, "files": {}}
    return index


def outputs(record: dict) -> list[str]:
    return [record[k] for k in ("npy", "timestamps_ms") if isinstance(record.get(k), str)]


def unique(files: list[Path]) -> list[Path]:
    """Each file once, however many of the given paths lead to it."""
    seen: set[str] = set()
    return [f for f in files if not (os.path.realpath(f) in seen or seen.add(os.path.realpath(f)))]


def flat_stem(path: Path, roots: list[Path]) -> str:
    """The path below the folder it was found in, '/' -> '__', no suffix."""
    for root in roots:
        if root.is_dir() and root in path.parents:
            return str(path.relative_to(root).with_suffix("")).replace(os.sep, "__")
    return path.stem


def output_stems(files: list[Path], roots: list[Path], taken: dict[str, str]) -> dict[Path, str]:
    """One output stem per file, never shared: the flattened name (`sub__a` for sub/a.wav),
    plus the extension when two inputs differ only by it (`a.wav`, `a.flac`), plus a hash of
    the source path when names still clash (same name in two given folders, names that
    flatten alike, a name another source already holds in `taken`, names that look like
    another output or a temporary file)."""
    stems = {f: flat_stem(f, roots) for f in files}
    counts = Counter(stems.values())
    stems = {f: f"{s}{f.suffix}" if counts[s] > 1 and f.suffix else s for f, s in stems.items()}
    counts = Counter(stems.values())
    for f, s in stems.items():
        source = os.path.abspath(f)
        clash = counts[s] > 1 or s.startswith(".") or s.endswith(TIMESTAMPS[:-4]) or any(
            taken.get(n, source) != source for n in (f"{s}.npy", f"{s}{TIMESTAMPS}"))
        if clash:
            stems[f] = f"{s}-{hashlib.sha256(source.encode()).hexdigest()[:12]}"
    owner: dict[str, str] = {}
    for f, s in stems.items():
        source = os.path.abspath(f)
        for n in (f"{s}.npy", f"{s}{TIMESTAMPS}"):
            if owner.setdefault(n, source) != source or taken.get(n, source) != source:
                raise ValueError(f"cannot give {f} an output name of its own ({n} is {owner[n]}'s too); "
                                 "embed these inputs into separate --out folders")
    return stems
