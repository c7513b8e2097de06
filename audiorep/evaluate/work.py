"""The work of `audiorep evaluate`, split over the ranks of a torchrun (one process: all of it).

A job is one model on one task. Its units: the embeddings of each split (`embed`), then the
probe units of protocol.py (`units`, `probe`: each seed's grid points on the first split, then
the chosen point on the other splits), or one whole unit for an ASR or --layer-weights job.
Ranks take every size-th unit (dist.share) and meet after each stage (dist.gather_patiently):
they learn which jobs failed (the first failing unit's reason, in the order one process takes
them, so the report says what one process would) and rank 0 gets the whole units' results.
Every rank loads the models it needs itself.
"""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from audiorep.dist import World, gather_patiently, share
from audiorep.tasks.asr_task import AsrTask
from audiorep.tasks.format import METADATA_FILE, Task

from . import asr, layer_probe
from . import embeddings as emb
from . import protocol as proto
from .protocol import ProtocolConfig


@dataclass(frozen=True)
class Job:
    """One model on one task; `kind`: "probes" (the protocol's units), "layers" (--layer-weights)
    or "asr" (one unit each, embeddings included for ASR)."""
    spec: emb.ModelSpec
    task: Task | AsrTask
    kind: str
    emb_dir: Path
    out_json: Path

    @property
    def name(self) -> str:
        return f"{self.task.path.name} / {self.spec.label}"


class Models:
    """The HEAR model this rank used last, kept for its next unit of the same model."""

    def __init__(self, device: str):
        self.device, self.spec, self.loaded = device, None, None

    def get(self, spec: emb.ModelSpec) -> tuple[Any, Any]:
        if spec != self.spec:
            self.spec, self.loaded = None, None  # the previous model freed before the next one loads
            self.loaded, self.spec = emb.load_hear_model(spec, self.device), spec
        return self.loaded

    def current(self, spec: emb.ModelSpec) -> tuple[Any, Any] | None:
        return self.loaded if spec == self.spec else None


def failure(e: Exception) -> str:
    return f"{type(e).__name__}: {e}"


def first_failures(gathered: list[dict[int, tuple[int, str]]]) -> dict[int, str]:
    """Job index -> the failure of its first failing unit (in the order one process takes them)."""
    merged: dict[int, tuple[int, str]] = {}
    for fails in gathered:
        for i, pos_why in fails.items():
            merged[i] = min(merged.get(i, pos_why), pos_why)
    return {i: why for i, (_, why) in sorted(merged.items())}


def embed(jobs: list[Job], batch_seconds: float, w: World, models: Models,
          ) -> tuple[dict[int, dict], dict[int, str]]:
    """Every rank embeds its share of the (job, split) units of the HEAR jobs -> (embedding info
    of each job that did not fail, on rank 0; failed jobs' reasons, on every rank)."""
    fails: dict[int, tuple[int, str]] = {}
    if w.main:  # stale folders removed, metadata written, before any rank writes a split
        for i, job in enumerate(jobs):
            try:
                emb.prepare_task(job.task, job.spec, job.emb_dir)
            except Exception as e:  # noqa: BLE001 -- reported by task and model; the others go on
                fails[i] = (-1, failure(e))
    fails = gather_patiently(fails, w)[0]
    units = [(i, split) for i, job in enumerate(jobs) if i not in fails for split in job.task.split_names]
    done: dict[tuple[int, str], dict] = {}
    for pos, (i, split) in tqdm(share(list(enumerate(units)), w), desc="embeddings", disable=not w.main):
        job = jobs[i]
        if i in fails or emb.split_complete(job.emb_dir, split):
            continue
        try:
            done[i, split] = emb.embed_split(job.task, split, job.emb_dir, str(w.device), batch_seconds,
                                             models.get(job.spec))
        except Exception as e:  # noqa: BLE001
            fails[i] = (pos, failure(e))
    gathered = gather_patiently((done, fails), w)
    failed = first_failures([f for _, f in gathered])
    done = {k: v for d, _ in gathered for k, v in d.items()}
    infos = {i: emb.record_task(job.spec, job.emb_dir, {s: d for (j, s), d in done.items() if j == i})
             for i, job in enumerate(jobs) if i not in failed and w.main}
    return infos, failed


def units(jobs: list[Job], failed: dict[int, str], cfg: ProtocolConfig, second: bool) -> list[tuple[int, Any]]:
    """(job index, unit) of the jobs not `failed`: the first probe units (with one "whole" unit per
    ASR or layer-weights job), or with `second` the units that need the first ones done. A job that
    cannot be planned joins `failed` (alike on every rank: they read the same files)."""
    out = []
    for i, job in enumerate(jobs):
        if i in failed:
            continue
        if job.kind != "probes":
            out += [] if second else [(i, "whole")]
            continue
        try:
            if proto.cached_result(job.out_json, proto.task_settings(job.emb_dir, cfg)) is None:
                first, rest = proto.plan_units(json.loads((job.emb_dir / METADATA_FILE).read_text()), cfg)
                out += [(i, u) for u in (rest if second else first)]
        except Exception as e:  # noqa: BLE001
            failed[i] = failure(e)
    return out


def probe(jobs: list[Job], todo: list[tuple[int, Any]], cfg: ProtocolConfig, out: Path, asr_run: asr.AsrRun,
          w: World, models: Models) -> tuple[dict[int, tuple], dict[int, tuple[int, str]]]:
    """This rank's share of `todo` (from `units`) -> (whole jobs' (info, result), failures
    (position, why)); a rank trains its probe units of one task together (protocol.train_units)."""
    whole, fails = {}, {}
    mine = share(list(enumerate(todo)), w)
    for i, group in itertools.groupby(mine, key=lambda pos_unit: pos_unit[1][0]):
        group = list(group)
        job = jobs[i]
        try:
            if job.kind == "asr":
                whole[i] = asr.evaluate_task(job.task, job.spec, out, asr_run, cfg.device,
                                             models.current(job.spec))
            elif job.kind == "layers":
                whole[i] = (None, layer_probe.evaluate_task(job.task, job.emb_dir, cfg, job.out_json,
                                                             lambda: models.get(job.spec)))
            else:
                proto.train_units(job.emb_dir, cfg, [u for _, (_, u) in group], proto.parts_dir(job.out_json),
                                  proto.task_settings(job.emb_dir, cfg))
        except Exception as e:  # noqa: BLE001
            fails[i] = (group[0][0], failure(e))
    return whole, fails


class Failed(Exception):
    """A job that failed on some rank: its reason, as that rank wrote it."""


@dataclass
class Done:
    infos: dict[int, dict]   # rank 0: the embedding info of each HEAR job
    whole: dict[int, tuple]  # rank 0: (info or None, result) of each ASR or layer-weights job
    failed: dict[int, str]   # every rank: why each failed job failed


def jobs(models: list[emb.ModelSpec], tasks: dict[Path, Task | AsrTask], out: Path, mode: str,
         layer_weights: bool) -> list[Job]:
    """Every model on every task, in the order one process takes them."""
    found = []
    for spec in models:
        for path, task in tasks.items():
            asr_job = isinstance(task, AsrTask)
            kind = "asr" if asr_job else "layers" if layer_weights and spec.is_audiorep else "probes"
            folder = "asr" if asr_job else f"{mode}+layers" if kind == "layers" else mode
            found.append(Job(spec, task, kind, out / "embeddings" / spec.name / path.name,
                             out / "predictions" / folder / spec.name / f"{path.name}.json"))
    return found


def run(jobs: list[Job], cfg: ProtocolConfig, out: Path, batch_seconds: float, asr_run: asr.AsrRun,
        w: World) -> Done:
    """This rank's share of every stage: embeddings, first probe units, the units after them."""
    models = Models(str(w.device))
    hear = [i for i, job in enumerate(jobs) if job.kind != "asr"]
    infos, embed_failed = embed([jobs[i] for i in hear], batch_seconds, w, models)
    failed = {hear[i]: why for i, why in embed_failed.items()}
    whole, fails = probe(jobs, units(jobs, failed, cfg, False), cfg, out, asr_run, w, models)
    gathered = gather_patiently((whole, fails), w)
    failed.update(first_failures([f for _, f in gathered]))
    _, fails = probe(jobs, units(jobs, failed, cfg, True), cfg, out, asr_run, w, models)
    failed.update(first_failures(gather_patiently(fails, w)))
    return Done({hear[i]: info for i, info in infos.items()}, {i: r for wh, _ in gathered for i, r in wh.items()},
                failed)


def result(job: Job, cfg: ProtocolConfig, done: Done, i: int) -> tuple[dict, dict]:
    """Rank 0: job i's (embedding info, result): its whole unit's, or assembled from its probe
    units; Failed when it failed on some rank."""
    if i in done.failed:
        raise Failed(done.failed[i])
    if job.kind != "probes":
        info, outcome = done.whole[i]
        return info if info is not None else done.infos[i], outcome
    settings = proto.task_settings(job.emb_dir, cfg)
    cached = proto.cached_result(job.out_json, settings)
    return done.infos[i], cached or proto.assemble(proto.TaskData(job.emb_dir), cfg, settings, job.out_json)
