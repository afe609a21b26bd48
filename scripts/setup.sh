#!/usr/bin/env bash
# Set up kqv on a fresh machine: a virtual environment in .venv with kqv and its test tools.
# torch==2.13.0 goes first: on these machines pip takes it as a CPU wheel from local disk,
# where an unpinned `torch` could pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
export PIP_DISABLE_PIP_VERSION_CHECK=1
.venv/bin/python -m pip install --quiet torch==2.13.0 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -m pip install --quiet -e '.[test]' 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -c "import kqv, torch, sklearn; print('kqv ready: torch', torch.__version__)"
