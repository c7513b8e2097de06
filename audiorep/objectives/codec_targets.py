"""EnCodecMAE's data-dependent stage: a frozen tokenizer, fitted on a sample of the data,
gamma_q, and the targets of every training crop.

    RUN/targets/meta.json               tokenizer, frame grid, context, clip count, gamma_q
    RUN/targets/tokenizer.safetensors   what the tokenizer's `fit` derived (codebooks, centroids)
    RUN/targets/teacher/                self-training without `teacher`: the encoder as loaded
                                        before step 0 (the teacher; training moves the encoder)
    RUN/targets/codes/NNNN/IIIIIII.npy  context "clip": int16 [T', Q] codes of clip I, while tokenizing
    RUN/targets/codes.npy, offsets.npy  context "clip": all clips' codes in one int16 [sum T', Q]
                                        array and where each clip starts in it (N + 1)

Two target contexts (`CodecMAEConfig.target_context`):
  "crop"  as released: every training crop is tokenized alone, in the step (`crop_targets`).
          EnCodec's encoder is causal convolutions + an LSTM, so a code depends on all the
          audio before it in the crop; the self-training teacher also sees only the crop.
  "clip"  every clip tokenized once (in 60 s chunks), cached; a crop's targets are the cached
          frames nearest in time to its input frames (`TargetCache.lookup`, one gather per
          batch): far cheaper, with the codes near a crop's start computed from more context
          (the agreement is measured in docs/encodecmae.md).
Every file is written atomically and the fitted tokenizer is saved before the clips are
tokenized, so a killed run resumes where it stopped (tokenized clips are skipped) with the
same tokenizer; a resumed "crop" run rebuilds the tokenizer from the folder (`restore_tokenizer`).
"""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from .. import audio
from ..files import write_json
from ..frontends.codec import EncodecTokenizer, KMeansTokenizer

TARGETS = ("encodec", "encodec_random", "fbank_kmeans", "teacher_kmeans")
CONTEXTS = ("crop", "clip")
GAMMAS = ("auto", "released", "estimated")
# the release's per-codebook loss weights (configs/models/encodecmae.gin, QUANTIZER_WEIGHTS):
# the mean quantization error of the released EnCodec after each of its first 8 codebooks, normalized
RELEASED_GAMMA = (0.22407463, 0.1759858, 0.14499009, 0.12150037, 0.10315603, 0.08831368, 0.07608274, 0.06589669)


def gamma_source(cfg) -> str:
    """"released" (the release's constants) or "estimated" (from `gamma_clips` sampled clips);
    cfg.gamma "auto" takes the constants where the targets are the released EnCodec's."""
    if cfg.gamma not in GAMMAS:
        raise ValueError(f"CodecMAEConfig.gamma={cfg.gamma!r}: expected one of {GAMMAS}")
    source = cfg.gamma if cfg.gamma != "auto" else "released" if cfg.targets == "encodec" else "estimated"
    if source == "released" and not (cfg.targets.startswith("encodec") and cfg.codebooks == len(RELEASED_GAMMA)):
        raise ValueError(f"CodecMAEConfig.gamma='released': the release's constants weigh 8 EnCodec codebooks, "
                         f"not targets={cfg.targets!r} with codebooks={cfg.codebooks}; use gamma=estimated")
    return source


def frame_grid(frontend) -> tuple[int, float]:
    """(hop, centre of frame 0) in samples of a frame frontend."""
    return round(frontend.hop_s * frontend.sample_rate), (frontend.samples_for(1) - 1) / 2


def framewise(frontend, fn, waves: torch.Tensor, chunk_frames: int) -> torch.Tensor:
    """fn(features [B, C, t]) -> [B, t, D] over waves [B, S], `chunk_frames` frames at a
    time (the frames are the frontend's own: chunks overlap by one window) -> [B, T, D]."""
    step = chunk_frames * frame_grid(frontend)[0]
    out = []
    for first in range(0, waves.shape[-1], step):
        piece = waves[:, first:first + frontend.samples_for(chunk_frames)]
        if piece.shape[-1] < frontend.min_samples:
            break
        out.append(fn(frontend(piece)))
    return torch.cat(out, dim=1)


def fbank_frames(encoder, chunk_frames: int = 3000):
    return lambda waves: framewise(encoder.frontend, lambda f: f.transpose(1, 2), waves, chunk_frames)


def activation_frames(encoder, layer: int, postnorm: bool):
    """Self-training features: a block's activations per frame, over windows of the backbone's
    longest input (as the released extraction). postnorm=False: the block's x0 stream (the
    released self-training recipe); True with the last block: the final output."""
    backbone = encoder.backbone
    layer = layer % backbone.num_layers
    final = postnorm and layer == backbone.num_layers - 1

    def fn(feats):
        out = backbone(feats, layers=[layer])
        return out.tokens if final else out.hidden[0]  # [B, t, D]
    return lambda waves: framewise(encoder.frontend, fn, waves, backbone.frames[1])


def build_tokenizer(cfg, encoder, device, folder: Path):
    sr = encoder.sample_rate
    if cfg.targets in ("encodec", "encodec_random"):
        if sr != EncodecTokenizer.sample_rate:
            raise ValueError(f"EnCodec targets need a {EncodecTokenizer.sample_rate} Hz encoder, "
                             f"this one runs at {sr} Hz")
        tokenizer = EncodecTokenizer(cfg.targets == "encodec", cfg.codebooks, cfg.seed)
        tokenizer.model.to(device)
        return tokenizer
    if cfg.targets == "fbank_kmeans":
        features = fbank_frames(encoder)
    elif cfg.targets == "teacher_kmeans":
        from ..models import load
        teacher = load(cfg.teacher or str(folder / "teacher")).to(device).eval()
        features = activation_frames(teacher, cfg.teacher_layer, cfg.teacher_postnorm)
    else:
        raise ValueError(f"CodecMAEConfig.targets={cfg.targets!r}: expected one of {TARGETS}")
    return KMeansTokenizer(features, sr, *frame_grid(encoder.frontend), cfg.kmeans_k, cfg.kmeans_frames, cfg.seed,
                           cfg.kmeans)


class TargetCache:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        meta = self.folder / "meta.json"
        self.meta = json.loads(meta.read_text()) if meta.exists() else None

    def path(self, i: int) -> Path:
        return self.folder / "codes" / f"{i // 1000:04d}" / f"{i:07d}.npy"

    def begin(self, meta: dict) -> None:
        """Start a cache, or check that an existing one was made the same way."""
        if self.meta is not None:
            fixed = {k: v for k, v in self.meta.items() if k != "gamma"}
            if fixed != json.loads(json.dumps(meta)):
                raise ValueError(f"{self.folder}: targets cached with other settings ({fixed} vs {meta}); "
                                 "delete the folder or use a new run folder")
            return
        self.meta = json.loads(json.dumps(meta))
        write_json(self.folder / "meta.json", self.meta)

    def set_gamma(self, gamma: list[float]) -> None:
        self.meta["gamma"] = gamma
        write_json(self.folder / "meta.json", self.meta)

    def tokenizer_state(self) -> dict[str, torch.Tensor] | None:
        path = self.folder / "tokenizer.safetensors"
        return load_file(str(path)) if path.exists() else None

    def save_tokenizer_state(self, state: dict[str, torch.Tensor]) -> None:
        tmp = self.folder / ".tokenizer.safetensors.tmp"
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
        os.replace(tmp, self.folder / "tokenizer.safetensors")

    def fill(self, clips, sample_rate: int, tokenizer, device) -> None:
        """Tokenize every clip not cached yet (whole clips, chunked inside the tokenizer),
        then pack them into one array."""
        if (self.folder / "codes.npy").exists():
            return
        todo = [i for i in range(len(clips)) if not self.path(i).exists()]
        for i in tqdm(todo, desc="targets", unit="clip", disable=not todo):
            clip = clips[i]
            wave, _ = audio.read(clip.path, sample_rate, start=clip.offset, duration=clip.duration)
            codes = tokenizer.encode(torch.from_numpy(wave).to(device))  # [Q, T']
            save(self.path(i), codes.T.cpu().numpy().astype(np.int16))
        self.pack(len(clips))

    def pack(self, n: int) -> None:
        parts = [np.load(self.path(i)) for i in range(n)]
        save(self.folder / "offsets.npy", np.cumsum([0] + [len(p) for p in parts]))
        save(self.folder / "codes.npy", np.concatenate(parts))  # written last: its presence means done
        shutil.rmtree(self.folder / "codes")

    def packed(self) -> tuple[np.ndarray, np.ndarray]:
        if not hasattr(self, "_packed"):
            self._packed = np.load(self.folder / "codes.npy", mmap_mode="r"), np.load(self.folder / "offsets.npy")
        return self._packed

    def codes(self, i: int) -> np.ndarray:
        """[T', Q] codes of clip i."""
        codes, offsets = self.packed()
        return np.array(codes[offsets[i]:offsets[i + 1]])  # a copy, off the memory map

    def lookup(self, index: torch.Tensor, start: torch.Tensor, n_frames: int, hop: int,
               centre: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Targets of crops: input frame t of the crop of clip index[b] starting at sample
        start[b] gets the cached frame nearest to its centre -> (codes [B, T, Q] long,
        valid [B, T]: False past the clip's cached frames)."""
        codes, offsets = self.packed()
        first, length = offsets[index.numpy()], np.diff(offsets)[index.numpy()]  # [B]
        centres = start.numpy()[:, None] + centre + hop * np.arange(n_frames)  # [B, T] samples
        j = nearest_frame(centres, self.meta["hop"], self.meta["centre"])  # [B, T]
        valid = (j >= 0) & (j < length[:, None])
        rows = first[:, None] + j.clip(0, length[:, None] - 1)  # [B, T]
        return torch.from_numpy(codes[rows.ravel()].astype(np.int64)).view(*rows.shape, -1), torch.from_numpy(valid)


def nearest_frame(centres: np.ndarray, hop: float, centre: float) -> np.ndarray:
    """Sample positions -> index of the tokenizer frame (centred at centre + j * hop) nearest each."""
    return np.floor((centres - centre) / hop + 0.5).astype(np.int64)


def crop_targets(tokenizer, waves: torch.Tensor, n_frames: int, hop: int, centre: float,
                 by_index: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets of crops tokenized alone (context "crop", as released): waves [B, S] -> (codes
    [B, T, Q] long, valid [B, T]) for T input frames (hop, centre: their grid in samples).
    Input frame t gets the code nearest its centre, or with `by_index` code t (the release:
    codes every 320 samples against frames every 318 drift apart, 25 ms over 4 s)."""
    with torch.autocast(waves.device.type, enabled=False):
        codes = tokenizer.encode_batch(waves.float())  # [B, Q, T']
    j = np.arange(n_frames) if by_index else nearest_frame(centre + hop * np.arange(n_frames), tokenizer.hop,
                                                          tokenizer.centre)  # [T]
    valid = torch.from_numpy((j >= 0) & (j < codes.shape[-1])).to(waves.device)
    picked = codes[:, :, torch.from_numpy(j.clip(0, codes.shape[-1] - 1)).to(codes.device)]  # [B, Q, T]
    return picked.transpose(1, 2).clone(), valid[None].expand(len(waves), -1)  # clone: out of inference mode


def save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def sample_waves(dataset, n: int, generator: torch.Generator, device) -> list[torch.Tensor]:
    """The deterministic first crop of n clips drawn without replacement (no zero padding); a
    stream of tar shards draws them itself (ShardStream.first_crops)."""
    if not hasattr(dataset, "clips"):
        waves = dataset.first_crops(n, generator)
    else:
        rows = torch.randperm(len(dataset.clips), generator=generator)[:n].tolist()
        waves = [dataset.read(dataset.clips[i], None)[0] for i in tqdm(rows, desc="sampling clips", unit="clip")]
    return [torch.from_numpy(w).to(device) for w in waves if len(w) >= dataset.crop_samples // 8]


def restore_tokenizer(cfg, encoder, cache: TargetCache, device):
    """The tokenizer `prepare_targets` fitted, rebuilt from its folder (a resumed run)."""
    tokenizer = build_tokenizer(cfg, encoder, device, cache.folder)
    state = cache.tokenizer_state()
    if state is None:
        raise FileNotFoundError(f"{cache.folder}: no tokenizer.safetensors; the run's targets folder is incomplete")
    tokenizer.load_state(state)
    return tokenizer


def prepare_targets(cfg, encoder, dataset, device, run_dir: str | Path):
    """Fit (or reload) the tokenizer, set gamma_q, and with context "clip" tokenize every
    clip -> (cache, gamma [Q], tokenizer)."""
    listed = hasattr(dataset, "clips")  # a ClipDataset; tar shards are a stream (ShardStream)
    if cfg.target_context == "clip" and not listed:
        raise ValueError("objective.target_context=clip caches the targets of every clip, which a stream of tar "
                         "shards cannot list: use objective.target_context=crop, or --data as a task folder, "
                         "a folder of audio or a manifest")
    source = gamma_source(cfg)
    cache = TargetCache(Path(run_dir) / "targets")
    if cfg.targets == "teacher_kmeans" and not cfg.teacher and not (cache.folder / "teacher").exists():
        encoder.save(cache.folder / "teacher")  # the encoder as loaded before step 0 (--init RUN)
    tokenizer = build_tokenizer(cfg, encoder, device, cache.folder)
    cache.begin({"targets": cfg.targets, "teacher": cfg.teacher, "seed": cfg.seed, "kmeans": cfg.kmeans,
                 "context": cfg.target_context, "gamma_source": source, "sample_rate": encoder.sample_rate,
                 "hop": tokenizer.hop, "centre": tokenizer.centre, "codebooks": tokenizer.codebooks,
                 "codebook_size": tokenizer.codebook_size, "clips": len(dataset.clips) if listed else len(dataset)})
    generator = torch.Generator().manual_seed(cfg.seed)
    state = cache.tokenizer_state()
    if state is None:
        tokenizer.fit(sample_waves(dataset, cfg.kmeans_clips, generator, device), generator)
        cache.save_tokenizer_state(tokenizer.state())
    else:
        tokenizer.load_state(state)
    if source == "released":
        cache.set_gamma(list(RELEASED_GAMMA))
    elif "gamma" not in cache.meta:
        waves = sample_waves(dataset, cfg.gamma_clips, generator, device)
        errors = torch.stack([tokenizer.errors(w).cpu() for w in tqdm(waves, desc="gamma_q", unit="clip")]).mean(0)
        cache.set_gamma((errors / errors.sum()).tolist())
    if cfg.target_context == "clip":
        cache.fill(dataset.clips, encoder.sample_rate, tokenizer, device)
    gamma = torch.tensor(cache.meta["gamma"])
    if not all(math.isfinite(g) for g in gamma.tolist()):
        raise ValueError(f"{cache.folder}: gamma_q is not finite ({gamma.tolist()}): the sampled clips are silent?")
    return cache, gamma, tokenizer
