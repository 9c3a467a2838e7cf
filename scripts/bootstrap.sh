#!/usr/bin/env bash
# Create (once) the project's virtual environment in .venv and install ultra_sparse with its test extras.
# Sourced by demo/run.sh, tests/run.sh and .ci/run; set ULTRA_SPARSE_VENV to use another folder.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ULTRA_SPARSE_VENV:-$ROOT/.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import ultra_sparse, torch, ultralytics, torch_pruning, onnxruntime, openvino, nncf, pytest" 2>/dev/null; then
  echo "bootstrap: installing torch, ultralytics and ultra_sparse into $VENV (first run only, a few minutes)"
  "$VENV/bin/pip" install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
  "$VENV/bin/pip" install -q --disable-pip-version-check -e "$ROOT[test,onnx,openvino]"
fi
export PATH="$VENV/bin:$PATH"
# Keep Ultralytics' settings out of the user's home folder unless they chose one.
export YOLO_CONFIG_DIR="${YOLO_CONFIG_DIR:-$ROOT/.venv-yolo-config}"
