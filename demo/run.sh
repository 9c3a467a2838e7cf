#!/usr/bin/env bash
# The demo: set up .venv if needed, then run `ultra-sparse demo` (extra key=value arguments are passed on).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
ultra-sparse demo "$@"
