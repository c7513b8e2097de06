"""Reading the fields of a study spec: every problem a SpecError naming the file and the field."""
from __future__ import annotations

from pathlib import Path


class SpecError(ValueError):
    """A spec field that cannot be used; the message names the file and the field."""


def fail(spec: Path, where: str, problem: str):
    raise SpecError(f"{spec}: {where}: {problem}")


def keys_of(spec: Path, where: str, table, allowed: tuple[str, ...]) -> dict:
    """`table`, a TOML table with no key outside `allowed`."""
    if not isinstance(table, dict):
        fail(spec, where, f"expected a table, got {table!r}")
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        fail(spec, where, f"unknown key {unknown[0]!r} (keys: {', '.join(allowed)})")
    return table


def typed(spec: Path, where: str, value, kind, check=None, expect: str = ""):
    """`value`, of type `kind` (a bool is no number) and passing `check`; `expect` says what was expected."""
    ok = isinstance(value, kind) and not (kind in (int, float, (int, float)) and isinstance(value, bool))
    if not ok or (check is not None and not check(value)):
        fail(spec, where, f"expected {expect or getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def strings(spec: Path, where: str, value) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        fail(spec, where, f"expected a list of strings, got {value!r}")
    return tuple(value)


def path_of(spec: Path, value) -> Path:
    """A path of the spec, relative to the spec file's folder."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else (spec.parent / p).resolve()


def seeds_of(spec: Path, where: str, value) -> tuple[int, ...]:
    """A count n (seeds 0 .. n-1) or a list of distinct seeds."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            fail(spec, where, f"expected a count >= 1 or a list of seeds, got {value}")
        return tuple(range(value))
    if (not isinstance(value, list) or not value or len(set(value)) != len(value)
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value)):
        fail(spec, where, f"expected a count >= 1 or a list of distinct seeds >= 0, got {value!r}")
    return tuple(value)
