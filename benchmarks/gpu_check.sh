#!/usr/bin/env bash
# The device check, ready for a machine with a GPU (at most ~5 minutes):
#   bash benchmarks/gpu_check.sh             batched vs ASE throughput, largest batch, float32 vs float64, projection
#   bash benchmarks/gpu_check.sh --campaign-cs   the whole CsA'BB'X6 subset (33,520 compositions x 5 tilts) as one campaign
# Set-up first (bash scripts/setup.sh); extra arguments go to benchmarks/gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
if [ "${1:-}" = "--campaign-cs" ]; then
  exec "$PY" benchmarks/gpu_check.py "$@"
fi
exec timeout 300 "$PY" benchmarks/gpu_check.py "$@"
