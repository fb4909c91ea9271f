#!/usr/bin/env bash
# Train the segmenter on a lent GPU machine in one device call (#24): the data packed under the
# transfer limit, the packages its image lacks carried as wheels, the weights back in $OUT.
#
#   tools/gpu_train.sh prepare                 # here, once: .pack/data (about 21 MiB) and .whl/ (about 6 MiB)
#   tools/gpu_train.sh run [train overrides]   # there: `device run` with carry [".pack", ".whl"], e.g.
#       command: "tools/gpu_train.sh run"   timeout_s: 600   (5 minutes of step time, validations beside)
#
# `run` trains from the shipped weights by default (run I's recipe, the sixth generation's) on
# train.device=cuda with several loader threads, validates on the packed split, and leaves
# $OUT/gpu_train/{best.pt,best.json,log.csv,train.log} (last.pt stays: with its optimizer state
# it is over the 16 MiB a returned file may have). Score what comes back here, on the originals:
#   .venv/bin/endostream export weights=W && .venv/bin/endostream eval model.weights=W model.steps=K
# Nothing depends on this script: every figure the project ships is measured on the CPU.
# Overrides after `run` go to `endostream train` (later ones win). GPU_TRAIN_DEVICE=cpu runs the
# same path on a CPU (the test suite does, with a tiny budget), so only the CUDA part is unrun here.
set -uo pipefail
cd "$(dirname "$0")/.."
mode="${1:-}"
shift || true
# The GPU image's Python is 3.12 (/work/.library/device/KINDS.md); these are the packages
# `endostream train` imports that it lacks, at the versions this project's .venv runs.
WHEELS=(albumentations==2.0.8 albucore==0.0.24 hydra-core==1.3.8 omegaconf==2.3.1 pydantic==2.14.4
        pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 pysodmetrics==1.6.2
        simsimd==6.5.16 stringzilla==5.3.2)

case "$mode" in
prepare)
  PY="${PYTHON:-.venv/bin/python}"
  [ -d .pack/data ] || "$PY" tools/pack_training_data.py --out .pack/data || exit 1
  mkdir -p .whl
  for w in "${WHEELS[@]}"; do
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d .whl "$w" || { echo "gpu_train: cannot download $w" >&2; exit 1; }
  done
  # antlr4 4.9 (omegaconf's pin) is published as source only: built here into a pure-Python wheel.
  "$PY" -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3 || exit 1
  du -sh .pack .whl
  ;;
run)
  OUT_DIR="${OUT:-out}/gpu_train"
  mkdir -p "$OUT_DIR"
  DATA="${GPU_TRAIN_DATA:-.pack/data}"
  [ -d "$DATA" ] || { echo "gpu_train: no $DATA: run 'tools/gpu_train.sh prepare' here and carry .pack" >&2; exit 2; }
  PY="${PYTHON:-python3}"
  if ! "$PY" -c "import albumentations, hydra, pydantic, py_sod_metrics" 2>/dev/null; then
    [ -d .whl ] || { echo "gpu_train: packages missing and no .whl to install them from (carry .whl)" >&2; exit 2; }
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu_train_site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/gpu_train_site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" NO_ALBUMENTATIONS_UPDATE=1 PYTHONUNBUFFERED=1
  DEVICE="${GPU_TRAIN_DEVICE:-cuda}"
  [ "$DEVICE" = cpu ] || nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT_DIR/gpu.txt" 2>&1
  "$PY" -m endostream.cli train train.out="$OUT_DIR/run" data.root="$DATA" data.cache_size=416 \
    train.device="$DEVICE" train.threads=4 train.loader_threads=12 train.init_weights=weights/polyp.pt \
    model.input_size=320 'train.sizes=[288,320,352]' train.lr=0.0004 train.warmup_steps=30 \
    train.budget_minutes=5 train.val_every_minutes=1.5 train.ckpt_every_minutes=1 train.negative_p=0.2 \
    train.mask_loss=structure train.bf16=true "$@" 2>&1 | tr '\r' '\n' | grep -v '^train: ' | tee "$OUT_DIR/train.log"
  rc=${PIPESTATUS[0]}
  for f in best.pt best.json log.csv; do [ -f "$OUT_DIR/run/$f" ] && cp "$OUT_DIR/run/$f" "$OUT_DIR/$f"; done
  rm -rf "$OUT_DIR/run"  # last.pt (optimizer state) is too large to come back; the rest is copied above
  exit "$rc"
  ;;
*)
  echo "usage: tools/gpu_train.sh prepare | run [endostream train overrides]" >&2
  exit 2
  ;;
esac
