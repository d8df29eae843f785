#!/usr/bin/env bash
# One call checks the GPU: gpu-marked tests, CUDA rasterizer parity and bandwidth, engine
# latency (X3D-s, SlowOnly at batch 1/8/32) and the 25-fps streams one GPU sustains, in one
# JSON report. See benchmarks/gpu_check.py for the sections; arguments are passed through:
#
#   benchmarks/gpu_check.sh [--out gpu_report.json] [--budget-s 450] [--device 0] [--quick]
#
# Runs with the repository's virtual environment when it has one (.venv), else $PYTHON, else
# python3; a bare checkout works too (the script maps the package itself).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -n "${PYTHON:-}" ]; then
    py="$PYTHON"
elif [ -x "$root/.venv/bin/python" ]; then
    py="$root/.venv/bin/python"
else
    py="$(command -v python3 || command -v python)"
fi
cd "$root"
exec "$py" "$root/benchmarks/gpu_check.py" "$@"
