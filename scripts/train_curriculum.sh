#!/usr/bin/env bash
# Run the whole staged curriculum (stage0 -> stage3) on CPU, resumable: rerun after a kill and
# each stage continues from runs/<stage>/last.pt. Usage: bash scripts/train_curriculum.sh [THREADS]
set -euo pipefail
threads="${1:-1}"
for stage in stage0 stage1 stage2 stage3; do
  astroswin-train-stage() { python -m astroswin.train "train/configs/$stage.toml" --out "runs/$stage" --threads "$threads" --resume; }
  astroswin-train-stage
done
