"""Everything we want to know from one lent GPU, in one run of under 8 minutes.

    bash benchmarks/gpu_check.sh --out gpu_out            # on a machine with CUDA (after bash scripts/setup.sh)
    bash benchmarks/gpu_check.sh --dry-run --out /tmp/gc  # anywhere: the same code paths on the CPU, in CI

Parts, each in its own process with its own time box (a part that fails or runs out of time
is recorded as such and the next one runs; the exit code is 0 only when every part is ok):

  correctness     each recipe's training step (audiorep.train, the real loop) at the `--size`
                  of audiorep/sizes.py on cuda vs the CPU at fp32 (TF32 off): the same initial
                  weights, batches and random draws; loss and gradient norm of step 1 and the
                  state after 3 AdamW steps must agree within TOLERANCES
  bf16_curves     50 steps of each recipe on the GPU at bf16 autocast vs fp32: both loss curves,
                  the largest relative gap, a plot (gpu_check_curves.png)
  bench_train, bench_embed, bench_heareval
                  the benchmarks of that name with `--device cuda`, their printed tables kept

Random draws: every random op a step makes (masks, patchout, augmentations, dropout, drop
path, mixup's Beta draws, the sampler's order) is drawn on the CPU from one generator seeded
alike in both runs, then moved to the run's device (`CpuDraws`), so cuda and the CPU see the
same draws. The two runs also seed torch's global generators differently: a draw that
escaped `CpuDraws` shows as a mismatch (in the dry run too, where both runs are CPU runs).
EAT's transformer layers draw attention dropout inside `F.multi_head_attention_forward`,
out of reach of such a mode: its correctness run sets `encoder.backbone.dropout=0` (said in
the report); its bf16 curves keep the dropout. The loader runs in the training process
(data.workers=0): with workers its prefetching would change the order of the draws.

Needs: audiorep installed (`bash scripts/setup.sh`), no internet (the data is made here,
EnCodecMAE's targets come from a random-weight EnCodec). bench_heareval compares with
hear-eval-kit when its venv exists (`--heareval-venv`, made by `bench_heareval.py --setup`
where PyPI is reachable), else runs audiorep's side alone and says so.

Writes OUT/gpu_check.json (every part: status, seconds, budget, its numbers), OUT/gpu_check.md
(the summary), OUT/gpu_check_curves.png, OUT/logs/PART.log; OUT/parts/PART.json are the
parts' own results: a part already ok with the same settings is kept when the command is run
again (`--fresh` redoes all). `--dry-run`: tiny sizes, a few steps, the "device" a second CPU
run, one thread per process, EnCodecMAE on fbank k-means targets (a random-weight EnCodec
takes seconds per clip on a CPU), labelled as such everywhere (CI runs it: tests/test_gpu_check.py).
"""
from __future__ import annotations

import argparse
import copy
import csv
import inspect
import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Iterator
from unittest import mock

import gpu_report  # its sibling (run as a script, benchmarks/ is on sys.path)

HERE = Path(__file__).resolve().parent
RECIPES = ("passt", "audiomae", "asit", "encodecmae", "eat")
PARTS = ("correctness", "bf16_curves", "bench_train", "bench_embed", "bench_heareval")
# seconds per part: the GPU run's boxes add up to under 8 minutes; the dry run (about a minute on 2
# idle cores, one thread per process) gets room for a CI machine that is busy with other work
BUDGETS = {False: {"correctness": 150, "bf16_curves": 100, "bench_train": 90, "bench_embed": 45, "bench_heareval": 60},
           True: dict.fromkeys(PARTS, 300)}
# the device vs the CPU: relative differences of step 1's loss and gradient norm and of the 3 steps'
# losses; over the 3 steps' change d of the whole floating state, |d_device - d_cpu| / |d_cpu| and the
# share of elements that differ by more than 5% of d_cpu's RMS. Adam's first steps move each weight by
# about lr * sign(g), so a weight whose gradient is below the numerical noise may move the other way on
# the other device: a few such elements are expected, a device bug moves most of them
TOLERANCES = {"loss": 1e-4, "grad_norm": 1e-3, "losses": 1e-3, "update": 0.1, "outliers": 1e-3}
DRY_TOLERANCES = dict.fromkeys(TOLERANCES, 1e-6)  # two CPU runs: equal but for summation order
# what every run of the check sets, and what a recipe needs on top to run offline or to be comparable
COMMON = ("data.workers=0", "log_every=1", "keep_checkpoints=1")
EXTRA = {"encodecmae": ("objective.targets=encodec_random", "objective.target_context=clip"),
         "eat": ("objective.wave_mix_after_epochs=0",)}  # the mixes from step 0, so the check covers them
EXACT_ONLY = {"eat": ("encoder.backbone.dropout=0",)}  # correctness only (see the docstring)
# the dry run: k-means targets of fbank frames (a random-weight EnCodec takes ~3 s per clip on 2 CPU cores)
DRY_EXTRA = {"encodecmae": ("objective.targets=fbank_kmeans", "objective.kmeans_k=16")}


# ---------------------------------------------------------------- random draws on the CPU


def _cpu(x):
    import torch
    return x.cpu() if isinstance(x, torch.Tensor) else x


class CpuDraws:
    """A TorchFunctionMode: every random op draws on the CPU from one generator, then moves to
    the device asked for. `counts` tells which ops drew, and how often."""

    def __new__(cls, seed: int):
        import torch
        import torch.nn.functional as F
        from torch.overrides import TorchFunctionMode

        T = torch.Tensor
        factories = {torch.rand, torch.randn, torch.randint, torch.randperm}
        like = {torch.rand_like: torch.rand, torch.randn_like: torch.randn}
        inplace = {T.uniform_, T.normal_, T.bernoulli_, T.random_, T.exponential_, T.geometric_, T.cauchy_,
                   T.log_normal_}
        samplers = {torch.bernoulli, torch.multinomial, torch.normal, torch.poisson, torch.binomial,
                    torch._standard_gamma, torch._sample_dirichlet, T.bernoulli, T.multinomial}
        dropout_args = inspect.signature(F.dropout)

        class Mode(TorchFunctionMode):
            def __init__(self):
                super().__init__()
                self.generator = torch.Generator().manual_seed(seed)
                self.counts: dict[str, int] = {}

            def __torch_function__(self, func, types, args=(), kwargs=None):
                kwargs = dict(kwargs or {})
                if func not in factories and func not in like and func not in inplace and func not in samplers \
                        and func is not F.dropout:
                    return func(*args, **kwargs)
                self.counts[func.__name__] = self.counts.get(func.__name__, 0) + 1
                g = self.generator
                kwargs.pop("generator", None)
                if func in factories:
                    device = kwargs.pop("device", None)
                    out = func(*args, generator=g, device="cpu", **kwargs)
                    return out if device is None else out.to(device)
                if func in like:
                    x = args[0]
                    out = like[func](x.shape, dtype=kwargs.get("dtype") or x.dtype, generator=g)
                    return out.to(kwargs.get("device") or x.device)
                if func in inplace:
                    target = args[0]
                    drawn = func(torch.empty(target.shape, dtype=target.dtype), *map(_cpu, args[1:]), generator=g,
                                 **{k: _cpu(v) for k, v in kwargs.items()})
                    with torch.no_grad():
                        return target.copy_(drawn)
                if func is F.dropout:
                    bound = dropout_args.bind(*args, **kwargs)
                    bound.apply_defaults()
                    x, p, training, inplace_ = (bound.arguments[k] for k in ("input", "p", "training", "inplace"))
                    if not training or p == 0:
                        return x
                    keep = (torch.rand(x.shape, generator=g) >= p).to(x.device, x.dtype) / (1 - p)
                    return x.mul_(keep) if inplace_ else x * keep
                first = next(a for a in args if isinstance(a, torch.Tensor))
                return func(*map(_cpu, args), generator=g, **{k: _cpu(v) for k, v in kwargs.items()}).to(first.device)

        return Mode()


# ---------------------------------------------------------------- data, recipes, runs


def make_corpus(folder: Path, clips: int, seconds: float, sample_rate: int = 32000) -> Path:
    """`clips` labelled clips (3 tone classes in noise, amplitude-modulated) + manifest.csv;
    made once (written to FOLDER.tmp, then renamed)."""
    import numpy as np
    import soundfile as sf

    manifest = folder / "manifest.csv"
    if manifest.exists():
        return manifest
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    rows = []
    for i in range(clips):
        label, f0 = [("low", 220.0), ("mid", 550.0), ("high", 1400.0)][i % 3]
        f = f0 * (1 + 0.05 * rng.standard_normal())
        wave = 0.3 * np.sin(2 * np.pi * f * t) * (0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.5, 3) * t))
        wave += 0.05 * rng.standard_normal(len(t))
        sf.write(tmp / f"clip{i:03d}.wav", wave.astype(np.float32), sample_rate, subtype="PCM_16")
        rows.append({"path": f"clip{i:03d}.wav", "labels": label})
    with open(tmp / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["path", "labels"])
        writer.writeheader()
        writer.writerows(rows)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return manifest


def build(recipe_name: str, size: str, manifest: Path, settings: list[str], dry_run: bool):
    """(objective, dataset, TrainConfig) of a recipe at a size, weights drawn from seed 0."""
    import torch

    from audiorep import presets, sizes
    from audiorep.config import override
    from audiorep.encoder import Encoder
    from audiorep.objectives import RECIPES as ALL
    from audiorep.train import TrainConfig
    from audiorep.runs import crop_samples, open_data, split_overrides

    recipe, chosen = ALL[recipe_name], sizes.get(recipe_name, size)
    extra = [*EXTRA.get(recipe_name, ()), *(DRY_EXTRA.get(recipe_name, ()) if dry_run else ())]
    parts = split_overrides([*chosen.overrides, *extra, *COMMON, *settings])
    encoder_cfg = override(presets.get(chosen.preset), parts["encoder"])
    objective_cfg = override(recipe.config(), list(recipe.objective_defaults) + parts["objective"])
    cfg = override(TrainConfig(), list(recipe.defaults) + parts["train"])
    torch.manual_seed(0)
    encoder = Encoder(encoder_cfg)
    data, vocabulary = open_data(str(manifest), encoder.sample_rate, crop_samples(encoder, cfg.data), cfg.data,
                                 views=recipe.views)
    return recipe.objective(encoder, objective_cfg, num_classes=len(vocabulary or [])), data, cfg


def shared_targets(objective, data, work: Path, recipe: str, device: str) -> Path | None:
    """A recipe with a data-dependent stage (EnCodecMAE's targets) prepares it once (on the
    device: a GPU makes EnCodec's codes in seconds); each run starts from a copy, so every run,
    on either device, trains on the same targets."""
    if not hasattr(objective, "prepare"):
        return None
    folder = work / "targets" / recipe
    if not (folder / "targets" / "codes.npy").exists():
        copy.deepcopy(objective).to(device).prepare(data, device, folder)
    return folder / "targets"


def run(objective, data, cfg, device: str, precision: str, out: Path, targets: Path | None, seed_offset: int = 0,
        draws_seed: int = 0) -> dict:
    """audiorep.train on `device` from scratch in `out`: per-step losses and gradient norms (as
    the loop computes them, before clipping), the final state (on the CPU) and the random ops drawn."""
    import torch

    from audiorep.train import train

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    if targets is not None:
        shutil.copytree(targets, out / "targets")
    losses, norms = [], []
    hook = objective.register_forward_hook(lambda module, args, output: losses.append(float(output[0].detach())))
    clip, seed = torch.nn.utils.clip_grad_norm_, torch.manual_seed

    def clip_and_keep(*args, **kwargs):
        norm = clip(*args, **kwargs)
        norms.append(float(norm))
        return norm

    cfg = replace(cfg, device=device, precision=precision, checkpoint_every=cfg.steps)
    draws = CpuDraws(draws_seed)
    try:
        with mock.patch.object(torch.nn.utils, "clip_grad_norm_", clip_and_keep), \
                mock.patch.object(torch, "manual_seed", lambda s: seed(s + seed_offset)), draws:
            trained = train(objective, data, cfg, out)
    finally:
        hook.remove()
    state = {k: v.detach().cpu().clone() for k, v in trained.state_dict().items() if isinstance(v, torch.Tensor)}
    return {"loss": losses, "grad_norm": norms, "state": state, "draws": dict(sorted(draws.counts.items()))}


def relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def compare_states(before: dict, ref: dict, dev: dict) -> dict:
    """The change d of the floating state over the run, device vs reference (TOLERANCES): the
    relative norm of their difference, the share of elements differing by more than 5% of
    d_ref's RMS, the largest |difference| of the final values; integer buffers that differ."""
    import torch

    floats = [k for k, r in ref.items() if r.is_floating_point()]
    change = {k: (ref[k] - before[k].to(ref[k].dtype)).double() for k in floats}  # d_ref
    gap = {k: (dev[k] - ref[k]).double() for k in floats}  # d_dev - d_ref (the same start)
    size = sum(ref[k].numel() for k in floats)
    ref_norm = math.sqrt(sum(float(c.square().sum()) for c in change.values()))
    rms = ref_norm / math.sqrt(max(size, 1))
    return {"update_rel": math.sqrt(sum(float(g.square().sum()) for g in gap.values())) / max(ref_norm, 1e-30),
            "outliers": sum(int((g.abs() > 0.05 * rms).sum()) for g in gap.values()) / max(size, 1),
            "param_max_abs": max((float(g.abs().max()) for g in gap.values() if g.numel()), default=0.0),
            "unequal_buffers": [k for k, r in ref.items() if not r.is_floating_point() and not torch.equal(r, dev[k])]}


def correctness(args, work: Path, manifest: Path, done: dict) -> Iterator[None]:
    """Each recipe's 3 steps on the reference (CPU) and on the device; one result per recipe into `done`."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    tolerances = DRY_TOLERANCES if args.dry_run else TOLERANCES
    done["tolerances"] = tolerances
    for name in RECIPES:
        start = time.perf_counter()
        try:
            objective, data, cfg = build(name, args.size, manifest, [f"batch_size={args.check_batch}", "steps=3",
                                                                     *EXACT_ONLY.get(name, ())], args.dry_run)
            targets = shared_targets(objective, data, work, name, args.device)
            before = {k: v.detach().clone() for k, v in objective.state_dict().items() if isinstance(v, torch.Tensor)}
            device_copy = copy.deepcopy(objective)
            ref = run(objective, data, cfg, "cpu", "fp32", work / "correctness" / name / "cpu", targets, 0)
            dev = run(device_copy, data, cfg, args.device, "fp32", work / "correctness" / name / "device", targets, 1)
            row = {"loss": [ref["loss"][0], dev["loss"][0]], "grad_norm": [ref["grad_norm"][0], dev["grad_norm"][0]],
                   "loss_rel": relative(dev["loss"][0], ref["loss"][0]),
                   "grad_norm_rel": relative(dev["grad_norm"][0], ref["grad_norm"][0]),
                   "losses_rel": max(relative(d, r) for d, r in zip(dev["loss"], ref["loss"])),
                   **compare_states(before, ref["state"], dev["state"]), "draws": ref["draws"],
                   "same_draws": ref["draws"] == dev["draws"], "fixed": list(EXACT_ONLY.get(name, ()))}
            ok = (all(row[f"{k}_rel" if k != "outliers" else k] <= v for k, v in tolerances.items())
                  and len(dev["loss"]) == len(ref["loss"]) == 3 and not row["unequal_buffers"] and row["same_draws"])
            row["status"] = "ok" if ok else "mismatch"
        except Exception as e:  # one recipe's failure is recorded (its traceback in the part's log); the others run
            traceback.print_exc()
            row = {"status": "failed", "error": f"{type(e).__name__}: {e}"[-2000:]}
        done["recipes"][name] = {**row, "seconds": round(time.perf_counter() - start, 1)}
        yield


def bf16_curves(args, work: Path, manifest: Path, done: dict) -> Iterator[None]:
    """Each recipe for `args.steps` steps on the device at fp32 and at bf16 autocast, the same draws."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    done["steps"] = args.steps
    for name in RECIPES:
        start = time.perf_counter()
        try:
            objective, data, cfg = build(name, args.size, manifest, [f"batch_size={args.batch}",
                                                                     f"steps={args.steps}"], args.dry_run)
            targets = shared_targets(objective, data, work, name, args.device)
            other = copy.deepcopy(objective)
            curves = {p: run(m, data, cfg, args.device, p, work / "curves" / name / p, targets)["loss"]
                      for p, m in (("fp32", objective), ("bf16", other))}
            gaps = [relative(b, f) for f, b in zip(curves["fp32"], curves["bf16"])]
            tail = max(1, len(gaps) // 5)  # the last fifth: where the curves have had time to part
            row = {**curves, "max_rel_gap": max(gaps), "last_rel_gap": relative(
                sum(curves["bf16"][-tail:]), sum(curves["fp32"][-tail:]))}
            finite = all(math.isfinite(x) for c in curves.values() for x in c)
            row["status"] = "ok" if finite and len(gaps) == args.steps else "not finite"
        except Exception as e:
            traceback.print_exc()
            row = {"status": "failed", "error": f"{type(e).__name__}: {e}"[-2000:]}
        done["recipes"][name] = {**row, "seconds": round(time.perf_counter() - start, 1)}
        yield


def run_part(args) -> int:
    """One in-process part (the child process): its result file rewritten after every recipe, so
    what finished before a time-out is kept."""
    from audiorep.files import write_json

    out = Path(args.out)
    work = out / "work"
    manifest = make_corpus(work / "corpus", args.clips, args.clip_s)
    done = {"recipes": {}}
    for _ in {"correctness": correctness, "bf16_curves": bf16_curves}[args.part](args, work, manifest, done):
        write_json(out / "parts" / f"{args.part}.json", done)
    write_json(out / "parts" / f"{args.part}.json", done)
    return 0 if all(r["status"] == "ok" for r in done["recipes"].values()) else 1


# ---------------------------------------------------------------- the parts as commands


def bench_commands(args, out: Path) -> dict[str, list[str]]:
    py, dev = sys.executable, args.device
    if args.dry_run:  # the same scripts at toy sizes
        train = ["--only", "passt-s patchout", "--encoder", "backbone.depth=1", "backbone.dim=64", "backbone.heads=4",
                 "--batch", "2", "--steps", "1", "--precision", "fp32"]
        embed = ["--preset", "passt-tiny", "--seconds", "2", "--repeats", "1"]
        heareval = ["--clips", "6", "--grid-points", "2", "--quick", "--threads", "1"]
    else:
        train = ["--batch", "32", "--steps", "3", "--precision", "bf16"]
        embed = ["--preset", "passt-s", "--seconds", "30", "--repeats", "3"]
        heareval = ["--clips", "45", "--grid-points", "8", "--threads", "8"]
    venv = Path(args.heareval_venv)
    kit = ["--venv", str(venv)] if (venv / "bin" / "python").exists() else ["--no-kit"]
    return {"bench_train": [py, str(HERE / "bench_train.py"), "--device", dev, *train],
            "bench_embed": [py, str(HERE / "bench_embed.py"), "--device", dev, *embed],
            "bench_heareval": [py, str(HERE / "bench_heareval.py"), "--device", dev, "--out",
                               str(out / "work" / "heareval"), *heareval, *kit]}


def part_command(args, part: str, out: Path) -> list[str]:
    if part in bench_commands(args, out):
        return bench_commands(args, out)[part]
    return [sys.executable, __file__, "--part", part, "--out", str(out), "--device", args.device, "--size", args.size,
            "--batch", str(args.batch), "--check-batch", str(args.check_batch), "--steps", str(args.steps),
            "--clips", str(args.clips), "--clip-s", str(args.clip_s), *(["--dry-run"] if args.dry_run else [])]


def timed(command: list[str], budget: float, log: Path, threads: int | None = None) -> tuple[str, float, float, str]:
    """(ok | failed | timeout, seconds, CPU seconds, stdout): the command in its own process
    group, killed whole at `budget` seconds; stdout and stderr to `log`; `threads`: the
    command's OpenMP threads (the dry run: 1, as toy sizes gain nothing from more)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start, cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(
        [str(HERE.parent), *filter(None, [os.environ.get("PYTHONPATH")])])}
    if threads:
        env |= {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with open(log, "w") as err:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True,
                                cwd=HERE.parent, env=env)
        try:
            stdout, _ = proc.communicate(timeout=budget)
            status = "ok" if proc.returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, _ = proc.communicate()
            status = "timeout"
    with open(log, "a") as err:
        err.write(f"\n--- stdout ---\n{stdout}")
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return status, time.perf_counter() - start, used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime, stdout


def tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def do_part(args, part: str, out: Path, settings: dict) -> dict:
    """Run one part (or keep its earlier ok result with the same settings)."""
    from audiorep.files import write_json

    record = out / "parts" / f"{part}.record.json"
    if not args.fresh and record.exists():
        earlier = json.loads(record.read_text())
        if earlier.get("status") == "ok" and earlier.get("settings") == settings:
            return {**earlier, "kept": True}
    (out / "parts" / f"{part}.json").unlink(missing_ok=True)
    command = part_command(args, part, out)
    budget = BUDGETS[args.dry_run][part]
    print(f"{part}: running (at most {budget} s): {' '.join(command)}", flush=True)
    status, seconds, cpu, stdout = timed(command, budget, out / "logs" / f"{part}.log", 1 if args.dry_run else None)
    result = {"status": status, "seconds": round(seconds, 1), "cpu_s": round(cpu, 1), "budget_s": budget,
              "command": command, "settings": settings}
    produced = out / "parts" / f"{part}.json"
    if produced.exists():
        result.update(json.loads(produced.read_text()))
        if status != "ok":  # the recipes that did not finish in time are named
            for name in RECIPES:
                result["recipes"].setdefault(name, {"status": status})
    if part.startswith("bench_"):
        result["stdout"] = stdout
        bench_json = out / "work" / "heareval" / "bench.json"
        if part == "bench_heareval" and bench_json.exists() and status == "ok":
            result["results"] = json.loads(bench_json.read_text())
            result["kit"] = "--no-kit" not in command
    if status != "ok":
        result["error"] = tail(out / "logs" / f"{part}.log")
    print(f"{part}: {status} in {seconds:.0f} s", flush=True)
    write_json(record, result)
    return result


def device_info(args) -> dict:
    import torch

    info = {"torch": torch.__version__, "dry_run": args.dry_run}
    if args.dry_run:
        info["device"] = "dry run: CPU vs a second CPU run (no GPU involved)"
    else:
        info["device"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="folder for gpu_check.json, gpu_check.md, logs")
    p.add_argument("--dry-run", action="store_true", help="CPU only, tiny sizes, a few steps (CI)")
    p.add_argument("--device", default=None, help="the device checked (default cuda; the dry run: cpu)")
    p.add_argument("--size", default=None, help="recipe size of audiorep/sizes.py (default small; dry run: tiny)")
    p.add_argument("--batch", type=int, default=None, help="clips per step of the curves (default 8; dry run: 2)")
    p.add_argument("--check-batch", type=int, default=None, help="clips per step of the correctness check "
                   "(default 4: its CPU side is the slow one; dry run: 2)")
    p.add_argument("--steps", type=int, default=None, help="steps of the bf16 curves (default 50; dry run: 2)")
    p.add_argument("--clips", type=int, default=None, help="clips of the made corpus (default 32; dry run: 8)")
    p.add_argument("--clip-s", type=float, default=None, help="seconds per clip (default 10.5; dry run: 4.1)")
    p.add_argument("--only", nargs="+", choices=PARTS, help="run these parts (the report keeps the others' "
                   "earlier results)")
    p.add_argument("--fresh", action="store_true", help="redo parts that an earlier run finished")
    p.add_argument("--heareval-venv", default="/tmp/heareval-venv", help="hear-eval-kit's venv, if made")
    p.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)  # internal: run one part in this process
    args = p.parse_args(argv)
    dry = args.dry_run
    defaults = {"device": "cpu" if dry else "cuda", "size": "tiny" if dry else "small", "batch": 2 if dry else 8,
                "check_batch": 2 if dry else 4,
                "steps": 2 if dry else 50, "clips": 8 if dry else 32, "clip_s": 4.1 if dry else 10.5}
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.part:
        return run_part(args)
    import torch

    if not dry and args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("no CUDA device is visible (torch.cuda.is_available() is False); use --dry-run on a CPU")
    from audiorep.files import folder_lock, write_json, write_text

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k in defaults or k == "dry_run"}
    start = time.perf_counter()
    with folder_lock(out):
        parts = {}
        for name in PARTS:  # a part left out by --only is reported as an earlier run left it, if it ran
            record = out / "parts" / f"{name}.record.json"
            if name in (args.only or PARTS):
                parts[name] = do_part(args, name, out, settings)
            elif record.exists() and json.loads(record.read_text()).get("settings") == settings:
                parts[name] = {**json.loads(record.read_text()), "kept": True}
        if parts.get("bf16_curves", {}).get("recipes"):
            gpu_report.plot(parts["bf16_curves"]["recipes"], out / "gpu_check_curves.png",
                 "loss, fp32 vs bf16 autocast" + (" (DRY RUN, CPU)" if dry else ""))
            if (out / "gpu_check_curves.png").exists():
                parts["bf16_curves"]["plot"] = "gpu_check_curves.png"
        report = {"info": device_info(args), "settings": settings, "seconds": round(time.perf_counter() - start, 1),
                  "ok": all(part["status"] == "ok" for part in parts.values()), "parts": parts}
        write_json(out / "gpu_check.json", report)
        write_text(out / "gpu_check.md", gpu_report.summary(report))
    print(f"{out / 'gpu_check.md'}: {'all parts ok' if report['ok'] else 'NOT all parts ok'}", flush=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
