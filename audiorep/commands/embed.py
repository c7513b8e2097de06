"""`audiorep embed PATHS... --model NAME --out DIR`: one .npy per file (+ timestamps) and index.json."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from tqdm import tqdm

from ..audio import AudioError, audio_files
from ..config import override
from ..embed import embed_file
from ..files import save_npy, write_json
from ..models import load


def main(argv: list[str] | None = None) -> int:
    """`audiorep embed PATHS... --model NAME --out DIR`: one .npy per file plus index.json."""
    p = argparse.ArgumentParser(prog="audiorep embed", description=main.__doc__)
    p.add_argument("paths", nargs="+", help="audio files or folders (searched recursively)")
    p.add_argument("--model", default="passt-s", help="preset name or saved encoder/run directory")
    p.add_argument("--weights", help="checkpoint path or URL for a preset (official or audiorep)")
    p.add_argument("--random-init", action="store_true", help="no weights: the architecture at random init")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--kind", choices=("scene", "timestamp"), default="scene")
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="override embedding settings, e.g. levels=L,M rf_ms=160,640 hop_ms=10")
    p.add_argument("--block-minutes", type=float, default=10.0, help="stream long files in blocks of this size")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)

    encoder = load(args.model, weights=args.weights, random_init=args.random_init).to(args.device).eval()
    cfg = override(encoder.config.embed, args.set)
    roots = [Path(p) for p in args.paths]
    files = audio_files(args.paths)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    index_path = out / "index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {"files": {}}
    setup = json.loads(json.dumps({"model": args.model, "kind": args.kind, "embed": dataclasses.asdict(cfg)}))
    if index.get("setup", setup) != setup:  # different settings: earlier outputs are not reusable
        index = {"files": {}}
    index.update(setup=setup, errors={})
    for path in tqdm(files, desc="embedding", unit="file"):
        stem = out_stem(path, roots)
        if str(path) in index["files"] and (out / f"{stem}.npy").exists():
            continue
        try:
            emb, ts = embed_file(encoder, path, args.kind, cfg, args.block_minutes * 60)
        except (AudioError, ValueError) as e:
            index["errors"][str(path)] = str(e)
            tqdm.write(f"audiorep embed: skipped {e}", file=sys.stderr)
            continue
        save_npy(out / f"{stem}.npy", emb)
        record = {"npy": f"{stem}.npy", "shape": list(emb.shape)}
        if ts is not None:
            save_npy(out / f"{stem}.timestamps_ms.npy", ts)
            record["timestamps_ms"] = f"{stem}.timestamps_ms.npy"
        index["files"][str(path)] = record
        write_json(index_path, index)
    write_json(index_path, index)
    print(f"{len(index['files'])} embedded, {len(index['errors'])} failed -> {out}")
    for path, err in index["errors"].items():
        print(f"  {err}", file=sys.stderr)
    return 1 if index["errors"] else 0


def out_stem(path: Path, roots: list[Path]) -> str:
    """Output name: the path below the folder it was found in, '/' -> '__', no suffix."""
    for root in roots:
        if root.is_dir() and root in path.parents:
            return str(path.relative_to(root).with_suffix("")).replace(os.sep, "__")
    return path.stem
