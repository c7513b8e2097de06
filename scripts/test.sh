#!/usr/bin/env bash
# The test command: set up, check the layering contract, then the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
lint-imports --config .importlinter
python -m pytest -p no:cacheprovider tests
