"""`audiorep study SPEC --out DIR [--jobs N]`: train the runs of a study spec (TOML) on the same
data and budget, evaluate them together with the references, write DIR/study.md (audiorep.study)."""
from __future__ import annotations

import argparse

from .. import study


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="audiorep study", description=study.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", help="the study spec, a TOML file (docs/study.md; studies/*.toml)")
    parser.add_argument("--out", required=True, help="study folder (rerun the same command to continue)")
    parser.add_argument("--jobs", type=int, default=1, help="trainings at once, each its own process")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs {args.jobs}: expected at least 1")
    print(study.run(args.spec, args.out, args.jobs))
    return 0
