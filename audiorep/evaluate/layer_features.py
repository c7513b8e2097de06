"""Every layer's frames of an audio clip, in one forward per window (`layers="all"`).

What SUPERB's featurizer learns over: for an audiorep encoder of any backbone kind, the
output of every block (the backbone's `hidden` for blocks 0..L-1) and the final output
(after the last norm), L + 1 layers; tokens of equal time (a ViT's frequency patches) are
averaged, so each layer is a sequence of frames at the backbone's token rate. Audio longer
than the encoder's span goes in consecutive windows (the last one ending at the clip's end);
a frame already covered by the window before is not repeated. Any other HEAR module gives
one layer: its timestamp embeddings.
"""
from __future__ import annotations

import torch

from audiorep.audio import window_starts

ALL = "all"


def all_layers(encoder) -> list[int]:
    """`layers="all"`: every block of the encoder's backbone."""
    return list(range(encoder.backbone.num_layers))


def layer_names(encoder) -> list[str]:
    return [f"block{i}" for i in all_layers(encoder)] + ["output"]


def _window_frames(encoder, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[W, size] windows -> ([W, U, L + 1, D] frames, [U] token times in s from the window start)."""
    out = encoder(windows, layers=ALL)
    states = torch.stack([*out.hidden, out.tokens], dim=2)[:, out.prefix:]  # [W, K, L + 1, D]
    uniq, inverse = torch.unique(out.times, return_inverse=True)  # token times are shared by the windows
    summed = states.new_zeros(len(windows), len(uniq), *states.shape[2:]).index_add_(1, inverse, states)
    count = torch.bincount(inverse, minlength=len(uniq)).to(states.dtype)
    return summed / count[:, None, None], uniq  # [W, U, L + 1, D]


@torch.inference_mode()
def layer_frames(encoder, wave: torch.Tensor, max_windows: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """[S] audio at the encoder's rate -> ([T, L + 1, D] float32 frames, [T] times in s), T increasing."""
    waves = encoder.pad_short(wave.reshape(1, -1).to(encoder.device))
    size = min(waves.shape[1], encoder.span_samples)
    starts = window_starts(waves.shape[1], size, size)
    frames, times = [], []
    for i in range(0, len(starts), max_windows):
        batch = starts[i:i + max_windows]
        x, t = _window_frames(encoder, torch.stack([waves[0, s:s + size] for s in batch]))
        for k, s in enumerate(batch):
            frames.append(x[k])
            times.append(t.double() + s / encoder.sample_rate)
    keep_frames, keep_times, last = [], [], -float("inf")
    for x, t in zip(frames, times):  # the last window overlaps the one before it
        new = t > last + 1e-9
        keep_frames.append(x[new])
        keep_times.append(t[new])
        last = float(t[new][-1]) if new.any() else last
    return torch.cat(keep_frames).float(), torch.cat(keep_times)


def hear_frames(module, model, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Any HEAR module: [S] at model.sample_rate -> ([T, 1, D] timestamp embeddings, [T] times in s)."""
    with torch.inference_mode():
        emb, ms = module.get_timestamp_embeddings(wave.reshape(1, -1), model)
    return emb[0, :, None].float().cpu(), ms[0].double().cpu() / 1000
