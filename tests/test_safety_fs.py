"""Names and paths from data (files.check_name / confine) and the folder lock, with real
concurrent processes; `tree` is the filesystem snapshot the other safety tests compare."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import audiorep.files
from audiorep.files import LOCK, FolderInUse, check_name, confine, folder_lock


def tree(root: Path) -> dict[str, tuple]:
    """Every entry under root (files, links, FIFOs; links not followed) -> (kind, size, mtime_ns)."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            st = os.lstat(os.path.join(folder, name))
            found[os.path.relpath(os.path.join(folder, name), root)] = (st.st_mode >> 12, st.st_size, st.st_mtime_ns)
    return found


def changed_outside(before: dict, after: dict, *allowed: str) -> list[str]:
    """Entries created, changed or removed anywhere but under the `allowed` folders."""
    names = set(before) | set(after)
    return sorted(n for n in names if before.get(n) != after.get(n)
                  and not any(n == a or n.startswith(a + os.sep) for a in allowed))


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "/tmp/x", "a\\b", "x\0y", 3, None])
def test_names_with_separators_or_dots_are_refused(name):
    with pytest.raises(ValueError, match="task_name"):
        check_name(name, "task_name")


def test_plain_names_pass():
    assert check_name("my-task_1.v2", "task_name") == "my-task_1.v2"


@pytest.mark.parametrize("rel", ["../x.wav", "a/../../x.wav", "/etc/passwd", "a\\..\\..\\x", "C:\\x.wav", "", None])
def test_relative_paths_that_escape_are_refused(tmp_path, rel):
    with pytest.raises(ValueError, match="train.json entry"):
        confine(tmp_path, rel, "train.json entry")


def test_relative_paths_inside_pass(tmp_path):
    assert confine(tmp_path, "16000/train/a..b.wav", "entry") == tmp_path / "16000" / "train" / "a..b.wav"


# children load files.py alone (numpy only), not the whole package: a lock costs no torch import
LOAD = f"""
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("files", {audiorep.files.__file__!r})
files = importlib.util.module_from_spec(spec)
spec.loader.exec_module(files)
"""

HOLD = LOAD + """
with files.folder_lock(sys.argv[1], *sys.argv[3:]):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def holder(folder: Path, seconds: float, *name: str) -> subprocess.Popen:
    """A process holding folder's lock (or the lock file `name` in it) for `seconds`."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), str(seconds), *name], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_live_lock_refuses_a_second_run_and_a_dead_ones_lock_is_taken_over(tmp_path):
    proc = holder(tmp_path, 60)
    try:
        with pytest.raises(FolderInUse, match=f"another run \\(pid {proc.pid} .*\\) is using {tmp_path}"):
            with folder_lock(tmp_path):
                pass
    finally:
        proc.send_signal(signal.SIGKILL)  # dies holding the lock: a stale lock file stays
        proc.wait()
    assert (tmp_path / LOCK).read_text().split()[0] == str(proc.pid)
    with folder_lock(tmp_path):
        assert (tmp_path / LOCK).read_text().split()[0] == str(os.getpid())
    assert not (tmp_path / LOCK).exists()


RACE = LOAD + """
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # all start together
try:
    with files.folder_lock(sys.argv[1]):
        start = time.time()
        time.sleep(0.3)
        print("held", start, time.time())
except files.FolderInUse as e:
    print("refused", e)
"""


def test_processes_racing_for_a_stale_lock_never_hold_it_together(tmp_path):
    (tmp_path / LOCK).write_text("999999999 " + os.uname().nodename)  # a dead pid's lock
    at = time.time() + 1.0
    procs = [subprocess.Popen([sys.executable, "-c", RACE, str(tmp_path), str(at)], stdout=subprocess.PIPE, text=True)
             for _ in range(4)]
    lines = [p.communicate(timeout=60)[0].strip() for p in procs]
    held = [tuple(map(float, line.split()[1:])) for line in lines if line.startswith("held")]
    assert held and all(line.startswith(("held", "refused")) for line in lines), lines
    assert all(f"is using {tmp_path}" in line for line in lines if line.startswith("refused"))
    spans = sorted(held)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:])), spans
    assert not (tmp_path / LOCK).exists()
