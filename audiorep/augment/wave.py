"""Waveform augmentations, batched: [B, S] in, [B, S] out, on the data's device.

Each function draws its parameters per clip (one filter cutoff or resampling factor per call)
from `generator`, or from torch's global generator when it is None; the pipeline decides which
clips get which function. Defaults are those of the EAT code (Alibaba-MIIL/AudioClassfication,
datasets/audio_augs.py and datasets/batch_augs.py); docs/augment.md lists where ours differ.
Filters and resampling use julius (an optional extra: `pip install julius`).
"""
from __future__ import annotations

import math
from fractions import Fraction

import torch
import torch.nn.functional as F

SLOPES = {"white": 0, "pink": -1, "red": -2, "blue": 1, "violet": 2}  # power ~ f ** slope (3 dB/oct per unit)
ADDITIVE_NOISES = (*SLOPES, "uniform", "sine")


def uniform(n: int, low: float, high: float, like: torch.Tensor, generator=None) -> torch.Tensor:
    """[n] ~ U[low, high) on like's device and dtype."""
    return torch.rand(n, generator=generator, device=like.device, dtype=like.dtype) * (high - low) + low


def randint(n: int, low: int, high: int, like: torch.Tensor, generator=None) -> torch.Tensor:
    """[n] long ~ U{low, ..., high} (both ends included) on like's device."""
    return torch.randint(low, high + 1, (n,), generator=generator, device=like.device)


def segment_mask(x: torch.Tensor, length: int, generator=None) -> torch.Tensor:
    """[B, S] bool: one run of `length` samples per clip, starting anywhere it fits."""
    B, S = x.shape
    length = min(length, S)
    start = randint(B, 0, S - length, x, generator)[:, None]
    pos = torch.arange(S, device=x.device)
    return (pos >= start) & (pos < start + length)


def _julius():
    try:
        import julius as module
    except ImportError as e:
        raise ImportError("waveform filters and resampling need julius: pip install julius") from e
    return module


def stft(x: torch.Tensor, n_fft: int) -> torch.Tensor:
    """[B, S] -> [B, n_fft // 2 + 1, frames] complex, Hann window, hop n_fft // 4, centred."""
    if x.shape[-1] <= n_fft // 2:
        raise ValueError(f"an STFT of size {n_fft} needs clips longer than {n_fft // 2} samples, got {x.shape[-1]}")
    window = torch.hann_window(n_fft, device=x.device, dtype=x.dtype)
    return torch.stft(x, n_fft, n_fft // 4, window=window, return_complex=True)


def istft(X: torch.Tensor, n_fft: int, length: int) -> torch.Tensor:
    """Inverse of `stft`, exactly `length` samples."""
    window = torch.hann_window(n_fft, device=X.device, dtype=X.real.dtype)
    return torch.istft(X, n_fft, n_fft // 4, window=window, length=length)


def gain(x: torch.Tensor, low: float = 0.5, high: float = 1.3, generator=None) -> torch.Tensor:
    """Each clip times g ~ U[low, high)."""
    return x * uniform(x.shape[0], low, high, x, generator)[:, None]


def segment_gain(x: torch.Tensor, length: int, low: float = 0.5, high: float = 1.3, generator=None) -> torch.Tensor:
    """One segment of `length` samples per clip times g ~ U[low, high)."""
    g = uniform(x.shape[0], low, high, x, generator)[:, None]
    return torch.where(segment_mask(x, length, generator), x * g, x)


def delay(x: torch.Tensor, shift: torch.Tensor, cyclic: bool) -> torch.Tensor:
    """Clip b delayed by shift[b] samples (negative: advanced), fractional parts included.
    A linear shift fills the vacated samples with zeros, a cyclic one wraps them around; the
    fractional part is a linear phase in the DFT (circular, as in the EAT code)."""
    B, S = x.shape
    whole = shift.floor()
    frac = (shift - whole).to(x.dtype)
    source = torch.arange(S, device=x.device) - whole.long()[:, None]  # [B, S] index each output sample reads
    out = x.gather(1, source % S)
    if not cyclic:
        out = out.masked_fill((source < 0) | (source >= S), 0)
    if bool(frac.any()):
        cycles = torch.fft.rfftfreq(S, device=x.device, dtype=x.dtype)  # [S // 2 + 1] cycles per sample
        ramp = torch.exp(-2j * math.pi * cycles * frac[:, None])  # [B, S // 2 + 1]
        out = torch.fft.irfft(torch.fft.rfft(out) * ramp, n=S)
    return out


def time_shift(x: torch.Tensor, max_shift: int, generator=None) -> torch.Tensor:
    """Linear shift by d ~ U{-max_shift..max_shift} + U[-0.5, 0.5) samples (zeros come in)."""
    B = x.shape[0]
    shift = randint(B, -max_shift, max_shift, x, generator) + uniform(B, -0.5, 0.5, x, generator)
    return delay(x, shift, cyclic=False)


def cyclic_shift(x: torch.Tensor, generator=None) -> torch.Tensor:
    """Roll each clip by d ~ U{0..S-1} samples."""
    B, S = x.shape
    return delay(x, randint(B, 0, S - 1, x, generator), cyclic=True)


def time_mask(x: torch.Tensor, length: int, generator=None) -> torch.Tensor:
    """One segment of `length` samples per clip replaced by faint noise (std 1e-6, as the EAT code)."""
    faint = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 1e-6
    return torch.where(segment_mask(x, length, generator), faint, x)


def lowpass(x: torch.Tensor, low: float = 0.25, high: float = 0.375, generator=None) -> torch.Tensor:
    """Low-pass at one cutoff ~ U[low, high) per call, in fractions of the sample rate."""
    cutoff = float(uniform(1, low, high, x, generator))
    return _julius().lowpass_filter(x, cutoff)


def highpass(x: torch.Tensor, low: float = 0.005, high: float = 0.125, generator=None) -> torch.Tensor:
    """High-pass at one cutoff ~ U[low, high) per call, in fractions of the sample rate."""
    cutoff = float(uniform(1, low, high, x, generator))
    return _julius().highpass_filter(x, cutoff)


def mu_law(x: torch.Tensor, channels: int = 256) -> torch.Tensor:
    """Mu-law encode to `channels` codes and decode (amplitudes are taken as full scale 1)."""
    mu = channels - 1
    compressed = torch.sign(x) * torch.log1p(mu * x.abs()) / math.log1p(mu)
    code = torch.floor((compressed + 1) / 2 * mu + 0.5)
    compressed = code / mu * 2 - 1
    return torch.sign(compressed) * torch.expm1(compressed.abs() * math.log1p(mu)) / mu


def quantize(x: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Round to the nearest multiple of 2 ** (1 - bits): 2 ** bits levels over [-1, 1)."""
    step = 2.0 ** (1 - bits)
    return torch.round(x / step) * step


def unit_noise(x: torch.Tensor, kind: str, sample_rate: int, generator=None) -> torch.Tensor:
    """[B, S] zero-mean, unit-RMS noise of a kind in ADDITIVE_NOISES. Coloured noises shape white
    noise in the DFT by (k + 1) ** (slope / 2) at bin k; "sine" is a hum of 50 U + 3 N(0, 1) Hz."""
    B, S = x.shape
    if kind == "uniform":
        return (torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1) * math.sqrt(3)
    if kind == "sine":
        freq = 50 * uniform(B, 0, 1, x, generator) + 3 * torch.randn(B, generator=generator, device=x.device, dtype=x.dtype)
        phase = uniform(B, 0, math.pi, x, generator)
        t = torch.arange(S, device=x.device, dtype=x.dtype) / sample_rate
        return math.sqrt(2) * torch.sin(2 * math.pi * freq[:, None] * t + phase[:, None])
    if kind not in SLOPES:
        raise ValueError(f"unknown noise {kind!r}; expected one of {ADDITIVE_NOISES}")
    w = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    if SLOPES[kind]:
        k = torch.arange(1, S // 2 + 2, device=x.device, dtype=x.dtype)  # [S // 2 + 1] the DC bin counts as 1
        w = torch.fft.irfft(torch.fft.rfft(w) * k ** (SLOPES[kind] / 2), n=S)
    w = w - w.mean(dim=1, keepdim=True)
    return w / w.std(dim=1, keepdim=True)


def add_noise(x: torch.Tensor, kind: str, sample_rate: int, snr_db: tuple[float, float] = (30.0, 30.0),
              generator=None) -> torch.Tensor:
    """x + noise of `kind` at a signal-to-noise ratio ~ U[snr_db) (in dB, from each clip's RMS)."""
    snr = uniform(x.shape[0], *snr_db, x, generator)
    scale = x.pow(2).mean(dim=1).sqrt() * 10 ** (-snr / 20)  # [B] noise RMS
    return x + unit_noise(x, kind, sample_rate, generator) * scale[:, None]


def phase_noise(x: torch.Tensor, n_fft: int, low: float = 0.01, high: float = 0.02, generator=None) -> torch.Tensor:
    """Every STFT coefficient's phase advanced by sigma * U[0, 1) radians, sigma ~ U[low, high) per clip."""
    X = stft(x, n_fft)  # [B, F, T]
    sigma = uniform(x.shape[0], low, high, x, generator)[:, None, None]
    jitter = sigma * torch.rand(X.shape, generator=generator, device=x.device, dtype=x.dtype)
    return istft(X * torch.polar(torch.ones_like(jitter), jitter), n_fft, x.shape[-1])


def resample(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Resample to `factor` times as many samples (x0.8: faster and higher), then keep the first S
    samples or pad zeros at the end, as the EAT code's batch resampling does."""
    S = x.shape[-1]
    ratio = Fraction(factor).limit_denominator(64)
    if ratio == 1:
        return x
    need = min(S, math.ceil(S / ratio) + 64)  # input samples the kept output depends on
    y = _julius().resample_frac(x[..., :need], ratio.denominator, ratio.numerator, full=True)
    return F.pad(y[..., :S], (0, max(0, S - y.shape[-1])))
