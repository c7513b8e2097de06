"""EnCodecMAE: target extraction speed, target context, the loss floor, k-means and the full-size step.

    python benchmarks/bench_encodecmae.py extraction               # tokenizers and the cache: s of audio per s
    python benchmarks/bench_encodecmae.py context --corpus DIR     # crop vs whole-clip codes: agreement, cost
    python benchmarks/bench_encodecmae.py floor RUN [RUN ...]      # a run's loss vs predicting code frequencies
    python benchmarks/bench_encodecmae.py kmeans                   # self-training k-means: scikit-learn vs faiss
    python benchmarks/bench_encodecmae.py step --batch 4           # encodecmae-base training step, samples/s

The small study of targets and self-training is a study spec:
`audiorep study studies/encodecmae.toml --out runs/encodecmae --jobs 2` (docs/study.md).
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from audiorep import presets
from audiorep.encoder import Encoder
from audiorep.objectives.codec_mae import CodecMAE, CodecMAEConfig

BASE = presets.get("encodecmae-base")
TINY = presets.get("encodecmae-tiny")


# ------------------------------------------------------------------------------ extraction


def extraction(seconds: float) -> None:
    """Tokenizer throughput on one thread, then the cache's (memory-mapped lookups of 4 s crops)."""
    import tempfile

    from audiorep import audio
    from audiorep.data import ClipDataset, DataConfig, folder_clips
    torch.set_num_threads(1)
    encoder = Encoder(TINY)
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        n = max(2, int(seconds // 10))
        for i in range(n):
            audio.write(Path(tmp) / "clips" / f"{i}.wav", (0.1 * rng.standard_normal(240000)).astype(np.float32), 24000)
        data = ClipDataset(folder_clips(Path(tmp) / "clips"), 24000, 96000, DataConfig(roll=False, workers=0))
        total = 10.0 * n
        for targets in ("encodec_random", "fbank_kmeans"):
            objective = CodecMAE(encoder, CodecMAEConfig(targets=targets, target_context="clip", kmeans_k=256,
                                                         kmeans_clips=n, gamma_clips=2))
            objective.prepare(data, "cpu", Path(tmp) / targets)  # fit the tokenizer, estimate gamma, tokenize
            for name in ("codes.npy", "offsets.npy"):
                (Path(tmp) / targets / "targets" / name).unlink()
            began = time.perf_counter()
            objective.prepare(data, "cpu", Path(tmp) / targets)  # the fitted tokenizer reloads: tokenizing only
            made = time.perf_counter() - began
            index = torch.randint(0, n, (128,))
            start = torch.randint(0, 240000 - 96000, (128,))
            began = time.perf_counter()
            for _ in range(10):
                objective.targets({"wave": torch.zeros(128, 1), "index": index, "start": start}, 300)
            looked = (time.perf_counter() - began) / 10
            print(f"{targets:>15}: tokenizing {total:.0f} s of audio (1 thread) {made:.2f} s = {total / made:.0f} s/s; "
                  f"from the cache, 128 crops of 4 s: {looked * 1000:.2f} ms = {128 * 4 / looked:.0f} s/s")


# ------------------------------------------------------------------------------ target context


def context(corpus: Path, clips: int, crops: int, crop_s: float) -> None:
    """How far the cached whole-clip targets (target_context "clip") are from the release's
    per-crop targets ("crop"): random 4 s crops of `clips` corpus clips, each crop's 300 input
    frames given (a) the codes of the crop tokenized alone, (b) the whole clip's codes nearest
    in time; agreement per codebook, over the crop's first 0.5 s and the rest; then the same with
    crops starting on the codec's 320-sample grid (the context alone, no frame phase); and the
    cost of tokenizing crops in the step. Random-weight EnCodec (offline) with codebooks drawn
    from the corpus, and fbank k-means (k = 256)."""
    from audiorep import audio
    from audiorep.data import folder_clips
    from audiorep.frontends.codec import EncodecTokenizer, KMeansTokenizer
    from audiorep.objectives.codec_targets import crop_targets, fbank_frames, frame_grid, nearest_frame
    torch.set_num_threads(1)
    encoder = Encoder(TINY)
    hop, centre = frame_grid(encoder.frontend)
    rng = np.random.default_rng(0)
    files = folder_clips(corpus)[:clips]
    waves = [torch.from_numpy(audio.read(c.path, 24000)[0]) for c in files]
    n = round(crop_s * 24000)
    T = encoder.frontend.num_frames(n)
    fitted = EncodecTokenizer(pretrained=False, seed=0)
    fitted.fit(waves[:4], torch.Generator().manual_seed(0))
    kmeans = KMeansTokenizer(fbank_frames(encoder), 24000, *frame_grid(encoder.frontend), k=256)
    kmeans.fit(waves[:8], torch.Generator().manual_seed(0))
    head = round(0.5 * 24000 / hop)  # input frames in the crop's first 0.5 s
    for name, tokenizer in (("random EnCodec", fitted), ("fbank k-means", kmeans)):
        for grid in (1, tokenizer.hop):
            same_head, same_rest, spent = [], [], 0.0
            for wave in waves:
                whole = tokenizer.encode(wave)  # [Q, T'] (60 s chunks), as the "clip" cache holds
                starts = [int(s) // grid * grid for s in rng.integers(0, len(wave) - n, crops)]
                began = time.perf_counter()
                alone, _ = crop_targets(tokenizer, torch.stack([wave[s:s + n] for s in starts]), T, hop, centre)
                spent += time.perf_counter() - began
                j = nearest_frame(np.array(starts)[:, None] + centre + hop * np.arange(T), tokenizer.hop, tokenizer.centre)
                looked = whole[:, torch.from_numpy(j.clip(0, whole.shape[1] - 1))].permute(1, 2, 0)  # [crops, T, Q]
                same = (alone == looked).float()  # [crops, T, Q]
                same_head.append(same[:, :head].mean((0, 1)))
                same_rest.append(same[:, head:].mean((0, 1)))
            first, rest = torch.stack(same_head).mean(0), torch.stack(same_rest).mean(0)
            where = "anywhere" if grid == 1 else f"on the {grid}-sample grid"
            print(f"{name:>14}, crops starting {where}: agreement per codebook, first 0.5 s "
                  f"{' '.join(f'{v:.2f}' for v in first.tolist())}; rest {' '.join(f'{v:.2f}' for v in rest.tolist())}; "
                  f"tokenizing crops {len(waves) * crops * crop_s / spent:.0f} s of audio / s (1 thread)")


# ------------------------------------------------------------------------------ the frequency floor


def floor(runs: list[Path]) -> None:
    """Has a run learned more than the codes' frequencies? The loss of a model that ignores its
    input and predicts each codebook's unigram distribution is sum_q gamma_q H_q (H_q: the
    entropy of codebook q over the cached targets, context "clip"); print it beside the run's
    logged masked loss (first, minimum over the last 5 logged rows, last)."""
    import csv
    import json
    for run in runs:
        folder = run / "targets"
        codes, meta = np.load(folder / "codes.npy"), json.loads((folder / "meta.json").read_text())
        entropy = []
        for q in range(codes.shape[1]):
            p = np.bincount(codes[:, q], minlength=meta["codebook_size"]) / len(codes)
            p = p[p > 0]
            entropy.append(float(-(p * np.log(p)).sum()))
        floor_ = float(np.dot(meta["gamma"], entropy))
        with open(run / "log.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        losses = [float(r["masked_loss"]) for r in rows]
        print(f"{run.name}: frequency floor {floor_:.3f} nats ({len(codes)} frames, entropy per codebook "
              f"{' '.join(f'{h:.2f}' for h in entropy)}); masked loss at step {rows[0]['step']} {losses[0]:.3f}, "
              f"best of the last 5 logs {min(losses[-5:]):.3f}, at step {rows[-1]['step']} {losses[-1]:.3f}")


# ------------------------------------------------------------------------------ k-means


def kmeans(frames: int, dim: int, k: int) -> None:
    """The self-training clustering at full width: scikit-learn MiniBatchKMeans as the
    tokenizer runs it vs faiss (if installed), on a mixture of 4k Gaussians; quality = mean
    squared distance of held-out frames to their centroid."""
    from sklearn.cluster import MiniBatchKMeans
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4 * k, dim, generator=g)
    picks = torch.randint(0, 4 * k, (frames + 5000,), generator=g)
    x = centres[picks] + 0.5 * torch.randn(frames + 5000, dim, generator=g)
    train, held = x[:frames].numpy(), x[frames:]
    from audiorep.frontends.codec import nearest

    def report(name, seconds, centroids):
        error = (held - centroids[nearest(held, centroids)]).pow(2).sum(1).mean()
        print(f"{name:>28}: {frames} x {dim} frames, k = {k}: {seconds:.1f} s, held-out squared error {error:.1f}")
    began = time.perf_counter()
    fitted = MiniBatchKMeans(k, random_state=0, batch_size=4096, n_init=3, max_no_improvement=20)
    fitted.fit(train.astype(np.float64))
    report("sklearn MiniBatchKMeans", time.perf_counter() - began, torch.from_numpy(fitted.cluster_centers_).float())
    try:
        import faiss
    except ImportError:
        print("faiss not installed (pip install faiss-cpu): not measured")
        return
    began = time.perf_counter()
    index = faiss.Kmeans(dim, k, niter=20, seed=0)
    index.train(np.ascontiguousarray(train))
    report("faiss Kmeans (20 iterations)", time.perf_counter() - began, torch.from_numpy(index.centroids))


# ------------------------------------------------------------------------------ training step


def step(batch: int, steps: int, device: str, precision: str) -> None:
    """Forward + backward + AdamW of encodecmae-base (10 x 768, shared FF 4096) with its
    2-block decoder and 8 x 1024 head on 4 s crops; random codes stand in for the cache."""
    torch.manual_seed(0)
    objective = CodecMAE(Encoder(BASE), CodecMAEConfig(targets="encodec_random", target_context="clip")).to(device)
    optimizer = torch.optim.AdamW(objective.parameters(), lr=1e-4)
    wave = torch.randn(batch, 96000, device=device) * 0.1
    T = objective.encoder.frontend.num_frames(96000)
    codes = torch.randint(0, 1024, (batch, T, 8), device=device)
    objective.targets = lambda b, n: (codes, torch.ones(batch, T, dtype=torch.bool, device=device))
    dtype = {"fp32": None, "bf16": torch.bfloat16}[precision]
    times = []
    for i in range(steps + 2):
        began = time.perf_counter()
        with torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None):
            loss, _ = objective({"wave": wave})
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - began)
    per_step = statistics.median(times[2:])
    params = sum(p.numel() for p in objective.parameters())
    print(f"encodecmae-base step, {device} {precision}, batch {batch} x 4 s ({T} frames, {T // 2} visible): "
          f"{per_step:.2f} s/step = {batch / per_step:.1f} samples/s ({params / 1e6:.1f} M parameters)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("extraction")
    p.add_argument("--seconds", type=float, default=60.0, help="audio to tokenize")
    p = sub.add_parser("context")
    p.add_argument("--corpus", type=Path, required=True, help="a folder of clips longer than the crops")
    p.add_argument("--clips", type=int, default=24)
    p.add_argument("--crops", type=int, default=4, help="random crops per clip")
    p.add_argument("--crop-s", type=float, default=4.0)
    p = sub.add_parser("floor")
    p.add_argument("runs", type=Path, nargs="+", help="run folders with target_context=clip caches")
    p = sub.add_parser("kmeans")
    p.add_argument("--frames", type=int, default=20000)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--k", type=int, default=1024)
    p = sub.add_parser("step")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    args = parser.parse_args(argv)
    if args.what == "extraction":
        extraction(args.seconds)
    elif args.what == "floor":
        floor(args.runs)
    elif args.what == "context":
        context(args.corpus, args.clips, args.crops, args.crop_s)
    elif args.what == "kmeans":
        kmeans(args.frames, args.dim, args.k)
    else:
        step(args.batch, args.steps, args.device, args.precision)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
