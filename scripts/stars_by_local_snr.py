"""Star FWHM by SNR against the *local* noise, on the quality benchmark's scenes.

``benchmark_quality.py`` sets a star's SNR against the frame's background noise, which leaves
out the shot noise of a nebula or galaxy the star sits on: every star on the benchmark's
nebulae is "SNR >= 30" there. Here the aperture's noise is the observed frame's true variance
(shot noise of the blurred scene plus sky at the scene's gain, and read noise), so a star on
bright emission is as faint as it really is. Run it to tell a noise limit (stars at low local
SNR stay wide, as on star fields) from a restoration limit (bright stars stay wide):

    python scripts/stars_by_local_snr.py --model small

prints, per scene, the median FWHM ratio to the truth in bins of local SNR.
"""

from __future__ import annotations

import click
import numpy as np
from benchmark_quality import READ_NOISE, SCENES, SEED_BASE, make_case, point_sources

from astroswin.engine import RestoreSettings, load_model, restore_array
from astroswin.engine.emission import EMISSION_SCALE
from astroswin.engine.measure import aperture_flux, fwhm

BINS = (0.0, 10.0, 30.0, 100.0, np.inf)


def local_snr_and_fwhm(truth, observed, restored, background, gain: float) -> np.ndarray:
    """``(N, 2)``: each point source's local SNR and its restored FWHM over the truth's, both
    measured with ``background`` (the sky and the light under the stars,
    ``benchmark_quality.Case.background``) taken out, as the benchmark measures them."""
    lum_t, lum_r = (truth - background).mean(0), (restored - background).mean(0)
    variance = (np.clip(observed, 0, None) / gain + READ_NOISE**2).sum(0) / observed.shape[0] ** 2
    yy, xx = np.mgrid[: lum_t.shape[0], : lum_t.shape[1]]
    rows = []
    for y, x, ft, r in point_sources(lum_t):
        snr = aperture_flux(lum_t, y, x, r) / np.sqrt(variance[(yy - y) ** 2 + (xx - x) ** 2 <= r * r].sum())
        fr = fwhm(lum_r, y, x, radius=6)
        rows.append((snr, fr / ft if np.isfinite(fr) else np.inf))
    return np.array(rows, dtype=np.float64).reshape(-1, 2)


@click.command()
@click.option("--model", "model_name", default="small", show_default=True)
@click.option("--realizations", default=4, show_default=True)
@click.option("--threads", default=None, type=int)
@click.option("--seed-base", default=SEED_BASE, show_default=True, help="As benchmark_quality.py's: 3000000007 gives its held-out scenes.")
@click.option("--kind", "kinds", multiple=True, type=click.Choice(["stars", "galaxy", "nebula"]), help="Only scenes of this kind (stars, galaxy, nebula); repeatable. Default: all.")
@click.option("--emission-scale", default=EMISSION_SCALE, show_default=True, type=click.IntRange(min=0), help="The engine's emission window (px); 0 = off.")
def main(model_name: str, realizations: int, threads: int | None, seed_base: int, kinds: tuple[str, ...], emission_scale: int) -> None:
    model = load_model(model_name)
    settings = RestoreSettings(device="cpu", threads=threads, emission_scale=emission_scale)
    for index, (name, kind, blur, sky, gain, brightness) in enumerate(SCENES):
        if kinds and kind not in kinds:
            continue
        stars = []
        for k in range(realizations):
            truth, observed, _, background, _ = make_case(seed_base + index + 1000 * k, kind, blur, sky, gain, 192, brightness)
            restored = restore_array(observed.astype(np.float32), model, settings).astype(np.float64)
            stars.append(local_snr_and_fwhm(truth, observed, restored, background, gain))
        table = np.concatenate(stars)
        cells = []
        for lo, hi in zip(BINS[:-1], BINS[1:]):
            sel = table[(table[:, 0] >= lo) & (table[:, 0] < hi)]
            if len(sel):
                cells.append(f"SNR {lo:g}-{hi:g}: {len(sel)} stars, FWHM {np.median(sel[:, 1]):.2f}x")
        click.echo(f"{name} | " + "; ".join(cells))


if __name__ == "__main__":
    main()
