"""Batched timestamp embeddings vs one forward per window (the released PaSST HEAR
method), and the Encoder's overhead over a bare backbone forward. Prints measured ratios.

    python benchmarks/bench_embed.py [--preset passt-s] [--seconds 10] [--repeats 3] [--device cpu]
    python benchmarks/bench_embed.py --memory /path/to/hear21passt [--depth 1] [--lengths 10 60 600]

--memory: peak memory of a scene and a timestamp embedding call (one clip of each length),
audiorep.hear vs the released hear21passt wrapper (`pip install --no-deps --target DIR
hear21passt`; its torchaudio mel banks and timm imports are stubbed with audiorep's Kaldi mel
banks: no torchaudio/timm needed), each call in a fresh process on the CPU: the peak resident
memory above the process's memory with the model and the audio loaded (/proc VmHWM, reset
before the call). Both run the same PaSST-S geometry at `--depth` blocks (inference keeps one
block's activations at a time, so the transient peak does not depend on depth; the weights
add 28 MB per block, in both).
"""
import argparse
import os
import subprocess
import sys
import time
import types

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


def import_hear21passt(path: str):
    """hear21passt from `path` with torchaudio's mel banks and timm's downloader stubbed."""
    from audiorep.frontends.mel import kaldi_mel_banks

    kaldi = types.SimpleNamespace(get_mel_banks=lambda n_mels, n_fft, sr, fmin, fmax, **_: (
        kaldi_mel_banks(n_mels, n_fft, sr, fmin, fmax)[:, :-1], None))  # its own code pads the column
    masking = types.SimpleNamespace(FrequencyMasking=lambda *a, **k: torch.nn.Identity(),
                                    TimeMasking=lambda *a, **k: torch.nn.Identity())  # training only
    stubs = {"torchaudio": types.SimpleNamespace(compliance=types.SimpleNamespace(kaldi=kaldi), transforms=masking),
             "timm": types.ModuleType("timm"), "timm.models": types.ModuleType("timm.models"),
             "timm.models._hub": types.SimpleNamespace(download_cached_file=None)}
    sys.modules.update(stubs)
    sys.path.insert(0, path)
    import hear21passt.base
    return hear21passt


def released_model(path: str, depth: int):
    h21 = import_hear21passt(path)
    from hear21passt.models.passt import PaSST
    from hear21passt.models.preprocess import AugmentMelSTFT
    from hear21passt.wrapper import PasstBasicWrapper
    mel = AugmentMelSTFT(n_mels=128, sr=32000, win_length=800, hopsize=320, n_fft=1024, freqm=48, timem=192,
                         htk=False, fmin=0.0, fmax=None, norm=1, fmin_aug_range=10, fmax_aug_range=2000)
    net = PaSST(img_size=(128, 998), patch_size=16, stride=10, in_chans=1, num_classes=527, embed_dim=768,
                depth=depth, num_heads=12, distilled=True)  # as its base.py builds it, at `depth` blocks
    return h21, PasstBasicWrapper(mel=mel, net=net).eval()


def memory_line(name: str) -> int:
    """kB of a /proc/self/status line (VmRSS, VmHWM)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(name))


def memory_run(impl: str, kind: str, seconds: float, depth: int, path: str) -> None:
    """One call in this (fresh) process; prints `MB_above_loaded MB_total`."""
    torch.manual_seed(0)
    audio = torch.randn(1, int(seconds * 32000)) * 0.1
    if impl == "released":
        h21, model = released_model(path, depth)
        call = {"scene": lambda: h21.base.get_scene_embeddings(audio, model),
                "timestamp": lambda: h21.base.get_timestamp_embeddings(audio, model)}[kind]
    else:
        from audiorep import hear
        model = hear.load_model("passt-s", random_init=True, overrides=[f"backbone.depth={depth}"], device="cpu")
        call = {"scene": lambda: hear.get_scene_embeddings(audio, model),
                "timestamp": lambda: hear.get_timestamp_embeddings(audio, model)}[kind]
    loaded = memory_line("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the high-water mark
    out = call()
    peak = memory_line("VmHWM")
    shape = tuple(out[0].shape) if isinstance(out, tuple) else tuple(out.shape)
    print(f"RESULT {(peak - loaded) / 1024:.0f} {peak / 1024:.0f} {shape}")


def memory(path: str, depth: int, lengths: list[float]) -> None:
    print(f"peak memory of one embedding call (MB above the loaded model and audio / process total), "
          f"PaSST-S geometry at depth {depth}, CPU, 1 thread")
    for kind in ("scene", "timestamp"):
        for seconds in lengths:
            row = []
            for impl in ("released", "audiorep"):
                cmd = [sys.executable, __file__, "--memory-run", impl, kind, str(seconds), str(depth), path]
                t0 = time.perf_counter()
                res = subprocess.run(cmd, capture_output=True, text=True, env=os.environ | {"OMP_NUM_THREADS": "1"})
                line = next((x for x in res.stdout.splitlines() if x.startswith("RESULT")), None)
                if line is None:
                    raise RuntimeError(f"{impl} {kind} {seconds} s failed:\n{res.stderr[-2000:]}")
                above, total, shape = line.split(" ", 3)[1:]
                row.append(f"{impl} {above} MB ({total} total, {time.perf_counter() - t0:.0f} s) {shape}")
            print(f"{kind:<9} {seconds:>5g} s: " + "; ".join(row), flush=True)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--memory-run":
        impl, kind, seconds, depth, path = sys.argv[2:7]
        return memory_run(impl, kind, float(seconds), int(depth), path)
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--preset", default="passt-s")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--memory", metavar="HEAR21PASST_DIR", help="peak memory vs the released wrapper (see above)")
    p.add_argument("--depth", type=int, default=1)
    p.add_argument("--lengths", type=float, nargs="+", default=[10.0, 60.0, 600.0])
    args = p.parse_args()
    if args.memory:
        return memory(args.memory, args.depth, args.lengths)
    torch.manual_seed(0)
    enc = audiorep.load(args.preset, random_init=True, overrides=[f"embed.batch_size={args.batch_size}"])
    enc = enc.to(args.device).eval()
    cfg = enc.config.embed
    sr = enc.sample_rate
    wave = torch.randn(1, int(args.seconds * sr), device=args.device) * 0.1
    where = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else args.device
    print(f"{args.preset}, {args.seconds:g} s clip, {where}, {torch.get_num_threads()} threads, "
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
