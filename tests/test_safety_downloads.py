"""Weights are what the user named: the download cache keys on the whole source, local files
are read in place, hashes are checked against the right record, downloads are bounded and
cleaned up, and malformed references are refused naming the expected form. Every download
here is real urllib code against a server on 127.0.0.1 started by the test."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

import audiorep
from audiorep import cli
from audiorep.convert import fetch, sha256_of

MAX_MB_ENV, TIMEOUT_ENV = "AUDIOREP_MAX_DOWNLOAD_MB", "AUDIOREP_DOWNLOAD_TIMEOUT"  # documented in docs/safety.md


class Server:
    """Serves `routes` (path with query -> bytes, or a mode: "endless", "short", "stall")."""

    def __init__(self):
        self.routes: dict[str, object] = {}
        routes = self.routes

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                body = routes.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                try:
                    if body == "endless":  # no Content-Length, never ends
                        self.end_headers()
                        while True:
                            self.wfile.write(b"\0" * 65536)
                    elif body == "short":  # declares more than it sends
                        self.send_header("Content-Length", "100000")
                        self.end_headers()
                        self.wfile.write(b"x" * 1000)
                    elif body == "stall":
                        self.send_header("Content-Length", "10")
                        self.end_headers()
                        time.sleep(3)
                    elif body == "huge":  # declares 10 GiB
                        self.send_header("Content-Length", str(10 << 30))
                        self.end_headers()
                    else:
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIOREP_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def pair_of_sources(rng: random.Random) -> tuple[str, str]:
    """Two distinct URL paths (with query) that end in the same file name."""
    name = rng.choice(["model.pt", "checkpoint.pth", "pretrained.ckpt", "weights.safetensors"])
    kind = rng.choice(["folder", "query", "revision", "depth"])
    a, b = f"u{rng.randrange(10**6)}", f"v{rng.randrange(10**6)}"
    if kind == "folder":
        return f"/{a}/{name}", f"/{b}/{name}"
    if kind == "query":
        return f"/{a}/{name}?download=1", f"/{a}/{name}?download=2"
    if kind == "revision":
        return f"/{a}/resolve/main/{name}", f"/{a}/resolve/v1/{name}"
    return f"/{a}/{name}", f"/{a}/{b}/{name}"


def test_cache_keys_on_the_whole_url_over_generated_pairs(server, cache):
    """Property: for any two sources sharing a file name, each fetch gives its own bytes, in either
    order and again from the cache."""
    rng = random.Random(0)
    for _ in range(30):
        first, second = pair_of_sources(rng)
        server.routes[first], server.routes[second] = rng.randbytes(64), rng.randbytes(80)
        order = [first, second] if rng.random() < 0.5 else [second, first]
        for path in order + order:  # the second round comes from the cache
            assert fetch(server.url + path).read_bytes() == server.routes[path]
    assert all(p.startswith("downloads/") for p in files_under(cache))


def test_local_files_are_read_in_place_never_cached(tmp_path, cache):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "model.pt").write_bytes(folder.encode() * 10)
    for folder in ("a", "b", "a"):
        path = tmp_path / folder / "model.pt"
        assert fetch(path.as_uri()) == path
    assert files_under(cache) == set()
    with pytest.raises(ValueError, match="does not match the published"):
        fetch((tmp_path / "a" / "model.pt").as_uri(), sha256="0" * 64)


def test_two_checkpoints_with_one_file_name_load_as_themselves(server, cache, tmp_path):
    """The reported case end to end: the second checkpoint named model.safetensors is the one loaded."""
    sources = {}
    for seed in (1, 2):
        torch.manual_seed(seed)
        enc = audiorep.Encoder(audiorep.load("audiomae-tiny", random_init=True).config)
        enc.save(tmp_path / f"run{seed}")
        server.routes[f"/run{seed}/model.safetensors"] = (tmp_path / f"run{seed}" / "model.safetensors").read_bytes()
        sources[seed] = enc.state_dict()
    for seed in (1, 2):
        loaded = audiorep.load("audiomae-tiny", weights=f"{server.url}/run{seed}/model.safetensors").state_dict()
        assert all(torch.equal(loaded[k], sources[seed][k]) for k in loaded)


def test_recorded_hash_mismatch_names_both_hashes_and_the_source(server, cache):
    url = server.url + "/x/model.pt"
    server.routes["/x/model.pt"] = b"first release"
    path = fetch(url)
    recorded = sha256_of(path)
    path.write_bytes(b"damaged")
    with pytest.raises(ValueError) as e:  # a ValueError: the CLI reports it in one line
        fetch(url)
    assert url in str(e.value) and recorded in str(e.value) and sha256_of(path) in str(e.value)
    before = files_under(cache)
    other = server.url + "/y/model.pt"  # a published hash that the download does not match: never cached
    server.routes["/y/model.pt"] = b"not the release"
    with pytest.raises(ValueError, match="does not match the published " + "0" * 64):
        fetch(other, sha256="0" * 64)
    assert {p for p in files_under(cache) - before if not p.endswith((".lock", ".url"))} == set()


@pytest.mark.parametrize("mode, env, message", [
    ("huge", {}, "over the download limit"),
    ("endless", {MAX_MB_ENV: "0.5"}, "larger than 524288 bytes, the download limit"),
    ("short", {}, "ended after 1000 of the 100000 bytes"),
    ("stall", {TIMEOUT_ENV: "0.3"}, f"no data for 0.3 s \\({TIMEOUT_ENV}\\)"),
])
def test_downloads_are_bounded_and_leave_nothing_behind(server, cache, monkeypatch, mode, env, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    server.routes["/big/model.pt"] = mode
    with pytest.raises(OSError, match=message):
        fetch(server.url + "/big/model.pt")
    assert {p for p in files_under(cache) if not p.endswith((".lock", ".url"))} == set()


def test_bad_limit_settings_are_named(server, cache, monkeypatch):
    server.routes["/m.pt"] = b"x"
    for value in ("0", "-1", "lots", "inf"):
        monkeypatch.setenv(MAX_MB_ENV, value)
        with pytest.raises(ValueError, match=f"{MAX_MB_ENV}={value!r}: expected a number > 0"):
            fetch(server.url + "/m.pt")


def test_part_file_of_a_killed_download_is_removed_on_the_next_start(server, cache):
    """kill -9 leaves a .part; the next download (of any source) removes it, never a live one."""
    url = server.url + "/k/model.pt"
    server.routes["/k/model.pt"] = "endless"
    child = subprocess.Popen([sys.executable, "-c", f"from audiorep.convert import fetch; fetch({url!r})"],
                             env={**os.environ, "AUDIOREP_CACHE": str(cache)}, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while not any(p.stat().st_size > 0 for p in cache.rglob("*.part")) and time.time() < deadline:
            time.sleep(0.05)
        server.routes["/live/model.pt"] = b"while it runs"
        assert fetch(server.url + "/live/model.pt").read_bytes() == b"while it runs"
        assert list(cache.rglob("*.part"))  # a live download's part is left alone
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert list(cache.rglob("*.part"))  # what a kill -9 leaves
    server.routes["/other/model.pt"] = b"another file"
    assert fetch(server.url + "/other/model.pt").read_bytes() == b"another file"
    assert not list(cache.rglob("*.part"))
    server.routes["/k/model.pt"] = b"complete file"
    assert fetch(url).read_bytes() == b"complete file"


MALFORMED = ["hf://owner/repo", "hf://owner", "hf://", "hf://owner/repo/", "hf://owner//file.pt",
             "hf://owner/repo/file.pt@", "hf://owner/repo/../file.pt", "https://example.org",
             "https://example.org/", "https://example.org/models/", "https://example.org/a/..",
             "https://example.org/a/%2E%2E", "https://example.org/a/b%2Fc", "https:///file.pt",
             "ftp://example.org/file.pt", "file://otherhost/tmp/file.pt"]


@pytest.mark.parametrize("reference", MALFORMED)
def test_malformed_references_name_the_reference_and_the_expected_form(reference, cache):
    with pytest.raises(ValueError) as e:
        fetch(reference)
    assert str(e.value).startswith(f"{reference}: ") and "expected" in str(e.value)
    assert "Error" not in str(e.value) and str(cache) not in str(e.value)
    assert files_under(cache) == set()


def test_cli_reports_a_malformed_reference_in_one_line(tmp_path, cache, capsys):
    code = cli.main(["convert", "hf://owner/repo", "--preset", "audiomae-tiny", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("audiorep convert: error: hf://owner/repo: ") and "hf://OWNER/REPO/PATH" in err
