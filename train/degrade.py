"""Physically ordered degradations: blur, then photon noise, read noise and defects, in linear space.

The original AstroSWIN blurred the *stretched* image with tiny kernels and no shot noise, and
in its last stage added noise to the targets too (so no denoising could be learned). Here the
input is ``poisson((target_scene (*) psf + sky) * gain) / gain + read noise + defects`` and the
target is ``target_scene + sky`` with no noise: the network learns to deconvolve *and* denoise,
and keeps the sky level (it is restored, not removed).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.signal import fftconvolve

from . import psf as kernels


@dataclass
class DegradeConfig:
    """Ranges of every degradation; sampled uniformly (log-uniformly where noted).

    Lengths are pixels; ``sky`` is flux units per pixel; ``gain`` is electrons per flux unit.
    ``pool`` maps a PSF family to its sampling weight.
    """

    fwhm: tuple[float, float] = (1.5, 6.0)
    beta: tuple[float, float] = (1.5, 6.0)
    ellipticity: tuple[float, float] = (0.0, 0.25)
    pool: dict = field(default_factory=lambda: {"moffat": 5.0, "gaussian": 1.0, "anisotropic": 1.0, "airy": 0.5, "spikes": 0.5, "donut": 0.3, "motion": 0.5, "bokeh": 0.3})
    chain_probability: float = 0.2
    chain_length: tuple[int, int] = (2, 4)
    chromatic_probability: float = 0.3
    sky_log10: tuple[float, float] = (0.0, 2.5)
    gain_log10: tuple[float, float] = (-1.0, 1.5)
    read_noise: tuple[float, float] = (0.0, 3.0)
    pedestal: tuple[float, float] = (-20.0, 200.0)
    hot_pixel_probability: float = 0.3
    cosmic_ray_probability: float = 0.2
    #: Probability that the noise is a registered stack's (:func:`stacked_noise`), correlated
    #: between neighbouring pixels, instead of white; 0 draws nothing (earlier configs'
    #: examples stay as they were).
    stacked_probability: float = 0.0
    #: Subexposures in such a stack.
    stacked_subs: tuple[int, int] = (4, 16)
    #: Spline orders its registration interpolates with (1: bilinear, 3: cubic), one per stack.
    stacked_orders: tuple[int, ...] = (1, 3)


def sample_kernel(rng: np.random.Generator, cfg: DegradeConfig, fwhm: float | None = None, family: str | None = None, allow_chain: bool = True) -> np.ndarray:
    """One PSF from the pool (or a chain of 2-4 of them when ``chain_probability`` hits)."""
    if allow_chain and family is None and rng.uniform() < cfg.chain_probability:
        n = int(rng.integers(cfg.chain_length[0], cfg.chain_length[1] + 1))
        # Split the blur budget so the chain stays within the FWHM range; links never chain.
        total = fwhm or rng.uniform(*cfg.fwhm)
        parts = [sample_kernel(rng, cfg, fwhm=max(1.0, total / np.sqrt(n)), family=None if k else "moffat", allow_chain=False) for k in range(n)]
        return kernels.chain(parts)
    fwhm = fwhm or rng.uniform(*cfg.fwhm)
    names = list(cfg.pool)
    weights = np.array([cfg.pool[n] for n in names], dtype=float)
    family = family or names[int(rng.choice(len(names), p=weights / weights.sum()))]
    angle = rng.uniform(0, np.pi)
    ell = rng.uniform(*cfg.ellipticity)
    if family == "moffat":
        return kernels.moffat(fwhm, rng.uniform(*cfg.beta), ell, angle)
    if family == "gaussian":
        return kernels.gaussian(fwhm)
    if family == "anisotropic":
        return kernels.gaussian(fwhm, rng.uniform(0.2, 0.5), angle)
    if family == "airy":
        return kernels.chain([kernels.airy(fwhm * 1.2, rng.uniform(0.0, 0.45)), kernels.moffat(max(1.0, fwhm / 2), 3.0)])
    if family == "spikes":
        return kernels.spikes(fwhm, 4 if rng.uniform() < 0.7 else 6, length=rng.uniform(8, 24), strength=rng.uniform(0.02, 0.1), angle=angle)
    if family == "donut":
        return kernels.chain([kernels.donut(fwhm, rng.uniform(0.2, 0.5)), kernels.gaussian(1.2)])
    if family == "bokeh":
        return kernels.chain([kernels.disk(fwhm / 2 + 0.5), kernels.gaussian(1.0)])
    if family == "motion":
        return kernels.chain([kernels.motion(fwhm * 1.5, angle), kernels.moffat(max(1.0, fwhm / 2), 3.0)])
    raise ValueError(f"unknown PSF family {family!r}")


def convolve(scene: np.ndarray, kernel_per_channel: list[np.ndarray]) -> np.ndarray:
    """FFT convolution of each ``(H, W)`` channel with its centred kernel ('same' size)."""
    return np.stack([fftconvolve(c, k, mode="same") for c, k in zip(scene, kernel_per_channel)])


def add_noise(rng: np.random.Generator, blurred: np.ndarray, sky: float, gain: float, read_noise: float) -> np.ndarray:
    """Shot noise at ``gain`` (e-/unit) on signal + sky, then Gaussian read noise (units)."""
    electrons = np.clip((blurred + sky) * gain, 0, None)
    return rng.poisson(electrons) / gain + rng.normal(0.0, read_noise, blurred.shape) if read_noise > 0 else rng.poisson(electrons) / gain


def stacked_noise(rng: np.random.Generator, sigma: np.ndarray, subs: int, order: int) -> np.ndarray:
    """Noise of a stack of ``subs`` registered subexposures, ``(C, H, W)`` like ``sigma``.

    Each subexposure's noise (white, ``sigma * sqrt(subs)`` per pixel: the stack's total
    exposure is that of the white case) is shifted by a random sub-pixel offset, the same in
    every channel, with spline interpolation of ``order``, and the shifted fields are averaged.
    Interpolation averages neighbours, so the noise is correlated between them and its
    per-pixel sigma drops (about 0.7x for bilinear, 0.9x for cubic): smooth blobs that white
    noise never makes. The shipped model, trained on white noise only, turned such blobs into
    faint stars (``scripts/correlated_noise.py``).
    """
    from scipy.ndimage import shift

    total = np.zeros_like(sigma, dtype=np.float64)
    for _ in range(subs):
        white = rng.standard_normal(sigma.shape) * sigma * np.sqrt(subs)
        offset = rng.uniform(-0.5, 0.5, 2)
        total += np.stack([shift(channel, offset, order=order, mode="reflect") for channel in white])
    return total / subs


def add_defects(rng: np.random.Generator, image: np.ndarray, sigma: float, cfg: DegradeConfig) -> np.ndarray:
    """Hot pixels (single pixels at 10-300 sigma) and cosmic-ray tracks, in the input only."""
    c, h, w = image.shape
    if rng.uniform() < cfg.hot_pixel_probability:
        n = int(rng.integers(1, 1 + h * w // 800))
        ys, xs = rng.integers(0, h, n), rng.integers(0, w, n)
        image[:, ys, xs] += sigma * 10 ** rng.uniform(1, 2.5, n)
    if rng.uniform() < cfg.cosmic_ray_probability:
        y, x = rng.uniform(0, h), rng.uniform(0, w)
        ang, length = rng.uniform(0, np.pi), rng.uniform(1, 12)
        for t in np.linspace(0, length, int(length * 2) + 1):
            yy, xx = int(y + t * np.sin(ang)), int(x + t * np.cos(ang))
            if 0 <= yy < h and 0 <= xx < w:
                image[int(rng.integers(c)) if c > 1 and rng.uniform() < 0.5 else slice(None), yy, xx] += sigma * rng.uniform(20, 200)
    return image


def degrade(rng: np.random.Generator, scene: np.ndarray, cfg: DegradeConfig, kernel: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Make an ``(input, target)`` pair from a target scene.

    Parameters
    ----------
    rng : numpy.random.Generator
    scene : numpy.ndarray
        ``(C, H, W)`` target scene (linear flux above the sky, already seen through the narrow
        target PSF).
    cfg : DegradeConfig
    kernel : numpy.ndarray, optional
        Force this PSF (validation scenes); else one is sampled.

    Returns
    -------
    degraded, target : numpy.ndarray
        ``(C, H, W)`` float64; ``target = scene + sky + pedestal``.
    info : dict
        The PSF actually used (``kernel``, per channel list ``kernels``), ``sky``, ``gain``,
        ``read_noise``, ``pedestal`` and the sky noise ``sigma``.
    """
    c = scene.shape[0]
    base = kernel if kernel is not None else sample_kernel(rng, cfg)
    per_channel = [base] * c
    if kernel is None and c > 1 and rng.uniform() < cfg.chromatic_probability:
        extra = [kernels.gaussian(1.0 + abs(d) * 6) if d > 0 else None for d in rng.uniform(-0.1, 0.1, c)]
        per_channel = [base if e is None else kernels.chain([base, e]) for e in extra]
    sky = 10 ** rng.uniform(*cfg.sky_log10)
    gain = 10 ** rng.uniform(*cfg.gain_log10)
    read_noise = rng.uniform(*cfg.read_noise)
    pedestal = rng.uniform(*cfg.pedestal)
    blurred = convolve(scene, per_channel)
    if cfg.stacked_probability and rng.uniform() < cfg.stacked_probability:
        sigma_map = np.sqrt(np.clip(blurred + sky, 0, None) / gain + read_noise**2)
        subs, order = int(rng.integers(cfg.stacked_subs[0], cfg.stacked_subs[1] + 1)), int(rng.choice(cfg.stacked_orders))
        noisy = blurred + sky + stacked_noise(rng, sigma_map, subs, order)
    else:
        noisy = add_noise(rng, blurred, sky, gain, read_noise)
    sigma = float(np.sqrt(sky / gain + read_noise**2))
    noisy = add_defects(rng, noisy, sigma, cfg) + pedestal
    target = scene + sky + pedestal
    info = dict(kernel=base, kernels=per_channel, sky=sky, gain=gain, read_noise=read_noise, pedestal=pedestal, sigma=sigma)
    return noisy, target, info
