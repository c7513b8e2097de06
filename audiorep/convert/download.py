"""Weights named by a URL: what a reference may look like, the download cache and its limits,
and the sha256 checks.

- `https://HOST/PATH/FILE` (or http): downloaded once into `cache_dir()/downloads/<key>/FILE`,
  where <key> is the sha256 of the whole URL (query included), so two sources sharing a file
  name never share an entry. Beside the folder: `<key>.url` (the source), `<key>.sha256` (the
  recorded hash), `<key>.lock` and, while downloading, `<key>.part`. The download is bounded:
  never more than the Content-Length the server declares, nor than MAX_MB_ENV MiB (default
  DEFAULT_MAX_MB); a read that waits more than TIMEOUT_ENV seconds (default DEFAULT_TIMEOUT_S)
  fails. The `.part` is renamed into place only when complete; one left by a killed download is
  removed on the next start (under the entry's flock, so never a live one).
- `file:///PATH` and plain paths are read in place, never copied.
- `hf://OWNER/REPO/PATH/IN/REPO[@REVISION]` goes through huggingface_hub and its cache.

A published sha256 is checked; without one, the first download's sha256 is recorded in the
entry (`sha256`) and every later use of that source is checked against it.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import urllib.parse
import urllib.request
from pathlib import Path

MAX_MB_ENV, DEFAULT_MAX_MB = "AUDIOREP_MAX_DOWNLOAD_MB", 4096  # MiB
TIMEOUT_ENV, DEFAULT_TIMEOUT_S = "AUDIOREP_DOWNLOAD_TIMEOUT", 60.0  # seconds a read may wait
URL_FORM = "https://HOST/PATH/FILE (a file, not a folder)"
HF_FORM = "hf://OWNER/REPO/PATH/IN/REPO[@REVISION]"
FILE_FORM = "file:///ABSOLUTE/PATH"
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
BLOCK = 1 << 20


class DownloadError(RuntimeError, OSError):
    """A source that could not be downloaded (network, size limit, timeout): an OSError for callers
    that report I/O problems, a RuntimeError as before."""


class ChecksumError(RuntimeError, ValueError):
    """A file whose sha256 is not the published or recorded one."""


def cache_dir() -> Path:
    return Path(os.environ.get("AUDIOREP_CACHE", Path.home() / ".cache" / "audiorep"))


def is_url(source: str) -> bool:
    return bool(SCHEME.match(source))


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(BLOCK), b""):
            h.update(block)
    return h.hexdigest()


def entry(url: str, suffix: str = "") -> Path:
    """The cache folder of one source (keyed by the sha256 of the whole URL), or with `suffix`
    one of the files beside it (.url, .sha256, .lock, .part)."""
    return cache_dir() / "downloads" / (hashlib.sha256(url.encode()).hexdigest() + suffix)


def file_name(url: str) -> str:
    """The file name an http(s) URL names (its path's last part, unquoted); refused when empty,
    '.' or '..' (a folder, not a file)."""
    parts = urllib.parse.urlsplit(url)
    name = urllib.parse.unquote(parts.path.rsplit("/", 1)[-1])
    if not parts.netloc or name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ValueError(f"{url}: not a file URL; expected {URL_FORM}")
    return name


def parse_hf(url: str) -> tuple[str, str, str | None]:
    """hf://OWNER/REPO/PATH[@REVISION] -> (OWNER/REPO, PATH, REVISION or None)."""
    spec, at, revision = url[len("hf://"):].partition("@")
    parts = spec.split("/")
    if len(parts) < 3 or any(p in ("", ".", "..") for p in parts) or (at and not revision):
        raise ValueError(f"{url}: not a Hugging Face file reference; expected {HF_FORM}")
    return f"{parts[0]}/{parts[1]}", "/".join(parts[2:]), revision or None


def local_file(url: str) -> Path:
    """The path a file:// URL names (read in place)."""
    parts = urllib.parse.urlsplit(url)
    if parts.netloc not in ("", "localhost") or not parts.path:
        raise ValueError(f"{url}: not a local file URL; expected {FILE_FORM}")
    path = Path(urllib.request.url2pathname(parts.path))
    if not path.exists():
        raise FileNotFoundError(f"{url}: no such file ({path})")
    return path


def env_number(name: str, default: float) -> float:
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{name}={text!r}: expected a number > 0")
    return value


def max_bytes() -> int:
    return int(env_number(MAX_MB_ENV, DEFAULT_MAX_MB) * (1 << 20))


@contextlib.contextmanager
def locked(lock: Path, wait: bool = True):
    """Hold the flock of `lock` (one download per source at a time; the kernel releases it when
    the process dies) -> True, or False at once when another process holds it and not `wait`."""
    import fcntl

    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True


def remove_stale_parts(folder: Path) -> None:
    """Delete the `.part` files of killed downloads: those whose source's lock nobody holds."""
    for part in folder.glob("*.part"):
        with locked(part.with_suffix(".lock"), wait=False) as free:
            if free:
                part.unlink(missing_ok=True)


def copy_bounded(response, out, url: str, declared: int | None, limit: int) -> None:
    """Copy the body to `out`, at most `limit` bytes (http.client itself never reads past the
    declared Content-Length); a body shorter than declared is an error."""
    from tqdm import tqdm

    total = 0
    with tqdm(total=declared, unit="B", unit_scale=True, desc=f"downloading {file_name(url)}") as bar:
        for block in iter(lambda: response.read(BLOCK), b""):
            total += len(block)
            if total > limit:
                raise DownloadError(f"{url}: larger than {limit} bytes, the download limit ({MAX_MB_ENV} MiB); "
                                    "stopped and removed")
            out.write(block)
            bar.update(len(block))
    if declared is not None and total != declared:
        raise DownloadError(f"{url}: ended after {total} of the {declared} bytes the server declared")


def download(url: str, sha256: str | None = None) -> Path:
    """The cached copy of an http(s) URL, downloaded (bounded, atomically) when missing; a new
    download that does not match a published `sha256` never enters the cache."""
    target = entry(url) / file_name(url)
    tmp = entry(url, ".part")
    remove_stale_parts(tmp.parent)
    with locked(entry(url, ".lock")):
        tmp.unlink(missing_ok=True)  # left by a killed download: no live one while we hold the lock
        if target.exists():
            return target
        entry(url, ".url").write_text(url + "\n")  # for a reader of the cache
        limit, timeout = max_bytes(), env_number(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as out:
                length = r.headers.get("Content-Length")
                declared = int(length) if length and length.strip().isdigit() else None
                if declared is not None and declared > limit:
                    raise DownloadError(f"{url}: {declared} bytes, over the download limit of {limit} bytes "
                                        f"({MAX_MB_ENV} MiB); raise it to download this file")
                copy_bounded(r, out, url, declared, limit)
        except DownloadError:
            tmp.unlink(missing_ok=True)
            raise
        except (OSError, http.client.HTTPException, ValueError) as e:
            tmp.unlink(missing_ok=True)
            why = f"no data for {timeout:g} s ({TIMEOUT_ENV})" if isinstance(e, TimeoutError) else str(e)
            raise DownloadError(f"cannot download {url} ({why}); download it yourself and pass weights=PATH, "
                                "or use random_init=True") from None
        try:
            verify(tmp, url, sha256, None)
        except ChecksumError:
            tmp.unlink()
            raise
        target.parent.mkdir(exist_ok=True)
        os.replace(tmp, target)
    return target


def fetch_hf(url: str) -> Path:
    """`hf://owner/repo/path/in/repo[@revision]` through huggingface_hub (its cache, revisions)."""
    repo, filename, revision = parse_hf(url)
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise DownloadError(f"{url}: downloading from the Hugging Face hub needs `pip install huggingface_hub` "
                            "(or `pip install audiorep[hub]`)") from None
    try:
        return Path(hf_hub_download(repo, filename, revision=revision))
    except Exception as e:  # offline, missing file, gated repository
        raise DownloadError(f"cannot download {url} ({e}); download it yourself and pass weights=PATH, "
                            "or use random_init=True") from None


def verify(path: Path, source: str, sha256: str | None, record: Path | None) -> None:
    """Check `path` against the published `sha256`, else against the hash recorded for `source`
    (recording it on first use when `record` is given)."""
    recorded = record.read_text().strip() if record is not None and record.exists() else None
    expected = sha256 or recorded
    if expected is None and record is None:
        return
    digest = sha256_of(path)
    if expected is None:
        record.write_text(digest + "\n")
        return
    if digest == expected:
        return
    if sha256:
        raise ChecksumError(f"{source}: {path} has sha256 {digest}, which does not match the published "
                            f"{expected}; the file is damaged or not the release: delete it to download it again")
    raise ChecksumError(f"{source}: {path} has sha256 {digest}, which does not match {expected}, recorded at its "
                        f"first download ({record}); the source changed or the file is damaged: delete {path} to "
                        f"download it again, or {record} to accept the new content")


def fetch(source: str, sha256: str | None = None) -> Path:
    """The local file a URL names, downloaded and cached when remote, checked against `sha256`
    (or the hash recorded for this exact source)."""
    if source.startswith("hf://"):
        path = fetch_hf(source)
        record = entry(source, ".sha256")
        record.parent.mkdir(parents=True, exist_ok=True)
    elif source.startswith(("http://", "https://")):
        path = download(source, sha256)
        record = entry(source, ".sha256")
    elif source.startswith("file://"):
        path, record = local_file(source), None
    else:
        raise ValueError(f"{source}: unsupported URL; expected {URL_FORM}, {HF_FORM}, {FILE_FORM} or a local path")
    verify(path, source, sha256, record)
    return path
