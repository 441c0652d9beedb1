"""Regenerate the bundled demo sample ``engine/data/sample.fits``.

A synthetic 320x320 RGB galaxy field (not a scikit-image sample, not a training seed), seen
through a Moffat PSF (FWHM 3.5 px, beta 2.5) with shot and read noise, in linear ADU-like units
with a sky pedestal, plus a simple TAN WCS so the demo shows that WCS survives. The truth's
measured star FWHM is stored as TRUEFWHM.

    python scripts/make_sample.py [--out engine/data/sample.fits]
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
from astropy.io import fits

from astroswin.engine.measure import median_fwhm
from astroswin.train import psf
from astroswin.train.degrade import add_noise, convolve
from astroswin.train.scenes import make_scene

SEED = 20261126


@click.command()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("engine/data/sample.fits"), show_default=True)
def main(out: Path) -> None:
    scene, info = make_scene(SEED, (320, 320), channels=3, kind="galaxy", target_fwhm=1.2)
    rng = np.random.default_rng(SEED)
    kernel = psf.moffat(3.5, 2.5)
    scene = scene * 30.0  # a bright field: the demo should show stars, not only noise
    blurred = convolve(scene, [kernel] * 3)
    sky, gain, read = 40.0, 2.0, 2.0
    data = (add_noise(rng, blurred, sky, gain, read) + 100.0).astype(np.float32)
    header = fits.Header()
    header["OBJECT"] = ("AstroSWIN synthetic sample", "galaxy field, not a real object")
    header["TRUEFWHM"] = (round(median_fwhm((scene + sky).mean(0))[0], 3), "[px] measured star FWHM of the truth")
    header["BLURFWHM"] = (3.5, "[px] FWHM of the Moffat blur (beta 2.5)")
    header["SEED"] = (SEED, "scripts/make_sample.py seed")
    for key, value in dict(CTYPE1="RA---TAN", CTYPE2="DEC--TAN", CRVAL1=10.6847, CRVAL2=41.2690, CRPIX1=160.5, CRPIX2=160.5, CDELT1=-0.0004, CDELT2=0.0004, CUNIT1="deg", CUNIT2="deg").items():
        header[key] = value
    out.parent.mkdir(parents=True, exist_ok=True)
    fits.PrimaryHDU(data=data, header=header).writeto(out, overwrite=True)
    click.echo(f"{out}: {data.shape}, truth FWHM {header['TRUEFWHM']} px, input FWHM {median_fwhm(data.mean(0))[0]:.2f} px")


if __name__ == "__main__":
    main()
