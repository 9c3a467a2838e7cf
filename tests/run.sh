#!/usr/bin/env bash
# The test command: set up .venv if needed, then run the whole suite (about 12 minutes on 2 CPU cores).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
python -m pytest tests -q "$@"
