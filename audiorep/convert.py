"""Official checkpoints -> audiorep encoders: download (cache + sha256), safe reading, key maps.

Weights are read with safetensors or `torch.load(weights_only=True)`: a checkpoint can
never run code. Each official layout has one small function mapping its names to ours.
"""
from __future__ import annotations

import hashlib
import os
import sys
import urllib.request
from pathlib import Path

import torch

from .presets import WEIGHTS, Weights


def cache_dir() -> Path:
    return Path(os.environ.get("AUDIOREP_CACHE", Path.home() / ".cache" / "audiorep"))


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(url: str, sha256: str | None = None) -> Path:
    """Download `url` into the cache once (atomically) and verify its sha256.

    With no known hash, the hash of the first download is recorded next to the file and
    every later use is checked against it, so a changed or corrupted file is caught.
    """
    from tqdm import tqdm

    target = cache_dir() / url.rsplit("/", 1)[-1]
    record = target.with_name(target.name + ".sha256")
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.part")
        try:
            with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f, tqdm(
                    total=int(r.headers.get("Content-Length") or 0) or None, unit="B", unit_scale=True,
                    desc=f"downloading {target.name}") as bar:
                for block in iter(lambda: r.read(1 << 20), b""):
                    f.write(block)
                    bar.update(len(block))
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise RuntimeError(f"cannot download {url} ({e}); download it yourself and pass weights=PATH, "
                               "or use random_init=True") from None
        os.replace(tmp, target)
    digest = sha256_of(target)
    expected = sha256 or (record.read_text().strip() if record.exists() else None)
    if expected and digest != expected:
        raise RuntimeError(f"{target}: sha256 {digest} does not match the expected {expected}; delete it to re-download")
    if expected is None:
        record.write_text(digest + "\n")
    return target


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state_dict from .safetensors or a torch checkpoint (weights_only); unwraps
    `model`/`state_dict` entries and the `net.`/`module.` prefixes wrappers add."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        sd = load_file(str(path))
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"{path}: not a readable weights-only checkpoint ({e})") from None
    for key in ("model", "state_dict"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path}: holds no state_dict of tensors")
    for prefix in ("module.", "net."):  # DDP / hear21passt wrappers: keep the wrapped network
        if any(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    return sd


def detect_format(sd: dict) -> str:
    if any(k.startswith("backbone.") for k in sd):
        return "audiorep"
    if "new_pos_embed" in sd and "freq_new_pos_embed" in sd:
        return "passt"
    if "pos_embed" in sd and "patch_embed.proj.weight" in sd:
        return "audiomae"
    raise ValueError("unrecognised checkpoint: neither audiorep, PaSST nor Audio-MAE key names")


def blocks_and_norm(sd: dict) -> dict:
    """timm-named transformer parameters are ours already, under `backbone.`."""
    return {f"backbone.{k}": v for k, v in sd.items() if k.startswith(("blocks.", "norm.", "patch_embed."))}


def from_passt(sd: dict) -> dict:
    """kkoutini/PaSST names -> ours. `head_dist` is dropped: the released forward never uses it."""
    out = blocks_and_norm(sd)
    out["backbone.cls_token"] = sd["cls_token"]
    out["backbone.dist_token"] = sd["dist_token"]
    out["backbone.pos_embed.prefix"] = sd["new_pos_embed"][0]  # [2, D]
    out["backbone.pos_embed.freq"] = sd["freq_new_pos_embed"][0, :, :, 0].T  # [1, D, F', 1] -> [F', D]
    out["backbone.pos_embed.time"] = sd["time_new_pos_embed"][0, :, 0, :].T  # [1, D, 1, T'] -> [T', D]
    out.update({k: v for k, v in sd.items() if k.startswith("head.")})
    return out


def from_audiomae(sd: dict, n_freq: int) -> dict:
    """facebookresearch/AudioMAE encoder names -> ours. Its input is [T, F]; ours [F, T],
    so the patch kernel is transposed. Decoder keys are left to the MAE objective."""
    out = blocks_and_norm(sd)
    out["backbone.patch_embed.proj.weight"] = sd["patch_embed.proj.weight"].transpose(-1, -2)
    out["backbone.cls_token"] = sd["cls_token"]
    pos = sd["pos_embed"][0]  # [1 + T' * F', D]
    out["backbone.pos_embed.prefix"] = pos[:1]
    out["backbone.pos_embed.table"] = pos[1:].reshape(-1, n_freq, pos.shape[-1])  # [T', F', D]
    return out


def to_audiorep(sd: dict, encoder) -> dict:
    fmt = detect_format(sd)
    if fmt == "passt":
        return from_passt(sd)
    if fmt == "audiomae":
        n_freq = encoder.backbone.grid(encoder.config.backbone.max_frames)[1]
        return from_audiomae(sd, n_freq)
    return sd


def load_weights(encoder, source: str | Path) -> None:
    """Load a checkpoint (path or URL, official or ours) into `encoder`, checking every shape."""
    source = str(source)
    path = fetch(source) if source.startswith(("http://", "https://", "file://")) else Path(source)
    if path.is_dir():
        path = path / "model.safetensors"
    sd = to_audiorep(read_state_dict(path), encoder)
    own = encoder.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    bad = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
           for k in set(own) & set(sd) if sd[k].shape != own[k].shape]
    if missing or unexpected or bad:
        raise ValueError(f"{source} does not fit preset {encoder.config.name!r}: "
                         f"missing {missing[:6]}, unexpected {unexpected[:6]}, shape mismatches {bad[:6]}")
    encoder.load_state_dict(sd)


def preset_weights(name: str, tag: str | None) -> Weights | None:
    from .presets import DEFAULT_TAG
    tag = tag or DEFAULT_TAG.get(name)
    return WEIGHTS.get((name, tag)) if tag else None


def main(argv: list[str] | None = None) -> int:
    """`audiorep convert SRC --preset NAME --out DIR`: official checkpoint (path or URL) ->
    an audiorep encoder folder (model.safetensors + config.json)."""
    import argparse

    from . import load

    p = argparse.ArgumentParser(prog="audiorep convert", description=main.__doc__)
    p.add_argument("source", help="checkpoint path or URL (.pt/.pth/.safetensors), or 'release' for the preset's")
    p.add_argument("--preset", required=True, help="architecture preset the checkpoint belongs to, e.g. passt-s")
    p.add_argument("--out", required=True)
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="override preset fields")
    args = p.parse_args(argv)
    if args.source == "release":
        w = preset_weights(args.preset, None)
        if w is None:
            print(f"audiorep convert: preset {args.preset!r} has no released weights", file=sys.stderr)
            return 2
        args.source = str(fetch(w.url, w.sha256))
    encoder = load(args.preset, weights=args.source, overrides=args.set)
    encoder.save(args.out)
    print(f"converted {args.source} -> {args.out} ({sum(p.numel() for p in encoder.parameters()):,} parameters)")
    return 0
