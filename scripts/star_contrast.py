"""Stars' contrast over the emission under them: training scenes against the benchmark's.

A star's contrast is the height of its true peak above the emission under it, over that
emission (the median 4-8 px around it), at the target's resolution: scale-free, so gain, sky
and exposure drop out (which stars count does depend on brightness: both sides are measured
at their own, training's multiplier and the benchmark's x20). On the nebula FWHM 4.5 scenes
the FWHM ratio roughly followed the median contrast (2026-11-27, bundled model, as the
benchmark measured stars then, with the nebula under them: 12.1 -> 1.22x, 5.7 -> 1.54x, 6.6 ->
1.99x, 4.2 -> 2.11x, 1.7 -> 2.53x, 1.9 -> 4.97x, 2.6 -> 8.18x; that fit read the filaments
too, see ``benchmark_quality.star_table``). This tells whether the training mix covers that
contrast:

    python scripts/star_contrast.py --config train/configs/sharpen_linear.toml

prints the training nebulae's contrast percentiles, then each benchmark nebula scene's median.
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
from benchmark_quality import SCENES, SEED_BASE, make_case, point_sources

from astroswin.train.config import load_config
from astroswin.train.data import synthetic_scene

RING = (4.0, 8.0)  # px: inner and outer radius of the emission's annulus


def star_contrast(lum: np.ndarray) -> np.ndarray:
    """``(N,)`` (peak - local emission) / local emission for each point source of ``lum``
    ``(H, W)``, flux above the sky; inf where the annulus is dark (under a millionth of the
    peak: a star on empty sky)."""
    yy, xx = np.mgrid[: lum.shape[0], : lum.shape[1]]
    out = []
    for y, x, _, _ in point_sources(lum):
        d2 = (yy - y) ** 2 + (xx - x) ** 2
        local = float(np.median(lum[(d2 >= RING[0] ** 2) & (d2 <= RING[1] ** 2)]))
        out.append((lum[y, x] - local) / local if local > 1e-6 * lum[y, x] else np.inf)
    return np.array(out, dtype=np.float64)


def training_nebulae(config: Path, count: int):
    """Nebula scenes as the training stream draws them (seeds 0..count-1), ``(C, H, W)``, with
    the stream's brightness multiplier: :func:`point_sources` keeps peaks above an absolute
    level, so which stars count depends on it, as it does on the benchmark's x20."""
    data = load_config(config).data
    for seed in range(count):
        _, kind, scene, _ = synthetic_scene(seed, data)
        if kind == "nebula":
            yield scene


@click.command()
@click.option("--config", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=Path("train/configs/sharpen_linear.toml"), show_default=True)
@click.option("--scenes", "count", default=300, show_default=True, help="Training seeds to draw (about a third are nebulae).")
@click.option("--seed-base", default=SEED_BASE, show_default=True, help="As benchmark_quality.py's: 3000000007 gives its held-out scenes.")
@click.option("--realizations", default=4, show_default=True)
def main(config: Path, count: int, seed_base: int, realizations: int) -> None:
    train = np.concatenate([np.zeros(0)] + [star_contrast(scene.mean(0)) for scene in training_nebulae(config, count)])
    if not len(train):
        raise click.ClickException(f"no stars on the nebulae of {count} training seeds: draw more (--scenes)")
    p10, p50, p90 = np.percentile(train, [10, 50, 90])
    click.echo(f"training nebulae ({config.name}): {len(train)} stars, contrast p10 {p10:.1f}, median {p50:.1f}, p90 {p90:.1f}")
    for index, (name, kind, blur, sky, gain, brightness) in enumerate(SCENES):
        if kind != "nebula":
            continue
        for k in range(realizations):
            truth = make_case(seed_base + index + 1000 * k, kind, blur, sky, gain, 192, brightness).truth
            contrast = star_contrast(truth.mean(0) - sky)
            if len(contrast):
                click.echo(f"{name}, realization {k}: {len(contrast)} stars, contrast median {np.median(contrast):.1f}")


if __name__ == "__main__":
    main()
