"""Batched timestamp embeddings vs one forward per window (the released PaSST HEAR
method), and the Encoder's overhead over a bare backbone forward. Prints measured ratios.

    python benchmarks/bench_embed.py [--preset passt-s] [--seconds 10] [--repeats 3] [--device cpu]
"""
import argparse
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import audiorep
from audiorep.embed import window_embeddings


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # a GPU's kernels run asynchronously
        times.append(time.perf_counter() - t0)
    return min(times), out


def matmul_rate(enc, rows: int = 1024) -> float:
    """Best fp32 FLOP/s of the backbone's widest layer (fc1) on 1024 tokens (64 windows of 160 ms
    are 896 PaSST tokens: 12 patches + 2 prefix tokens each)."""
    fc1 = enc.backbone.blocks[0].mlp.fc1
    x = torch.randn(rows, fc1.in_features, device=fc1.weight.device)
    with torch.inference_mode():
        fc1(x)
        best, _ = best_of(lambda: fc1(x), 5)
    return 2 * x.shape[0] * fc1.in_features * fc1.out_features / best


def per_window(enc, wave, cfg):
    """The released hear21passt loop: pad, then mel + model for one window at a time."""
    sr = enc.sample_rate
    hop, size = round(cfg.hop_ms * sr / 1000), round(cfg.rf_ms[0] * sr / 1000)
    padded = F.pad(wave[:, None], (size // 2, size - size // 2), mode="reflect")[:, 0]
    n = wave.shape[1] // hop + 1
    with torch.inference_mode():
        return torch.stack([window_embeddings(enc, padded[:, k * hop:k * hop + size], cfg) for k in range(n)], 1)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--preset", default="passt-s")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.manual_seed(0)
    enc = audiorep.load(args.preset, random_init=True, overrides=[f"embed.batch_size={args.batch_size}"])
    enc = enc.to(args.device).eval()
    cfg = enc.config.embed
    sr = enc.sample_rate
    wave = torch.randn(1, int(args.seconds * sr), device=args.device) * 0.1
    print(f"{args.preset}, {args.seconds:g} s clip, {args.device}, {torch.get_num_threads()} threads, "
          f"levels {cfg.levels}, RF {cfg.rf_ms[0]:g} ms, hop {cfg.hop_ms:g} ms")

    t_loop, ref = best_of(lambda: per_window(enc, wave, cfg), 1)
    t_batch, (emb, _) = best_of(lambda: audiorep.timestamp_embeddings(enc, wave, sr), args.repeats)
    diff = (emb - ref).abs().max().item()
    print(f"timestamp embeddings [{emb.shape[1]} windows]: one forward per window {t_loop:.2f} s, "
          f"batched {t_batch:.2f} s -> {t_loop / t_batch:.1f}x faster; max |diff| {diff:.2e}")
    with FlopCounterMode(display=False) as counter:
        audiorep.timestamp_embeddings(enc, wave, sr)
    flops, rate = counter.get_total_flops(), matmul_rate(enc)
    print(f"  batched: {flops / 1e9:.0f} GFLOP at {flops / t_batch / 1e9:.0f} GFLOP/s; the device's fp32 matmul "
          f"rate at the model's shapes: {rate / 1e9:.0f} GFLOP/s, so the same arithmetic takes at least "
          f"{flops / rate:.2f} s and no batching can beat the loop by more than {t_loop * rate / flops:.1f}x here")

    mel = enc.frontend(wave)
    with torch.inference_mode():
        t_bare, _ = best_of(lambda: enc.backbone(mel), args.repeats)
    t_enc, _ = best_of(lambda: audiorep.scene_embeddings(enc, wave, sr), args.repeats)
    print(f"scene embedding of the clip: bare backbone forward {t_bare * 1000:.0f} ms, "
          f"audiorep.scene_embeddings (resample check, mel, backbone, pooling, head) {t_enc * 1000:.0f} ms "
          f"-> overhead {t_enc / t_bare:.2f}x")


if __name__ == "__main__":
    main()
