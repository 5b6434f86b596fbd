#!/usr/bin/env bash
# The demo: a site-adapted APNet from a real video, on the CPU, in minutes.
#   1. mine person tracks from the video into a pseudo-labelled re-ID folder (YOLOX-nano person detector)
#   2. train a small APNet-C (ResNet-18, 128x64) on the training tracks, measuring mAP before and after
#   3. export it to ONNX (parity-checked against PyTorch on real crops), quantize it to INT8 for the CPU
#   4. the accuracy gate: INT8 against FP32 on the held-out tracks (cosine and mAP), then a latency benchmark
# Every step is cached in $OUT: a second run only repeats what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
OUT=${OUT:-demo_out}
EPOCHS=${EPOCHS:-40}

find_video() {
  for v in "${VIDEO:-}" ../shared/data/vtest.avi /usr/share/doc/opencv-doc/examples/data/vtest.avi; do
    [ -n "$v" ] && [ -f "$v" ] && { echo "$v"; return; }
  done
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "installing Debian's opencv-doc for its sample video vtest.avi" >&2
    apt-get update -qq >/dev/null && apt-get install -y -qq opencv-doc >/dev/null
    [ -f /usr/share/doc/opencv-doc/examples/data/vtest.avi ] && { echo /usr/share/doc/opencv-doc/examples/data/vtest.avi; return; }
  fi
  echo "no video found: set VIDEO=path/to/video (or install Debian's opencv-doc)" >&2
  exit 2
}
VIDEO=$(find_video)
DETECTOR=${DETECTOR:-../shared/models/yolox_nano.onnx}
[ -f "$DETECTOR" ] || { echo "no person detector at $DETECTOR: set DETECTOR=path/to/yolox.onnx" >&2; exit 2; }
mkdir -p "$OUT"
export MPLCONFIGDIR="$OUT/.mpl"
echo "video: $VIDEO    detector: $DETECTOR    output: $OUT"

echo "== 1/4 mine person tracks"
[ -f "$OUT/site/mining.json" ] || $BIN/apnet-edge mine --video "$VIDEO" --detector "$DETECTOR" --out "$OUT/site"

echo "== 2/4 train APNet-C (ResNet-18, 128x64) on the mined tracks, $EPOCHS epochs"
$BIN/apnet-edge train --config configs/cpu_small.yaml --data-root "$OUT/site" --output "$OUT/run" --resume \
  "solver.max_epochs=$EPOCHS" train.eval_at_start=true "train.eval_period=$EPOCHS" "solver.steps=[$((EPOCHS * 3 / 4))]"

echo "== 3/4 export to ONNX and quantize to INT8"
[ -f "$OUT/apnet.onnx" ] || $BIN/apnet-edge export --checkpoint "$OUT/run/best.pt" --out "$OUT/apnet.onnx" \
  --parity-dir "$OUT/site/query"
[ -f "$OUT/apnet.int8.onnx" ] || $BIN/apnet-edge quantize --onnx "$OUT/apnet.onnx" --calib "$OUT/site/bounding_box_train" \
  --target cpu --out "$OUT/apnet.int8.onnx"

echo "== 4/4 accuracy gate and benchmark"
$BIN/apnet-edge eval --model "$OUT/apnet.int8.onnx" --dataset folder --data-root "$OUT/site" --json "$OUT/eval_int8.json"
$BIN/apnet-edge verify --reference "$OUT/apnet.onnx" --candidate "$OUT/apnet.int8.onnx" --data "$OUT/site" --labelled \
  --json "$OUT/gate.json"
$BIN/apnet-edge bench --model "$OUT/apnet.onnx" --compare "$OUT/apnet.int8.onnx" --batch 1,16 --seconds 1 \
  --json "$OUT/bench.json"
echo "done: see $OUT (run/log.csv, run/curves.png, gate.json, bench.json)"
