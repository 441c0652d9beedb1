#!/usr/bin/env bash
# Run the staged curriculum (stage0 -> stage3) on CPU; resumable: run it again after a kill and
# each stage continues from runs/<stage>/last.pt (a finished stage returns at once).
#
#   bash scripts/train_curriculum.sh [THREADS] [FIRST_STAGE]
#
# A fresh clone can continue the shipped run from the committed resume state:
#   mkdir -p runs/stageN && cp train/resume/last.pt runs/stageN/last.pt   (N: see MODEL_CARD.md)
#   bash scripts/train_curriculum.sh 2 stageN
set -euo pipefail
threads="${1:-1}"
first="${2:-stage0}"
started=0
for stage in stage0 stage1 stage2 stage3; do
  [ "$stage" = "$first" ] && started=1
  [ "$started" = 1 ] || continue
  python -m astroswin.train "train/configs/$stage.toml" --out "runs/$stage" --threads "$threads" --resume
done
