"""ASR on the offline `asr_en` task at a small budget: log-mel, random-init and pretrained encoders.

    python benchmarks/bench_asr.py --task SUITE/asr_en --out /tmp/bench-asr --model logmel \
        --model random:encodecmae-tiny --steps 1500 --width 256 [--no-specaug] [--no-bucketing] [--seed 1]

Each model goes through `audiorep.evaluate.asr` exactly as `audiorep evaluate` runs an ASR task
(all-layer frames, layer weights, CTC head, greedy decoding, bootstrap over test utterances);
a model whose frames are too coarse for every training transcript under CTC is reported as such.
Prints one JSON line per model: test WER and CER, the 95% interval of the WER, the kept step,
skipped utterances, layer weights and seconds.
"""
import argparse
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from audiorep.evaluate import asr
from audiorep.evaluate.asr_head import AsrConfig
from audiorep.evaluate.embeddings import parse_model
from audiorep.tasks.asr_task import load_asr_task


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--model", action="append", required=True)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--last-layer", action="store_true", help="no layer weights: the last layer only")
    p.add_argument("--no-specaug", action="store_true", help="no SpecAugment on the training features")
    p.add_argument("--no-bucketing", action="store_true", help="shuffled batches, not s3prl's length buckets")
    p.add_argument("--specaug-max", type=int, nargs=2, metavar=("DIMS", "FRAMES"),
                   help="SpecAugment masks narrower than DIMS features and FRAMES frames (s3prl: 50 40)")
    p.add_argument("--seed", type=int, default=42, help="the head's seed (initialisation, batches, SpecAugment)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    task = load_asr_task(args.task)
    specaug = AsrConfig.specaug
    if args.specaug_max:
        specaug = replace(specaug, freq_mask_max=args.specaug_max[0], time_mask_max=args.specaug_max[1])
    head = AsrConfig(project_dim=args.width, lstm_dim=args.width, batch_size=args.batch, steps=args.steps,
                     eval_every=args.eval_every, lr=args.lr, layer_weights=not args.last_layer, seed=args.seed,
                     specaug=None if args.no_specaug else specaug, bucketing=not args.no_bucketing)
    for spec in map(parse_model, args.model):
        start = time.perf_counter()
        try:
            info, r = asr.evaluate_task(task, spec, args.out, asr.AsrRun(head, bootstrap=1000))
        except ValueError as e:
            print(json.dumps({"model": spec.label, "failed": str(e)}), flush=True)
            continue
        print(json.dumps({"model": spec.label, "specaug": head.specaug and asdict(head.specaug), "bucketing": head.bucketing,
                          "seed": head.seed, "wer": round(r["score"], 4), "cer": round(r["scores"]["cer"]["mean"], 4),
                          "wer_interval": [round(v, 4) for v in r["bootstrap"]["interval"]],
                          "kept_step": r["selection"]["step"], "val_wer": round(r["selection"]["val_wer"], 4),
                          "skipped": r["skipped_too_short"]["count"], "layer_weights": r["layer_weights"],
                          "embed_s": round(sum(info["seconds"].values()), 1), "train_s": round(r["train_seconds"], 1),
                          "total_s": round(time.perf_counter() - start, 1)}), flush=True)


if __name__ == "__main__":
    main()
