"""Can the data path feed a GPU? Per recipe at its paper size: the loader's samples/s per
worker, the objective's own per-batch work, and the samples/s one GPU step consumes.

    nice -n 10 python benchmarks/bench_data.py --batches 8 --out runs/bench_data.json  # paper sizes: ~5 min
    nice -n 10 python benchmarks/bench_data.py --native --batches 8 --out runs/bench_data_native.json  # ~2 min
    python benchmarks/bench_data.py --recipes asit eat --batches 2
    python benchmarks/bench_data.py --quick --out /tmp/bench_data.json  # tiny, seconds (tests/test_bench_data.py)

The benchmark writes its own corpus first (a temporary folder): `--clips` clips of
`--seconds` s at 44.1 kHz, FLAC and WAV, mono and stereo (tones, chirps, noise under an
envelope), labelled from a vocabulary of 50 classes (a CSV manifest), and the same clips as
tar shards twice (`data.write_shards`: FLAC members and 16-bit WAV members, at the corpus
rate); with `--native`, at each encoder's own rate as 16-bit mono WAV (no resampling: what
preparing a corpus buys). Each recipe is resolved as
`audiorep pretrain RECIPE` resolves it (audiorep.sizes: preset, overrides, the recipe's
defaults). Columns:

  data            files (the manifest: ClipDataset), shards flac or shards wav (ShardStream;
                  data.repeat_s=0, streams read each sample once per pass)
  loader/worker   samples (clips, with all their views) per second of one loader process:
                  decode, resample to the encoder's rate, crop, gain and roll as the recipe's
                  DataConfig says, collate; through runs.open_data and train.make_loader
                  with data.workers=0 (in this process, one torch thread as a worker has),
                  --batches batches of the recipe's batch size, timed from the loader's
                  start (worker start-up and the shards' shuffle buffer included: a lower
                  bound on the steady rate; the loader's prefetching cannot inflate it)
  steady          the same loader after its first batch (batches 2..--batches): the rate
                  once started, what a long run sees (a shard stream's first batch waits
                  for its shuffle buffer, 256 samples)
  2 workers       the same with data.workers=2 (this machine has 2 cores) and its speed-up
  objective ms    the objective's own work on one batch of the recipe's size (from files;
                  the same work whatever the source), apart from
                  its networks (WORK: masking, corruption, patchout, augmentation, targets;
                  the frontend's features are computed first, untimed), median of 3, on
                  one thread of this CPU. In training it runs on the batch's device.
  GFLOP/sample    one training step (the objective's forward and backward as the loop runs
                  them, frontend and frozen tokenizers included) under
                  torch.utils.flop_counter.FlopCounterMode on a real batch of 1 clip (ASiT: 2,
                  its alien corruption needs a donor), divided by the clips: every model
                  here computes each full-length clip alike, so the count per clip is exact
                  (study/cost.py counts the same way, but from a trained run's checkpoint)
  GPU samples/s   40% of an H100's dense bf16 peak (989.4 TFLOP/s -> 395.8 TFLOP/s) / FLOP
                  per sample
  workers         GPU samples/s / loader samples/s per worker, rounded up: the
                  `data.workers` one GPU needs (per GPU: each torchrun process has its own)

EnCodecMAE's released targets (targets=encodec) download EnCodec; offline the benchmark uses
the same network with random weights (targets=encodec_random; 4 clips to draw codebooks and
gamma_q): the same FLOP. Its targets are fitted on the files (a tiny size caches them per
clip, objective.target_context=clip, which shards refuse in training; the loader rows do not
depend on it).
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from audiorep import presets, sizes
from audiorep.config import override
from audiorep.data import clips_from, write_shards
from audiorep.data.shards import FORMATS
from audiorep.encoder import Encoder
from audiorep.files import write_json
from audiorep.masking import masked_from_keep, packed_keep
from audiorep.objectives import RECIPES
from audiorep.train import TrainConfig, epoch_steps, make_loader
from audiorep.runs import crop_samples, open_data, split_overrides

H100_BF16 = 989.4e12  # dense bf16 FLOP/s
UTILIZATION = 0.4
CORPUS_RATE = 44100
CLASSES = 50
OFFLINE = {"encodec": ("targets=encodec_random", "kmeans_clips=4", "gamma_clips=4")}  # objective overrides


# ------------------------------------------------------------------ the objectives' own work


def supervised_work(objective, batch: dict, feats: torch.Tensor) -> None:
    """PaSST / EAT: waveform policy (EAT), SpecAugment and mixup, patchout."""
    if objective.cfg.wave is not None:
        objective.augment_wave(batch["wave"], batch["target"].float())
    objective.augment_features(feats, batch["target"].float())
    if objective.patchout_on:
        objective.patchout(len(feats), objective.encoder.backbone.grid(feats.shape[-1]))


def mae_work(objective, batch: dict, feats: torch.Tensor) -> None:
    """Audio-MAE: pixel targets, the token mask."""
    target = objective.patchify(feats)
    keep, _ = objective.mask(len(feats), objective.encoder.backbone.grid(feats.shape[-1]))
    masked_from_keep(keep, target.shape[1])


def asit_work(objective, batch: dict, feats: torch.Tensor) -> None:
    """ASiT: GMML corruption of both views."""
    objective.corrupt(feats)


def codec_work(objective, batch: dict, feats: torch.Tensor) -> None:
    """EnCodecMAE: frame padding, time-gap mask, packing of the visible frames, and with
    target_context=clip the cached targets (context crop: a tokenizer network, not timed)."""
    T = feats.shape[-1]
    lengths, padding = objective.frame_padding(batch, T)
    masked = objective.mask(lengths, T)
    packed_keep(~masked if padding is None else ~masked & ~padding)
    if objective.cfg.target_context == "clip":
        objective.targets(batch, T)


WORK = {"passt": supervised_work, "audiomae": mae_work, "asit": asit_work, "encodecmae": codec_work,
        "eat": supervised_work}


def features(objective, wave: torch.Tensor) -> torch.Tensor:
    """The features the objective's forward computes before its own work (untimed)."""
    if hasattr(objective, "features"):  # ASiT: both views, cut to whole patches
        return objective.features(wave)
    with torch.no_grad():
        feats = objective.encoder.frontend(wave)
    return objective.pad_frames(feats) if hasattr(objective, "pad_frames") else feats


# ------------------------------------------------------------------------------ the corpus


def write_corpus(folder: Path, clips: int, seconds: float, rate: int = CORPUS_RATE, native: bool = False,
                 seed: int = 0) -> tuple[Path, Path]:
    """`clips` labelled clips at `rate` (FLAC and WAV, every third stereo; native: 16-bit mono
    WAV only), their manifest.csv and the same clips as 4 tar shards of each member format
    -> (manifest, {format: shard folder})."""
    manifest, shards = folder / "manifest.csv", {fmt: folder / f"shards-{fmt}" for fmt in FORMATS}
    if manifest.exists():
        return manifest, shards
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    rows = []
    for i in range(clips):
        f0 = rng.uniform(100, 2000, 3)
        tones = sum(np.sin(2 * np.pi * f * t * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(0.2, 3) * t))) for f in f0)
        chirp = np.sin(2 * np.pi * (200 + 300 * t) * t)
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.5, 4) * t) ** 2
        wave = np.clip(0.1 * envelope * (tones + chirp) + 0.02 * rng.standard_normal(len(t)), -1, 1)
        if i % 3 == 2 and not native:
            wave = np.stack([wave, 0.8 * wave + 0.01 * rng.standard_normal(len(t))], axis=1)
        name = f"clip{i:04d}.{'flac' if i % 2 and not native else 'wav'}"
        sf.write(folder / name, wave.astype(np.float32), rate, subtype="PCM_16")
        labels = sorted({f"class{int(c):02d}" for c in rng.integers(0, CLASSES, rng.integers(1, 4))})
        rows.append({"path": name, "labels": ";".join(labels)})
    with open(folder / ".manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "labels"])
        writer.writeheader()
        writer.writerows(rows)
    for fmt, out in shards.items():
        write_shards(clips_from(folder / ".manifest.csv")[0], out, rate, per_shard=math.ceil(clips / 4), fmt=fmt)
    (folder / ".manifest.csv").replace(manifest)  # last: its presence means the corpus is complete
    return manifest, shards


# -------------------------------------------------------------------------- the measurements


def resolve(name: str, size: str) -> tuple:
    """(recipe, encoder config, objective config, TrainConfig) as `audiorep pretrain NAME` at `size`."""
    recipe, chosen = RECIPES[name], sizes.get(name, size)
    parts = split_overrides(list(chosen.overrides))
    objective = list(recipe.objective_defaults) + parts["objective"]
    objective_cfg = override(recipe.config(), objective)
    if getattr(objective_cfg, "targets", None) in OFFLINE:
        objective_cfg = override(objective_cfg, list(OFFLINE[objective_cfg.targets]))
    cfg = override(TrainConfig(), list(recipe.defaults) + parts["train"])
    return recipe, override(presets.get(chosen.preset), parts["encoder"]), objective_cfg, cfg


def loader_rate(data, cfg: TrainConfig, workers: int, batches: int) -> tuple[float, float, dict]:
    """(samples/s of train.make_loader with `workers` processes over `batches` batches, timed
    from its start: start-up included, prefetched batches never counted as free; the same
    after the first batch; the last batch)."""
    cfg = replace(cfg, data=replace(cfg.data, workers=workers))
    start = time.perf_counter()
    loader = iter(make_loader(data, cfg, 0, 0, 1))
    batch = next(loader)
    first = time.perf_counter()
    for _ in range(batches - 1):
        batch = next(loader)
    end = time.perf_counter()
    del loader  # stops the workers
    return batches * cfg.batch_size / (end - start), (batches - 1) * cfg.batch_size / (end - first), batch


def objective_ms(name: str, objective, batch: dict, repeats: int = 3) -> float:
    """Median milliseconds of WORK[name] on `batch` (features first, untimed)."""
    feats = features(objective, batch["wave"])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        WORK[name](objective, batch, feats)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def step_flop(objective, data, cfg: TrainConfig, clips: int) -> float:
    """FLOP of one training step (forward + backward) per clip, on a real batch of `clips` clips."""
    batch = next(iter(make_loader(data, replace(cfg, batch_size=clips, accum=1, data=replace(cfg.data, workers=0)),
                                  0, 0, 1)))
    objective.train()
    with FlopCounterMode(display=False) as counter:
        loss, _ = objective(batch)
        loss.backward()
    objective.zero_grad(set_to_none=True)
    return counter.get_total_flops() / clips


def measure(name: str, size: str, work: Path, clips: int, seconds: float, native: bool, batches: int,
            batch_size: int | None = None) -> list[dict]:
    """Rows of one recipe: files, FLAC shards, WAV shards."""
    recipe, encoder_cfg, objective_cfg, cfg = resolve(name, size)
    cfg = replace(cfg, batch_size=batch_size or cfg.batch_size)
    torch.manual_seed(0)
    encoder = Encoder(encoder_cfg)
    crop = crop_samples(encoder, cfg.data)
    rate = encoder.sample_rate if native else CORPUS_RATE
    manifest, shards = write_corpus(work / f"corpus-{rate}", clips, seconds, rate, native)
    data, vocabulary = open_data(str(manifest), encoder.sample_rate, crop, cfg.data, views=recipe.views)
    objective = recipe.objective(encoder, objective_cfg, num_classes=len(vocabulary or []))
    if hasattr(objective, "set_epoch_steps"):
        objective.set_epoch_steps(epoch_steps(data, cfg))
        if hasattr(objective, "step"):  # past EAT's first epochs: its waveform mixes are on
            objective.step.fill_(10**9)
    if hasattr(objective, "prepare"):
        objective.prepare(data, torch.device("cpu"), work / f"run-{name}-{size}")
        frozen = getattr(getattr(objective, "tokenizer", None), "model", None)  # EnCodec, run in inference mode
        if frozen is not None:  # FlopCounterMode hooks parameters that require grad, which fails in inference mode
            frozen.requires_grad_(False)
    flop = step_flop(objective, data, cfg, clips=2 if recipe.views > 1 else 1)
    gpu = UTILIZATION * H100_BF16 / flop
    common = {"recipe": name, "size": size, "preset": encoder_cfg.name, "batch": cfg.batch_size, "views": recipe.views,
              "corpus": f"{rate} Hz {'16-bit WAV' if native else 'FLAC/WAV'}",
              "crop_s": crop / encoder.sample_rate, "sample_rate": encoder.sample_rate,
              "gflop_per_sample": flop / 1e9, "gpu_samples_per_s": gpu}
    streamed = replace(cfg.data, repeat_s=0.0)  # shards are read once per pass (EnCodecMAE's repeats: files only)
    sources = [("files", data)] + [(f"shards {fmt}", open_data(str(folder), encoder.sample_rate, crop, streamed,
                                                               views=recipe.views)[0])
                                   for fmt, folder in shards.items()]
    rows, work_ms = [], None
    for source, dataset in sources:
        one, steady, batch = loader_rate(dataset, cfg, 0, batches)
        two, _, _ = loader_rate(dataset, cfg, 2, batches)
        work_ms = work_ms or objective_ms(name, objective, batch)  # on the files' batch (clip indexes)
        rows.append({**common, "data": source, "loader_per_worker": one, "steady_per_worker": steady,
                     "loader_2_workers": two,
                     "objective_ms": work_ms, "workers_needed": math.ceil(gpu / one)})
    return rows


# ------------------------------------------------------------------------------ the report


def table(rows: list[dict]) -> str:
    head = ("| recipe | size | data | batch x views | crop s | loader/worker samples/s | steady | 2 workers (speed-up) "
            "| objective ms/batch | GFLOP/sample | GPU samples/s at 40% H100 | workers |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(f"| {r['recipe']} | {r['size']} ({r['preset']}) | {r['data']} | {r['batch']} x {r['views']} "
                     f"| {r['crop_s']:.2f} | {r['loader_per_worker']:.1f} | {r['steady_per_worker']:.1f} "
                     f"| {r['loader_2_workers']:.1f} "
                     f"({r['loader_2_workers'] / r['loader_per_worker']:.2f}x) | {r['objective_ms']:.1f} "
                     f"| {r['gflop_per_sample']:.1f} | {r['gpu_samples_per_s']:.0f} | {r['workers_needed']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=list(WORK), choices=list(WORK))
    parser.add_argument("--size", default="base", choices=["tiny", "small", "base"])
    parser.add_argument("--batches", type=int, default=4, help="loader batches timed per setting")
    parser.add_argument("--batch", type=int, help="clips per batch (default: the recipe's batch_size)")
    parser.add_argument("--clips", type=int, default=32, help="clips in the generated corpus")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each clip (AudioSet: 10 s)")
    parser.add_argument("--native", action="store_true", help="the corpus at each encoder's rate as 16-bit mono "
                        "WAV: no resampling, the cheapest decode (what preparing the audio buys)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 8 clips of 3 s, 2 batches of 4: seconds")
    parser.add_argument("--out", type=Path, help="JSON written here (rows and settings)")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.batches, args.batch, args.clips, args.seconds = "tiny", 2, 4, 8, 3.0
    if args.batches < 2 or (args.batch is not None and args.batch < 2) or args.clips < 4 or args.seconds <= 0:
        parser.error("--batches >= 2 (the first and the steady ones), --batch >= 2 (ASiT's alien donors), "
                     "--clips >= 4 (the shard path reads 4 shards) and --seconds > 0")
    settings = {"command": " ".join(["python", *sys.argv]) if argv is None else f"bench_data.main({argv!r})",
                "size": args.size, "native": args.native, "batches": args.batches, "batch": args.batch,
                "clips": args.clips, "seconds": args.seconds, "threads": 1, "cpus": os.cpu_count(),
                "load_average": os.getloadavg()[0], "gpu_flop_per_s": UTILIZATION * H100_BF16}
    torch.set_num_threads(1)  # as in each loader worker; the objective's work is timed on one thread too
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench_data-") as tmp:
        work = Path(tmp)
        for name in tqdm(args.recipes, desc="recipes", unit="recipe"):
            rows += measure(name, args.size, work, args.clips, args.seconds, args.native, args.batches, args.batch)
            if args.out:
                write_json(args.out, {"settings": settings, "rows": rows})
    corpus = "each encoder's rate, 16-bit WAV" if args.native else "44.1 kHz, FLAC and WAV"
    print(f"{args.size} sizes; corpus: {args.clips} clips x {args.seconds:g} s at {corpus}; 1 torch thread, "
          f"{os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f} at the end); GPU: 40% of 989.4 TFLOP/s")
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
