"""The only mel code of audiorep: PaSST's STFT log-mel and a Kaldi-compatible fbank.

Both map a waveform [B, S] to features [B, F, T] (bins first, frames second), declare
`sample_rate`, `hop_s`, `features` (= n_mels), `min_samples`, `num_frames(num_samples)` and
its inverse `samples_for(frames)`, and share one implementation of the Kaldi mel banks.
Their level L (HEAR embeddings) is the mean mel frame of a window. No augmentation happens here (see augment.py).
Inputs shorter than `min_samples` raise a ValueError; callers that want a frame anyway pad first.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

FLOAT32_EPS = torch.finfo(torch.float32).eps  # Kaldi's energy floor: log(eps) = -15.942385
MS = 0.001  # milliseconds -> seconds, as Kaldi multiplies it


def mel_scale(freq):
    """Kaldi's (HTK) mel scale; works on Python floats and tensors."""
    if isinstance(freq, torch.Tensor):
        return 1127.0 * (1.0 + freq / 700.0).log()
    return 1127.0 * math.log(1.0 + freq / 700.0)


def kaldi_mel_banks(n_mels: int, n_fft: int, sample_rate: float, low_freq: float, high_freq: float) -> torch.Tensor:
    """Triangular Kaldi mel banks (no VTLN warp), padded with one zero column: [n_mels, n_fft // 2 + 1].

    Computed in float32 with the same operation order as Kaldi, so the empty low bins
    (no FFT bin inside the triangle) come out exactly zero.
    """
    nyquist = 0.5 * sample_rate
    if high_freq <= 0.0:
        high_freq += nyquist
    if not (0.0 <= low_freq < nyquist and 0.0 < high_freq <= nyquist and low_freq < high_freq):
        raise ValueError(f"bad mel range [{low_freq}, {high_freq}] Hz for sample rate {sample_rate}")
    if n_fft % 2:
        raise ValueError(f"n_fft must be even, got {n_fft}")
    mel_low, mel_high = mel_scale(low_freq), mel_scale(high_freq)
    mel_delta = (mel_high - mel_low) / (n_mels + 1)
    bin = torch.arange(n_mels).unsqueeze(1)  # [F, 1]
    left = mel_low + bin * mel_delta
    center = mel_low + (bin + 1.0) * mel_delta
    right = mel_low + (bin + 2.0) * mel_delta
    fft_mel = mel_scale(sample_rate / n_fft * torch.arange(n_fft // 2, dtype=torch.float32)).unsqueeze(0)  # [1, n_fft/2]
    up = (fft_mel - left) / (center - left)
    down = (right - fft_mel) / (right - center)
    banks = torch.max(torch.zeros(1), torch.min(up, down))  # [F, n_fft/2]
    return F.pad(banks, (0, 1))  # [F, n_fft/2 + 1], the Nyquist bin gets no weight


class Spectrogram(nn.Module):
    """What the two mel frontends share: level L and the frames <-> samples arithmetic
    (num_frames(n) = (n - first) // hop + 1 for n >= min_samples)."""

    first: int  # samples of the first frame
    step: int   # samples per further frame

    def num_frames(self, num_samples: int) -> int:
        if num_samples < self.min_samples:
            raise ValueError(f"{type(self).__name__} needs at least {self.min_samples} samples, got {num_samples}")
        return (num_samples - self.first) // self.step + 1

    def samples_for(self, frames: int) -> int:
        """Fewest samples that give at least `frames` frames."""
        return max(self.min_samples, self.first + (frames - 1) * self.step)

    def level_l(self, feats: torch.Tensor) -> torch.Tensor:
        return feats.mean(-1)  # [B, F, T] -> [B, F]


def _prepare(frontend: nn.Module, wave: torch.Tensor) -> torch.Tensor:
    """Check wave [B, S]; fp16/bf16 are computed in float32 (FFTs and logs) and cast back by the caller."""
    if wave.ndim != 2:
        raise ValueError(f"{type(frontend).__name__} expects a waveform [batch, samples], got shape {tuple(wave.shape)}")
    frontend.num_frames(wave.shape[-1])
    return wave if wave.dtype in (torch.float32, torch.float64) else wave.float()


@dataclass(frozen=True)
class PasstMelConfig:
    kind: str = "passt_mel"
    sample_rate: int = 32000
    n_fft: int = 1024
    win_length: int = 800
    hop_length: int = 320
    n_mels: int = 128
    fmin: float = 0.0
    fmax: float | None = None  # None -> sample_rate / 2 - 1000 (15000 Hz at 32 kHz), as hear21passt in eval
    preemphasis: float = 0.97
    log_offset: float = 1e-5
    norm_shift: float = 4.5  # output = (log_mel + norm_shift) / norm_scale
    norm_scale: float = 5.0


class PasstMel(Spectrogram):
    """PaSST's log-mel (hear21passt AugmentMelSTFT in eval): pre-emphasis, STFT power, Kaldi mel banks."""

    def __init__(self, cfg: PasstMelConfig = PasstMelConfig()):
        super().__init__()
        self.cfg = cfg
        self.sample_rate = cfg.sample_rate
        self.hop_s = cfg.hop_length / cfg.sample_rate
        self.features = cfg.n_mels
        # valid conv1d pre-emphasis drops one sample; the centred STFT reflect-pads n_fft // 2
        self.min_samples = cfg.n_fft // 2 + 2
        self.first, self.step = 1, cfg.hop_length
        fmax = cfg.sample_rate / 2 - 1000 if cfg.fmax is None else cfg.fmax
        self.register_buffer("mel_basis", kaldi_mel_banks(cfg.n_mels, cfg.n_fft, cfg.sample_rate, cfg.fmin, fmax), persistent=False)
        self.register_buffer("window", torch.hann_window(cfg.win_length, periodic=False), persistent=False)
        self.register_buffer("preemph_kernel", torch.tensor([[[-cfg.preemphasis, 1.0]]]), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        x = _prepare(self, wave)
        x = F.conv1d(x.unsqueeze(1), self.preemph_kernel.to(x)).squeeze(1)  # [B, S - 1]
        spec = torch.stft(x, cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length,
                          window=self.window.to(x), center=True, return_complex=True)  # [B, n_fft/2 + 1, T]
        power = torch.view_as_real(spec).pow(2).sum(-1)
        mel = torch.matmul(self.mel_basis.to(x), power)  # [B, F, T]
        logmel = (mel + cfg.log_offset).log()
        return ((logmel + cfg.norm_shift) / cfg.norm_scale).to(wave.dtype)


@dataclass(frozen=True)
class FbankConfig:
    """Kaldi fbank (torchaudio.compliance.kaldi.fbank) with htk_compat, 'hanning' window,
    no energy, no dither, snip_edges, per-frame DC removal, FFT size rounded up to a power of two.
    Defaults: Audio-MAE (16 kHz). ASiT: sample_rate=32000. EnCodecMAE: sample_rate=24000,
    n_mels=256, frame_length_ms=26.56, frame_shift_ms=13.28, remove_mean=False, mean=-6.12, scale=4.82.
    """
    kind: str = "fbank"
    sample_rate: int = 16000
    n_mels: int = 128
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    low_freq: float = 20.0
    high_freq: float = 0.0  # <= 0 means relative to Nyquist, as in Kaldi
    preemphasis: float = 0.97
    remove_mean: bool = True  # subtract the row's waveform mean first (Audio-MAE, ASiT)
    mean: float = -4.2677393  # output = (fbank - mean) / scale
    scale: float = 2 * 4.5689974


class Fbank(Spectrogram):
    """Batched torch reimplementation of torchaudio.compliance.kaldi.fbank for the settings above."""

    def __init__(self, cfg: FbankConfig = FbankConfig()):
        super().__init__()
        self.cfg = cfg
        self.sample_rate = cfg.sample_rate
        self.shift = int(cfg.sample_rate * cfg.frame_shift_ms * MS)  # samples, truncated as Kaldi does
        self.length = int(cfg.sample_rate * cfg.frame_length_ms * MS)
        self.n_fft = 1 << (self.length - 1).bit_length()  # next power of two
        self.hop_s = self.shift / cfg.sample_rate
        self.features = cfg.n_mels
        self.min_samples = self.first = self.length
        self.step = self.shift
        banks = kaldi_mel_banks(cfg.n_mels, self.n_fft, cfg.sample_rate, cfg.low_freq, cfg.high_freq)
        self.register_buffer("mel_basis", banks, persistent=False)  # [F, n_fft/2 + 1]
        self.register_buffer("window", torch.hann_window(self.length, periodic=False), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """wave [B, S] -> [B, F, T]. With remove_mean the mean is over the whole row, padding
        included; since every frame's DC is removed anyway this only changes float rounding."""
        cfg = self.cfg
        x = _prepare(self, wave)
        if cfg.remove_mean:
            x = x - x.mean(-1, keepdim=True)
        frames = x.unfold(-1, self.length, self.shift)  # [B, T, L]
        frames = frames - frames.mean(-1, keepdim=True)
        previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)  # first sample repeats itself
        frames = (frames - cfg.preemphasis * previous) * self.window.to(x)
        power = torch.fft.rfft(frames, n=self.n_fft).abs().pow(2)  # [B, T, n_fft/2 + 1]
        mel = torch.matmul(power, self.mel_basis.to(x).T)  # [B, T, F]
        logmel = mel.clamp_min(FLOAT32_EPS).log()
        return ((logmel - cfg.mean) / cfg.scale).transpose(1, 2).to(wave.dtype)  # [B, F, T]
