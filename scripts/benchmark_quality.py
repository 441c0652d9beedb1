"""Quality benchmark: the model, blind, against Richardson-Lucy and Wiener given the *true* PSF.

Scenes are this project's own synthetic validation scenes (seeds far from any training seed;
never scikit-image's sample images): star fields at several blur FWHMs and noise levels, galaxy
fields and nebula fields, all linear, with sky and shot/read noise. For each scene:

* identity (the input), the model (blind: no PSF given), Richardson-Lucy (30 iterations) and
  Wiener (its balance chosen per scene from a grid *using the truth* -- an oracle, so the
  strongest Wiener possible), both given the exact PSF;
* PSNR and SSIM on an asinh display stretch (the engine's, parameters from the input), median
  star FWHM ratio to the truth, median aperture flux ratio to the truth (r = 2.5 x truth FWHM
  + 2 px, and a wide r = 10 px that also holds the PSF wings),
  halo depth (darkest ring mean around the brightest stars relative to their true peak).

Writes ``OUT/quality.md`` (a Markdown table), ``OUT/quality.json`` and one PNG per scene
(input | model | RL | Wiener | truth), and prints the table.

    python scripts/benchmark_quality.py --model small --out bench
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import numpy as np

from astroswin.engine import RestoreSettings, load_model, restore_array
from astroswin.engine.measure import aperture_flux, find_stars, fwhm, halo_depth
from astroswin.engine.normalize import estimate_stretch, stretch
from astroswin.engine.preview import side_by_side
from astroswin.train import psf
from astroswin.train.degrade import add_noise, convolve
from astroswin.train.scenes import make_scene

SEED_BASE = 2 * 10**9  # validation scenes: far from training (< 1e9) and the training validation set
SCENES = [
    # name, kind, blur FWHM (px), sky, gain (low gain = more noise)
    ("stars FWHM 2.5, low noise", "stars", 2.5, 50.0, 5.0),
    ("stars FWHM 3.5, mid noise", "stars", 3.5, 50.0, 1.0),
    ("stars FWHM 5, mid noise", "stars", 5.0, 50.0, 1.0),
    ("stars FWHM 3.5, high noise", "stars", 3.5, 200.0, 0.3),
    ("galaxy FWHM 3", "galaxy", 3.0, 50.0, 2.0),
    ("galaxy FWHM 4.5", "galaxy", 4.5, 50.0, 1.0),
    ("nebula FWHM 3", "nebula", 3.0, 50.0, 2.0),
    ("nebula FWHM 4.5", "nebula", 4.5, 100.0, 1.0),
]


def make_case(index: int, kind: str, blur: float, sky: float, gain: float, size: int):
    """(truth, observed, kernel) in linear units with the sky level added to both."""
    seed = SEED_BASE + index
    scene, _ = make_scene(seed, (size, size), channels=3 if kind != "stars" else 1, kind=kind, target_fwhm=1.2)
    scene = scene * 20.0  # bright enough that stars and structure stand above the noise
    kernel = psf.moffat(blur, 3.0)
    rng = np.random.default_rng(seed)
    observed = add_noise(rng, convolve(scene, [kernel] * scene.shape[0]), sky, gain, 2.0)
    return scene + sky, observed, kernel


def richardson_lucy(observed, kernel, sky, iterations=30):
    from skimage.restoration import richardson_lucy as rl

    out = np.empty_like(observed)
    for c, channel in enumerate(observed):
        signal = np.clip(channel - sky, 1e-6, None)  # RL needs a positive image without sky
        scale = signal.max()
        out[c] = rl(signal / scale, kernel, num_iter=iterations, clip=False) * scale + sky
    return out


def wiener_oracle(observed, kernel, sky, truth, params):
    from skimage.restoration import wiener

    best, best_err = None, np.inf
    for balance in (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0):
        out = np.empty_like(observed)
        for c, channel in enumerate(observed):
            scale = max(1e-9, float(np.abs(channel - sky).max()))
            out[c] = wiener((channel - sky) / scale, kernel, balance, clip=False) * scale + sky
        err = np.mean((stretch(out, params) - stretch(truth, params)) ** 2)
        if err < best_err:
            best, best_err = out, err
    return best


def psnr_ssim(result, truth, params):
    from skimage.metrics import structural_similarity

    a, b = stretch(result, params), stretch(truth, params)
    data_range = float(b.max() - b.min())
    mse = float(np.mean((a - b) ** 2))
    psnr = 10 * np.log10(data_range**2 / max(mse, 1e-20))
    ssim = float(np.mean([structural_similarity(x, y, data_range=data_range) for x, y in zip(a, b)]))
    return psnr, ssim


def star_metrics(result, truth, sky):
    """(FWHM ratio, flux ratio, wide flux ratio, halo depth) over the brightest isolated stars
    of the truth. The flux aperture has radius 2.5 x the true FWHM + 2 px (photometry's usual
    size); the wide one 10 px, which also holds what a restoration leaves in the PSF's wings:
    the two together tell flux lost from flux not yet brought into the core."""
    lum_t = truth.mean(0) - sky
    lum_r = result.mean(0) - sky
    peaks = find_stars(lum_t, threshold=max(50.0, 0.02 * lum_t.max()), min_separation=9, border=12, max_stars=25)
    ratios_w, ratios_f, ratios_wide, halos = [], [], [], []
    for y, x in peaks:
        ft = fwhm(lum_t, y, x, radius=6)
        fr = fwhm(lum_r, y, x, radius=6)
        if np.isfinite(ft) and np.isfinite(fr):
            ratios_w.append(fr / ft)
        r = 2.5 * max(ft if np.isfinite(ft) else 1.5, 1.5) + 2
        ratios_f.append(aperture_flux(lum_r, y, x, r) / aperture_flux(lum_t, y, x, r))
        ratios_wide.append(aperture_flux(lum_r, y, x, 10) / aperture_flux(lum_t, y, x, 10))
        halos.append(halo_depth(lum_r, y, x, peak=lum_t[y, x]))
    med = lambda v: float(np.median(v)) if v else float("nan")  # noqa: E731
    return med(ratios_w), med(ratios_f), med(ratios_wide), float(np.min(halos)) if halos else float("nan")


@click.command()
@click.option("--model", "model_name", default="small", show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("bench"), show_default=True)
@click.option("--size", default=192, show_default=True, help="Scene size in pixels.")
@click.option("--threads", default=None, type=int)
@click.option("--tile", default=None, type=int, help="Tile size (default: the engine's CPU default; a scene larger than tile - 2 x overlap is cut into several).")
@click.option("--overlap", default=None, type=int)
def main(model_name: str, out: Path, size: int, threads: int | None, tile: int | None, overlap: int | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(model_name)
    settings = RestoreSettings(device="cpu", threads=threads, tile=tile, overlap=overlap)
    rows = []
    for index, (name, kind, blur, sky, gain) in enumerate(SCENES):
        truth, observed, kernel = make_case(index, kind, blur, sky, gain, size)
        params = estimate_stretch(observed)
        start = time.perf_counter()
        restored = restore_array(observed.astype(np.float32), model, settings).astype(np.float64)
        seconds = time.perf_counter() - start
        results = {"input": observed, "model": restored, "RL (true PSF)": richardson_lucy(observed, kernel, sky), "Wiener (true PSF, oracle)": wiener_oracle(observed, kernel, sky, truth, params)}
        slug = f"scene{index}_{kind}"
        side_by_side([results[k] for k in results] + [truth], out / f"{slug}.png", reference=observed)
        for method, result in results.items():
            psnr, ssim = psnr_ssim(result, truth, params)
            w, f, fw, h = star_metrics(result, truth, sky)
            rows.append(dict(scene=name, method=method, psnr=round(psnr, 2), ssim=round(ssim, 3), fwhm_ratio=round(w, 2), flux_ratio=round(f, 3), flux_ratio_wide=round(fw, 3), halo=round(h, 4), seconds=round(seconds, 2) if method == "model" else None))
        click.echo(f"{name}: done", err=True)
    (out / "quality.json").write_text(json.dumps(rows, indent=1))
    lines = ["| scene | method | PSNR dB | SSIM | FWHM / truth | flux / truth | flux r=10 / truth | halo depth |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['scene']} | {r['method']} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['fwhm_ratio']:.2f} | {r['flux_ratio']:.3f} | {r['flux_ratio_wide']:.3f} | {r['halo']:+.4f} |")
    table = "\n".join(lines)
    (out / "quality.md").write_text(table + "\n")
    click.echo(table)


if __name__ == "__main__":
    main()
