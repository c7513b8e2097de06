"""`audiorep presets`: the table of presets, their official format, released weights and, for
PaSST hops, the paper's training patchout."""
from __future__ import annotations

import argparse
from dataclasses import fields

from ..presets import FORMATS, PATCHOUT, PRESETS, WEIGHTS
from ..sizes import SIZES

SUMMARY = ("dim", "depth", "layers", "heads", "channels", "max_frames", "patch", "stride")


def backbone_summary(cfg) -> str:
    """`kind` and the size fields a backbone config has, e.g. `vit dim=768 depth=12 ...`."""
    names = {f.name for f in fields(cfg)}
    return " ".join([cfg.kind] + [f"{n}={getattr(cfg, n)}" for n in SUMMARY if n in names])


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="audiorep presets", description=__doc__).parse_args(argv)
    for name, cfg in PRESETS.items():
        weights = ", ".join(f"{tag}: {w.note}" for (n, tag), w in WEIGHTS.items() if n == name) or "none released"
        patchout = f"  training patchout: {PATCHOUT[name][0]} time x {PATCHOUT[name][1]} freq" \
            if name in PATCHOUT else ""
        print(f"{name:<18} {cfg.frontend.kind:<10} {cfg.frontend.sample_rate:>5} Hz  {backbone_summary(cfg.backbone)}"
              f"  official format: {FORMATS.get(name, '-')}  weights: {weights}{patchout}")
    print("\nrecipe sizes (a study's `recipe = ..., size = ...`; pretrain RECIPE --preset PRESET OVERRIDES):")
    for recipe, table in SIZES.items():
        for size, s in table.items():
            print(f"{recipe:<14} {size:<6} {s.preset:<16} {s.note}")
            if s.overrides:
                print(f"{'':<38}{' '.join(s.overrides)}")
    return 0
