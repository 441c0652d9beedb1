#!/usr/bin/env bash
# Re-measure everything in bench/ and docs/ that depends on the bundled weights, after they change.
#
#   bash scripts/refresh_bench.sh [MODEL] [HELDOUT_DIR]
#
# Two lanes of one thread each, for a 2-core machine (about 25 min there):
#   1. the quality benchmark on its own seeds -> bench/quality.md, faint.md, scene PNGs, and the
#      README's three scene pictures (docs/quality_*.png); then the star photometry;
#   2. the same benchmark on the held-out seeds -> HELDOUT_DIR (its table goes on top of
#      bench/heldout.md by hand, with the words that say which weights it measured); then the
#      trail photometry and the demo's before/after picture (docs/demo_before_after.png).
# The README's and MODEL_CARD's tables are edited by hand from these files: they say what changed
# and why, which a script cannot. scripts/correlated_noise.py compares models, so it is run by
# hand with the old and the new weights.
set -euo pipefail
model="${1:-small}"
heldout="${2:-runs/heldout}"
export OMP_NUM_THREADS=1
mkdir -p "$heldout"

(
  python scripts/benchmark_quality.py --model "$model" --out bench --threads 1
  cp bench/scene1_stars.png docs/quality_stars.png
  cp bench/scene5_galaxy.png docs/quality_galaxy.png
  cp bench/scene7_nebula.png docs/quality_nebula.png
  python scripts/star_photometry.py --model "$model" --out bench
) > "$heldout/lane1.log" 2>&1 &
first=$!

(
  python scripts/benchmark_quality.py --model "$model" --out "$heldout" --threads 1 --seed-base 3000000007
  python scripts/trail_photometry.py --model "$model" --out bench
  demo=$(mktemp -d)
  astroswin demo --model "$model" --out "$demo" --device cpu
  cp "$demo/sample_before_after.png" docs/demo_before_after.png
  rm -rf "$demo"
) > "$heldout/lane2.log" 2>&1 &
second=$!

status=0
wait "$first" || { echo "lane 1 failed: $heldout/lane1.log" >&2; status=1; }
wait "$second" || { echo "lane 2 failed: $heldout/lane2.log" >&2; status=1; }
exit "$status"
