"""Point-spread functions as centred, unit-sum kernels.

Every kernel is sampled on an odd ``size x size`` grid whose centre pixel is the optical axis,
so a symmetric kernel moves a point source by less than 0.01 px (the original AstroSWIN's
even-sized grids shifted every degraded input by about 0.4 px). Units are pixels; angles are
radians. All functions return ``float64`` arrays that sum to 1.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import fftconvolve
from scipy.special import j1

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def odd_size(radius: float, minimum: int = 3, maximum: int = 63) -> int:
    """Smallest odd size covering ``radius`` pixels on each side, within [minimum, maximum]."""
    size = 2 * int(np.ceil(radius)) + 1
    return int(np.clip(size | 1, minimum, maximum))


def _grid(size: int, ellipticity: float = 0.0, angle: float = 0.0, supersample: int = 3):
    """Supersampled centred coordinates (x, y) of an odd grid, sheared by an ellipticity."""
    if size % 2 == 0:
        raise ValueError(f"kernel size must be odd, got {size}")
    n = size * supersample
    axis = (np.arange(n) + 0.5) / supersample - size / 2.0
    y, x = np.meshgrid(axis, axis, indexing="ij")
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * x + s * y, -s * x + c * y
    q = 1.0 - ellipticity
    return u / np.sqrt(q), v * np.sqrt(q)


def _bin(kernel: np.ndarray, supersample: int) -> np.ndarray:
    n = kernel.shape[0] // supersample
    binned = kernel.reshape(n, supersample, n, supersample).sum(axis=(1, 3))
    return binned / binned.sum()


def gaussian(fwhm: float, ellipticity: float = 0.0, angle: float = 0.0, size: int | None = None) -> np.ndarray:
    """Elliptical Gaussian of the given FWHM (pixels, geometric mean of the axes)."""
    size = size or odd_size(2.5 * fwhm)
    u, v = _grid(size, ellipticity, angle)
    sigma = fwhm / FWHM_PER_SIGMA
    return _bin(np.exp(-0.5 * (u**2 + v**2) / sigma**2), 3)


def moffat(fwhm: float, beta: float = 3.0, ellipticity: float = 0.0, angle: float = 0.0, size: int | None = None) -> np.ndarray:
    """Moffat profile ``(1 + r^2/alpha^2)^-beta``, the standard seeing-limited star profile."""
    size = size or odd_size(2.0 * fwhm + 4.0 / max(beta - 1.0, 0.3))
    u, v = _grid(size, ellipticity, angle)
    alpha = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
    return _bin((1.0 + (u**2 + v**2) / alpha**2) ** (-beta), 3)


def airy(first_zero: float, obstruction: float = 0.0, size: int | None = None) -> np.ndarray:
    """Airy pattern of an annular aperture; ``first_zero`` is the radius of the first dark ring."""
    size = size or odd_size(3.0 * first_zero)
    u, v = _grid(size)
    r = np.hypot(u, v) * 3.8317 / first_zero
    r = np.where(r == 0, 1e-9, r)
    eps = obstruction
    amp = (2 * j1(r) / r - eps**2 * 2 * j1(eps * r) / (eps * r + 1e-12)) / (1 - eps**2)
    return _bin(amp**2, 3)


def spikes(fwhm: float, n_spikes: int = 4, length: float = 12.0, strength: float = 0.05, angle: float = 0.0) -> np.ndarray:
    """A Moffat core with thin diffraction spikes (spider vanes) carrying ``strength`` of the flux."""
    size = odd_size(length)
    core = moffat(fwhm, 3.0, size=size)
    u, v = _grid(size)
    spike = np.zeros_like(u)
    for k in range(n_spikes):
        a = angle + np.pi * k / (n_spikes / 2)
        along = np.cos(a) * u + np.sin(a) * v
        across = -np.sin(a) * u + np.cos(a) * v
        spike += np.exp(-0.5 * (across / 0.5) ** 2) * np.exp(-np.abs(along) / (length / 3)) * (along >= 0)
    spike = _bin(spike, 3)
    return (1 - strength) * core + strength * spike


def donut(outer: float, inner_fraction: float = 0.4, size: int | None = None) -> np.ndarray:
    """Defocus donut: a uniform annulus of radius ``outer`` pixels with a central hole."""
    size = size or odd_size(outer + 1)
    u, v = _grid(size)
    r = np.hypot(u, v)
    return _bin(((r <= outer) & (r >= inner_fraction * outer)).astype(float) + 1e-12, 3)


def disk(radius: float, size: int | None = None) -> np.ndarray:
    """Uniform disk (bokeh blur of the original's pool)."""
    return donut(radius, 0.0, size)


def motion(length: float, angle: float = 0.0, width: float = 0.5, size: int | None = None) -> np.ndarray:
    """Linear trail (guiding error / wind shake), centred on the kernel centre."""
    size = size or odd_size(length / 2 + 2)
    u, v = _grid(size, 0.0, angle)
    return _bin(np.exp(-0.5 * (v / width) ** 2) * (np.abs(u) <= length / 2), 3)


def chain(kernels: list[np.ndarray]) -> np.ndarray:
    """Convolve kernels together (the PSF of several blurs in a row), keeping it centred."""
    out = kernels[0]
    for k in kernels[1:]:
        out = fftconvolve(out, k, mode="full")
    out = np.clip(out, 0, None)
    return out / out.sum()


def centroid(kernel: np.ndarray) -> tuple[float, float]:
    """Flux-weighted centroid ``(y, x)`` relative to the kernel centre, in pixels."""
    n_y, n_x = kernel.shape
    y, x = np.mgrid[:n_y, :n_x]
    total = kernel.sum()
    return float((kernel * y).sum() / total - n_y // 2), float((kernel * x).sum() / total - n_x // 2)
