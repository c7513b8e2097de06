"""`audiorep tasks build|corpus|import|check`: thin wrappers over suite, importer and format."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from audiorep.files import folder_lock
from audiorep.tasks import format as task_format
from audiorep.tasks import importer, librispeech, suite
from audiorep.tasks.asr_task import check_asr_task, is_asr_task, load_asr_task
from audiorep.tasks.scaffold import SIZES


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="audiorep tasks", description="build, import and check HEAR-format tasks")
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="build the offline task suite (espeak-ng + SoundFont)")
    b.add_argument("out", help="folder that will hold one folder per task")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--size", choices=SIZES, default="small")
    b.add_argument("--tasks", nargs="+", choices=[*suite.TASKS, *suite.ASR_TASKS],
                   help="build only these tasks (asr_en, a transcribed-speech task, only when named)")
    b.add_argument("--workers", type=int, default=suite.WORKERS, help="processes building tasks in parallel")

    c = sub.add_parser("corpus", help="unlabeled pretraining clips, disjoint from every test split")
    c.add_argument("out")
    c.add_argument("--hours", type=float, required=True)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--overwrite", action="store_true")

    i = sub.add_parser("import", help="turn a folder of class sub-folders or a CSV into a HEAR task")
    i.add_argument("src", help="folder with one sub-folder per class, or a CSV: path,label[,split|fold][,start,end]")
    i.add_argument("out")
    i.add_argument("--name", help="task_name (default: the OUT folder name)")
    i.add_argument("--seed", type=int, default=0, help="seed for the splits made when none are given")
    i.add_argument("--folds", type=int, help="make K >= 3 folds instead of train/valid/test")
    i.add_argument("--sep", default=";", help="separator of several labels in one CSV label cell (multi-label)")
    i.add_argument("--duration", type=float, help="pad/crop every clip to this many seconds (default: keep lengths)")
    i.add_argument("--metric", nargs="+", help="evaluation metrics, primary first (default by task kind)")
    i.add_argument("--strict", action="store_true", help="write nothing if any row or file is bad")
    i.add_argument("--overwrite", action="store_true", help="replace OUT (only once the new task is complete)")
    i.add_argument("--asr", nargs="*", metavar="SPLIT=FOLDER",
                   help="SRC is a LibriSpeech-style folder (*.trans.txt beside the audio): an ASR task from its "
                        "subsets (default train=train-clean-100 valid=dev-clean test=test-clean)")

    k = sub.add_parser("check", help="validate HEAR task folders (one task, or a folder of tasks)")
    k.add_argument("dirs", nargs="+")
    k.add_argument("--no-audio", action="store_true", help="skip reading wav headers")
    return p


def _check(dirs: list[str], read_audio: bool) -> int:
    failed = 0
    for root in dirs:
        tasks = list(suite.iter_task_dirs(root)) or [root]
        for path in tasks:
            asr = is_asr_task(path)
            check = check_asr_task if asr else task_format.check_task
            problems = check(path, read_audio=read_audio)
            if problems:
                failed += 1
                print(f"FAIL {path}: {len(problems)} problem(s)")
                for line in problems:
                    print(f"  - {line}")
            elif asr:
                task = load_asr_task(path)
                n = sum(len(v) for v in task.splits.values())
                print(f"ok   {path}: transcription, {len(task.vocabulary)} characters, {n} clips in train, valid, test")
            else:
                task = task_format.load_task(path)
                n = sum(len(v) for v in task.splits.values())
                print(f"ok   {path}: {task.embedding_type}/{task.prediction_type}, {len(task.vocabulary)} labels, "
                      f"{n} clips in {', '.join(task.split_names)}")
                for warning in task_format.metadata_warnings(task.metadata):
                    print(f"  warning: {warning}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "build":
        start = time.perf_counter()
        paths = suite.build_suite(args.out, args.seed, args.size, args.tasks, args.workers)
        print(f"built {len(paths)} tasks in {args.out} ({time.perf_counter() - start:.1f} s)")
        return 0
    if args.command == "corpus":
        print(f"corpus at {suite.build_corpus(args.out, args.hours, args.seed, args.overwrite)}")
        return 0
    if args.command == "import":
        out = Path(args.out).absolute()
        with folder_lock(out.parent, f".{out.name}.audiorep.lock", what=out):  # two imports never share OUT
            if args.asr is not None:
                try:
                    splits = librispeech.parse_splits(args.asr)
                except ValueError as e:
                    _parser().error(f"--asr {e}")
                report = librispeech.import_librispeech(args.src, args.out, splits, name=args.name,
                                                        strict=args.strict, overwrite=args.overwrite)
            else:
                report = importer.import_task(args.src, args.out, name=args.name, seed=args.seed,
                                              folds=args.folds, sep=args.sep, duration=args.duration,
                                              metrics=args.metric, strict=args.strict, overwrite=args.overwrite)
        for problem in report.problems:
            print(f"skipped: {problem}", file=sys.stderr)
        if report.path is None:
            print(f"nothing written: {len(report.problems)} problem(s)", file=sys.stderr)
            return 1
        print(f"imported {report.written} clips into {report.path} ({len(report.problems)} skipped)")
        return 0
    return _check(args.dirs, not args.no_audio)


if __name__ == "__main__":
    sys.exit(main())
