"""Scene and timestamp embeddings (PaSST paper, section 4), batched, any length and rate.

Levels: L = mel frames (mean over the window), M = features (pooled tokens, or the mean
of chosen blocks' pooled outputs), H = classifier logits. Scenes: audio longer than
the model's span is cut into overlapping windows whose embeddings are averaged.
Timestamps: either a receptive field of `rf_ms` centred on every timestamp (one window
each; several fields are concatenated, e.g. 160 + 640 ms = "2RF"), or the model's own
time-local tokens mapped to their times. Windows always go through the network in
batches of `batch_size`, never one forward per window, and are views of the padded
audio, so memory is bounded by one batch plus the outputs.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .audio import AudioError, check, resample, window_starts

LEVELS = ("L", "M", "H")
TIMESTAMP_METHODS = ("window", "tokens")


@dataclass(frozen=True)
class EmbedConfig:
    levels: tuple[str, ...] = ("M",)    # any of L, M, H, concatenated in this order
    layers: tuple[int, ...] = ()        # M from these blocks (mean of their pooled outputs); () = final norm
    timestamps: str = "window"          # "window": a receptive field per timestamp; "tokens": token times
    rf_ms: tuple[float, ...] = (160.0,)  # receptive fields of "window" timestamps; (160, 640) = 2RF
    hop_ms: float = 50.0                # timestamp hop
    scene_hop_s: float = 2.5            # hop between windows of audio longer than the model's span
    batch_size: int = 32                # windows per forward


def as_waves(audio, sample_rate: int, target_rate: int, device=None) -> torch.Tensor:
    """[S] or [B, S] audio (numpy or torch) at `sample_rate` -> float32 [B, S] at `target_rate`."""
    x = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
    if x.ndim not in (1, 2):
        raise AudioError(f"audio must be [samples] or [batch, samples] mono, got shape {tuple(x.shape)}")
    if x.ndim == 2 and x.shape[1] <= 8 < x.shape[0]:
        raise AudioError(f"audio of shape {tuple(x.shape)} looks like [samples, channels]; pass mono [samples] "
                         "or [batch, samples] (audiorep.audio.to_mono mixes channels)")
    x = check(np.atleast_2d(x).astype(np.float32, copy=False))
    return torch.from_numpy(resample(x, sample_rate, target_rate)).to(device)


def window_embeddings(encoder, waves: torch.Tensor, cfg: EmbedConfig) -> torch.Tensor:
    """[N, S] windows -> [N, D]: the chosen levels of one forward each, concatenated."""
    feats = encoder.frontend(waves)  # [N, F, T]
    parts = {"L": lambda: feats.mean(-1)}
    if {"M", "H"} & set(cfg.levels):
        out = encoder.backbone(feats, layers=list(cfg.layers) or None)
        final = encoder.pool(out.tokens, out.prefix)
        parts["H"] = lambda: encoder.head(final)
        parts["M"] = (lambda: torch.stack([encoder.pool(h, out.prefix) for h in out.hidden]).mean(0)) \
            if cfg.layers else (lambda: final)
    return torch.cat([parts[level]() for level in cfg.levels], dim=-1)


def over_windows(fn, waves: torch.Tensor, starts: list[int], size: int, batch_size: int) -> torch.Tensor:
    """fn over the windows waves[b, s:s + size] for every clip b and start s, batch_size
    windows per call; only one batch of windows exists at a time -> [B, K, ...]."""
    B, K = len(waves), len(starts)
    starts_t = torch.tensor(starts, device=waves.device)
    offsets = torch.arange(size, device=waves.device)
    outs = []
    for i in range(0, B * K, batch_size):
        j = torch.arange(i, min(i + batch_size, B * K), device=waves.device)  # flat (clip, window) ids
        outs.append(fn(waves[(j // K)[:, None], starts_t[j % K][:, None] + offsets]))  # [b, size]
    out = torch.cat(outs)
    return out.view(B, K, *out.shape[1:])


@torch.inference_mode()
def scene_embeddings(encoder, audio, sample_rate: int, cfg: EmbedConfig | None = None) -> torch.Tensor:
    """[S] or [B, S] audio -> [B, D] clip embeddings (window means for audio past the span)."""
    cfg = cfg or encoder.config.embed
    waves = encoder.pad_short(as_waves(audio, sample_rate, encoder.sample_rate, encoder.device))
    S = waves.shape[1]
    starts = window_starts(S, encoder.span_samples, int(cfg.scene_hop_s * encoder.sample_rate))
    size = min(S, encoder.span_samples)
    emb = over_windows(lambda w: window_embeddings(encoder, w, cfg), waves, starts, size, cfg.batch_size)
    return emb.mean(1).float()  # [B, K, D] -> [B, D]


@torch.inference_mode()
def timestamp_embeddings(encoder, audio, sample_rate: int, cfg: EmbedConfig | None = None):
    """[S] or [B, S] audio -> ([B, T, D] embeddings, [B, T] timestamps in ms), T = S // hop + 1."""
    cfg = cfg or encoder.config.embed
    if cfg.timestamps not in TIMESTAMP_METHODS:
        raise ValueError(f"EmbedConfig.timestamps={cfg.timestamps!r}: expected one of {TIMESTAMP_METHODS}")
    waves = as_waves(audio, sample_rate, encoder.sample_rate, encoder.device)
    sr = encoder.sample_rate
    hop = max(1, round(cfg.hop_ms * sr / 1000))
    n_ts = waves.shape[1] // hop + 1
    times = torch.arange(n_ts, device=waves.device, dtype=torch.float64) * hop / sr  # [T] seconds
    if cfg.timestamps == "window":
        emb = torch.cat([rf_embeddings(encoder, waves, rf, hop, n_ts, cfg) for rf in cfg.rf_ms], dim=-1)
    else:
        emb = token_embeddings(encoder, waves, times, cfg)
    return emb.float(), (times * 1000).float().expand(len(waves), -1).contiguous()  # exact for whole-ms hops


def rf_embeddings(encoder, waves: torch.Tensor, rf_ms: float, hop: int, n_ts: int, cfg: EmbedConfig):
    """One window of rf_ms centred on each timestamp (reflect-padded ends) -> [B, T, D]."""
    S = waves.shape[1]
    size = max(round(rf_ms * encoder.sample_rate / 1000), encoder.min_samples)
    left = size // 2
    mode = "reflect" if max(left, size - left) < S else "constant"  # reflect needs pad < length
    padded = F.pad(waves[:, None], (left, size - left), mode=mode)[:, 0]  # [B, S + size]
    starts = [k * hop for k in range(n_ts)]
    return over_windows(lambda w: window_embeddings(encoder, w, cfg), padded, starts, size, cfg.batch_size)  # [B, T, D]


def token_embeddings(encoder, waves: torch.Tensor, times: torch.Tensor, cfg: EmbedConfig) -> torch.Tensor:
    """Time-local tokens (mean over frequency) mapped to the nearest timestamp -> [B, T, D]."""
    if tuple(cfg.levels) != ("M",):
        raise ValueError(f"token timestamps give level M only, got levels {cfg.levels}")
    waves = encoder.pad_short(waves)
    S = waves.shape[1]
    starts = window_starts(S, encoder.span_samples, encoder.span_samples)
    size = min(S, encoder.span_samples)

    def columns(w):
        out = encoder.backbone(encoder.frontend(w), layers=list(cfg.layers) or None)
        states = torch.stack(out.hidden).mean(0)[:, out.prefix:] if cfg.layers else out.patches
        return states.unflatten(1, out.grid).mean(2)  # [b, T', D]

    cols = over_windows(columns, waves, starts, size, cfg.batch_size)  # [B, K, T', D]
    n_cols = cols.shape[2]
    col_times = encoder.backbone.token_times(n_cols, encoder.frontend.hop_s).to(waves.device)  # [T']
    starts_s = torch.tensor(starts, device=waves.device, dtype=torch.float32) / encoder.sample_rate
    all_times = (starts_s[:, None] + col_times[None]).flatten()  # [K * T']
    cols = cols.flatten(1, 2)  # [B, K * T', D]
    return cols[:, nearest(all_times.double(), times)]


def nearest(points: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """Index of the point nearest to each query, in O((P + Q) log P) memory-light steps."""
    order = points.argsort()
    sorted_points = points[order]
    right = torch.searchsorted(sorted_points, queries).clamp(max=len(points) - 1)  # [Q]
    left = (right - 1).clamp(min=0)
    pick_left = (queries - sorted_points[left]).abs() <= (sorted_points[right] - queries).abs()
    return order[torch.where(pick_left, left, right)]


AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".opus")


def audio_files(paths: list[str]) -> list[Path]:
    """Files named directly, plus audio files found recursively in named folders (sorted)."""
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in AUDIO_EXTENSIONS)
        elif p.exists():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return files


def embed_file(encoder, path: Path, kind: str, cfg: EmbedConfig, block_s: float):
    """Embed one file, streaming blocks of block_s seconds so memory stays bounded for
    hours-long audio. Scene: length-weighted mean of blocks. Timestamps: blocks are a
    whole number of hops, so timestamps continue seamlessly across blocks."""
    from .audio import read_blocks

    sr = encoder.sample_rate
    hop = max(1, round(cfg.hop_ms * sr / 1000))
    block = max(hop, int(block_s * sr) // hop * hop)
    pieces, weights, buf, offset = [], [], np.zeros(0, np.float32), 0

    def flush(x, last):
        nonlocal offset
        if kind == "scene":
            pieces.append(scene_embeddings(encoder, x, sr, cfg)[0])
            weights.append(len(x))
        else:
            emb, ts = timestamp_embeddings(encoder, x, sr, cfg)
            n = len(ts[0]) if last else len(x) // hop  # drop the block's end timestamp: the next block starts there
            pieces.append((emb[0, :n], ts[0, :n].double() + offset * 1000 / sr))  # float64: exact past hours
        offset += len(x)

    for x in read_blocks(path, sr, block_s=max(block_s, 1.0)):
        buf = np.concatenate([buf, x])
        while len(buf) >= 2 * block:
            flush(buf[:block], last=False)
            buf = buf[block:]
    flush(buf, last=True)
    if kind == "scene":
        w = torch.tensor(weights, dtype=torch.float32)
        return (torch.stack(pieces) * (w / w.sum())[:, None]).sum(0).numpy(), None
    return torch.cat([e for e, _ in pieces]).numpy(), torch.cat([t for _, t in pieces]).numpy()


def main(argv: list[str] | None = None) -> int:
    """`audiorep embed PATHS... --model NAME --out DIR`: one .npy per file plus index.json."""
    import argparse
    import dataclasses

    from tqdm import tqdm

    from . import load
    from .config import override
    from .files import save_npy, write_json

    p = argparse.ArgumentParser(prog="audiorep embed", description=main.__doc__)
    p.add_argument("paths", nargs="+", help="audio files or folders (searched recursively)")
    p.add_argument("--model", default="passt-s", help="preset name or saved encoder/run directory")
    p.add_argument("--weights", help="checkpoint path or URL for a preset (official or audiorep)")
    p.add_argument("--random-init", action="store_true", help="no weights: the architecture at random init")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--kind", choices=("scene", "timestamp"), default="scene")
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="override embedding settings, e.g. levels=L,M rf_ms=160,640 hop_ms=10")
    p.add_argument("--block-minutes", type=float, default=10.0, help="stream long files in blocks of this size")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)

    encoder = load(args.model, weights=args.weights, random_init=args.random_init).to(args.device).eval()
    cfg = override(encoder.config.embed, args.set)
    roots = [Path(p) for p in args.paths]
    files = audio_files(args.paths)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    index_path = out / "index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {"files": {}}
    setup = json.loads(json.dumps({"model": args.model, "kind": args.kind, "embed": dataclasses.asdict(cfg)}))
    if index.get("setup", setup) != setup:  # different settings: earlier outputs are not reusable
        index = {"files": {}}
    index.update(setup=setup, errors={})
    for path in tqdm(files, desc="embedding", unit="file"):
        stem = out_stem(path, roots)
        if str(path) in index["files"] and (out / f"{stem}.npy").exists():
            continue
        try:
            emb, ts = embed_file(encoder, path, args.kind, cfg, args.block_minutes * 60)
        except (AudioError, ValueError) as e:
            index["errors"][str(path)] = str(e)
            tqdm.write(f"audiorep embed: skipped {e}", file=sys.stderr)
            continue
        save_npy(out / f"{stem}.npy", emb)
        record = {"npy": f"{stem}.npy", "shape": list(emb.shape)}
        if ts is not None:
            save_npy(out / f"{stem}.timestamps_ms.npy", ts)
            record["timestamps_ms"] = f"{stem}.timestamps_ms.npy"
        index["files"][str(path)] = record
        write_json(index_path, index)
    write_json(index_path, index)
    print(f"{len(index['files'])} embedded, {len(index['errors'])} failed -> {out}")
    for path, err in index["errors"].items():
        print(f"  {err}", file=sys.stderr)
    return 1 if index["errors"] else 0


def out_stem(path: Path, roots: list[Path]) -> str:
    """Output name: the path below the folder it was found in, '/' -> '__', no suffix."""
    for root in roots:
        if root.is_dir() and root in path.parents:
            return str(path.relative_to(root).with_suffix("")).replace(os.sep, "__")
    return path.stem
