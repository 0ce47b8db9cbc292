#!/usr/bin/env bash
# The one command a GPU session runs (what it does and what to commit: benchmarks/gpu_run.py's docstring):
#
#   PYTHONPATH=. bash benchmarks/gpu_run.sh --out /tmp/gpu-run --pack "$OUT" --budget-s 420
#
# It puts this tree first on PYTHONPATH and runs `python -m benchmarks.gpu_run` with the same arguments, with the
# Python that has torch (PYTHON, else python, else python3). --dry-run rehearses it on the CPU.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
python="${PYTHON:-$(command -v python || command -v python3)}"
exec "$python" -m benchmarks.gpu_run "$@"
