"""Concurrent runs on one output folder: a second embed or pretrain on a folder a live run
holds stops at once with "another run ... is using DIR" and changes nothing; the first run
finishes complete; a lock left by a killed run is taken over."""
import json
import os
import signal
import subprocess
import sys

import numpy as np

import audiorep
from audiorep import audio, cli
from audiorep.files import LOCK
from test_safety_fs import changed_outside, holder, tree

SR = 16000


def clips(folder, n):
    t = np.arange(SR // 2) / SR
    for i in range(n):
        audio.write(folder / f"{i}.wav", (0.3 * np.sin(2 * np.pi * (200 + 100 * i) * t)).astype(np.float32), SR)


# a real `audiorep embed` that stops itself (SIGSTOP) after its first file: mid-run, holding --out
PAUSING_EMBED = """
import os, signal, sys
from audiorep import cli
from audiorep.commands import embed
real = embed.embed_file
def first_then_stop(*args, **kwargs):
    result = real(*args, **kwargs)
    embed.embed_file = real
    os.kill(os.getpid(), signal.SIGSTOP)
    return result
embed.embed_file = first_then_stop
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_second_embed_on_a_busy_folder_is_refused_and_the_first_completes(tmp_path, capsys, one_thread):
    src, out, model = tmp_path / "src", tmp_path / "out", tmp_path / "model"
    clips(src, 3)
    audiorep.load("audiomae-tiny").save(model)
    run = ["embed", str(src), "--model", str(model), "--out", str(out)]
    first = subprocess.Popen([sys.executable, "-c", PAUSING_EMBED, *run], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        _, status = os.waitpid(first.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status), "the first run ended before it was paused"
        assert (out / LOCK).read_text().split()[0] == str(first.pid)
        before = tree(tmp_path)
        assert cli.main(run) == 2
        assert f"another run (pid {first.pid} " in capsys.readouterr().err
        assert changed_outside(before, tree(tmp_path)) == []  # the refused run touched nothing, out/ included
    finally:
        first.send_signal(signal.SIGCONT)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    index = json.loads((out / "index.json").read_text())
    assert set(index["files"]) == {str(src / f"{i}.wav") for i in range(3)}
    assert all((out / rec["npy"]).exists() for rec in index["files"].values())
    assert not (out / LOCK).exists()
    assert cli.main(run) == 0  # free again


def test_pretrain_on_a_busy_run_folder_is_refused_then_runs_after_the_holder_dies(tmp_path, capsys, one_thread):
    clips(tmp_path / "data", 4)
    run = tmp_path / "run"
    args = ["pretrain", "audiomae", "--data", str(tmp_path / "data"), "--out", str(run), "--preset", "audiomae-tiny",
            "steps=2", "batch_size=2", "warmup_steps=1", "data.workers=0", "data.crop_s=0.5"]
    proc = holder(run, 60)
    try:
        before = tree(tmp_path)
        assert cli.main(args) == 2
        assert f"another run (pid {proc.pid} " in capsys.readouterr().err
        assert changed_outside(before, tree(tmp_path)) == []
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert cli.main(args) == 0
    assert audiorep.load(str(run)) is not None and not (run / LOCK).exists()


def test_evaluate_and_import_on_a_busy_folder_are_refused(tmp_path, capsys):
    clips(tmp_path / "src" / "a", 3)
    clips(tmp_path / "src" / "b", 3)
    out = tmp_path / "out"
    proc = holder(out, 60)
    try:
        before = tree(tmp_path)
        assert cli.main(["evaluate", "--model", "logmel", "--tasks", str(tmp_path), "--out", str(out)]) == 2
        assert f"another run (pid {proc.pid} " in capsys.readouterr().err
        assert changed_outside(before, tree(tmp_path)) == []
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    task = tmp_path / "tasks" / "t"
    proc = holder(task.parent, 60, f".{task.name}.audiorep.lock")
    try:
        before = tree(tmp_path)
        assert cli.main(["tasks", "import", str(tmp_path / "src"), str(task)]) == 2
        err = capsys.readouterr().err
        assert f"another run (pid {proc.pid} on " in err and f"is using {task};" in err
        assert changed_outside(before, tree(tmp_path)) == []
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert cli.main(["tasks", "import", str(tmp_path / "src"), str(task)]) == 0


def test_a_lock_held_by_a_zombie_is_taken_over(tmp_path):
    """A killed run whose process nobody reaps (PID 1 of some containers reaps no orphans)
    stays a zombie: its pid answers signal 0, but it holds nothing."""
    import time

    from audiorep.files import folder_lock
    proc = holder(tmp_path / "run", 60)
    proc.send_signal(signal.SIGKILL)
    deadline = time.time() + 10
    while time.time() < deadline and open(f"/proc/{proc.pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
        time.sleep(0.01)
    try:
        os.kill(proc.pid, 0)  # not reaped yet: the pid still exists
        with folder_lock(tmp_path / "run"):
            assert (tmp_path / "run" / LOCK).read_text().split()[0] == str(os.getpid())
    finally:
        proc.wait()
