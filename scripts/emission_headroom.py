"""What a better emission estimate would buy: the engine's step against the true emission.

The engine takes a smooth estimate of the emission out of the image before the network and
adds it back after (:mod:`astroswin.engine.emission`: a 25 px running median). Stars on bright
nebulae still come out wide (``bench/summary.md``, ``bench/heldout.md``). This script asks
whether the network or the estimate is to blame: on the quality benchmark's nebula and galaxy
scenes, it replaces the estimate by what a perfect one would take out, and measures stars and
PSNR exactly as ``benchmark_quality.py`` does. Each estimate ``e`` is taken out of the
observation, the rest goes through the bundled network (emission step off), and the same ``e``
is added back unrestored, as the engine does:

* ``engine (25 px)`` and ``off``: the engine as shipped, and without the step;
* ``true emission``: the truth's light under the stars (nebula or galaxy) seen through the
  observation's PSF, noiseless -- the ideal estimate;
* ``true emission, both restored``: the same, but the emission is put through the network too
  (on its own, over the sky) before it is added back: the ideal of a two-pass split, stars and
  emission each restored apart;
* ``true, smoothed N px``: the same after a Gaussian of sigma N px, an estimate that misses
  structure finer than that;
* ``perfect star removal, 2 px``: the observation minus its true blurred stars, smoothed by a
  Gaussian of sigma 2 px -- what an estimator that removed every star exactly would give from
  the data, its noise included;
* ``first pass, opened 3 px``: the engine's own result, its stars taken off by a grey opening
  (disk of radius 3 px: restored stars are narrower than that, a nebula's structure mostly
  wider), blurred back by a kernel fitted between that result and the observation (least
  squares in Fourier space, 21 px, clipped at zero): a blind two-pass estimate that needs no
  PSF and no star fitting, at twice the network time;
* with ``--starless MODEL``, ``learned star removal`` and ``learned star removal, both
  restored``: the estimate is a star-removal network's output (trained with
  ``train/configs/starless.toml``, exported with ``astroswin export``) on the engine's 25 px
  median residual, plus that median, put back or restored apart as above. The design it
  would serve: ``docs/star-emission-split.md``.

    python scripts/emission_headroom.py --out bench
    python scripts/emission_headroom.py --starless runs/starless/export --out runs/starless

Writes ``OUT/emission_headroom.md`` and prints it. Not a model benchmark: it bounds what work
on the estimate (rather than on the network) can gain.
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
from benchmark_quality import (
    BRIGHT_FWHM_SNR,
    MIN_SNR,
    SCENES,
    SEED_BASE,
    Case,
    make_case,
    markdown,
    psnr_ssim,
    star_table,
    summarise,
)
from scipy.ndimage import gaussian_filter, grey_opening
from scipy.signal import fftconvolve

from astroswin.engine import RestoreSettings, load_model, restore_array
from astroswin.engine.emission import EMISSION_SCALE, smooth_emission
from astroswin.engine.normalize import estimate_stretch
from astroswin.train.degrade import convolve

HELD_OUT = 3000000007  # benchmark_quality.py's held-out seed base (bench/heldout.md)
KINDS = ("nebula", "galaxy")


def _smoothed(image: np.ndarray, sigma: float) -> np.ndarray:
    return np.stack([gaussian_filter(channel, sigma) for channel in image])


def estimates(case: Case, sky: float) -> dict[str, np.ndarray]:
    """``(C, H, W)`` emission estimates of one case, in linear units above the sky."""
    blurred_light = convolve(case.background - sky, [case.kernel] * case.truth.shape[0])
    blurred_stars = convolve(case.truth - case.background, [case.kernel] * case.truth.shape[0])
    starless = case.observed - blurred_stars - sky
    return {
        "true emission": blurred_light,
        "true, smoothed 2 px": _smoothed(blurred_light, 2.0),
        "true, smoothed 4 px": _smoothed(blurred_light, 4.0),
        "perfect star removal, 2 px": _smoothed(starless, 2.0),
    }


def fitted_kernel(observed: np.ndarray, restored: np.ndarray, half: int = 10, damping: float = 1e-3) -> np.ndarray:
    """``(2 half + 1, 2 half + 1)`` kernel, sum 1: the blur that best takes ``restored`` to
    ``observed`` (``(H, W)`` each, sky removed) in the least-squares sense, Tikhonov-damped by
    ``damping`` times the restored image's mean power, negative taps clipped."""
    restored_ft = np.fft.rfft2(restored)
    power = np.abs(restored_ft) ** 2
    ratio = np.conj(restored_ft) * np.fft.rfft2(observed) / (power + damping * power.mean())
    kernel = np.fft.fftshift(np.fft.irfft2(ratio, s=observed.shape))
    cy, cx = observed.shape[0] // 2, observed.shape[1] // 2
    kernel = np.clip(kernel[cy - half : cy + half + 1, cx - half : cx + half + 1], 0, None)
    return kernel / kernel.sum()


def first_pass_estimate(observed: np.ndarray, first: np.ndarray, sky: float, radius: int = 3) -> np.ndarray:
    """``(C, H, W)`` emission above ``sky``: the first restoration without its stars (a grey
    opening by a disk of ``radius`` px), blurred back by :func:`fitted_kernel`."""
    kernel = fitted_kernel((observed - sky).mean(0), (first - sky).mean(0))
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    disk = xx**2 + yy**2 <= radius**2 + 0.5
    half = kernel.shape[0] // 2
    starless = [grey_opening(channel, footprint=disk) - sky for channel in first]
    return np.stack([fftconvolve(np.pad(channel, half, mode="reflect"), kernel, mode="valid") for channel in starless])


def restored_alone(estimate: np.ndarray, zero, model, settings: RestoreSettings) -> np.ndarray:
    """An emission estimate put through the network on its own, over ``zero`` (the level it is
    relative to), and taken back to that level: the second half of restoring apart."""
    return restore_array(estimate + zero, model, settings) - zero


@click.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("bench"), show_default=True)
@click.option("--size", default=192, show_default=True, help="Scene size in pixels (as benchmark_quality.py).")
@click.option("--realizations", default=4, show_default=True)
@click.option("--starless", default=None, help="A star-removal model (folder or hub id, as load_model takes) to add as an estimate.")
def main(out: Path, size: int, realizations: int, starless: str | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model = load_model("small")
    remover = load_model(starless) if starless else None
    engine, off = RestoreSettings(device="cpu"), RestoreSettings(device="cpu", emission_scale=0)
    rows = []
    for seeds, seed_base in (("benchmark", SEED_BASE), ("held out", HELD_OUT)):
        for index, (name, kind, blur, sky, gain, brightness) in enumerate(SCENES):
            if kind not in KINDS:
                continue
            tables, psnrs = {}, {}
            for k in range(realizations):
                case = make_case(seed_base + index + 1000 * k, kind, blur, sky, gain, size, brightness)
                observed = case.observed.astype(np.float32)
                params = estimate_stretch(case.observed)
                first = restore_array(observed, model, engine)
                taken = {label: e.astype(np.float32) for label, e in estimates(case, sky).items()}
                taken["first pass, opened 3 px"] = first_pass_estimate(observed, first, sky).astype(np.float32)
                level = params.shaped(3).astype(np.float32)  # the frame's black point: what the engine would zero the estimate on
                if remover is not None:  # fed the emission step's residual, as train/configs/starless.toml trains it
                    median = smooth_emission(observed, EMISSION_SCALE, params.background).rows(0, observed.shape[1])
                    taken["learned star removal"] = restore_array(observed - median, remover, off) - level + median
                rest = {label: restore_array(observed - e, model, off) for label, e in taken.items()}
                results = {"engine (25 px)": first, "off": restore_array(observed, model, off)}
                results |= {label: rest[label] + e for label, e in taken.items()}
                results["true emission, both restored"] = rest["true emission"] + restored_alone(taken["true emission"], np.float32(sky), model, off)  # over the sky, as a frame would be
                if remover is not None:
                    results["learned star removal, both restored"] = rest["learned star removal"] + restored_alone(taken["learned star removal"], level, model, off)
                for label, result in results.items():
                    result = result.astype(np.float64)
                    tables.setdefault(label, []).append(star_table(result, case.truth, case.background, case.noise))
                    psnrs.setdefault(label, []).append(psnr_ssim(result, case.truth, params)[0])
            rows += [dict(scene=name, seeds=seeds, estimate=label, psnr=round(float(np.mean(psnrs[label])), 2), **summarise(np.concatenate(tables[label]))) for label in tables]
            click.echo(f"{name}, {seeds}: done", err=True)
    table = markdown(rows, ["scene", "seeds", "estimate", "psnr", "fwhm_ratio_bright", "stars", "fwhm_ratio", "flux_ratio", "halo"],
                     ["scene", "seeds", "emission taken out", "PSNR dB", f"FWHM / truth, SNR ≥ {BRIGHT_FWHM_SNR:g}", f"stars, SNR ≥ {MIN_SNR:g}", "FWHM / truth", "flux / truth", "halo depth"])
    (out / "emission_headroom.md").write_text(table + "\n")
    click.echo(table)


if __name__ == "__main__":
    main()
