#!/usr/bin/env bash
# Install audiorep with everything the suite, the tests and the demo need (CPU torch).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q "torch>=2.1"
python -m pip install -q -e ".[test]"
# tinysoundfont's only dependency (pyaudio) is for playback; hearvalidator's (tensorflow)
# is for TF models: both are installed without them.
python -m pip install -q --no-deps tinysoundfont hearvalidator
