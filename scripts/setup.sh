#!/usr/bin/env bash
# Install audiorep with everything the suite, the tests and the demo need (CPU torch).
set -euo pipefail
cd "$(dirname "$0")/.."
# An installed torch is kept; otherwise the CPU build (a bare "torch" pulls a multi-GB CUDA one).
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[test,asr]"
# tinysoundfont's only dependency (pyaudio) is for playback; hearvalidator's (tensorflow)
# is for TF models; pyctcdecode pins numpy<2 but runs on numpy 2: all three without them.
python -m pip install -q --no-deps tinysoundfont hearvalidator pyctcdecode
