#!/usr/bin/env bash
# Run the staged curriculum (stage0 -> stage3) on CPU; resumable: run it again after a kill and
# each stage continues from runs/<stage>/last.pt (a finished stage returns at once).
#
#   bash scripts/train_curriculum.sh [THREADS] [FIRST_STAGE]
#
# Stage 0's step-6400 state (the start of the sharpening fine-tune, MODEL_CARD.md) is in git
# history; to continue it:
#   mkdir -p runs/stage0 && git show dcae468:train/resume/last.pt > runs/stage0/last.pt
#   bash scripts/train_curriculum.sh 2 stage0   (with --steps N > 6400 by hand, or go on to stage1)
set -euo pipefail
threads="${1:-1}"
first="${2:-stage0}"
started=0
for stage in stage0 stage1 stage2 stage3; do
  [ "$stage" = "$first" ] && started=1
  [ "$started" = 1 ] || continue
  python -m astroswin.train "train/configs/$stage.toml" --out "runs/$stage" --threads "$threads" --resume
done
