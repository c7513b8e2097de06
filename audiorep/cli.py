"""`audiorep <command> ...`: a thin dispatcher; each command is one module's `main(argv)`."""
from __future__ import annotations

import importlib
import re
import sys

from .files import FolderInUse

COMMANDS = {
    "embed": ("audiorep.commands.embed", "embed files or folders to .npy"),
    "convert": ("audiorep.commands.convert", "convert an official checkpoint to an audiorep encoder"),
    "presets": ("audiorep.commands.presets", "list the presets"),
    "tasks": ("audiorep.tasks.cli", "build, import and check HEAR-format tasks"),
    "evaluate": ("audiorep.evaluate.cli", "HEAR downstream evaluation and report"),
    "shards": ("audiorep.commands.shards", "write training data as tar shards (WAV or FLAC members)"),
    "pretrain": ("audiorep.commands.pretrain", "pretrain an encoder with a recipe"),
    "finetune": ("audiorep.commands.finetune", "fine-tune an encoder on a task"),
    "crossval": ("audiorep.commands.crossval", "cross-validate a recipe from scratch on a task's folds"),
    "demo": ("audiorep.demo", "the whole toolkit on a laptop: suite, pretraining, evaluation"),
    "study": ("audiorep.commands.study", "train several recipes alike and compare them in one table with intervals"),
}


EXTRAS = {  # optional module -> what installs it (pyproject's optional-dependencies)
    "espeakng_loader": "pip install 'audiorep[suite]'",
    "pretty_midi": "pip install 'audiorep[suite]'",
    "tinysoundfont": "pip install --no-deps tinysoundfont (its own dependency, pyaudio, is for playback only)",
    "julius": "pip install 'audiorep[train]'",
    "transformers": "pip install 'audiorep[codec]'",
    "sklearn": "pip install 'audiorep[kmeans]'",
    "huggingface_hub": "pip install 'audiorep[hub]'",
}


def usage() -> str:
    rows = "\n".join(f"  {name:<10} {doc}" for name, (_, doc) in COMMANDS.items())
    return f"usage: audiorep <command> [args]\n\ncommands:\n{rows}\n\n'audiorep <command> -h' for a command's options"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"audiorep: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    try:
        return importlib.import_module(COMMANDS[name][0]).main(rest) or 0
    except ModuleNotFoundError as e:
        # e.name is lost when the error comes back from a worker process: read it from the message
        named = e.name or next(iter(re.findall(r"No module named '([^']+)'", str(e))), "")
        root = named.split(".")[0]
        if root not in EXTRAS:
            raise
        print(f"audiorep {name}: error: this command needs the optional package {root!r}: {EXTRAS[root]}",
              file=sys.stderr)
        return 2
    except (OSError, KeyError, ValueError, FolderInUse) as e:  # the toolkit's clear errors: no traceback
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
    except RuntimeError as e:
        if not isinstance(e.__context__, OSError):  # a bug, or torch's own error: keep the traceback
            raise
        message = e  # raised in place of an OSError (offline, missing download): the toolkit's explanation
    print(f"audiorep {name}: error: {' '.join(str(message).split())}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
