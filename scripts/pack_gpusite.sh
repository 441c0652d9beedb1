#!/usr/bin/env bash
# Pack galsim and astropy for the lent GPU machine, which has neither and cannot fetch them:
#   bash scripts/pack_gpusite.sh        # then: device run ... with carry [".gpusite"]
# Wheels for its Python 3.12 land in .gpusite/ as *.zip, unpacked there by gpu_session.sh.
# galsim's wheel is 56 MB, mostly debug symbols: stripped, and without its LSST/Roman
# instrument data (never used here), it is 7 MB and the whole folder 16 MB, inside the
# device tool's 64 MiB carry.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx "/.gpusite/" .git/info/exclude 2>/dev/null || echo "/.gpusite/" >> .git/info/exclude
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$work" galsim==2.8.5 astropy==8.0.2 LSSTDESC.Coord pyerfa astropy-iers-data
rm -rf .gpusite && mkdir .gpusite
for wheel in "$work"/*.whl; do
  name=$(basename "$wheel" | cut -d- -f1)
  if [ "$name" = galsim ]; then
    (mkdir "$work/galsim" && cd "$work/galsim" && unzip -q "$wheel" \
      && strip --strip-unneeded galsim/_galsim*.so && rm -rf galsim/share/roman galsim/share/sensors \
      && zip -qr "$OLDPWD/.gpusite/galsim.zip" .)
  else
    cp "$wheel" ".gpusite/$name.zip"
  fi
done
du -sh .gpusite
