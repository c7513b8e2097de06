"""Training throughput of the full-size PaSST-S, Audio-MAE and ASiT steps, with and without patchout.

    python benchmarks/bench_train.py                      # CPU, fp32 and bf16, batch 2
    python benchmarks/bench_train.py --device cuda --batch 32 --precision bf16
    python benchmarks/bench_train.py --only passt-s-hop3 "passt-s-hop3 no patchout" --encoder backbone.depth=2

PaSST at each STFT hop (10 ms, 5 ms, 3.125 ms) runs with the paper's structured patchout for
that hop (presets.PATCHOUT; hop 5 ms: the 10 ms fractions) and without; each row prints the
sequence length (tokens per 10 s crop, prefix included) and the speed-up over no patchout.
`--encoder` overrides encoder fields (e.g. backbone.depth=2 to fit a CPU budget: the ratios
then cover the blocks of that depth plus the frontend).

One step = what audiorep.train does per optimizer step: frontend, objective forward under
autocast, backward, AdamW step (param groups of the loop), `after_step` (ASiT: the teacher
EMA). ASiT's batch counts clips, each two 592-frame crops (the student and the teacher
see both); "asit-b no corruption" (ratio 0) shows what the GMML corruption costs in the step.
FLOPs per sample are counted with torch.utils.flop_counter on the same step, so the GPU
share of the bf16 peak is the model FLOP utilization (MFU) of that step.
"""
from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from audiorep import config, presets
from audiorep.encoder import Encoder
from audiorep.objectives import MAE, MAEConfig, Supervised, SupervisedConfig
from audiorep.objectives.asit import ASiT, ASiTConfig
from audiorep.train import PRECISIONS, param_groups

BF16_PEAK = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense bf16 FLOP/s


PASST_HOPS = ("passt-s", "passt-s-hop5", "passt-s-hop3")


def paper_patchout(preset: str) -> SupervisedConfig:
    """The paper's structured patchout for this preset's hop, as the objective's fractions of the grid."""
    if preset not in presets.PATCHOUT:
        return SupervisedConfig()
    drop_t, drop_f = presets.PATCHOUT[preset]
    T, Fq = Encoder(presets.get(preset)).backbone.grid(presets.get(preset).backbone.max_frames)
    return SupervisedConfig(patchout_time=drop_t / T, patchout_freq=drop_f / Fq)


def setups(overrides: list[str]):
    def encoder(name):
        return Encoder(config.override(presets.get(name), overrides))

    no_patchout = SupervisedConfig(patchout_time=0.0, patchout_freq=0.0)
    rows = {}
    for name in PASST_HOPS:
        rows[f"{name} patchout"] = lambda name=name: Supervised(encoder(name), paper_patchout(name))
        rows[f"{name} no patchout"] = lambda name=name: Supervised(encoder(name), no_patchout)
    return rows | {
        "audiomae-b mae 80%": lambda: MAE(encoder("audiomae-b"), MAEConfig()),
        "audiomae-b no masking": lambda: MAE(encoder("audiomae-b"), MAEConfig(mask_ratio=0.0)),
        "asit-b": lambda: ASiT(encoder("asit-b"), ASiTConfig()),
        "asit-b no corruption": lambda: ASiT(encoder("asit-b"), ASiTConfig(ratio=0.0, alien_prob=0.0)),
    }


def sequence_length(objective) -> int | None:
    """Tokens per crop the backbone sees in training (prefix included); None for non-PaSST setups."""
    if not isinstance(objective, Supervised):
        return None
    backbone = objective.encoder.backbone
    grid = backbone.grid(objective.encoder.config.backbone.max_frames)
    keep = objective.patchout(1, grid)
    return (grid[0] * grid[1] if keep is None else keep.shape[1]) + backbone.cfg.prefix


def make_batch(objective, batch: int, device) -> dict:
    encoder = objective.encoder
    samples = encoder.crop_samples(encoder.config.backbone.max_frames)  # 998 / 1024 / 592 frames
    views = (2,) if isinstance(objective, ASiT) else ()
    wave = 0.1 * torch.randn(batch, *views, samples, device=device)
    target = torch.zeros(batch, 527, device=device)
    target[:, 0] = 1
    return {"wave": wave, "target": target}


def bench(name: str, build, batch: int, steps: int, precision: str, device: torch.device) -> dict:
    torch.manual_seed(0)
    objective = build().to(device).train()
    optimizer = torch.optim.AdamW(param_groups(objective, 0.05), lr=1e-4, fused=device.type == "cuda")
    data = make_batch(objective, batch, device)
    autocast = torch.autocast(device.type, dtype=PRECISIONS[precision], enabled=precision != "fp32")

    def step():
        with autocast:
            loss, _ = objective(data)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if hasattr(objective, "after_step"):
            objective.after_step(0, 1000)

    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops() / batch
    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    row = {"setup": name, "precision": precision, "batch": batch, "samples_per_s": batch / seconds,
           "gflop_per_sample": flops / 1e9, "tokens": sequence_length(objective)}
    if device.type == "cuda":
        gpu = torch.cuda.get_device_name(device)
        peak = next((v for k, v in BF16_PEAK.items() if k in gpu), None)
        row["mfu"] = flops * batch / seconds / peak if peak else float("nan")
        row["gb_per_sample"] = torch.cuda.max_memory_allocated(device) / batch / 1e9
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=list(PRECISIONS))
    parser.add_argument("--only", nargs="*", help="setups to run (default: all)")
    parser.add_argument("--encoder", nargs="*", default=[], help="encoder overrides, e.g. backbone.depth=2")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        print(f"device: {torch.cuda.get_device_name(device)}")
    else:
        print(f"device: CPU, {torch.get_num_threads()} threads")
    if args.encoder:
        print(f"encoder overrides: {' '.join(args.encoder)}")
    done = {}
    for name, build in setups(args.encoder).items():
        if args.only and name not in args.only:
            continue
        for precision in args.precision:
            r = done[name, precision] = bench(name, build, args.batch, args.steps, precision, device)
            extra = f"  MFU {r['mfu']:.1%}  {r['gb_per_sample']:.2f} GB/sample" if "mfu" in r else ""
            extra += f"  {r['tokens']} tokens" if r["tokens"] else ""
            print(f"{name:<28} {precision:<5} batch {r['batch']:>3}  {r['samples_per_s']:8.2f} samples/s  "
                  f"{r['gflop_per_sample']:7.1f} GFLOP/sample{extra}", flush=True)
    for preset in PASST_HOPS:  # Table 2 of the paper: sequence length and speed-up of patchout per hop
        for precision in args.precision:
            on, off = done.get((f"{preset} patchout", precision)), done.get((f"{preset} no patchout", precision))
            if on and off:
                print(f"{preset:<14} {precision:<5} sequence {off['tokens']} -> {on['tokens']} tokens, "
                      f"patchout speed-up {on['samples_per_s'] / off['samples_per_s']:.2f}x")

if __name__ == "__main__":
    main()
