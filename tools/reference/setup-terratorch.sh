#!/usr/bin/env bash
# Builds a virtualenv with terratorch, the reference implementation of TerraMind, for making golden
# outputs. It is a development tool: the plugin never imports terratorch.
#
#   tools/reference/setup-terratorch.sh        -> prints the venv's python when ready (make goldens, make bench)
#
# REF_VENV chooses where the venv goes (default: ~/.cache/terramind-reference-venv).
# Facts behind the pins:
#  - terratorch 1.2.12/1.2.13 need torchgeo>=0.9, which the reachable index lacks; 1.2.11 is the newest
#    that installs, and its TerraMind code equals 1.2.13's except torch.load(weights_only=True).
#  - torch 2.13.0 (CPU wheel on these machines) pairs with torchvision 0.28.0. PyPI's torchvision is a
#    CUDA build whose C++ ops cannot load beside CPU torch; TerraMind uses none of them, so the two
#    fake-op registrations for nms/qnms are made conditional (marked 'reference-shim').
#  - constraints.txt pins every other package to the versions the references were checked with.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${REF_VENV:-$HOME/.cache/terramind-reference-venv}"
PY="$VENV/bin/python"
if [ ! -x "$PY" ]; then
  PYTHON_BIN="${PYTHON_BIN:-python3.11}"
  command -v "$PYTHON_BIN" >/dev/null 2>&1 || PYTHON_BIN=python3
  "$PYTHON_BIN" -c 'import sys; assert sys.version_info[:2] == (3, 11), "need Python 3.11"'
  "$PYTHON_BIN" -m venv "$VENV"
fi
if ! "$PY" -c 'import terratorch, torch, sys; sys.exit(0 if torch.__version__.startswith("2.13.0") else 1)' 2>/dev/null; then
  "$PY" -m pip install -q -c "$HERE/constraints.txt" torch==2.13.0 >&2
  "$PY" -m pip install -q -c "$HERE/constraints.txt" terratorch==1.2.11 torch==2.13.0 torchvision==0.28.0 >&2
fi
META="$("$PY" -c 'import importlib.util as u; print(u.find_spec("torchvision").submodule_search_locations[0])')/_meta_registrations.py"
if ! grep -q "reference-shim" "$META"; then
  sed -i -E 's|^@torch\.library\.register_fake\("torchvision::(q?nms)"\)$|@(torch.library.register_fake("torchvision::\1") if torchvision.extension._has_ops() else (lambda f: f))  # reference-shim|' "$META"
fi
"$PY" -c 'import terratorch; from terratorch.registry import FULL_MODEL_REGISTRY, BACKBONE_REGISTRY' >&2
echo "$PY"
