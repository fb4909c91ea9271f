#!/usr/bin/env bash
# GPU check: CUDA parity vs the CPU reference, TensorRT engines if installed, torch-CUDA batch-1
# latency (p50/p99), batched multi-stream through the live worker (streams 1, 4, 16, 64), the live
# bench scenarios on the GPU (one room: mask age, missed deadlines; rooms by capacity), backend
# benchmark. Usage: tools/gpu_check.sh [OUT_DIR]  (default: $OUT if set, else out/gpu_check).
# Installs nothing; needs PyTorch with CUDA + numpy. Bounded to 8 minutes (sections stop at
# 420 s, the process is killed at 470 s); results in OUT_DIR/gpu_check.json and gpu_check.log.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-out/gpu_check}}"
mkdir -p "$OUT_DIR"
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
if ! command -v nvidia-smi >/dev/null 2>&1 && [ ! -e /proc/driver/nvidia/version ]; then
  echo "gpu_check: no NVIDIA driver on this machine (no nvidia-smi, no /proc/driver/nvidia) - nothing to check" >&2
  exit 2
fi
"$PY" -c "import torch, numpy" 2>/dev/null || { echo "gpu_check: $PY cannot import torch and numpy" >&2; exit 2; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT_DIR/nvidia-smi.csv" 2>/dev/null || true
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}" OMP_WAIT_POLICY=PASSIVE  # torch + ORT share the process
timeout --signal=TERM --kill-after=10 470 "$PY" tools/gpu_check.py "$OUT_DIR" --budget-s 420 2>&1 | tee "$OUT_DIR/gpu_check.log"
rc=${PIPESTATUS[0]}
[ "$rc" = 124 ] && echo "gpu_check: stopped at the 8-minute bound; partial results in $OUT_DIR" >&2
exit "$rc"
