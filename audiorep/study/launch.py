"""Run the trainings of a study, each an ordinary `audiorep pretrain` in its own process
(through torchrun when the run asks), `jobs` at a time, a training after the one it starts from.

A training stops at every point of its learning curve (`--stop-after`, a checkpoint is there)
and its encoder is copied to OUT/points/<label>@<step>; the same command then continues the
run. Everything is decided by files, so a study killed at any moment continues where it
stopped: a finished point is never trained again, a half-trained segment resumes from the
run's last checkpoint (train.py resumes exactly), a copy is made under a temporary name and
renamed. OUT/state/<label>.json holds the wall time of every segment that completed.
"""
from __future__ import annotations

import csv
import ctypes
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import audiorep
from audiorep.files import write_json

from .plan import Training, checkpoint_every
from .spec import Spec

CALIBRATION_STEPS = 8  # a budget in minutes: seconds per step from the last of these steps


class TrainingFailed(ValueError):
    """A training process exited with an error; the message names its log."""


@dataclass(frozen=True)
class Job:
    deps: tuple[str, ...]
    work: Callable[[], None]


def point_dir(out: Path, label: str, step: int) -> Path:
    return out / "points" / f"{label}@{step}"


def _die_with_parent() -> None:
    """In the child: SIGKILL when the thread that started it dies (Linux), so a killed study
    leaves no training running that would hold its run folder's lock."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def python(torchrun: int) -> list[str]:
    """The Python that runs a command: through torchrun with `torchrun` processes when > 0."""
    launcher = [sys.executable]
    if torchrun:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}"]
    return launcher


def command(t: Training, out: Path, steps: int, every: int, stop_after: int | None, extra: tuple[str, ...] = (),
            run_dir: Path | None = None) -> list[str]:
    """The pretrain command line of training `t` (under torchrun when t.torchrun > 0)."""
    return [*python(t.torchrun), "-m", "audiorep", "pretrain", t.recipe, "--data", t.data, "--preset", t.preset,
            "--out", str(run_dir or out / "runs" / t.label),
            *(["--init", str(out / "runs" / t.init)] if t.init else []),
            *(["--stop-after", str(stop_after)] if stop_after is not None else []),
            *t.overrides, *extra, f"steps={steps}", f"seed={t.seed}", f"checkpoint_every={every}"]


def run_process(cmd: list[str], log: Path, threads: int) -> float:
    """Run `cmd` with its output appended to `log`; -> wall seconds. TrainingFailed names the log."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONPATH=os.pathsep.join([str(Path(audiorep.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]))
    log.parent.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent).returncode
    if code != 0:
        tail = " | ".join(line.strip() for line in log.read_text(errors="replace").splitlines()[-3:])
        raise TrainingFailed(f"{cmd[cmd.index('--out') + 1]}: training exited with {code}; log {log}: {tail}")
    return time.perf_counter() - began


def copy_encoder(run: Path, dest: Path) -> None:
    """The encoder the run ships (RUN/encoder, what audiorep.load(RUN) gives; not an EMA kept
    beside it, e.g. EAT's, whose horizon is longer than short runs) -> dest, atomically."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(run / "encoder", tmp)
    os.replace(tmp, dest)


def train(t: Training, out: Path, steps: int, points: tuple[int, ...], threads: int) -> None:
    """Every point of training `t` not copied yet: train up to it, copy its encoder."""
    state_file = out / "state" / f"{t.label}.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {"segments": {}}
    every = checkpoint_every(points)
    for step in points:
        dest = point_dir(out, t.label, step)
        if dest.exists():
            continue
        cmd = command(t, out, steps, every, None if step == steps else step)
        state["segments"][str(step)] = run_process(cmd, out / "logs" / f"{t.label}.log", threads)
        copy_encoder(out / "runs" / t.label, dest)
        write_json(state_file, state)


def calibrate(t: Training, out: Path, threads: int) -> float:
    """Seconds per optimizer step of training `t`, from a short run in OUT/calibrate/<run>
    (its samples/s over the steps after the first log row); kept in OUT/state/<run>.calibration.json."""
    saved = out / "state" / f"{t.run}.calibration.json"
    if saved.exists():
        return json.loads(saved.read_text())["seconds_per_step"]
    run_dir = out / "calibrate" / t.run
    cmd = command(t, out, CALIBRATION_STEPS, CALIBRATION_STEPS, None, ("log_every=2",), run_dir)
    run_process(cmd, out / "logs" / f"{t.run}.calibration.log", threads)
    with open(run_dir / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    batch = int(json.loads((run_dir / "config.json").read_text())["train"]["batch_size"])
    seconds = batch / statistics.median(float(r["samples_per_s"]) for r in rows[1:])
    write_json(saved, {"seconds_per_step": seconds})
    return seconds


def waiting_on(jobs: dict[str, Job]) -> dict[str, int]:
    """{job: how many jobs wait on it, directly or through others}."""
    count = dict.fromkeys(jobs, 0)
    for name in jobs:
        seen, todo = set(), list(jobs[name].deps)
        while todo:
            dep = todo.pop()
            if dep not in seen:
                seen.add(dep)
                todo += jobs[dep].deps
        for dep in seen:
            count[dep] += 1
    return count


def execute(jobs: dict[str, Job], workers: int) -> None:
    """Run every job once its deps are done, `workers` at a time, those that others wait on
    first (then in the given order); the first failure stops new starts, lets the running
    ones finish and is raised."""
    waiting = waiting_on(jobs)
    jobs = dict(sorted(jobs.items(), key=lambda item: -waiting[item[0]]))  # stable: the given order next
    done: set[str] = set()
    running: dict[str, Future] = {}
    error: BaseException | None = None
    with ThreadPoolExecutor(max_workers=workers) as pool:
        while len(done) < len(jobs):
            if error is None:
                for name, job in jobs.items():
                    ready = name not in done and name not in running and all(d in done for d in job.deps)
                    if ready and len(running) < workers:
                        running[name] = pool.submit(job.work)
            if not running:
                break
            finished, _ = wait(running.values(), return_when=FIRST_COMPLETED)
            for name in [n for n, f in running.items() if f in finished]:
                future = running.pop(name)
                if future.exception() is not None:
                    error = error or future.exception()
                else:
                    done.add(name)
    if error is not None:
        raise error


def train_all(spec: Spec, out: Path, items: list[Training], schedule, workers: int,
              others: dict[str, Job] | None = None) -> dict[str, tuple[int, tuple]]:
    """Train every item (`schedule(training, seconds_per_step) -> (steps, points)`), and run
    the `others` jobs (the crossval runs) in the same pool; -> {label: (steps, points)}."""
    first = {}
    for t in items:
        first.setdefault(t.run, t)
    plans: dict[str, tuple[int, tuple]] = {}
    jobs: dict[str, Job] = {}
    for t in items:
        calibration = f"calibrate {t.run}" if spec.unit == "minutes" else None
        if calibration and calibration not in jobs:
            head = first[t.run]
            jobs[calibration] = Job((head.init,) if head.init else (), lambda h=head: calibrate(h, out, spec.threads))

        def work(t=t):
            seconds = calibrate(first[t.run], out, spec.threads) if spec.unit == "minutes" else None
            plans[t.label] = schedule(t, seconds)
            train(t, out, *plans[t.label], spec.threads)
        jobs[t.label] = Job(tuple(d for d in (t.init, calibration) if d), work)
    execute(jobs | (others or {}), workers)
    return plans
