#!/usr/bin/env bash
# The test command: set up, then the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
python -m pytest -p no:cacheprovider tests
