"""Restoring a registered stack: noise correlated between neighbouring pixels, against white.

Real linear images are stacks. Registration resamples every subexposure by a sub-pixel offset
before they are averaged, and interpolation averages neighbours: the stack's noise is
correlated and comes in smooth blobs that white noise never makes (debayering and drizzle do
the same). The quality benchmark's scenes have white noise only, as the shipped model's
training data had. This script takes its scenes (``benchmark_quality.py``: the same seeds,
PSFs and light) and gives each the noise of the same exposure three ways: white, and stacked
from 16 subexposures registered with bilinear or cubic interpolation
(:func:`astroswin.train.degrade.stacked_noise`, as the ``stacked`` training config makes it).

Per model and noise it reports PSNR, the star metrics of ``benchmark_quality.py``, and
**spurious peaks**: local maxima of the result minus the truth (luminance, 3 px apart) that
stand more than one noise sigma of the white case above it, more than 4 px from any true
star's light (> 0.05 sigma). A model that takes noise blobs for faint stars makes them.

    python scripts/correlated_noise.py --model small --out bench
    python scripts/correlated_noise.py --model small --model runs/stacked/model --out runs/stacked

Writes ``OUT/correlated_noise.md``. A measurement of the data's realism, not a speed test.
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
from benchmark_quality import (
    READ_NOISE,
    SCENES,
    SEED_BASE,
    make_case,
    markdown,
    psnr_ssim,
    scaled_scene,
    star_table,
    summarise,
)
from scipy.ndimage import binary_dilation

from astroswin.engine import RestoreSettings, load_model, restore_array
from astroswin.engine.measure import find_stars
from astroswin.engine.normalize import estimate_stretch
from astroswin.train.degrade import convolve, stacked_noise

#: Quality-benchmark scenes measured: three star fields (spurious peaks are told from faint
#: stars there) and a galaxy field.
SCENE_INDICES = (1, 2, 3, 4)
SUBEXPOSURES = 16


def noiseless(seed: int, kind: str, size: int, brightness: float, kernel: np.ndarray, sky: float) -> np.ndarray:
    """The observation :func:`benchmark_quality.make_case` makes, before its noise."""
    scene, _ = scaled_scene(seed, kind, size, brightness)
    return convolve(scene, [kernel] * scene.shape[0]) + sky


def spurious_peaks(result: np.ndarray, truth: np.ndarray, background: np.ndarray, sigma: float) -> int:
    """Peaks of ``result - truth`` above ``sigma``, away from every true star's light."""
    residual = (result - truth).mean(0)
    near_stars = binary_dilation((truth - background).mean(0) > 0.05 * sigma, iterations=4)
    return len(find_stars(np.where(near_stars, 0.0, residual), threshold=sigma, min_separation=3, border=8, max_stars=100_000))


@click.command()
@click.option("--model", "models", multiple=True, default=("small",), show_default=True, help="Model(s) to compare (name, folder or hub id).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("bench"), show_default=True)
@click.option("--size", default=192, show_default=True, help="Scene size in pixels (as benchmark_quality.py).")
@click.option("--realizations", default=4, show_default=True)
def main(models: tuple[str, ...], out: Path, size: int, realizations: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    loaded = {name: load_model(name) for name in models}
    settings = RestoreSettings(device="cpu")
    rows = []
    for index in SCENE_INDICES:
        name, kind, blur, sky, gain, brightness = SCENES[index]
        found: dict[tuple[str, str], dict[str, list]] = {}
        for k in range(realizations):
            seed = SEED_BASE + index + 1000 * k
            case = make_case(seed, kind, blur, sky, gain, size, brightness)
            light = noiseless(seed, kind, size, brightness, case.kernel, sky)
            sigma_map = np.sqrt(np.clip(light, 0, None) / gain + READ_NOISE**2)
            rng = np.random.default_rng(seed + 1)
            observations = {
                "white": case.observed,
                "stacked, bilinear": light + stacked_noise(rng, sigma_map, SUBEXPOSURES, 1),
                "stacked, cubic": light + stacked_noise(rng, sigma_map, SUBEXPOSURES, 3),
            }
            white_sigma = float(sigma_map.mean())
            for noise, observed in observations.items():
                params = estimate_stretch(observed)
                for label, model in loaded.items():
                    result = restore_array(observed.astype(np.float32), model, settings).astype(np.float64)
                    entry = found.setdefault((label, noise), dict(stars=[], psnr=[], spurious=[], sigma=[]))
                    entry["stars"].append(star_table(result, case.truth, case.background, case.noise))
                    entry["psnr"].append(psnr_ssim(result, case.truth, params)[0])
                    entry["spurious"].append(spurious_peaks(result, case.truth, case.background, white_sigma))
                    entry["sigma"].append(float((observed - light).std()) / white_sigma)
        for (label, noise), entry in found.items():
            summary = summarise(np.concatenate(entry["stars"]))
            rows.append(dict(scene=name, model=label, noise=noise, sigma=round(float(np.mean(entry["sigma"])), 2), psnr=round(float(np.mean(entry["psnr"])), 2),
                             spurious=round(float(np.mean(entry["spurious"])), 1), **summary))
        click.echo(f"{name}: done", err=True)
    table = markdown(rows, ["scene", "model", "noise", "sigma", "psnr", "spurious", "stars", "fwhm_ratio", "fwhm_ratio_bright", "flux_ratio", "halo"],
                     ["scene", "model", "noise", "pixel sigma / white", "PSNR dB", "spurious peaks per frame", "stars", "FWHM / truth", "FWHM / truth, SNR ≥ 30", "flux / truth", "halo depth"])
    (out / "correlated_noise.md").write_text(table + "\n")
    click.echo(table)


if __name__ == "__main__":
    main()
