"""The one training loop: any objective, step-based, resumable, DDP via torchrun.

    audiorep pretrain audiomae --data corpus/ --out runs/mae --preset audiomae-tiny steps=2000 batch_size=64
    torchrun --nproc_per_node 2 -m audiorep pretrain audiomae --data corpus/ --out runs/mae

An objective is an nn.Module owning `encoder`, with `forward(batch) -> (loss, logs)` and
optionally `after_step`, `prepare` and `encoder_to_save` (objectives/__init__.py); the loop
knows nothing else about it. Parameter groups follow the backbone's own rules
(`layer_id`, `no_weight_decay`) and any submodule's `no_weight_decay()`.

Run folder:
    RUN/config.json                  resolved configs (recipe, encoder, objective, train, data)
    RUN/encoder/                     the encoder the objective ships (Encoder.save), so audiorep.load(RUN) works
    RUN/encoder_ema/                 an EMA of the objective's encoder, when train.ema or train.ema_per_epoch > 0
    RUN/checkpoints/step_XXXXXXX/    objective, optimizer, EMA (torch.save, weights_only-loadable),
                                     state.json; written as .step_XXXXXXX.tmp and renamed; last N kept
    RUN/log.csv, RUN/tb/             metrics (TensorBoard when installed)

Exact resume: the batch of step s is a function of (seed, s) (data/samplers.py), the
global RNG is re-seeded from (seed, step, rank) before every step, and the learning rate
is a function of s, so a run resumed from its last checkpoint ends with the same weights
as an uninterrupted one (bitwise on CPU). Schedules stated per epoch (`ema_per_epoch`, an
objective's `set_epoch_steps(steps per epoch)`) use the epoch length len(data) / batch_size.
"""
from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from .config import to_dict
from .convert import one_line
from .dist import first_error, out_lock
from .dist import world as world_of
from .data import ClipDataset, DataConfig, ShardStream, StepSampler, class_balanced_weights
from .ema import EMA
from .files import checkpoints, write_json
from .schedules import beta1_at, ema_momentum, lr_at, peak_lr, warmup_of, weight_decay_at

SCHEDULES = ("cosine", "linear", "constant", "onecycle")
CLIP_MODES = ("global", "per_param")
DECAY_RULES = ("matrices", "matrices+tokens", "all")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000               # optimizer steps
    batch_size: int = 64            # samples per optimizer step, over all processes and accumulation
    accum: int = 1                  # micro-batches per optimizer step
    lr: float = 1.5e-4              # peak learning rate
    blr: float = 0.0                # > 0: lr = blr * batch_size / 256 (MAE/DINO-style base rate)
    min_lr: float = 0.0
    warmup_steps: int = 100
    warmup_frac: float = 0.0        # > 0: the warm-up (onecycle: its rise) is round(warmup_frac * steps), not warmup_steps
    schedule: str = "cosine"        # one of SCHEDULES, after the linear warmup ("onecycle": its own rise, EAT)
    weight_decay: float = 0.05      # applied to the parameters `decay` names
    decay: str = "matrices"         # one of DECAY_RULES: "matrices" = tensors of 2+ dimensions except what modules
                                    # declare in no_weight_decay() (tokens, position tables: timm/MAE); "matrices+tokens"
                                    # = every tensor of 2+ dimensions (DINO/ASiT); "all" = every parameter (EnCodecMAE)
    weight_decay_end: float | None = None  # cosine schedule from weight_decay to this (ASiT/DINO); None = constant
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8               # AdamW eps (EAT under AMP: 1e-4)
    cycle_beta1: tuple[float, float] | None = None  # onecycle: beta1 from [0] (start) to [1] (peak lr) and back,
                                    # as torch's OneCycleLR cycles momentum (EAT: 0.95, 0.85); None = betas[0]
    layer_decay: float = 1.0        # < 1: layer-wise lr decay (fine-tuning), lr * decay^(depth + 1 - layer)
    clip_grad: float = 0.0          # max gradient norm; 0 = no clipping
    clip_mode: str = "global"       # one of CLIP_MODES: "global" (the norm of all gradients, clip_grad_norm_) or
                                    # "per_param" (each parameter's gradient on its own, DINO/ASiT's clip_gradients)
    precision: str = "fp32"         # fp32, bf16 (autocast) or fp16 (autocast + loss scaling)
    ema: float = 0.0                # > 0: keep an EMA of the encoder with this momentum per step
    ema_per_epoch: float = 0.0      # > 0: the same with this momentum per epoch (per step: ema_per_epoch ** (1 / steps
                                    # per epoch), steps per epoch = training clips / batch_size; EAT: 0.995)
    ema_short_epochs: float = 0.0   # the first epochs use SHORT_EMA per epoch instead (EAT's release: 2)
    seed: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    max_skipped: int = 10           # consecutive non-finite steps before the run stops
    device: str = "auto"            # auto = cuda when available
    find_unused: bool = False       # DDP: objectives that leave some parameters out of a step's graph
    data: DataConfig = field(default_factory=DataConfig)


# ---------------------------------------------------------------- optimizer and schedule


def no_decay_names(model: nn.Module) -> set[str]:
    """Parameter names that submodules declare through `no_weight_decay()` (timm's rule)."""
    names = set()
    for prefix, module in model.named_modules():
        if callable(getattr(module, "no_weight_decay", None)) and module is not model:
            names |= {f"{prefix}.{n}" for n in module.no_weight_decay()}
    return names


def param_groups(objective: nn.Module, weight_decay: float, layer_decay: float = 1.0,
                 decay_rule: str = "matrices") -> list[dict]:
    """AdamW groups: weight decay on the parameters `decay_rule` names (DECAY_RULES; "matrices":
    none on 1-d parameters, norms and biases, nor on what modules declare); with layer_decay < 1, one group per (layer, decay) with lr_scale = layer_decay^(L + 1 - layer),
    the layer of an encoder parameter given by its backbone (`layer_id`), the frontend at 0,
    everything outside the encoder (heads, decoders) at L + 1."""
    backbone = objective.encoder.backbone
    depth = backbone.num_layers
    skip = no_decay_names(objective) if decay_rule == "matrices" else set()
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in objective.named_parameters():
        if not p.requires_grad:
            continue
        decay = decay_rule == "all" or (p.ndim > 1 and name not in skip)
        layer = depth + 1
        if layer_decay != 1.0 and name.startswith("encoder.backbone."):
            layer = backbone.layer_id(name[len("encoder.backbone."):])
        elif layer_decay != 1.0 and name.startswith("encoder.frontend."):
            layer = 0
        group = groups.setdefault((layer, decay), {
            "params": [], "weight_decay": weight_decay if decay else 0.0, "decay": decay,
            "lr_scale": layer_decay ** (depth + 1 - layer), "layer": layer})
        group["params"].append(p)
    return [groups[k] for k in sorted(groups)]


def clip_per_param(grads: list[torch.Tensor], max_norm: float) -> None:
    """Each gradient scaled to norm <= max_norm on its own (DINO's `clip_gradients`)."""
    norms = torch._foreach_norm(grads)
    torch._foreach_mul_(grads, [torch.clamp(max_norm / (n + 1e-6), max=1.0) for n in norms])


def all_finite(loss: float, world: int, device: torch.device) -> bool:
    """Whether the loss is finite on every process (so all of them skip a bad step together)."""
    flag = torch.tensor(float(math.isfinite(loss)), device=device)
    if world > 1:
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag)


def step_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + step) * 1024 + rank


# ---------------------------------------------------------------- checkpoints and logs


def save_checkpoint(out: Path, step: int, objective: nn.Module, optimizer, scaler, ema: EMA | None,
                    keep: int) -> Path:
    final = out / "checkpoints" / f"step_{step:07d}"
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(objective.state_dict(), tmp / "objective.pt")
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    if ema is not None:
        torch.save(ema.state_dict(), tmp / "ema.pt")
    write_json(tmp / "state.json", {"step": step, "scaler": scaler.state_dict()})
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    encoder_to_save(objective).save(out / "encoder")
    if ema is not None:
        ema.model.save(out / "encoder_ema")
    for old in checkpoints(out)[:-keep]:
        shutil.rmtree(old)
    return final


def encoder_to_save(objective: nn.Module):
    return objective.encoder_to_save() if hasattr(objective, "encoder_to_save") else objective.encoder


def load_checkpoint(path: Path, objective: nn.Module, optimizer, scaler, ema: EMA | None) -> int:
    objective.load_state_dict(torch.load(path / "objective.pt", map_location="cpu", weights_only=True))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True))
    if ema is not None:
        ema.load_state_dict(torch.load(path / "ema.pt", map_location="cpu", weights_only=True))
    state = json.loads((path / "state.json").read_text())
    if state["scaler"]:
        scaler.load_state_dict(state["scaler"])
    return int(state["step"])


class Logger:
    """log.csv (rows after the resume step are dropped, so a resumed log reads as one run) + TensorBoard.

    Columns are fixed by the first row: the loop's own, then the objective's logs, sorted.
    """

    BASE = ["step", "lr", "loss", "grad_norm", "samples_per_s", "skipped"]

    def __init__(self, out: Path, start: int):
        self.path = out / "log.csv"
        self.columns = None
        if self.path.exists():
            with open(self.path, newline="") as f:
                reader = csv.DictReader(f)
                self.columns = reader.fieldnames
                rows = [r for r in reader if int(r["step"]) <= start]
            self._write(rows, "w")
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(out / "tb"), purge_step=start + 1)
        except ImportError:  # tensorboard is optional
            pass

    def _write(self, rows: list[dict], mode: str) -> None:
        with open(self.path, mode, newline="") as f:
            writer = csv.DictWriter(f, self.columns, extrasaction="ignore")
            if mode == "w":
                writer.writeheader()
            writer.writerows(rows)

    def log(self, row: dict) -> None:
        first = self.columns is None
        if first:
            self.columns = self.BASE + sorted(set(row) - set(self.BASE))
        self._write([{k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()}], "w" if first else "a")
        if self.tb is not None:
            for k, v in row.items():
                if k != "step":
                    self.tb.add_scalar(k, float(v), row["step"])


# ---------------------------------------------------------------- the loop


def setup_distributed(cfg: TrainConfig) -> tuple[int, int, torch.device]:
    """(rank, world, device); under torchrun (WORLD_SIZE > 1) joins the process group (dist.world)."""
    w = world_of(cfg.device)
    return w.rank, w.size, w.device


def make_loader(data: ClipDataset | ShardStream, cfg: TrainConfig, start: int, rank: int, world: int):
    """Batches of this process from micro-step `start` on."""
    global_batch = cfg.batch_size // cfg.accum
    common = dict(num_workers=cfg.data.workers, pin_memory=torch.cuda.is_available(),
                  persistent_workers=cfg.data.workers > 0)
    if isinstance(data, ShardStream):
        stream = data.at(start=start, rank=rank, world=world, batch=global_batch // world, seed=cfg.seed,
                         balanced=cfg.data.balanced)
        stream.plan()  # what a pass holds, read once here rather than in every worker
        return DataLoader(stream, batch_size=None, **common)
    if cfg.data.balanced and data.targets is None:
        raise ValueError("data.balanced=true needs labelled data: the training clips have no labels "
                         "(set data.balanced=false)")
    weights = class_balanced_weights(data.targets) if cfg.data.balanced else None
    sampler = StepSampler(len(data), global_batch, cfg.seed, start, rank, world, weights)
    return DataLoader(data, batch_sampler=sampler, **common)


def check_config(cfg: TrainConfig, world: int = 1) -> None:
    """Refuse settings that cannot work, naming the fields (before any work is done)."""
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"train.schedule={cfg.schedule!r}: expected one of {SCHEDULES}")
    if cfg.precision not in PRECISIONS:
        raise ValueError(f"train.precision={cfg.precision!r}: expected one of {list(PRECISIONS)}")
    if cfg.clip_mode not in CLIP_MODES:
        raise ValueError(f"train.clip_mode={cfg.clip_mode!r}: expected one of {CLIP_MODES}")
    if cfg.decay not in DECAY_RULES:
        raise ValueError(f"train.decay={cfg.decay!r}: expected one of {DECAY_RULES}")
    if cfg.steps < 1:
        raise ValueError(f"train.steps={cfg.steps}: expected at least 1")
    if cfg.batch_size % (cfg.accum * world):
        raise ValueError(f"train.batch_size={cfg.batch_size} must be divisible by accum ({cfg.accum}) "
                         f"x processes ({world})")
    if not 0 <= cfg.warmup_frac < 1:
        raise ValueError(f"train.warmup_frac={cfg.warmup_frac}: expected a fraction of the run in [0, 1)")
    warmup = warmup_of(cfg)
    if (cfg.warmup_frac > 0 or cfg.schedule == "onecycle") and warmup >= cfg.steps:
        given = f"warmup_frac={cfg.warmup_frac} x steps" if cfg.warmup_frac > 0 else "warmup_steps"
        raise ValueError(f"train.{given} gives a warm-up of {warmup} steps, not shorter than the run "
                         f"(steps={cfg.steps}): the learning rate would never come down; use a shorter warm-up "
                         "(warmup_frac=0.1 scales with steps)")
    if cfg.cycle_beta1 is not None and (cfg.schedule != "onecycle" or len(cfg.cycle_beta1) != 2):
        raise ValueError(f"train.cycle_beta1={cfg.cycle_beta1}: a (start, peak) pair of beta1 values, "
                         f"for schedule=onecycle only (schedule={cfg.schedule!r})")
    if cfg.ema > 0 and cfg.ema_per_epoch > 0:
        raise ValueError(f"train.ema={cfg.ema} and train.ema_per_epoch={cfg.ema_per_epoch}: set one of them")
    if not (0 <= cfg.ema < 1 and 0 <= cfg.ema_per_epoch < 1):
        raise ValueError(f"train.ema={cfg.ema}, train.ema_per_epoch={cfg.ema_per_epoch}: momenta must be in [0, 1)")


def uses_ema(cfg: TrainConfig) -> bool:
    return cfg.ema > 0 or cfg.ema_per_epoch > 0


def epoch_steps(data, cfg: TrainConfig) -> float | None:
    """Optimizer steps per pass over the training clips (len(data) / batch_size); None for a
    stream of unknown length (tar shards)."""
    return len(data) / cfg.batch_size if hasattr(data, "__len__") else None


def train(objective: nn.Module, data: ClipDataset | ShardStream, cfg: TrainConfig, out: str | Path,
          run_config: dict | None = None, stop_after: int | None = None) -> nn.Module:
    """Train `objective` on `data` for cfg.steps optimizer steps, resuming from RUN's last
    readable checkpoint. Rank 0 holds RUN's lock (files.folder_lock) for the whole run, so a
    second run on the same folder stops at once with "another run is using RUN".

    run_config: the resolved configs written to RUN/config.json; a resumed run must match it.
    stop_after: leave after this optimizer step as if killed (tests, demos of resume).
    """
    out = Path(out)
    with out_lock(out, world_of(cfg.device)):
        return train_locked(objective, data, cfg, out, run_config, stop_after)


def resume_from(out: Path, objective: nn.Module, optimizer, scaler, ema: EMA | None) -> tuple[Path | None, int]:
    """(checkpoint, step) of the newest checkpoint that loads; an unreadable one is reported
    and the previous complete one is used; none readable is an error naming the folder."""
    found = checkpoints(out)
    for path in reversed(found):
        try:
            return path, load_checkpoint(path, objective, optimizer, scaler, ema)
        except Exception as e:  # truncated or corrupted files: torch, json and pickle raise various types
            print(f"{path}: unreadable checkpoint ({type(e).__name__}: {one_line(e)[:300]}); "
                  "falling back to the previous one", file=sys.stderr)
    if found:
        raise ValueError(f"{out / 'checkpoints'}: no checkpoint is readable; delete the folder to start the run afresh")
    return None, 0


def record_config(out: Path, run_config: dict, world: int) -> str | None:
    """Write RUN/config.json; the reason a resume cannot go on (another configuration or
    number of processes) instead, when there is one."""
    saved = out / "config.json"
    before = json.loads(saved.read_text()) if saved.exists() and checkpoints(out) else None
    if before is not None and before.get("world", world) != world:
        return (f"{out} was started with {before['world']} processes, now {world}; resume with the same "
                "--nproc-per-node x --nnodes (the batch split and data order depend on it)")
    if before is not None and before != json.loads(json.dumps(run_config)):
        return (f"{saved}: this run was started with a different configuration; "
                "use a new --out or the same arguments to resume")
    write_json(saved, run_config)
    return None


def train_locked(objective: nn.Module, data: ClipDataset | ShardStream, cfg: TrainConfig, out: Path,
                 run_config: dict | None, stop_after: int | None) -> nn.Module:
    rank, world, device = setup_distributed(cfg)
    check_config(cfg, world)
    per_epoch = epoch_steps(data, cfg)
    if per_epoch is None and cfg.ema_per_epoch > 0:
        raise ValueError(f"train.ema_per_epoch={cfg.ema_per_epoch}: {type(data).__name__} has no length, so an "
                         "epoch is unknown; set train.ema (momentum per step) instead")
    if per_epoch is not None and hasattr(objective, "set_epoch_steps"):  # objectives with schedules in epochs
        objective.set_epoch_steps(per_epoch)
    run_config = dict(run_config or {}, train=to_dict(cfg), world=world)
    error = record_config(out, run_config, world) if rank == 0 else None
    error = first_error(error, world_of(cfg.device))  # every rank stops, none waits in a collective
    if error:
        raise ValueError(error)

    objective.to(device)
    if not checkpoints(out) and hasattr(objective, "prepare"):  # data-dependent stage of a fresh run
        objective.prepare(data, device, out)
    optimizer = torch.optim.AdamW(param_groups(objective, cfg.weight_decay, cfg.layer_decay, cfg.decay),
                                  lr=peak_lr(cfg), betas=cfg.betas, eps=cfg.eps)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    ema = EMA(objective.encoder) if uses_ema(cfg) else None
    resume, start = resume_from(out, objective, optimizer, scaler, ema)
    if resume is not None:
        if rank == 0:
            print(f"resuming {out} from {resume.name}", file=sys.stderr)
    model = objective
    if world > 1:
        model = nn.parallel.DistributedDataParallel(objective, find_unused_parameters=cfg.find_unused)

    loader = make_loader(data, cfg, start * cfg.accum, rank, world)
    batches = iter(loader)
    logger = Logger(out, start) if rank == 0 else None
    autocast = torch.autocast(device.type, dtype=PRECISIONS[cfg.precision], enabled=cfg.precision != "fp32")
    params = [p for p in objective.parameters() if p.requires_grad]
    bar = tqdm(total=cfg.steps, initial=start, disable=rank != 0, desc=f"train {out.name}", dynamic_ncols=True)
    skipped, last_time, last_step = 0, time.perf_counter(), start
    objective.train()
    step = start
    while step < cfg.steps and (stop_after is None or step < stop_after):
        lr, wd, beta1 = lr_at(step, cfg), weight_decay_at(step, cfg), beta1_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
            group["weight_decay"] = wd if group["decay"] else 0.0
            group["betas"] = (beta1, cfg.betas[1])
        torch.manual_seed(step_seed(cfg.seed, step, rank))
        totals: dict[str, float] = {}
        for micro in range(cfg.accum):
            batch = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
            sync = micro == cfg.accum - 1 or world == 1
            with (contextlib.nullcontext() if sync else model.no_sync()), autocast:
                loss, logs = model(batch)
            scaler.scale(loss / cfg.accum).backward()
            for k, v in {"loss": loss.item(), **logs}.items():
                totals[k] = totals.get(k, 0.0) + float(v) / cfg.accum
        scaler.unscale_(optimizer)
        clip_all = cfg.clip_grad > 0 and cfg.clip_mode == "global"
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad if clip_all else float("inf"))  # before clipping
        if cfg.clip_grad > 0 and cfg.clip_mode == "per_param":
            clip_per_param([p.grad for p in params if p.grad is not None], cfg.clip_grad)
        if all_finite(totals["loss"], world, device) and torch.isfinite(grad_norm):
            scaler.step(optimizer)
            skipped = 0
        elif cfg.precision != "fp16":  # fp16 overflows are the scaler's business
            skipped += 1
            if skipped > cfg.max_skipped:
                raise FloatingPointError(f"{out}: {skipped} consecutive steps with a non-finite loss or "
                                         f"gradient (last at step {step}); lower train.lr or use fp32")
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if hasattr(objective, "after_step"):
            objective.after_step(step, cfg.steps)
        if ema is not None:
            ema.update(objective.encoder, ema_momentum(step, cfg, per_epoch))
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{totals['loss']:.4f}", lr=f"{lr:.2e}")
        if rank == 0 and (step % cfg.log_every == 0 or step == cfg.steps):
            now = time.perf_counter()
            rate = (step - last_step) * cfg.batch_size / (now - last_time)
            logger.log({"step": step, "lr": lr, "weight_decay": wd, "grad_norm": float(grad_norm), "samples_per_s": rate,
                        **({"beta1": beta1} if cfg.cycle_beta1 is not None else {}),
                        "skipped": skipped, **totals})
            last_time, last_step = now, step
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            if rank == 0:
                save_checkpoint(out, step, objective, optimizer, scaler, ema, cfg.keep_checkpoints)
            if world > 1:
                dist.barrier()
    bar.close()
    return objective
