#!/usr/bin/env bash
# What to run, once, on a lent GPU machine (through the device tool, from the repo root):
#   bash scripts/gpu_session.sh [STAGE] [TRAIN_SECONDS]
# It resumes training from the committed resume state (train/resume/last.pt) on the GPU with a
# large batch and data made by 14 worker processes, exports the weights, checks fp16/bf16
# against fp32, measures throughput, and leaves everything in $OUT to bring back:
#   $OUT/last.pt (resume state), $OUT/model/{model.safetensors,config.json},
#   $OUT/gpu_checks.json, $OUT/train.csv, $OUT/val.csv, $OUT/session.log.
# The machine has torch/transformers/scipy but not galsim or astropy: galaxies are left out of
# the scene mix there (the CPU runs keep them), and validation follows the trained kinds.
set -uo pipefail
stage="${1:-stage0}"
seconds="${2:-300}"
# Measured on an H200 (2026-11-26): at batch 64 a step took 0.25 s whatever the data rate
# (the small model is launch-bound on a GPU), 256 examples/s against 908/s that 14 workers
# made: a batch of 192 uses the data the workers make.
batch=192
workers="${WORKERS:-14}"
out="${OUT:-/tmp/astroswin-out}"
mkdir -p "$out" runs/gpu
export PYTHONUNBUFFERED=1
exec > >(tee "$out/session.log") 2>&1
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null || exit 1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
[ -f runs/gpu/last.pt ] || cp train/resume/last.pt runs/gpu/last.pt
kinds='data.kinds={stars=1.0, nebula=1.0}'
# The run is data-bound (scenes are made on the CPU): measure examples per second with the
# workers, and size the run (and so its cosine schedule) to end inside the time given.
steps=$(python3 - "$stage" "$seconds" "$batch" "$workers" <<'PY'
import multiprocessing as mp, sys, time, torch
from astroswin.train.config import load_config
from astroswin.train.data import synthetic_example
stage, seconds, batch, workers = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
cfg = load_config(f"train/configs/{stage}.toml")
cfg.data.kinds = {"stars": 1.0, "nebula": 1.0}
def make(seed):
    synthetic_example(seed, cfg.data, cfg.degrade)
with mp.Pool(workers) as pool:
    pool.map(make, range(workers * 4))
    t = time.perf_counter(); n = workers * 120
    pool.map(make, range(10**6, 10**6 + n), chunksize=8)
    rate = n / (time.perf_counter() - t)
step = torch.load("runs/gpu/last.pt", weights_only=False)["step"]
print(f"data: {rate:.0f} examples/s with {workers} workers", file=sys.stderr)
print(step + int(0.8 * rate * seconds / batch))
PY
) || exit 1
echo "training to step $steps"
timeout --foreground -k 30 $((seconds + 90)) python3 -m astroswin.train "train/configs/$stage.toml" --out runs/gpu --resume \
  --steps "$steps" --set data.batch_size=$batch --set data.workers=$workers --set "$kinds" \
  --set log.val_every=500 --set log.checkpoint_every=200 --set log.every=100 \
  || echo "training stopped (timeout or error): keeping the last checkpoint"
cp runs/gpu/last.pt runs/gpu/train.csv runs/gpu/val.csv runs/gpu/val_grid.png "$out/" 2>/dev/null
python3 -m astroswin export runs/gpu/last.pt --out "$out/model" || exit 1
python3 scripts/gpu_checks.py --model "$out/model" --out "$out/gpu_checks.json"
