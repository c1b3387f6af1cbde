#!/usr/bin/env bash
# GPU readiness in one command (issue 13): trainer, sweep, image models and a job through `narrownet serve` on
# CUDA; writes bench/results/gpu.json. `--cpu`: the same at tiny sizes on the CPU (what the test suite runs).
#   bench/gpu_check.sh [--cpu] [--out PATH]
# Needs the virtual environment (`make setup`; on a CUDA machine with the CUDA lock, see README).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${NARROWNET_PYTHON:-.venv/bin/python}"
if [ ! -x "$PY" ]; then
    echo "gpu_check: $PY not found; run \`make setup\` first" >&2
    exit 2
fi
# The whole check must finish within 5 minutes on a GPU machine.
exec env OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" timeout 300 "$PY" bench/gpu_check.py "$@"
