"""Satellite trails and hot columns: how much of a line's light comes back, and what it does to the stars beside it.

A satellite or aircraft crossing a subexposure leaves a straight trail as wide as the stars
(its profile across is the PSF's line spread). A restoration should keep its light like any
other light, and leave the faint stars beside it as they would be without it. A hot or bad
column (or row) of the sensor is 1-3 px wide, sharp-edged: whether it is kept or taken out
(the network takes it out, like the hot pixels it was trained on), the stars beside it should
not change. Here a line crosses a 256 px frame on a sky of 1000 with noise sigma 10: trails of
Gaussian profile (FWHM 3.5 px, the stars' own) at several crest heights, along the rows and
at 30 degrees to them, and hot columns of 1-3 px at 300 sigma; faint stars (peak 30 sigma,
FWHM 3.5 px) sit at 9, 12, 16 and 22 px from its axis, two on each side per distance.

- *kept*: the restored light within 12 px of the line's axis over the true light, from a frame
  with the line alone (no stars);
- *stars at D px*: a star's flux within 6 px, taken as the difference between restorations of
  the same noise with and without the stars (so the trail's light is not counted), over its
  true flux; the median of the stars at that distance and of the noise draws. The last row is
  the same stars with no line, for reference.

A second table puts single stars of 100-10^4 sigma on the axis of a trail at 30 degrees: their
flux within 12 px, again from restorations with and without the star.

Each cell is the engine as it ships / the network alone (the trails' put-back,
``engine/trails.py``, and the flux anchor, ``engine/anchor.py``, skipped), the gap between
them being what those two steps do.

    python scripts/trail_photometry.py --model small --out bench

Writes ``OUT/trail_photometry.md``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from unittest import mock

import click
import numpy as np

from astroswin.engine import RestoreSettings, load_model, restore_array

SKY, NOISE, SIZE, FWHM = 1000.0, 10.0, 256, 3.5
GAUSSIAN_SIGMA = FWHM / (2 * np.sqrt(2 * np.log(2)))


def gaussian(d):
    """A trail's profile across: the stars' own, 1 at its crest, of the offset ``d``, px."""
    return np.exp(-0.5 * (d / GAUSSIAN_SIGMA) ** 2)


#: label, crest height in noise sigmas, the profile across the line (1 at its crest) of the
#: offset from its axis, px, and the line's angle to the rows, degrees.
LINES = (
    *((f"trail, {crest} sigma", crest, gaussian, 0.0) for crest in (10, 100, 500, 3000)),
    *((f"trail at 30 degrees, {crest} sigma", crest, gaussian, 30.0) for crest in (10, 100, 500, 3000)),
    *((f"hot column {width} px, 300 sigma", 300, lambda d, w=width: ((d >= -0.5) & (d < w - 0.5)).astype(float), 0.0) for width in (1, 2, 3)),
)
STAR_SIGMA = 30.0
DISTANCES = (9, 12, 16, 22)
#: Half width of the band summed as the trail's light, px (beyond it the trail is < 1e-5 of its crest).
TRAIL_BAND = 12
#: A star on a trail: the trail's angle, degrees, its crests and the stars' peaks, noise sigmas.
ON_TRAIL_ANGLE, ON_TRAIL_CRESTS, ON_TRAIL_PEAKS = 30.0, (0.0, 500.0, 3000.0), (1e2, 1e3, 1e4)
APERTURE = 6


@contextlib.contextmanager
def network_alone():
    """Skip the trails' put-back and the flux anchor inside the block."""
    with mock.patch("astroswin.engine.restore.put_back_trails"), mock.patch("astroswin.engine.restore.scale_band"):
        yield


def frames(angle: float = 0.0) -> tuple[np.ndarray, list[tuple[int, int]], np.ndarray]:
    """The stars ``(H, W)``, their centres, and each pixel's offset from the line's axis, px,
    for a line through the frame's centre at ``angle`` degrees to the rows."""
    yy, xx = np.mgrid[:SIZE, :SIZE].astype(np.float64)
    axis = SIZE // 2
    sin, cos = np.sin(np.deg2rad(angle)), np.cos(np.deg2rad(angle))
    spots = [(30 + 50 * i + 25 * (side > 0) - axis, side * d) for i, d in enumerate(DISTANCES) for side in (-1, 1)]  # along, across
    centres = [(int(round(axis + s * sin + d * cos)), int(round(axis + s * cos - d * sin))) for s, d in spots]
    stars = sum(STAR_SIGMA * NOISE * np.exp(-0.5 * ((yy - y - 0.2) ** 2 + (xx - x + 0.1) ** 2) / GAUSSIAN_SIGMA**2) for y, x in centres)
    return stars, centres, (yy - axis) * cos - (xx - axis) * sin


def restore(model, image: np.ndarray, alone: bool) -> np.ndarray:
    """``image`` restored on the CPU, by the engine or by the network alone; float64."""
    with network_alone() if alone else contextlib.nullcontext():
        return restore_array(image.astype(np.float32), model, RestoreSettings(device="cpu", compile="off")).astype(np.float64)


def on_the_trail(model, crest: float, peaks: tuple[float, ...], seeds: range, alone: bool) -> list[float]:
    """Median flux ratio, over ``seeds``, of a star of each of ``peaks`` noise sigmas (FWHM 3.5
    px) on the axis of a trail of ``crest`` sigmas at 30 degrees: the star's light within 12 px,
    taken as the difference between restorations with and without it (the trail in both; the
    one without is restored once per seed for every peak)."""
    _, _, across = frames(ON_TRAIL_ANGLE)
    yy, xx = np.mgrid[:SIZE, :SIZE].astype(np.float64)
    t = np.deg2rad(ON_TRAIL_ANGLE)
    cy, cx = SIZE // 2 + 40 * np.sin(t) + 0.3, SIZE // 2 + 40 * np.cos(t) - 0.2  # on the axis, 40 px from the centre
    star = NOISE * np.exp(-0.5 * ((yy - cy) ** 2 + (xx - cx) ** 2) / GAUSSIAN_SIGMA**2)  # a peak of 1 sigma
    inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= 12**2
    trail = crest * NOISE * gaussian(across)
    ratios = [[] for _ in peaks]
    for seed in seeds:
        sky = SKY + trail + NOISE * np.random.default_rng(seed).standard_normal((SIZE, SIZE))
        without = restore(model, sky, alone)
        for ratio, peak in zip(ratios, peaks):
            ratio.append((restore(model, sky + peak * star, alone) - without)[inside].sum() / (peak * star)[inside].sum())
    return [float(np.median(r)) for r in ratios]


def measure(model, crest: float, profile, angle: float, seeds: range, alone: bool) -> tuple[float, list[float]]:
    """Median line kept and median star flux ratio at each distance, over ``seeds``."""
    stars, centres, across = frames(angle)
    trail = crest * NOISE * profile(across)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    kept, ratios = [], []
    for seed in seeds:
        noise = NOISE * np.random.default_rng(seed).standard_normal((SIZE, SIZE))
        without_stars = restore(model, SKY + trail + noise, alone)
        with_stars = restore(model, SKY + trail + stars + noise, alone)
        band = np.abs(across) <= TRAIL_BAND
        kept.append((without_stars - SKY)[band].sum() / trail[band].sum() if crest else np.nan)
        difference = with_stars - without_stars
        per_star = []
        for y, x in centres:
            inside = (yy - y) ** 2 + (xx - x) ** 2 <= APERTURE**2
            per_star.append(difference[inside].sum() / stars[inside].sum())
        ratios.append(per_star)
    ratios = np.array(ratios).reshape(len(seeds), len(DISTANCES), 2)
    return float(np.median(kept)), [float(np.median(ratios[:, i])) for i in range(len(DISTANCES))]


def table(model, realizations: int) -> str:
    seeds = range(realizations)
    _, reference = measure(model, 0.0, gaussian, 0.0, seeds, alone=False)
    _, reference_alone = measure(model, 0.0, gaussian, 0.0, seeds, alone=True)
    head = "| line | kept | " + " | ".join(f"stars at {d} px" for d in DISTANCES) + " |"
    lines = [head, "|---|" + "---:|" * (1 + len(DISTANCES))]
    for label, crest, profile, angle in LINES:
        kept, stars = measure(model, crest, profile, angle, seeds, alone=False)
        kept_alone, stars_alone = measure(model, crest, profile, angle, seeds, alone=True)
        cells = [f"{kept:.3f} / {kept_alone:.3f}"] + [f"{a:.2f} / {b:.2f}" for a, b in zip(stars, stars_alone)]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    cells = ["-"] + [f"{a:.2f} / {b:.2f}" for a, b in zip(reference, reference_alone)]
    lines.append("| no line | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def on_the_trail_table(model, realizations: int) -> str:
    """Stars on a trail's axis: rows of star peaks, columns of trail crests (0: no trail)."""
    seeds = range(realizations)
    lines = ["| star | " + " | ".join(f"trail {c:g} sigma" if c else "no trail" for c in ON_TRAIL_CRESTS) + " |"]
    lines.append("|---|" + "---:|" * len(ON_TRAIL_CRESTS))
    engine, alone = ([on_the_trail(model, c, ON_TRAIL_PEAKS, seeds, a) for c in ON_TRAIL_CRESTS] for a in (False, True))
    for row, peak in enumerate(ON_TRAIL_PEAKS):
        cells = [f"{e[row]:.3f} / {a[row]:.3f}" for e, a in zip(engine, alone)]
        lines.append(f"| {peak:g} sigma | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@click.command()
@click.option("--model", "model_name", default="small", show_default=True, help="Bundled name or model folder.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("bench"), show_default=True)
@click.option("--realizations", default=3, show_default=True, help="Noise draws per cell.")
def main(model_name: str, out: Path, realizations: int) -> None:
    model = load_model(model_name)
    text = (
        f"Model `{model_name}`: lines across the frame and {STAR_SIGMA:g} sigma stars (FWHM {FWHM:g} px) beside them, "
        f"sky {SKY:g}, noise sigma {NOISE:g}, {realizations} noise draws. Each cell: engine / network alone.\n\n"
        f"{table(model, realizations)}\n\n"
        f"Stars (FWHM {FWHM:g} px) on the axis of a trail at {ON_TRAIL_ANGLE:g} degrees: their flux within 12 px over the "
        "truth, with and without the star (the trail in both). Each cell: engine / network alone.\n\n"
        f"{on_the_trail_table(model, realizations)}\n"
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "trail_photometry.md").write_text(text)
    click.echo(text)


if __name__ == "__main__":
    main()
