"""EnCodecMAE pretraining: mask time gaps -> encode the visible frames -> re-insert ->
decode -> predict every frame's discrete targets.

    features [B, C, T] (24 kHz fbank, 256 bins, 75 frames/s)
    mask: 50% of each clip's frames in gaps of 15 (masking.time_gap_mask)
    encode: the frame backbone sees only the visible frames (keep), packed left per clip
    re-insert: post_net(tokens) at the visible frames, zeros elsewhere (no mask token, as released)
    decode: a 2-block ResiDual stack with its own sin/cos positions over all frames
    predict: Linear(D -> Q x V) per frame; loss = per-codebook cross-entropy weighted by
             gamma_q, 0.9 x mean over masked frames + 0.1 x mean over visible frames

Targets (codec_targets.py) come from a frozen tokenizer fitted in `prepare`; with
target_context "crop" (default, as released) each crop is tokenized alone in the step, with
"clip" each clip once, cached and looked up per crop from batch["index"] and batch["start"]:
  "encodec"         EnCodec 24 kHz RVQ codes, 8 codebooks x 1024 (released weights, online)
  "encodec_random"  the same network with random weights and data-drawn codebooks (offline)
  "fbank_kmeans"    k-means (k = kmeans_k) of the fbank frames
  "teacher_kmeans"  self-training: k-means of a trained encoder's last-block activations; the
                    teacher is `teacher` (a run or encoder folder), or this objective's own
                    encoder as `--init RUN` loaded it, before training starts.

gamma_q: the release's constants (gamma "auto" with the released EnCodec, or "released"), or
estimated from sampled clips ("estimated"; "auto" for every other tokenizer).

Deliberate differences from the released code, each with the released behaviour available:
targets are matched to input frames by time (released, `target_frames="index"`: by index,
codes at 75 Hz against frames every 13.25 ms drift by 25 ms over 4 s); `padded_as_visible=True` (default, as
released) counts padded frames in the visible-frame loss. The full list: docs/encodecmae.md.

Logs: masked/unmasked loss and the masked loss of each codebook, masked accuracy,
emb_std/emb_rank of the encoder's visible output frames (monitor.representation_stats) and
code_perplexity, the mean over codebooks of the targets' perplexity (codes in use).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..backbones.frame import Frame, ResiDualStack
from ..layers import xavier_init
from ..masking import packed_keep, time_gap_mask
from ..monitor import perplexity, representation_stats
from .codec_targets import (CONTEXTS, TARGETS, TargetCache, crop_targets, frame_grid, gamma_source, prepare_targets,
                            restore_tokenizer)

MONITOR_ROWS = 2048  # at most this many visible frames (a fixed stride) in emb_std / emb_rank


@dataclass(frozen=True)
class CodecMAEConfig:
    targets: str = "encodec"        # one of codec_targets.TARGETS
    target_context: str = "crop"    # "crop": each crop tokenized alone, in the step (released);
                                    # "clip": whole clips once, cached, looked up by time (faster)
    target_frames: str = "time"     # input frame t's target: the code nearest in time, or "index": code t
                                    # (released; a 2-sample drift per frame; context "crop" only)
    gamma: str = "auto"             # "released" constants, "estimated" from gamma_clips clips;
                                    # "auto": released with targets=encodec, estimated otherwise
    codebooks: int = 8              # EnCodec codebooks predicted (the first 8: 6 kbps)
    codebook_size: int = 1024       # EnCodec 24 kHz entries per codebook (other sizes: tests only)
    kmeans_k: int = 1024            # k-means targets: clusters
    kmeans_clips: int = 1000        # clips sampled to fit k-means (or the random EnCodec codebooks)
    kmeans_frames: int = 100_000    # frames k-means is fitted on (released self-training: 10k)
    kmeans: str = "sklearn"         # k-means backend: "sklearn" (MiniBatchKMeans) or "faiss" (faster)
    gamma_clips: int = 200          # clips sampled to estimate gamma_q (gamma "estimated")
    teacher: str = ""               # teacher_kmeans: run/encoder folder; "" = this encoder as loaded
    teacher_layer: int = -1         # teacher block whose activations are clustered
    teacher_postnorm: bool = False  # the last block's final output instead of its x0 stream
    mask_ratio: float = 0.5
    gap: int = 15                   # frames per masked span
    masked_weight: float = 0.9
    padded_as_visible: bool = True  # released: padded frames count in the visible-frame loss
    decoder_depth: int = 2
    decoder_heads: int = 12
    decoder_ff_dim: int = 4096
    seed: int = 0                   # tokenizer fitting and clip sampling


def codec_loss(logits: torch.Tensor, targets: torch.Tensor, masked: torch.Tensor, visible: torch.Tensor,
               gamma: torch.Tensor, masked_weight: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """logits [B, T, Q, V], targets [B, T, Q], masked/visible [B, T] frames scored in each
    mean -> (loss, per-codebook and per-part losses)."""
    ce = F.cross_entropy(logits.flatten(0, 2).float(), targets.flatten(), reduction="none")  # [B * T * Q]
    ce = ce.view(targets.shape) * gamma  # [B, T, Q]
    per_masked = (ce * masked[..., None]).sum((0, 1)) / masked.sum().clamp(min=1)  # [Q]
    per_visible = (ce * visible[..., None]).sum((0, 1)) / visible.sum().clamp(min=1)  # [Q]
    parts = {"masked_loss": per_masked.sum(), "unmasked_loss": per_visible.sum()}
    parts.update({f"masked_loss_q{q}": v for q, v in enumerate(per_masked)})
    parts.update({f"unmasked_loss_q{q}": v for q, v in enumerate(per_visible)})
    loss = masked_weight * parts["masked_loss"] + (1 - masked_weight) * parts["unmasked_loss"]
    return loss, parts


class CodecMAE(nn.Module):
    def __init__(self, encoder: nn.Module, cfg: CodecMAEConfig = CodecMAEConfig(), num_classes: int = 0):
        super().__init__()
        if not isinstance(encoder.backbone, Frame):
            raise ValueError("CodecMAE needs the frame backbone (backbone kind 'frame'), e.g. preset encodecmae-base")
        if cfg.targets not in TARGETS:
            raise ValueError(f"CodecMAEConfig.targets={cfg.targets!r}: expected one of {TARGETS}")
        if cfg.target_context not in CONTEXTS:
            raise ValueError(f"CodecMAEConfig.target_context={cfg.target_context!r}: expected one of {CONTEXTS}")
        if cfg.target_frames not in ("time", "index") or (cfg.target_frames == "index" and cfg.target_context != "crop"):
            raise ValueError(f"CodecMAEConfig.target_frames={cfg.target_frames!r}: expected 'time', or 'index' "
                             "with target_context='crop'")
        gamma_source(cfg)  # refuses a gamma setting that does not fit the targets, before any work
        self.encoder, self.cfg = encoder, cfg
        dim = encoder.backbone.dim
        self.num_codebooks = cfg.codebooks if cfg.targets.startswith("encodec") else 1
        self.vocab = cfg.codebook_size if cfg.targets.startswith("encodec") else cfg.kmeans_k
        self.post_net = nn.Linear(dim, dim)
        self.decoder = ResiDualStack(dim, cfg.decoder_depth, cfg.decoder_heads, cfg.decoder_ff_dim)
        self.head = nn.Linear(dim, self.num_codebooks * self.vocab)
        self.post_net.apply(xavier_init)
        self.head.apply(xavier_init)
        self.register_buffer("gamma", torch.full((self.num_codebooks,), 1.0 / self.num_codebooks))
        self.cache: TargetCache | None = None
        self.tokenizer = None  # context "crop": the fitted tokenizer (never saved: rebuilt from the cache folder)
        self.frame_needs: dict = {}  # (frames, device) -> samples each frame needs (frame_padding; not saved)

    # ------------------------------------------------------------ the data-dependent stage

    def prepare(self, dataset, device, run_dir) -> None:
        """Fit the tokenizer, set gamma_q, with context "clip" cache every clip's targets
        (codec_targets.py). Under torchrun, rank 0 does the work while the others wait, then
        find it cached."""
        import torch.distributed as dist
        others_wait = dist.is_available() and dist.is_initialized()
        if others_wait and dist.get_rank() != 0:
            dist.barrier()
        self.cache, gamma, self.tokenizer = prepare_targets(self.cfg, self.encoder, dataset, device, run_dir)
        self.gamma.copy_(gamma.to(self.gamma.device))
        if others_wait and dist.get_rank() == 0:
            dist.barrier()

    def get_extra_state(self) -> dict:
        return {"targets": str(self.cache.folder) if self.cache else ""}

    def set_extra_state(self, state: dict) -> None:
        self.cache = TargetCache(state["targets"]) if state.get("targets") else None
        self.tokenizer = None

    # ------------------------------------------------------------ mask -> encode -> decode

    def mask(self, lengths: torch.Tensor, n_frames: int) -> torch.Tensor:
        return time_gap_mask(lengths, n_frames, self.cfg.mask_ratio, self.cfg.gap)  # [B, T]

    def encode(self, feats: torch.Tensor, keep: torch.Tensor, padding: torch.Tensor | None) -> torch.Tensor:
        """[B, C, T], keep [B, K] -> visible tokens [B, K, D] (final output)."""
        return self.encoder.backbone(feats, keep=keep, padding=padding).tokens

    def unmask(self, tokens: torch.Tensor, keep: torch.Tensor, n_frames: int) -> torch.Tensor:
        """post_net(tokens) [B, K, D] put back at their frames, zeros elsewhere -> [B, T, D]."""
        x = self.post_net(tokens)
        slots = torch.where(keep < 0, n_frames, keep)  # empty slots land in a spare frame
        full = x.new_zeros(x.shape[0], n_frames + 1, x.shape[-1])
        return full.scatter(1, slots[..., None].expand(-1, -1, x.shape[-1]), x)[:, :n_frames]

    def decode(self, x: torch.Tensor, padding: torch.Tensor | None) -> torch.Tensor:
        """[B, T, D] -> logits [B, T, Q, V]."""
        x, _ = self.decoder.run(x, torch.arange(x.shape[1], device=x.device), padding)
        return self.head(x).unflatten(-1, (self.num_codebooks, self.vocab))

    def predict(self, feats: torch.Tensor, masked: torch.Tensor, padding: torch.Tensor | None) -> torch.Tensor:
        return self.predict_with_tokens(feats, masked, padding)[0]

    def predict_with_tokens(self, feats: torch.Tensor, masked: torch.Tensor,
                            padding: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (logits [B, T, Q, V], the encoder's visible output frames [N, D])."""
        visible = ~masked if padding is None else ~masked & ~padding
        keep = packed_keep(visible)  # [B, K]
        tokens = self.encode(feats, keep, padding)  # [B, K, D]
        return self.decode(self.unmask(tokens, keep, feats.shape[-1]), padding), tokens[keep >= 0]

    # ------------------------------------------------------------ the training step

    def frame_padding(self, batch: dict, n_frames: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(valid frames per clip [B], padding [B, T] or None) from batch["length"] (samples) if given.
        A clip of n samples (at least the frontend's shortest input) has the frames k whose
        `samples_for(k)` <= n, at most T: one search on the batch's device, no per-clip loop."""
        B, device = batch["wave"].shape[0], batch["wave"].device
        if "length" not in batch:
            return torch.full((B,), n_frames, device=device), None
        frontend = self.encoder.frontend
        if (n_frames, device) not in self.frame_needs:  # once: a copy to the device waits for its queue
            self.frame_needs[n_frames, device] = torch.tensor([frontend.samples_for(k) for k in range(1, n_frames + 1)],
                                                              device=device)  # [T]
        needs = self.frame_needs[n_frames, device]
        samples = batch["length"].to(device=device, dtype=needs.dtype).clamp(min=frontend.min_samples)  # [B]
        lengths = torch.searchsorted(needs, samples, right=True)  # [B]
        return lengths, torch.arange(n_frames, device=device)[None] >= lengths[:, None]

    def targets(self, batch: dict, n_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(codes [B, T, Q], valid [B, T]) of the batch's crops."""
        if self.cache is None:
            raise RuntimeError("CodecMAE has no targets: run `prepare(dataset, device, run_dir)` first "
                               "(the training loop does, before step 0)")
        if self.cfg.target_context == "crop":
            if self.tokenizer is None:  # a resumed run
                self.tokenizer = restore_tokenizer(self.cfg, self.encoder, self.cache, batch["wave"].device)
            return crop_targets(self.tokenizer, batch["wave"], n_frames, *frame_grid(self.encoder.frontend),
                                by_index=self.cfg.target_frames == "index")
        if "start" not in batch:
            raise ValueError("CodecMAE looks targets up by crop: the batch needs 'index' and 'start' "
                             "(ClipDataset gives them; keep data.roll=false)")
        codes, valid = self.cache.lookup(batch["index"].cpu(), batch["start"].cpu(), n_frames,
                                         *frame_grid(self.encoder.frontend))
        return codes.to(batch["wave"].device), valid.to(batch["wave"].device)

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        with torch.no_grad():
            feats = self.encoder.frontend(batch["wave"])  # [B, C, T]
        T = feats.shape[-1]
        lengths, padding = self.frame_padding(batch, T)
        masked = self.mask(lengths, T)
        logits, tokens = self.predict_with_tokens(feats, masked, padding)
        targets, valid = self.targets(batch, T)
        visible = ~masked if self.cfg.padded_as_visible or padding is None else ~masked & ~padding
        loss, parts = codec_loss(logits, targets, masked & valid, visible & valid, self.gamma, self.cfg.masked_weight)
        return loss, self.logs(parts, logits, targets, masked & valid, tokens)

    def logs(self, parts: dict, logits: torch.Tensor, targets: torch.Tensor, scored: torch.Tensor,
             tokens: torch.Tensor) -> dict[str, float]:
        """Loss terms, masked accuracy, and what tells a collapse or a stall: the spread and
        effective rank of the encoder's output frames, the perplexity of the target codes."""
        logs = {k: float(v.detach()) for k, v in parts.items() if k.startswith("masked_loss") or k == "unmasked_loss"}
        logs["masked_acc"] = float(((logits.argmax(-1) == targets).float().mean(-1) * scored).sum()
                                   / scored.sum().clamp(min=1))
        logs.update(representation_stats(tokens[::max(1, len(tokens) // MONITOR_ROWS)]))
        codes = targets[scored]  # [N, Q]
        if len(codes):
            logs["code_perplexity"] = sum(perplexity(codes[:, q], self.vocab) for q in range(codes.shape[1])) / codes.shape[1]
        return logs

    def init_from(self, run: str | Path) -> list[str]:
        """Self-training starts from a stage-1 run: its last checkpoint's parameters whose
        names and shapes match (encoder, post_net, decoder; not a head of another size), as
        the released non-strict load. Returns the names left at their initialization."""
        from ..files import checkpoints
        found = checkpoints(Path(run))
        if not found:
            raise FileNotFoundError(f"{run}: no checkpoint to start from (a training run folder is expected)")
        state = torch.load(found[-1] / "objective.pt", map_location="cpu", weights_only=True)
        own = self.state_dict()
        keep = {k: v for k, v in state.items() if k in own and k not in ("gamma", "_extra_state")
                and own[k].shape == v.shape}
        self.load_state_dict(keep, strict=False)
        return sorted(k for k in own if k not in keep and k != "_extra_state")

    def load_released(self, source: str | Path) -> None:
        """A released EnCodecMAE checkpoint (hub .pt file or its state_dict) into the encoder,
        decoder, post_net and head."""
        from ..convert import load_objective_weights
        load_objective_weights(self, source, "encodecmae")
