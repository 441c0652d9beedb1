#!/usr/bin/env bash
# What to run, once, on a lent GPU machine (through the device tool, from the repo root):
#   bash scripts/gpu_session.sh TRAIN_SECONDS RUN [RUN ...]
# RUN is a config in train/configs (e.g. `stage0`, `sharpen_bright`), optionally `CONFIG=INIT`
# to start that fine-tune from another checkpoint than its config's `init`, then any number of
# `+KEY=VALUE` config overrides: `sharpen_linear=train/resume/last.pt+loss.weights.linear_sharp=1`.
# The runs train side by side on the one GPU (the small model is launch-bound there, so two
# runs cost little more than one), sharing the data workers, each sized to end inside
# TRAIN_SECONDS. Size the device call at TRAIN_SECONDS + 280 s: install, data probe, the last
# validation and export took ~190 s beyond 330 s of training on 2026-11-27, and the 2048 px
# checks ~45 s more (that call, 560 s, ran out during the checks; the checkpoints came back).
# With galaxies in the mix the workers make ~400 examples/s, not ~900 (2026-11-28: two runs, 290
# s asked, 244 steps of 192 each). Try it here first, on the CPU, before spending device time (a
# config error there cost a machine start): `OUT=/tmp/dry WORKERS=2 BATCH=4 bash
# scripts/gpu_session.sh 20 RUN ...` trains a few steps and stops at the GPU checks.
# A config without `init` resumes runs/gpu-CONFIG/last.pt, else its committed state
# (train/resume/CONFIG.pt, or train/resume/last.pt when that is the same config's), else starts
# from its `model`, freshly initialised.
# Set LR to override every run's peak learning rate (a batch of 192 takes larger steps).
# Everything to bring back lands in $OUT (the device tool returns at most 8 files): per run
# $OUT/NAME/{last.pt,train.csv,val.csv}, then $OUT/gpu_checks.json (fp16/bf16 against fp32,
# throughput; first run's model) and $OUT/session.log (with each run's last log lines).
# The machine has torch/transformers/scipy but not galsim or astropy: `bash
# scripts/pack_gpusite.sh` here packs them into .gpusite/ (carry it; unpacked there into
# /tmp/site). Without them galaxies are left out of the scene mix, and validation follows the
# trained kinds.
set -uo pipefail
seconds="${1:?usage: gpu_session.sh TRAIN_SECONDS RUN [RUN ...]}"
shift
[ $# -gt 0 ] || { echo "usage: gpu_session.sh TRAIN_SECONDS RUN [RUN ...]" >&2; exit 2; }
# Measured on an H200 (2026-11-26): at batch 64 a step took 0.25 s whatever the data rate
# (launch-bound), 256 examples/s against 908/s that 14 workers made: batch 192 uses the data.
batch="${BATCH:-192}"
workers="${WORKERS:-14}"
out="${OUT:-/tmp/astroswin-out}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
exec > >(tee "$out/session.log") 2>&1
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null || exit 1
if compgen -G ".gpusite/*.zip" >/dev/null; then
  python3 -c "import glob, zipfile; [zipfile.ZipFile(f).extractall('/tmp/site') for f in glob.glob('.gpusite/*.zip')]"
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
# 1 when galaxies can be made here (galsim imports), read by the Python snippets below.
export GALAXIES=$(python3 -c "import galsim" 2>/dev/null && echo 1 || echo 0)
echo "galaxies in the scene mix: $GALAXIES"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
per_run=$((workers / $#))
# Examples per second that the workers make (scenes are made on the CPU), shared by the runs.
rate=$(python3 - "$1" "$workers" <<'PY'
import multiprocessing as mp, os, sys, time
from astroswin.train.config import load_config
from astroswin.train.data import synthetic_example
cfg = load_config(f"train/configs/{sys.argv[1].split('=')[0]}.toml")
cfg.data.kinds = {k: v for k, v in cfg.data.kinds.items() if k != "galaxy" or os.environ["GALAXIES"] == "1"}
workers = int(sys.argv[2])
def make(seed):
    synthetic_example(seed, cfg.data, cfg.degrade)
with mp.Pool(workers) as pool:
    pool.map(make, range(workers * 4))
    t = time.perf_counter(); n = workers * 120
    pool.map(make, range(10**6, 10**6 + n), chunksize=8)
    print(f"{n / (time.perf_counter() - t):.0f}")
PY
) || exit 1
echo "[${SECONDS}s] data: $rate examples/s with $workers workers, shared by $# runs"
names=(); pids=()
for run in "$@"; do
  IFS=+ read -r head overrides <<<"$run"
  config="${head%%=*}"; init=""; [ "$head" != "$config" ] && init="${head#*=}"
  name="$config"; while [[ " ${names[*]:-} " == *" $name "* ]]; do name="${name}_"; done
  names+=("$name")
  dir="runs/gpu-$name"; mkdir -p "$dir" "$out/$name"
  # Kinds (galaxies only where galsim imports), the run's first step, and its last (sized to the data rate).
  read -r kinds steps < <(python3 - "$config" "$dir" "$rate" "$#" "$seconds" "$batch" <<'PY'
import os, shutil, sys, torch
from astroswin.train.config import load_config
config, folder, rate, runs, seconds, batch = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
cfg = load_config(f"train/configs/{config}.toml")
last = os.path.join(folder, "last.pt")
if not cfg.init and not os.path.exists(last):
    # The committed state of this config: its own file, or sharpen_linear's last.pt.
    for state in (f"train/resume/{config}.pt", "train/resume/last.pt"):
        if os.path.exists(state) and torch.load(state, map_location="cpu", weights_only=False)["config"]["name"] == config:
            shutil.copy(state, last)
            break
start = torch.load(last, map_location="cpu", weights_only=False)["step"] if os.path.exists(last) else 0
kinds = ",".join(f"{k}={v}" for k, v in cfg.data.kinds.items() if k != "galaxy" or os.environ["GALAXIES"] == "1")
print(f"data.kinds={{{kinds}}}", start + int(0.8 * rate / runs * seconds / batch))
PY
  ) || exit 1
  extra=(); [ -n "$init" ] && extra+=(--set "init=$init"); [ -n "${LR:-}" ] && extra+=(--set "optim.lr=$LR")
  [ -n "$overrides" ] && for o in ${overrides//+/ }; do extra+=(--set "$o"); done
  echo "[${SECONDS}s] $name: training to step $steps in $dir ${extra[*]:-}"
  ( timeout --foreground -k 30 $((seconds + 90)) python3 -m astroswin.train "train/configs/$config.toml" --out "$dir" --resume \
      --steps "$steps" --set data.batch_size=$batch --set data.workers=$per_run --set "$kinds" \
      --set log.val_every=250 --set log.checkpoint_every=100 --set log.every=50 "${extra[@]}" \
      > "$dir/train.log" 2>&1 || echo "$name: training stopped (timeout or error): keeping the last checkpoint"
    cp "$dir"/last.pt "$dir"/train.csv "$dir"/val.csv "$out/$name/" 2>/dev/null
    python3 -m astroswin export "$dir/last.pt" --out "$dir/model" --overwrite >/dev/null ) &
  pids+=($!)
done
# Only these: a bare `wait` also waits for the `tee` above, which never ends (the 2026-11-28
# run hung there until the device call's limit, and its checks never ran).
wait "${pids[@]}"
echo "[${SECONDS}s] training, validation and export done"
for name in "${names[@]}"; do echo "== $name"; tail -n 4 "runs/gpu-$name/train.log"; done
python3 scripts/gpu_checks.py --model "runs/gpu-${names[0]}/model" --out "$out/gpu_checks.json" --no-compile --size 2048
