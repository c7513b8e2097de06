"""Official checkpoints -> audiorep encoders: download (cache + sha256), safe reading,
unwrapping, and a table of converters keyed by the format a preset declares.

Weights are read with safetensors or `torch.load(weights_only=True)`: a checkpoint can
never run code. Each official format is one module here with

    FORMAT = "name"
    matches(sd) -> bool                  whether the key names look like this format
    to_audiorep(sd, encoder) -> dict     official names -> the encoder's state_dict names
    objective_state(sd, objective)       optional: heads/decoders that belong to an objective

and is listed in CONVERTERS. The format is never guessed: a checkpoint is read as the
format its preset declares (presets.FORMATS) and refused when it does not look like it;
audiorep's own files (safetensors with format=audiorep metadata) load into any preset.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch

from ..encoder import check_finite
from . import asit, audiomae, eat, encodecmae, passt
from .download import ChecksumError, DownloadError, cache_dir, fetch, is_url, sha256_of  # noqa: F401 (the API)

CONVERTERS = {module.FORMAT: module for module in (passt, audiomae, asit, eat, encodecmae)}
AUDIOREP = "audiorep"
WRAPPERS = ("model", "state_dict", "model_dict")  # Audio-MAE / Lightning, EnCodecMAE hub files, EAT's chkpnt.pt
SAFE_GLOBALS = [argparse.Namespace]  # ASiT/DINO checkpoints store their command-line `args`
PREFIXES = ("module.", "net.", "model.")  # DDP, hear21passt and Lightning wrappers


def read_checkpoint(path: str | Path) -> tuple[dict, str | None]:
    """(raw content, declared format or None) of a .safetensors or torch checkpoint (weights_only)."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        try:
            with safe_open(str(path), "pt") as f:
                declared = (f.metadata() or {}).get("format")
            return load_file(str(path)), declared
        except Exception as e:
            raise ValueError(f"{path}: not a readable safetensors file ({e})") from None
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):  # plain data some releases pickle beside the weights
            return torch.load(path, map_location="cpu", weights_only=True), None
    except Exception as e:
        raise ValueError(f"{path}: not a readable weights-only checkpoint ({one_line(e)})") from None


TORCH_ADVICE = ("weights_only", "safe_globals", "trust")  # words of torch's sentences on how to load it anyway


def one_line(e: Exception) -> str:
    """torch.load's multi-paragraph errors in one line: for a refusal of the weights-only unpickler,
    its reason, without torch's advice on how to load the file anyway."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))  # terminal bold
    if not text.startswith("Weights only load failed"):
        return " ".join(text.split())[:500]
    if "WeightsUnpickler error:" in text:
        reason = text.split("WeightsUnpickler error:", 1)[1]
    else:  # torch's first paragraph is advice; the reason follows it
        reason = text.split("\n", 1)[1] if "\n" in text else ""
    reason = reason.split("Check the documentation of torch.load")[0]
    sentences = re.split(r"(?<=\.)\s+", " ".join(reason.split()))
    reason = " ".join(x for x in sentences if not any(word in x for word in TORCH_ADVICE))
    return f"refused by the weights-only unpickler: {reason or 'no reason given'}"[:500]


def unwrap(content, where: str, part: str | None = None) -> dict[str, torch.Tensor]:
    """The state_dict inside the usual containers (WRAPPERS), then `part` or `teacher` before `student` (DINO-style
    pretraining), then a wrapper prefix (`module.`, hear21passt's `net.`, Lightning's `model.`)."""
    sd = content
    while isinstance(sd, dict) and any(isinstance(sd.get(k), dict) for k in WRAPPERS):
        sd = sd[next(k for k in WRAPPERS if isinstance(sd.get(k), dict))]
    if part is not None:
        if not (isinstance(sd, dict) and isinstance(sd.get(part), dict)):
            raise ValueError(f"{where}: has no {part!r} entry")
        sd = sd[part]
    elif isinstance(sd, dict):
        sd = next((sd[k] for k in ("teacher", "student") if isinstance(sd.get(k), dict)), sd)
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{where}: holds no state_dict of tensors")
    for prefix in PREFIXES:  # keep the wrapped network
        if any(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    return sd


def read_state_dict(path: str | Path, part: str | None = None) -> dict[str, torch.Tensor]:
    return unwrap(read_checkpoint(path)[0], str(path), part)


def looks_like(sd: dict) -> str:
    found = [fmt for fmt, module in CONVERTERS.items() if module.matches(sd)]
    return f"it looks like {' or '.join(found)}" if found else "its names match no known format"


def converter(fmt: str):
    if fmt not in CONVERTERS:
        raise ValueError(f"no converter for checkpoint format {fmt!r}; known: {sorted(CONVERTERS)}")
    return CONVERTERS[fmt]


def to_audiorep(sd: dict, encoder, fmt: str, where: str) -> dict:
    """Official names -> the encoder's, for a checkpoint declared to be `fmt`."""
    module = converter(fmt)
    if not module.matches(sd):
        raise ValueError(f"{where} is not a {fmt} checkpoint, which preset {encoder.config.name!r} declares "
                         f"({looks_like(sd)}); pass the preset it belongs to")
    return module.to_audiorep(sd, encoder)


def check_fit(own: dict, sd: dict, what: str, where: str) -> None:
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    bad = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
           for k in set(own) & set(sd) if sd[k].shape != own[k].shape]
    if missing or unexpected or bad:
        raise ValueError(f"{where} does not fit {what}: missing {missing[:6]}, unexpected {unexpected[:6]}, "
                         f"shape mismatches {bad[:6]}")


def load_weights(encoder, source: str | Path, fmt: str | None = None, part: str | None = None) -> None:
    """Load a checkpoint (path or URL) into `encoder`: audiorep files as they are, official
    ones through the converter of `fmt` (the format the preset declares), every shape checked."""
    source = str(source)
    path = fetch(source) if is_url(source) else Path(source)
    content, declared = read_checkpoint(path)
    sd = unwrap(content, source, part)
    if declared != AUDIOREP:
        if fmt is None:
            raise ValueError(f"{source} is not an audiorep checkpoint and preset {encoder.config.name!r} declares no "
                             f"official format ({looks_like(sd)}); load it with the preset it belongs to")
        sd = to_audiorep(sd, encoder, fmt, source)
    check_fit(encoder.state_dict(), sd, f"preset {encoder.config.name!r}", source)
    check_finite(sd, source)
    encoder.load_state_dict(sd)


def load_objective_weights(objective, source: str | Path, fmt: str, part: str | None = None) -> None:
    """An official pretraining checkpoint into an objective: its encoder and the parts the
    format's `objective_state` maps (decoders, heads)."""
    module = converter(fmt)
    sd = unwrap(read_checkpoint(source)[0], str(source), part) if not isinstance(source, dict) else source
    where = str(source) if not isinstance(source, dict) else "state_dict"
    state = {f"encoder.{k}": v for k, v in to_audiorep(sd, objective.encoder, fmt, where).items()}
    if not hasattr(module, "objective_state"):
        raise ValueError(f"format {fmt!r} has no objective weights to convert")
    state.update(module.objective_state(sd, objective))
    parts = {k.split(".")[0] for k in state}  # the objective's modules the checkpoint fills
    own = {k: v for k, v in objective.state_dict().items() if k.split(".")[0] in parts}
    check_fit(own, state, type(objective).__name__, where)
    check_finite(state, where)
    objective.load_state_dict(state, strict=False)
