"""Flux and colour of isolated white stars, by brightness: what a photometrist checks first.

The quality benchmark pools many stars, mostly faint, so its median flux hides how the
brightest ones fare, and its scenes' stars have their own colours. Here one white star (equal
in R, G and B) sits on a flat sky of 1000 with noise sigma 10, for several PSFs and peak
heights; its flux is summed within 15 px, less the median of a 25-40 px annulus, in input and
output alike. A restoration should keep the flux (ratio 1) and the colour (the channels'
ratios equal: spread 0).

    python scripts/star_photometry.py --model small --out bench

Writes ``OUT/star_photometry.md`` (mean flux ratio over the channels, and their spread:
max - min over the mean, each the median of ``--realizations`` noise draws).
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from astroswin.engine import RestoreSettings, load_model, restore_array

SKY, NOISE, SIZE = 1000.0, 10.0, 128
PEAKS_SIGMA = (10, 100, 1000, 10000)
#: name, radial profile of the unit-peak star at radius r (px)
PSFS = (
    ("Gaussian FWHM 2.4", lambda r: np.exp(-(r**2) / 2.0)),
    ("Gaussian FWHM 3.5", lambda r: np.exp(-(r**2) / (2 * 1.5**2))),
    ("Gaussian FWHM 5.9", lambda r: np.exp(-(r**2) / (2 * 2.5**2))),
    ("Moffat FWHM 3.5, beta 3", lambda r: (1 + (r / (3.5 / (2 * np.sqrt(2 ** (1 / 3) - 1)))) ** 2) ** -3.0),
)


def measure(model, profile, peak: float, seed: int) -> np.ndarray:
    """``(3,)`` flux ratio, output over input, of one white star in each channel."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    r = np.hypot(yy - 64.3, xx - 63.7)
    star = peak * profile(r)
    rng = np.random.default_rng(seed)
    image = np.stack([SKY + star + NOISE * rng.standard_normal((SIZE, SIZE)) for _ in range(3)]).astype(np.float32)
    out = restore_array(image, model, RestoreSettings(device="cpu", compile="off"))
    inside, annulus = r < 15, (r > 25) & (r < 40)

    def flux(channel):
        return float((channel[inside] - np.median(channel[annulus])).sum())

    return np.array([flux(o) / flux(i) for o, i in zip(out, image)])


@click.command()
@click.option("--model", "model_name", default="small", show_default=True, help="Bundled name or model folder.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("bench"), show_default=True)
@click.option("--realizations", default=4, show_default=True)
def main(model_name: str, out: Path, realizations: int) -> None:
    model = load_model(model_name)
    lines = ["| PSF | " + " | ".join(f"peak {p:g} sigma" for p in PEAKS_SIGMA) + " |", "|---|" + "---:|" * len(PEAKS_SIGMA)]
    for name, profile in PSFS:
        cells = []
        for peak in PEAKS_SIGMA:
            ratios = np.array([measure(model, profile, peak * NOISE, seed) for seed in range(realizations)])
            spread = (ratios.max(1) - ratios.min(1)) / ratios.mean(1)
            cells.append(f"{np.median(ratios.mean(1)):.3f} / {np.median(spread):.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    out.mkdir(parents=True, exist_ok=True)
    (out / "star_photometry.md").write_text(f"Model `{model_name}`: flux ratio (mean of R, G, B) / colour spread (max - min over mean) of a white star\n\n{table}\n")
    click.echo(table)


if __name__ == "__main__":
    main()
