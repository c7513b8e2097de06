"""Two "nodes" on this machine: two torchrun invocations (--nnodes 2 --nproc-per-node 1, c10d
rendezvous on localhost, gloo on CPU). Pretraining matches one process (the tolerance of
test_train_ddp) and refuses a resume with another number of processes; embedding tar shards
to shards writes the bytes of one process."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch

import audiorep
from audiorep import cli
from test_embed_dist import outputs
from test_embed_shards import sample, write_tar
from test_train import make_corpus, make_run, small_config

TESTS = Path(__file__).resolve().parent

PRETRAIN = """
import os, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
sys.path.insert(0, {tests!r})
from test_train import make_run, small_config
trained = make_run(Path({out!r}), Path({manifest!r}), small_config(steps=3, batch_size=4), "two")
if os.environ["RANK"] == "0":
    torch.save(trained.state_dict(), Path({out!r}) / "two.pt")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_nodes(logs: Path, *target: str, timeout: float = 120) -> list[tuple[int, str]]:
    """Run `torchrun --nnodes 2 --nproc-per-node 1 ... TARGET` as two node agents: (exit code,
    output) of each (written to files under `logs`, so that no full pipe stalls a node)."""
    port, run_id = free_port(), uuid.uuid4().hex[:12]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(TESTS.parent))
    logs.mkdir(parents=True, exist_ok=True)
    procs = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
         "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", run_id,
         "--rdzv-conf", f"is_host={node == 0}", "--node-rank", str(node), *target],
        stdout=open(logs / f"node{node}.log", "w"), stderr=subprocess.STDOUT, env=env) for node in range(2)]
    try:
        return [(p.wait(timeout), (logs / f"node{n}.log").read_text()) for n, p in enumerate(procs)]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_pretraining_on_two_nodes_matches_one_process_and_refuses_another_world(tmp_path, one_thread):
    manifest = make_corpus(tmp_path)
    script = tmp_path / "pretrain.py"
    script.write_text(PRETRAIN.format(tests=str(TESTS), out=str(tmp_path), manifest=str(manifest)))
    for code, log in two_nodes(tmp_path / "logs", str(script)):
        assert code == 0, log[-3000:]
    one = make_run(tmp_path, manifest, small_config(steps=3, batch_size=4), "one").state_dict()
    two = torch.load(tmp_path / "two.pt")
    for name, w in one.items():
        torch.testing.assert_close(two[name], w, rtol=1e-4, atol=1e-5, msg=name)
    with pytest.raises(ValueError, match=f"{tmp_path / 'two'} was started with 2 processes, now 1; resume with the "
                                         r"same --nproc-per-node x --nnodes \(the batch split"):
        make_run(tmp_path, manifest, small_config(steps=3, batch_size=4), "two")


def test_embedding_shards_on_two_nodes_writes_the_bytes_of_one_process(tmp_path, one_thread):
    for s in range(3):
        write_tar(tmp_path / "src" / f"{s:03d}.tar", [m for i in range(2) for m in sample(2 * s + i)])
    audiorep.load("audiomae-tiny").save(tmp_path / "model")
    args = [str(tmp_path / "src" / "{000..002}.tar"), "--model", str(tmp_path / "model"), "--kind", "timestamp",
            "--format", "shards"]
    assert cli.main(["embed", *args, "--out", str(tmp_path / "one")]) == 0
    for code, log in two_nodes(tmp_path / "logs", "-m", "audiorep", "embed", *args, "--out", str(tmp_path / "two"),
                               "--device", "auto"):
        assert code == 0, log[-3000:]
    one, two = outputs(tmp_path / "one"), outputs(tmp_path / "two")
    assert sorted(one) == ["000.tar", "001.tar", "002.tar", "index.json"]
    assert [n for n in one if one[n] != two[n]] == []
