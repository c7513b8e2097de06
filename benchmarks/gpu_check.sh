#!/usr/bin/env bash
# Everything we want to know from one lent GPU, in one run of under 8 minutes (benchmarks/gpu_check.py
# says what and how):
#
#   bash scripts/setup.sh                                  # once: audiorep and its test extras
#   bash benchmarks/gpu_check.sh --out gpu_out             # on the GPU machine; no internet needed
#   bash benchmarks/gpu_check.sh --dry-run --out /tmp/gc   # anywhere, CPU only (CI runs this)
#
# Writes gpu_out/gpu_check.json, gpu_out/gpu_check.md (+ gpu_check_curves.png, logs/); exits 0
# only when every part is ok. Run it again to redo only the parts that were not ok.
# On a machine where audiorep is not installed (no PyPI there), the checkout is put on PYTHONPATH:
# the packages audiorep needs must then be there already (torch, numpy, soundfile, soxr, safetensors,
# tqdm, matplotlib; julius for EAT, transformers and scikit-learn for EnCodecMAE). PYTHON picks the
# interpreter (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" benchmarks/gpu_check.py "$@"
