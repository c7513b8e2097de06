"""Scene and timestamp embeddings (PaSST paper, section 4), batched, any length and rate.

Levels: L = what the frontend declares (mel frames: their mean over the window), M =
features (pooled tokens, or the mean of chosen blocks' pooled outputs), H = classifier
logits. Scenes: audio longer than one window is cut into overlapping windows whose
embeddings are averaged (the model's span, or hear21passt's 10 s windows over audio
reflect-padded by 5 s). Timestamps: either a receptive field of `rf_ms` centred on every
timestamp (one window each; several fields are concatenated, e.g. 160 + 640 ms = "2RF"),
or the model's own tokens mapped to their times (`BackboneOutput.times`, any backbone;
tokens of equal time, e.g. a ViT's frequency patches, are averaged). Windows always go
through the network in batches (at most `batch_size` windows and `batch_size` seconds of
audio per forward), never one forward per window, and only one batch is copied out of the
padded audio at a time, so memory is bounded by one batch plus the outputs on any length.
"""
from __future__ import annotations

import numbers
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from .audio import AudioError, as_float, check, read_blocks, resample, window_starts
from .encoder import EmbedConfig


def as_waves(audio, sample_rate: int, target_rate: int, device=None) -> torch.Tensor:
    """[S] or [B, S] audio (numpy or torch; float, or integer PCM scaled as audio.read does)
    at `sample_rate` -> float32 [B, S] at `target_rate`."""
    sample_rate = check_rate(sample_rate)
    if isinstance(audio, torch.Tensor) and audio.is_floating_point() and sample_rate == target_rate:
        return on_device(audio.detach(), device)  # GPU audio at the encoder's rate stays there
    x = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
    check_layout(x.shape)
    x = check(np.atleast_2d(as_float(x)))
    return torch.from_numpy(resample(x, sample_rate, target_rate)).to(device)


def on_device(x: torch.Tensor, device) -> torch.Tensor:
    """Float audio at the right rate -> float32 [B, S] on `device`, checked there (no host copy)."""
    check_layout(tuple(x.shape))
    return check(torch.atleast_2d(x.to(device=device, dtype=torch.float32)))


def check_layout(shape: tuple) -> None:
    """[S] or [B, S]; [S, C] (a channel axis last) is refused with the way out."""
    if len(shape) not in (1, 2):
        raise AudioError(f"audio must be [samples] or [batch, samples] mono, got shape {tuple(shape)}")
    if len(shape) == 2 and shape[1] <= 8 < shape[0]:
        raise AudioError(f"audio of shape {tuple(shape)} looks like [samples, channels]; pass mono [samples] "
                         "or [batch, samples] (audiorep.audio.to_mono mixes channels)")


def check_rate(sample_rate) -> int:
    """A sample rate in Hz: a positive integer (or a float with an integer value)."""
    whole = isinstance(sample_rate, (numbers.Integral, float)) and not isinstance(sample_rate, bool) \
        and float(sample_rate).is_integer()
    if not whole or sample_rate <= 0:
        raise ValueError(f"sample_rate={sample_rate!r} ({type(sample_rate).__name__}): expected a positive integer "
                         "number of Hz")
    return int(sample_rate)


def check_settings(encoder, cfg: EmbedConfig) -> None:
    """Settings this encoder cannot honour, refused naming the field."""
    cfg.check_rate(encoder.sample_rate)
    depth = encoder.backbone.num_layers
    if any(layer >= depth for layer in cfg.layers):
        raise ValueError(f"EmbedConfig.layers={cfg.layers}: encoder {encoder.config.name!r} has blocks 0..{depth - 1}")
    if "H" in cfg.levels and not encoder.config.num_classes:
        raise ValueError(f"EmbedConfig.levels={cfg.levels}: level H needs a classifier head, encoder "
                         f"{encoder.config.name!r} has none")


def window_embeddings(encoder, waves: torch.Tensor, cfg: EmbedConfig) -> torch.Tensor:
    """[N, S] windows -> [N, D]: the chosen levels of one forward each, concatenated."""
    feats = encoder.frontend(waves)  # [N, C, T]
    parts = {"L": lambda: encoder.frontend.level_l(feats)}
    if {"M", "H"} & set(cfg.levels):
        out = encoder.backbone(feats, layers=list(cfg.layers) or None)
        final = encoder.pool(out)
        parts["H"] = lambda: encoder.head(final)
        parts["M"] = (lambda: torch.stack([encoder.pool(out, h) for h in out.hidden]).mean(0)) \
            if cfg.layers else (lambda: final)
    return torch.cat([parts[level]() for level in cfg.levels], dim=-1)


def window_batch(batch_size: int, size: int, sample_rate: int) -> int:
    """Windows per forward: at most `batch_size` windows and `batch_size` seconds of audio, so
    160 ms timestamp windows go batch_size at a time and 10 s scene windows a tenth of that."""
    return max(1, min(batch_size, batch_size * sample_rate // size))


def over_windows(fn, waves: torch.Tensor, starts: list[int], size: int, batch: int) -> torch.Tensor:
    """fn over the windows waves[b, s:s + size] for every clip b and start s, `batch` windows
    per call; only one batch of windows is copied out at a time -> [B, K, ...]."""
    B, K = len(waves), len(starts)
    outs = []
    for i in range(0, B * K, batch):
        ids = range(i, min(i + batch, B * K))  # flat (clip, window) ids
        outs.append(fn(torch.stack([waves[j // K, starts[j % K]:starts[j % K] + size] for j in ids])))  # [b, size]
    out = torch.cat(outs)
    return out.view(B, K, *out.shape[1:])


@torch.inference_mode()
def scene_embeddings(encoder, audio, sample_rate: int, cfg: EmbedConfig | None = None) -> torch.Tensor:
    """[S] or [B, S] audio -> [B, D] clip embeddings (window means for audio past the span)."""
    cfg = cfg or encoder.config.embed
    check_settings(encoder, cfg)
    waves = encoder.pad_short(as_waves(audio, sample_rate, encoder.sample_rate, encoder.device))
    window = encoder.span_samples
    if cfg.scene_window_s > 0:
        window = max(encoder.min_samples, min(window, round(cfg.scene_window_s * encoder.sample_rate)))
    hop = int(cfg.scene_hop_s * encoder.sample_rate)
    if waves.shape[1] > window and cfg.scene_pad == "reflect":  # hear21passt: half a window each side
        waves = F.pad(waves[:, None], (window // 2, window // 2), mode="reflect")[:, 0]
    S = waves.shape[1]
    starts = window_starts(S, window, hop, to_end=cfg.scene_pad == "none")
    size = min(S, window)
    batch = window_batch(cfg.batch_size, size, encoder.sample_rate)
    emb = over_windows(lambda w: window_embeddings(encoder, w, cfg), waves, starts, size, batch)
    return emb.mean(1).float()  # [B, K, D] -> [B, D]


@torch.inference_mode()
def timestamp_embeddings(encoder, audio, sample_rate: int, cfg: EmbedConfig | None = None):
    """[S] or [B, S] audio -> ([B, T, D] embeddings, [B, T] timestamps in ms), T = S // hop + 1."""
    cfg = cfg or encoder.config.embed
    check_settings(encoder, cfg)
    waves = as_waves(audio, sample_rate, encoder.sample_rate, encoder.device)
    sr = encoder.sample_rate
    hop, n_ts = timestamp_grid(encoder, waves.shape[1], cfg)
    times = torch.arange(n_ts, device=waves.device, dtype=torch.float64) * hop / sr  # [T] seconds
    if cfg.timestamps == "window":
        emb = torch.cat([rf_embeddings(encoder, waves, rf, hop, n_ts, cfg) for rf in cfg.rf_ms], dim=-1)
    else:
        emb = token_embeddings(encoder, waves, times, cfg)
    return emb.float(), (times * 1000).float().expand(len(waves), -1).contiguous()  # exact for whole-ms hops


def timestamp_grid(encoder, samples: int, cfg: EmbedConfig) -> tuple[int, int]:
    """(hop in samples, number of timestamps) of `samples` audio at the encoder's rate."""
    hop = max(1, round(cfg.hop_ms * encoder.sample_rate / 1000))
    return hop, samples // hop + 1


def centred(waves: torch.Tensor, size: int) -> torch.Tensor:
    """[B, S] -> [B, S + size]: padded so that window k (start k * hop) is centred on sample k * hop
    (reflect as hear21passt; zeros where the audio is too short to reflect)."""
    left = size // 2
    mode = "reflect" if max(left, size - left) < waves.shape[1] else "constant"  # reflect needs pad < length
    return F.pad(waves[:, None], (left, size - left), mode=mode)[:, 0]


def rf_embeddings(encoder, waves: torch.Tensor, rf_ms: float, hop: int, n_ts: int, cfg: EmbedConfig):
    """One window of rf_ms centred on each timestamp (reflect-padded ends) -> [B, T, D]."""
    size = max(round(rf_ms * encoder.sample_rate / 1000), encoder.min_samples)
    starts = [k * hop for k in range(n_ts)]
    batch = window_batch(cfg.batch_size, size, encoder.sample_rate)
    return over_windows(lambda w: window_embeddings(encoder, w, cfg), centred(waves, size), starts, size, batch)


@torch.inference_mode()
def frame_embeddings(encoder, audio, sample_rate: int, size: int, cfg: EmbedConfig | None = None) -> torch.Tensor:
    """hear21passt's mel level of its `*mel` modules: the frontend's frames of a `size`-sample
    window centred on each timestamp, flattened feature-major ([C, frames] -> C * frames)
    -> [B, T, C * frames], on the timestamps of timestamp_embeddings."""
    cfg = cfg or encoder.config.embed
    if size < encoder.frontend.min_samples:
        raise ValueError(f"frame window of {size} samples: the frontend of {encoder.config.name!r} needs at least "
                         f"{encoder.frontend.min_samples}")
    waves = as_waves(audio, sample_rate, encoder.sample_rate, encoder.device)
    hop, n_ts = timestamp_grid(encoder, waves.shape[1], cfg)
    starts = [k * hop for k in range(n_ts)]
    batch = window_batch(cfg.batch_size, size, encoder.sample_rate)
    frames = over_windows(lambda w: encoder.frontend(w).flatten(1), centred(waves, size), starts, size, batch)
    return frames.float()  # [B, T, C * frames]


def token_embeddings(encoder, waves: torch.Tensor, times: torch.Tensor, cfg: EmbedConfig) -> torch.Tensor:
    """The backbone's tokens (those of equal time averaged) mapped to the nearest timestamp -> [B, T, D]."""
    if tuple(cfg.levels) != ("M",):
        raise ValueError(f"token timestamps give level M only, got levels {cfg.levels}")
    waves = encoder.pad_short(waves)
    S = waves.shape[1]
    starts = window_starts(S, encoder.span_samples, encoder.span_samples)
    size = min(S, encoder.span_samples)
    token_times = []

    def columns(w):
        out = encoder.backbone(encoder.frontend(w), layers=list(cfg.layers) or None)
        states = torch.stack(out.hidden).mean(0)[:, out.prefix:] if cfg.layers else out.patches  # [b, K, D]
        uniq, inverse = torch.unique(out.times, return_inverse=True)  # a window's token times are shared
        token_times[:] = [uniq]
        summed = states.new_zeros(len(w), len(uniq), states.shape[-1]).index_add_(1, inverse, states)
        count = torch.bincount(inverse, minlength=len(uniq)).to(states.dtype)
        return summed / count[:, None]  # [b, U, D]

    batch = window_batch(cfg.batch_size, size, encoder.sample_rate)
    cols = over_windows(columns, waves, starts, size, batch)  # [B, K, U, D]
    starts_s = torch.tensor(starts, device=waves.device, dtype=torch.float64) / encoder.sample_rate
    all_times = (starts_s[:, None] + token_times[0].double()[None]).flatten()  # [K * U]
    cols = cols.flatten(1, 2)  # [B, K * U, D]
    return cols[:, nearest(all_times, times)]


def nearest(points: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """Index of the point nearest to each query, in O((P + Q) log P) memory-light steps."""
    order = points.argsort()
    sorted_points = points[order]
    right = torch.searchsorted(sorted_points, queries).clamp(max=len(points) - 1)  # [Q]
    left = (right - 1).clamp(min=0)
    pick_left = (queries - sorted_points[left]).abs() <= (sorted_points[right] - queries).abs()
    return order[torch.where(pick_left, left, right)]


def embed_file(encoder, path: Path, kind: str, cfg: EmbedConfig, block_s: float):
    """Embed one file, streaming blocks of block_s seconds so memory stays bounded for
    hours-long audio (see embed_blocks)."""
    return embed_blocks(encoder, read_blocks(path, encoder.sample_rate, block_s=max(block_s, 1.0)), kind, cfg, block_s)


def embed_blocks(encoder, blocks: Iterable[np.ndarray], kind: str, cfg: EmbedConfig, block_s: float):
    """Embed one recording given as consecutive mono blocks at the encoder's rate, in pieces
    of block_s seconds. Scene: length-weighted mean of pieces. Timestamps: pieces are a
    whole number of hops, so timestamps continue seamlessly across them."""
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
            times = (torch.arange(n, dtype=torch.float64) * hop + offset) * 1000 / sr  # float64 ms: exact past hours
            pieces.append((emb[0, :n], times))
        offset += len(x)

    for x in blocks:
        buf = np.concatenate([buf, x])
        while len(buf) >= 2 * block:
            flush(buf[:block], last=False)
            buf = buf[block:]
    flush(buf, last=True)
    if kind == "scene":
        w = torch.tensor(weights, dtype=torch.float32)
        return (torch.stack(pieces) * (w / w.sum())[:, None]).sum(0).numpy(), None
    return torch.cat([e for e, _ in pieces]).numpy(), torch.cat([t for _, t in pieces]).numpy()
