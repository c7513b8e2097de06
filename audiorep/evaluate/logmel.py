"""Built-in reference model: log-mel statistics, as a HEAR API module.

The evaluator adds it to every run as `logmel` (module `audiorep.evaluate.logmel`). 16 kHz, 64
mel bands (audiorep.frontends' Kaldi mel banks, 0-8000 Hz) of the power spectrum over a 25 ms Hann
window with a hop of 10 ms, log(mel + 1e-6). Timestamp embeddings: the log-mel frames (64-d) centred
at multiples of the hop, in ms. Scene embeddings: mean and standard deviation of the
frames over time (128-d). No learned parameters: it shows what any encoder must beat.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from audiorep.frontends import kaldi_mel_banks

SAMPLE_RATE = 16000
N_MELS = 64
WIN_MS, HOP_MS = 25.0, 10.0


class LogMel(nn.Module):
    def __init__(self, sample_rate: int = SAMPLE_RATE, n_mels: int = N_MELS):
        super().__init__()
        self.sample_rate = sample_rate
        self.win = int(round(sample_rate * WIN_MS / 1000))
        self.hop = int(round(sample_rate * HOP_MS / 1000))
        self.n_fft = 2 ** math.ceil(math.log2(self.win))
        self.timestamp_embedding_size = n_mels
        self.scene_embedding_size = 2 * n_mels
        self.register_buffer("window", torch.hann_window(self.win), persistent=False)
        banks = kaldi_mel_banks(n_mels, self.n_fft, sample_rate, 0.0, sample_rate / 2)  # [n_mels, F]
        self.register_buffer("fbank", banks.T.contiguous(), persistent=False)  # [F, n_mels]

    def forward(self, audio: Tensor) -> Tensor:
        """audio [n, S] -> log-mel [n, T, n_mels], frame t centred at t * hop."""
        spec = torch.stft(audio.float(), self.n_fft, self.hop, self.win, self.window, center=True,
                          pad_mode="reflect", return_complex=True)  # [n, F, T]
        power = spec.abs().square().transpose(1, 2)  # [n, T, F]
        return torch.log(power @ self.fbank + 1e-6)


def load_model(model_file_path: str = "", **kwargs) -> LogMel:
    """The baseline has no weights: `model_file_path` is ignored, as is `random_init`."""
    kwargs.pop("random_init", None)
    return LogMel(**kwargs)


def get_timestamp_embeddings(audio: Tensor, model: LogMel) -> tuple[Tensor, Tensor]:
    frames = model(audio)  # [n, T, D]
    n, t, _ = frames.shape
    ms = torch.arange(t, dtype=torch.float32, device=frames.device) * (model.hop * 1000.0 / model.sample_rate)
    return frames, ms.expand(n, t)


def get_scene_embeddings(audio: Tensor, model: LogMel) -> Tensor:
    frames = model(audio)  # [n, T, D]
    return torch.cat([frames.mean(1), frames.std(1, unbiased=False)], dim=1)
