"""`audiorep embed` under torchrun (2 CPU processes, gloo): the bytes of one process (index.json
and every .npy); kill -9 of a rank, then the same command (or another number of processes)
continues without recomputing finished files; a locked --out refuses every rank, no hang."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import audiorep
from audiorep import audio, cli
from test_safety_fs import holder

SR = 16000
ROOT = Path(__file__).resolve().parents[1]

# `audiorep embed` whose rank KILL_RANK SIGKILLs itself when it is about to embed its
# (KILL_AFTER + 1)-th file: KILL_AFTER outputs of that rank exist, journaled
DYING_EMBED = """
import os, signal, sys
from audiorep import cli
from audiorep.commands import embed
real, done = embed.embed_file, [0]
def embed_or_die(*args, **kwargs):
    if os.environ["RANK"] == os.environ["KILL_RANK"] and done[0] == int(os.environ["KILL_AFTER"]):
        os.kill(os.getpid(), signal.SIGKILL)
    done[0] += 1
    return real(*args, **kwargs)
embed.embed_file = embed_or_die
sys.exit(cli.main(sys.argv[1:]))
"""


def make_clips(folder: Path, n: int = 7) -> Path:
    """n short tones (one in a subfolder, lengths differ) and one file that is not audio."""
    rng = np.random.default_rng(0)
    for i in range(n):
        t = np.arange(SR // 4 + 800 * i) / SR
        path = folder / ("sub" if i == 3 else "") / f"{i}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        wave = 0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t) + 0.01 * rng.standard_normal(len(t))
        audio.write(path, wave.astype(np.float32), SR)
    (folder / "bad.wav").write_bytes(b"RIFFnope")
    return folder


def env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


def torchrun(*args: str, procs: int = 2, script: str | None = None, timeout: float = 120, **extra):
    """`torchrun --standalone --nproc-per-node procs -m audiorep ARGS` (or a script)."""
    target = ["-m", "audiorep"]
    if script:  # torchrun runs a file: put the script in one
        path = Path(extra.pop("workdir")) / "worker.py"
        path.write_text(script)
        target = [str(path)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs), *target,
           *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**env(), **extra})


def outputs(out: Path) -> dict[str, bytes]:
    """The bytes of index.json and every .npy (and .tar) in out; nothing else may be left there."""
    names = sorted(p.name for p in out.iterdir())
    assert [n for n in names if n.startswith(".") and n != ".audiorep.lock.guard"] == [], names
    return {n: (out / n).read_bytes() for n in names if n.endswith((".npy", ".json", ".tar"))}


def mtimes(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in out.glob("*.npy")}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Clips, a saved tiny model, and the outputs of one process (in this process, 1 thread)."""
    root = tmp_path_factory.mktemp("embed_dist")
    src, model = make_clips(root / "src"), root / "model"
    audiorep.load("audiomae-tiny").save(model)
    args = [str(src), "--model", str(model), "--kind", "timestamp"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli.main(["embed", *args, "--out", str(root / "one")]) == 1  # bad.wav
    finally:
        torch.set_num_threads(threads)
    return args, outputs(root / "one")


def test_two_processes_write_the_bytes_of_one(setup, tmp_path):
    args, one = setup
    done = torchrun("embed", *args, "--out", str(tmp_path / "two"), "--device", "auto")
    assert done.returncode != 0 and "bad.wav" in done.stderr  # the bad file is reported by rank 0's exit
    two = outputs(tmp_path / "two")
    assert sorted(two) == sorted(one) and len(one) == 1 + 2 * 7  # index, 7 embeddings + 7 timestamps
    assert [n for n in one if one[n] != two[n]] == []
    index = json.loads(one["index.json"])
    assert len(index["files"]) == 7 and list(index["errors"]) == [str(Path(args[0]) / "bad.wav")]


def test_kill_9_of_a_rank_then_the_same_command_continues(setup, tmp_path):
    """Rank 0 dies holding --out's lock (rank 1 dies in the next test)."""
    args, one = setup
    run = ["embed", *args, "--out", str(tmp_path / "out")]
    killed = torchrun(*run, script=DYING_EMBED, workdir=tmp_path, KILL_RANK="0", KILL_AFTER="2")
    assert killed.returncode != 0 and "Signal 9 (SIGKILL) received" in killed.stderr, killed.stderr[-2000:]
    before = mtimes(tmp_path / "out")
    assert len(before) >= 2 * 2  # rank 0's two files (+ timestamps), maybe some of rank 1's
    again = torchrun(*run)
    assert "bad.wav" in again.stderr
    assert {n: t for n, t in mtimes(tmp_path / "out").items() if n in before} == before  # nothing recomputed
    assert outputs(tmp_path / "out") == one


def test_a_resume_with_another_number_of_processes_reuses_finished_files(setup, tmp_path, one_thread):
    args, one = setup
    run = ["embed", *args, "--out", str(tmp_path / "out")]
    killed = torchrun(*run, script=DYING_EMBED, workdir=tmp_path, KILL_RANK="1", KILL_AFTER="1")
    assert killed.returncode != 0
    before = mtimes(tmp_path / "out")
    assert len(before) >= 2
    assert cli.main(run) == 1  # one process now; bad.wav still reported
    assert {n: t for n, t in mtimes(tmp_path / "out").items() if n in before} == before
    assert outputs(tmp_path / "out") == one


def test_a_locked_out_refuses_every_rank_without_a_hang(setup, tmp_path):
    args, _ = setup
    out = tmp_path / "out"
    proc = holder(out, 120)
    try:
        done = torchrun("embed", *args, "--out", str(out), timeout=90)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert done.returncode != 0
    assert done.stderr.count(f"another run (pid {proc.pid} ") == 2  # both ranks learn of it and stop
    assert sorted(p.name for p in out.iterdir()) == [".audiorep.lock", ".audiorep.lock.guard"]


def test_an_index_written_before_shards_existed_is_reused(setup, tmp_path, one_thread):
    """Indexes without the "shards" table (and file runs' setups without a "format") still
    describe their outputs: nothing is recomputed."""
    args, one = setup
    run = ["embed", *args, "--out", str(tmp_path / "out")]
    assert cli.main(run) == 1
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert "format" not in index["setup"]
    del index["shards"]
    (tmp_path / "out" / "index.json").write_text(json.dumps(index))
    before = mtimes(tmp_path / "out")
    assert cli.main(run) == 1
    assert mtimes(tmp_path / "out") == before and outputs(tmp_path / "out") == one
