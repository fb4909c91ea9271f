#!/usr/bin/env bash
# Every measured table of weights/MODEL_CARD.md for one weights file, in one run (about 30-40
# minutes on 2 CPU cores). Usage: tools/model_card_figures.sh [WEIGHTS] [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
W=${1:-weights/polyp.pt}
OUT=${2:-out/card}
PY=.venv/bin/python
mkdir -p "$OUT"
for k in 0 1 2; do   # validation table: SUN-SEG metrics incl. weighted F and MAE, Dice by size, latency
  .venv/bin/endostream eval model.weights="$W" model.backend=onnxruntime model.steps=$k model.warm_start=false \
      out="$OUT/eval_k$k.json" > "$OUT/eval_k$k.log" 2>&1
done
$PY tools/run_ablations.py --weights "$W" --backend onnxruntime --threads 2 --only 0 1 2 5 6 7 9 11 12 13 --sizes 256 288 352 \
    --out "$OUT/ablation" > "$OUT/ablation.log" 2>&1
$PY tools/uncertainty_auroc.py --weights "$W" --samples 4 --out "$OUT/uncertainty_k0.json" > "$OUT/uncertainty_k0.log" 2>&1
$PY tools/false_alarms.py --weights "$W" --stretches 100 --negative-frames 75 --out "$OUT/false_alarms.json" > "$OUT/false_alarms.log" 2>&1
echo "figures in $OUT"
