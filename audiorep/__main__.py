"""`python -m audiorep <command>`: the console script, for environments without it on PATH.

`python -m` puts the working directory first on sys.path, where the console script has its
own folder; it is taken off (unless audiorep itself was found there, an uninstalled checkout),
so that names are read as the console script reads them: `--model RUN` with a folder RUN in
the working directory is that folder, not an importable (namespace) module."""
import os
import sys
from pathlib import Path

if sys.path and sys.path[0] in ("", os.getcwd()) and Path(__file__).resolve().parents[1] != Path.cwd().resolve():
    del sys.path[0]

from audiorep.cli import main  # noqa: E402 (after the path fix, as the console script imports it)

sys.exit(main())
