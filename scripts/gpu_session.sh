#!/usr/bin/env bash
# What to run, once, on a lent GPU machine (through the device tool, from the repo root):
#   bash scripts/gpu_session.sh [STAGE] [MINUTES]
# It resumes training from the committed resume state (train/resume/last.pt) on the GPU with a
# large batch and data made by 12 worker processes, exports the weights, checks fp16/bf16
# against fp32, measures throughput, and leaves everything in $OUT to bring back:
#   $OUT/last.pt (resume state), $OUT/model.safetensors + config.json, $OUT/gpu_checks.json,
#   $OUT/train.csv, $OUT/val.csv. Copy them into train/resume/ and engine/weights/<name>/.
# The machine has torch/transformers/scipy but not galsim or astropy: galaxies are left out of
# the scene mix there (the CPU runs keep them).
set -euo pipefail
stage="${1:-stage3}"
minutes="${2:-6}"
out="${OUT:-/tmp/astroswin-out}"
mkdir -p "$out" runs/gpu
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null
[ -f runs/gpu/last.pt ] || cp train/resume/last.pt runs/gpu/last.pt
step=$(python3 -c "import torch; print(torch.load('runs/gpu/last.pt', weights_only=False)['step'])")
# About 8 steps/s at batch 64 on an H100 for the small model: budget the steps by the minutes.
steps=$((step + minutes * 60 * 8))
timeout $((minutes * 60 + 120)) python3 -m astroswin.train "train/configs/$stage.toml" --out runs/gpu --resume \
  --steps "$steps" --set data.batch_size=64 --set data.workers=12 --set 'data.kinds={stars=1.0, nebula=1.0}' \
  --set log.val_every=500 --set log.checkpoint_every=200 || echo "training stopped (timeout or error): keeping the last checkpoint"
python3 -m astroswin export runs/gpu/last.pt --out "$out/model"
cp runs/gpu/last.pt runs/gpu/train.csv runs/gpu/val.csv "$out/" 2>/dev/null || true
python3 scripts/gpu_checks.py --model "$out/model" --out "$out/gpu_checks.json"
