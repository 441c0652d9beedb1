#!/usr/bin/env bash
# Re-measure everything in bench/ and docs/ that depends on the bundled weights, after they change.
#
#   bash scripts/refresh_bench.sh [MODEL] [OUT]
#
# Two lanes of one thread each, for a 2-core machine (17 min there on 2026-11-30):
#   1. the quality benchmark on its own seeds -> bench/quality.md, faint.md, scene PNGs, and the
#      README's three scene pictures (docs/quality_*.png); then the star photometry;
#   2. the same benchmark on the held-out seeds; then the trail photometry and the demo's
#      before/after picture (docs/demo_before_after.png).
# The held-out and photometry tables go to OUT (default runs/refresh): bench/heldout.md,
# star_photometry.md and trail_photometry.md keep every bundle's table, each under the words that
# say which weights it measured and what changed, so the new ones go on top of them by hand.
# The README's and MODEL_CARD's tables are edited by hand from these files: they say what changed
# and why, which a script cannot. scripts/correlated_noise.py compares models, so it is run by
# hand with the old and the new weights.
set -euo pipefail
model="${1:-small}"
out="${2:-runs/refresh}"
export OMP_NUM_THREADS=1
mkdir -p "$out"

(
  python scripts/benchmark_quality.py --model "$model" --out bench --threads 1
  cp bench/scene1_stars.png docs/quality_stars.png
  cp bench/scene5_galaxy.png docs/quality_galaxy.png
  cp bench/scene7_nebula.png docs/quality_nebula.png
  python scripts/star_photometry.py --model "$model" --out "$out"
) > "$out/lane1.log" 2>&1 &
first=$!

(
  python scripts/benchmark_quality.py --model "$model" --out "$out" --threads 1 --seed-base 3000000007
  python scripts/trail_photometry.py --model "$model" --out "$out"
  demo=$(mktemp -d)
  astroswin demo --model "$model" --out "$demo" --device cpu
  cp "$demo/sample_before_after.png" docs/demo_before_after.png
  rm -rf "$demo"
) > "$out/lane2.log" 2>&1 &
second=$!

status=0
wait "$first" || { echo "lane 1 failed: $out/lane1.log" >&2; status=1; }
wait "$second" || { echo "lane 2 failed: $out/lane2.log" >&2; status=1; }
exit "$status"
