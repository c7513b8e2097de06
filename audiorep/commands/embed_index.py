"""embed's bookkeeping: which outputs belong to which input, kept across runs and processes.

OUT/index.json: {"setup", "model", "files": {source: record}, "shards": {shard: record},
"errors": {source: message}}, written by rank 0 only, with sorted keys, so the same inputs
give the same bytes whatever the number of processes. While a run goes, every rank appends
one line per finished input to its own journal OUT/.embed-rank-R.jsonl (a line is complete,
or, torn by a kill -9, ignored). Rank 0 folds all journals into index.json when a run starts
(whatever a killed run finished is kept, whatever its number of processes) and when it ends,
then deletes them.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

from ..files import check_name, write_json

INDEX = "index.json"
TIMESTAMPS = ".timestamps_ms.npy"
JOURNAL = ".embed-rank-{}.jsonl"
DONE = {"done": True}  # a journal's last line once its rank has finished its share


def read_index(path: Path, setup: dict) -> dict:
    """The index of earlier runs when they used this exact setup (the model's identity: its
    config and weights; the kind; the settings; the output format), else a fresh one
    (earlier outputs are then recomputed)."""
    fresh = {"setup": setup, "files": {}, "shards": {}}
    if not path.exists():
        return fresh
    try:
        index = json.loads(path.read_text())
        same = index.get("setup") == setup and isinstance(index.get("files"), dict)
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        print(f"audiorep embed: {path} is not a readable index; recomputing every file", file=sys.stderr)
        return fresh
    if not same:
        print(f"audiorep embed: {path.parent} holds outputs of another model, weights or settings; "
              "recomputing every file", file=sys.stderr)
        return fresh
    index["shards"] = index["shards"] if isinstance(index.get("shards"), dict) else {}
    return index


def outputs(record: dict) -> list[str]:
    """The files in OUT that a file or shard record names."""
    if isinstance(record.get("samples"), dict) and "tar" not in record:
        return [n for sample in record["samples"].values() for n in outputs(sample)]
    return [record[k] for k in ("npy", "timestamps_ms", "tar") if isinstance(record.get(k), str)]


def taken_names(index: dict) -> dict[str, str]:
    """Output name -> the source that owns it (a file, or SHARD#KEY for a shard's sample)."""
    taken = {name: src for src, rec in index["files"].items() for name in outputs(rec)}
    for shard, rec in index["shards"].items():
        for key, sample in (rec.get("samples") or {}).items():
            taken.update({name: f"{shard}#{key}" for name in outputs(sample)})
    return taken


class Journal:
    """This rank's record of finished inputs: one JSON line each, flushed as written."""

    def __init__(self, out: Path, rank: int, setup: dict):
        self.file = open(out / JOURNAL.format(rank), "w")
        self.write({"setup": setup})

    def write(self, entry: dict) -> None:
        self.file.write(json.dumps(entry) + "\n")
        self.file.flush()

    def record(self, kind: str, source: str, record: dict) -> None:
        self.write({"kind": kind, "source": source, "record": record})

    def error(self, source: str, message: str) -> None:
        self.write({"kind": "errors", "source": source, "message": message})

    def close(self) -> None:
        self.write(DONE)
        self.file.close()


def journal_entries(path: Path, setup: dict) -> list[dict]:
    """The complete entries of a journal written with this setup (none for another setup)."""
    entries = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:  # the line a kill -9 cut short
            continue
    if not entries or entries[0] != {"setup": setup}:
        return []
    return [e for e in entries[1:] if isinstance(e, dict) and e.get("kind") in ("files", "shards", "errors")]


def journals(out: Path) -> list[Path]:
    return sorted(out.glob(JOURNAL.format("*")))


def fold(out: Path, setup: dict) -> dict:
    """Rank 0 at the start: index.json plus what the journals of killed runs finished
    (any number of processes), written back to index.json; the journals are then deleted."""
    index = read_index(out / INDEX, setup)
    absorb(out, setup, index)
    return index


def absorb(out: Path, setup: dict, index: dict, shards=()) -> None:
    """Every journal's entries into `index` (records by source, errors by source), with the
    errors recorded in the records of `shards` (reported on every run), index.json written,
    then the journals deleted."""
    found = journals(out)
    for path in found:
        for e in journal_entries(path, setup):
            if e["kind"] == "errors":
                index.setdefault("errors", {})[e["source"]] = e["message"]
            else:
                index[e["kind"]][e["source"]] = e["record"]
    for shard in shards:
        index.setdefault("errors", {}).update(index["shards"].get(shard, {}).get("errors", {}))
    write_json(out / INDEX, index)
    for path in found:
        path.unlink()


def wait_for_ranks(out: Path, size: int, poll_s: float = 0.5) -> None:
    """Rank 0 waits until every rank's journal ends with its DONE line. (Files, not a
    collective: a rank with a long share may outlast any process-group timeout; a rank
    that dies makes torchrun stop the others.)"""
    pending = [out / JOURNAL.format(r) for r in range(size)]
    while pending:
        pending = [p for p in pending if not finished(p)]
        if pending:
            time.sleep(poll_s)


def finished(journal: Path) -> bool:
    """Whether a journal ends with its DONE line (read from the end: journals grow long)."""
    last = (json.dumps(DONE) + "\n").encode()
    if not journal.exists():
        return False
    with open(journal, "rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - len(last)))
        return f.read() == last


def finish(out: Path, setup: dict, model: str, run: dict[str, set[str]], errors: dict[str, str]) -> dict:
    """Rank 0 at the end: this run's records replace those of its inputs (`run`: kind ->
    sources), records of other inputs stay; errors are this run's, plus those recorded in
    its shards' records; index.json written, journals deleted."""
    index = read_index(out / INDEX, setup)
    for kind, sources in run.items():
        index[kind] = {s: r for s, r in index[kind].items() if s not in sources}
    index["errors"], index["model"] = dict(errors), model
    absorb(out, setup, index, run.get("shards", ()))
    return index


# ---------------------------------------------------------------- output names


def unique(files: list[Path]) -> list[Path]:
    """Each file once, however many of the given paths lead to it."""
    seen: set[str] = set()
    return [f for f in files if not (os.path.realpath(f) in seen or seen.add(os.path.realpath(f)))]


def flat_stem(path: Path, roots: list[Path]) -> str:
    """The path below the folder it was found in, '/' -> '__', no suffix."""
    for root in roots:
        if root.is_dir() and root in path.parents:
            return str(path.relative_to(root).with_suffix("")).replace(os.sep, "__")
    return path.stem


def output_stems(files: list[Path], roots: list[Path], taken: dict[str, str]) -> dict[Path, str]:
    """One output stem per file, never shared: the flattened name (`sub__a` for sub/a.wav),
    plus the extension when two inputs differ only by it (`a.wav`, `a.flac`), plus a hash of
    the source path when names still clash (same name in two given folders, names that
    flatten alike, a name another source already holds in `taken`, names that look like
    another output or a temporary file). Computed from the whole file list, so every rank
    gives every file the same stem."""
    stems = {f: flat_stem(f, roots) for f in files}
    counts = Counter(stems.values())
    stems = {f: f"{s}{f.suffix}" if counts[s] > 1 and f.suffix else s for f, s in stems.items()}
    counts = Counter(stems.values())
    for f, s in stems.items():
        source = os.path.abspath(f)
        clash = counts[s] > 1 or s.startswith(".") or s.endswith(TIMESTAMPS[:-4]) or any(
            taken.get(n, source) != source for n in (f"{s}.npy", f"{s}{TIMESTAMPS}"))
        if clash:
            stems[f] = f"{s}-{hashlib.sha256(source.encode()).hexdigest()[:12]}"
    owner: dict[str, str] = {}
    for f, s in stems.items():
        source = os.path.abspath(f)
        for n in (f"{s}.npy", f"{s}{TIMESTAMPS}"):
            if owner.setdefault(n, source) != source or taken.get(n, source) != source:
                raise ValueError(f"cannot give {f} an output name of its own ({n} is {owner[n]}'s too); "
                                 "embed these inputs into separate --out folders")
    return stems


def shard_stems(shards: list[Path]) -> dict[Path, str]:
    """Each shard's name without .tar: the name of its output shard, and the first part of
    its samples' output stems (SHARD__KEY). Two shards of one name, or names such that
    SHARD__KEY could mean two samples (`a` and `a__b`), are refused."""
    stems = {s: s.name[:-len(".tar")] for s in shards}
    seen: dict[str, Path] = {}
    for shard, stem in stems.items():
        check_name(stem, f"{shard}: shard name")
        if stem in seen:
            raise ValueError(f"two input shards are named {shard.name} ({seen[stem]}, {shard}): their outputs "
                             "would share names; embed them into separate --out folders")
        seen[stem] = shard
    for shard, stem in stems.items():
        prefixes = [stem[:i] for i in range(len(stem)) if stem.startswith("__", i)]
        if any(p in seen for p in prefixes):
            raise ValueError(f"shards {seen[next(p for p in prefixes if p in seen)]} and {shard}: SHARD__KEY output "
                             "names could clash; rename one or embed them into separate --out folders")
    return stems


def sample_stem(shard_stem: str, key: str, where: str) -> str:
    """SHARD__KEY for a sample's per-file outputs (a key's folders flattened like files':
    '/' -> '__'), checked as one plain name: names from data never become paths unchecked."""
    if not key:
        raise ValueError(f"{where}: empty key (a member name starting with '.')")
    return check_name(f"{shard_stem}__{key.replace('/', '__')}", where)
