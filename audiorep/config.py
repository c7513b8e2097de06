"""Frozen dataclass configs: dict/JSON round trip and `key=value` overrides by field name.

One small mechanism used everywhere: presets are dataclass instances, runs write
`to_dict(cfg)` next to their outputs, and the CLI applies `override(cfg, ["a.b=3"])`.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


class Registry(dict):
    """kind -> config class, for a field that takes any registered kind of config:

        BACKBONES = Registry("backbone", default="vit")
        backbone: Annotated[object, BACKBONES] = ...

    A dict value is built as the class its `kind` names (`default` when it has none, so
    configs written before the field existed still load)."""

    def __init__(self, what: str, default: str):
        super().__init__()
        self.what, self.default = what, default

    def register(self, config_cls) -> None:
        kind = config_cls.kind if isinstance(getattr(config_cls, "kind", None), str) else None
        if kind is None:
            raise TypeError(f"{config_cls.__name__}: a {self.what} config needs a `kind: str` field with a default")
        self[kind] = config_cls

    def config_class(self, kind: str):
        if kind not in self:
            raise ValueError(f"unknown {self.what} kind {kind!r}; registered: {sorted(self)}")
        return self[kind]


def _coerce(tp, value):
    """Turn a JSON value or a CLI string into the declared field type."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if value is None:
        return None
    if origin is typing.Annotated and isinstance(tp.__metadata__[0], Registry):
        registry = tp.__metadata__[0]
        if isinstance(value, dict):
            return from_dict(registry.config_class(value.get("kind", registry.default)), value)
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value) if isinstance(value, dict) else value
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if isinstance(value, str) and value.lower() in ("none", "null"):
            return None
        if len(inner) == 1:
            return _coerce(inner[0], value)
        if isinstance(value, dict):  # a union of configs: pick the one whose `kind` matches
            kinds = {getattr(a, "kind", None): a for a in inner if dataclasses.is_dataclass(a)}
            if value.get("kind") not in kinds:
                raise ValueError(f"unknown kind {value.get('kind')!r}; expected one of {sorted(map(str, kinds))}")
            return from_dict(kinds[value["kind"]], value)
        return _coerce(inner[0], value)
    if origin is tuple:
        items = value.split(",") if isinstance(value, str) else list(value)
        item_tp = args[0] if args else str
        return tuple(_coerce(item_tp, v) for v in items if v != "")
    if tp is bool:
        if isinstance(value, str):
            if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(f"expected a boolean, got {value!r}")
            return value.lower() in ("1", "true", "yes")
        return bool(value)
    if tp in (int, float, str):
        return tp(value)
    return value


def from_dict(cls, data: dict):
    """Build dataclass `cls` from a (possibly nested) dict, ignoring nothing silently."""
    hints = typing.get_type_hints(cls, include_extras=True)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
    return cls(**{k: _coerce(hints[k], v) for k, v in data.items()})


def override(cfg, assignments: list[str]):
    """Return a copy of `cfg` with `path.to.field=value` assignments applied."""
    for item in assignments:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form field=value")
        path, value = item.split("=", 1)
        cfg = _set(cfg, path.split("."), value, item)
    return cfg


def _set(cfg, path, value, item):
    hints = typing.get_type_hints(type(cfg), include_extras=True)
    name = path[0]
    if name not in hints:
        fields = ", ".join(f.name for f in dataclasses.fields(cfg))
        raise ValueError(f"override {item!r}: {type(cfg).__name__} has no field {name!r} (fields: {fields})")
    if len(path) > 1:
        return dataclasses.replace(cfg, **{name: _set(getattr(cfg, name), path[1:], value, item)})
    try:
        return dataclasses.replace(cfg, **{name: _coerce(hints[name], value)})
    except (ValueError, TypeError) as e:
        raise ValueError(f"override {item!r}: {e}") from None


def dumps(cfg) -> str:
    return json.dumps(to_dict(cfg), indent=2, sort_keys=True)
