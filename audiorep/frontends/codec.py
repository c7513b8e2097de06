"""Frozen tokenizers that turn audio into discrete frame targets (EnCodecMAE).

Each tokenizer maps a mono waveform [S] at `sample_rate` to codes [Q, T'] (Q codebooks of
`codebook_size` entries), frame j centred at sample `centre + j * hop` (`encode`; a batch
of equal-length crops [B, S] -> [B, Q, T'] with `encode_batch`), and keeps the state its
`fit` derives from data in `state()` / `load_state()` (plain tensors):

  EncodecTokenizer   EnCodec 24 kHz residual vector quantizer codes (first 8 codebooks x
                     1024, 75 Hz) from `transformers.EncodecModel`, an optional extra
                     (`pip install audiorep[codec]`). pretrained=True: the released weights
                     (`from_pretrained("facebook/encodec_24khz")`, through the Hugging Face
                     cache). pretrained=False: the same network with seeded random weights
                     whose codebooks `fit` draws from the data's own residuals: a
                     random-projection quantizer (as BEST-RQ), usable offline.
  KMeansTokenizer    one codebook: k-means (scikit-learn MiniBatchKMeans or faiss, seeded) on the
                     frames a feature function gives (fbank frames, or the activations of a
                     trained encoder for self-training).

None of this enters an encoder: the targets are computed once and cached (objectives/codec_mae.py).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

ENCODEC_24KHZ = "facebook/encodec_24khz"
CHUNK_S = 60.0  # long clips are tokenized in chunks of this many seconds (bounded memory)


def nearest(x: torch.Tensor, codebook: torch.Tensor, block: int = 8192) -> torch.Tensor:
    """[N, D] vectors -> [N] index of the nearest row of codebook [K, D] (Euclidean)."""
    norms = codebook.pow(2).sum(1)  # [K]
    return torch.cat([(norms[None] - 2 * x[i:i + block] @ codebook.T).argmin(1) for i in range(0, len(x), block)])


class EncodecTokenizer:
    sample_rate = 24000

    def __init__(self, pretrained: bool = True, codebooks: int = 8, seed: int = 0, threads: int | None = None):
        try:
            from transformers import EncodecConfig, EncodecModel
        except ImportError:
            raise ImportError("EnCodec targets need `transformers` (pip install audiorep[codec])") from None
        if pretrained:
            try:
                model = EncodecModel.from_pretrained(ENCODEC_24KHZ)
            except OSError as e:
                raise RuntimeError(f"cannot load {ENCODEC_24KHZ} ({e}); offline, use the random-weight "
                                   "tokenizer (objective.targets=encodec_random) or fbank k-means "
                                   "(objective.targets=fbank_kmeans)") from None
        else:
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                model = EncodecModel(EncodecConfig())
        self.model = model.eval()
        self.pretrained, self.seed = pretrained, seed
        self.codebooks = codebooks
        self.codebook_size = model.config.codebook_size
        self.hop = math.prod(model.config.upsampling_ratios)  # 320 samples: 75 Hz
        self.centre = self.hop / 2
        if codebooks > len(self.layers()):
            raise ValueError(f"EnCodec has {len(self.layers())} codebooks, asked for {codebooks}")

    def layers(self):
        return self.model.quantizer.layers

    def codebook(self, q: int) -> torch.Tensor:
        return self.layers()[q].codebook.embed  # [K, 128]

    @torch.inference_mode()
    def latents(self, wave: torch.Tensor) -> torch.Tensor:
        """[S] -> encoder latents [T', 128], chunk by chunk."""
        step = int(CHUNK_S * self.sample_rate) // self.hop * self.hop
        parts = [self.model.encoder(wave[i:i + step][None, None])[0].T for i in range(0, len(wave), step)]
        return torch.cat(parts)  # [T', 128]

    def quantize(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[T', 128] -> (codes [Q, T'], error [Q]: mean distance to the chosen entry per codebook)."""
        residual, codes, errors = latents, [], []
        for q in range(self.codebooks):
            idx = nearest(residual, self.codebook(q))
            residual = residual - self.codebook(q)[idx]
            codes.append(idx)
            errors.append(residual.norm(dim=1).mean())
        return torch.stack(codes), torch.stack(errors)

    @torch.inference_mode()
    def fit(self, waves: list[torch.Tensor], generator: torch.Generator | None = None) -> None:
        """Random weights: each codebook = `codebook_size` residual vectors drawn from the
        data (what EnCodec's own codebooks start from). Pretrained weights: nothing to do."""
        if self.pretrained:
            return
        residual = torch.cat([self.latents(w) for w in waves])  # [N, 128]
        if len(residual) < self.codebook_size:
            raise ValueError(f"random EnCodec codebooks need >= {self.codebook_size} frames to draw from, "
                             f"the sample has {len(residual)}; sample more clips")
        for q in range(self.codebooks):
            rows = torch.randperm(len(residual), generator=generator)[:self.codebook_size]
            self.codebook(q).copy_(residual[rows])
            residual = residual - self.codebook(q)[nearest(residual, self.codebook(q))]

    def state(self) -> dict[str, torch.Tensor]:
        return {f"codebook{q}": self.codebook(q).clone() for q in range(self.codebooks)}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        for q in range(self.codebooks):
            self.codebook(q).copy_(state[f"codebook{q}"])

    @torch.inference_mode()
    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        """[S] -> codes [Q, T'], T' = ceil(S / 320)."""
        return self.quantize(self.latents(wave))[0]

    @torch.inference_mode()
    def encode_batch(self, waves: torch.Tensor) -> torch.Tensor:
        """[B, S] crops, each encoded alone (EnCodec's causal convolutions and LSTM start
        afresh at every crop, as the release computes its targets) -> codes [B, Q, T']."""
        latents = self.model.encoder(waves[:, None]).transpose(1, 2)  # [B, T', 128]
        codes, _ = self.quantize(latents.flatten(0, 1))  # [Q, B * T']
        return codes.unflatten(1, latents.shape[:2]).transpose(0, 1)  # [B, Q, T']

    @torch.inference_mode()
    def errors(self, wave: torch.Tensor) -> torch.Tensor:
        """[S] -> [Q] mean quantization error left after each codebook (for gamma_q)."""
        return self.quantize(self.latents(wave))[1]


KMEANS = ("sklearn", "faiss")


class KMeansTokenizer:
    """k-means codes of the frames `features(waves [B, S]) -> [B, T', C]` gives (one codebook).
    `backend`: "sklearn" (MiniBatchKMeans, `pip install audiorep[kmeans]`) or "faiss" (Lloyd,
    20 iterations, `pip install faiss-cpu`: 6.5x faster and a lower held-out error at
    20k x 768 frames, k = 1024; benchmarks/bench_encodecmae.py kmeans)."""

    def __init__(self, features: Callable[[torch.Tensor], torch.Tensor], sample_rate: int, hop: int, centre: float,
                 k: int = 1024, max_frames: int = 100_000, seed: int = 0, backend: str = "sklearn"):
        if backend not in KMEANS:
            raise ValueError(f"k-means backend {backend!r}: expected one of {KMEANS}")
        self.features, self.sample_rate, self.hop, self.centre = features, sample_rate, hop, centre
        self.codebooks, self.codebook_size = 1, k
        self.max_frames, self.seed, self.backend = max_frames, seed, backend
        self.centroids: torch.Tensor | None = None

    @torch.inference_mode()
    def fit(self, waves: list[torch.Tensor], generator: torch.Generator | None = None) -> None:
        """k-means on up to `max_frames` frames drawn (seeded) from the sample."""
        frames = torch.cat([self.features(w[None])[0] for w in waves]).float().cpu()  # [N, C]
        if len(frames) < self.codebook_size:
            raise ValueError(f"k-means with k={self.codebook_size} needs at least that many frames, "
                             f"the sample has {len(frames)}; sample more clips")
        x = frames[torch.randperm(len(frames), generator=generator)[:self.max_frames]].numpy()
        self.centroids = torch.from_numpy(fit_kmeans(x, self.codebook_size, self.seed, self.backend)).float()

    def state(self) -> dict[str, torch.Tensor]:
        return {"centroids": self.centroids}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.centroids = state["centroids"]

    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        """[S] -> codes [1, T']."""
        return self.encode_batch(wave[None])[0]

    @torch.inference_mode()
    def encode_batch(self, waves: torch.Tensor) -> torch.Tensor:
        """[B, S] crops, each on its own -> codes [B, 1, T']."""
        if self.centroids is None:
            raise RuntimeError("KMeansTokenizer.encode before fit/load_state")
        frames = self.features(waves).float()  # [B, T', C]
        return nearest(frames.flatten(0, 1), self.centroids.to(frames.device)).view(len(waves), 1, -1)

    def errors(self, wave: torch.Tensor) -> torch.Tensor:
        return torch.ones(1)


def fit_kmeans(x: np.ndarray, k: int, seed: int, backend: str) -> np.ndarray:
    """[N, C] float32 frames -> [k, C] centroids."""
    try:
        if backend == "faiss":
            import faiss
            kmeans = faiss.Kmeans(x.shape[1], k, niter=20, seed=seed)
            kmeans.train(np.ascontiguousarray(x))
            return kmeans.centroids
        from sklearn.cluster import MiniBatchKMeans
    except ImportError:
        needs = "faiss-cpu" if backend == "faiss" else "scikit-learn (pip install audiorep[kmeans])"
        raise ImportError(f"k-means with backend {backend!r} needs {needs}") from None
    kmeans = MiniBatchKMeans(k, random_state=seed, batch_size=4096, n_init=3, max_no_improvement=20)
    return kmeans.fit(x.astype(np.float64)).cluster_centers_
