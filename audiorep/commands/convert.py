"""`audiorep convert SRC --preset NAME --out DIR`: an official checkpoint (path, URL or
'release') -> an audiorep encoder folder (model.safetensors + config.json)."""
from __future__ import annotations

import argparse
import sys

from ..convert import fetch
from ..models import load, preset_weights


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="audiorep convert", description=__doc__)
    p.add_argument("source", help="checkpoint path or URL (.pt/.pth/.safetensors), or 'release' for the preset's")
    p.add_argument("--preset", required=True, help="architecture preset the checkpoint belongs to, e.g. passt-s")
    p.add_argument("--out", required=True)
    p.add_argument("--part", help="the entry of a teacher/student checkpoint to convert (default: teacher)")
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="override preset fields")
    args = p.parse_args(argv)
    if args.source == "release":
        w = preset_weights(args.preset, None)
        if w is None:
            print(f"audiorep convert: preset {args.preset!r} has no released weights", file=sys.stderr)
            return 2
        args.source = str(fetch(w.url, w.sha256))
    encoder = load(args.preset, weights=args.source, overrides=args.set, part=args.part)
    encoder.save(args.out)
    print(f"converted {args.source} -> {args.out} ({sum(p.numel() for p in encoder.parameters()):,} parameters)")
    return 0
