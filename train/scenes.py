"""Synthetic linear sky scenes, deterministic from a seed.

A scene is the *target*: the sky seen through a narrow, physically plausible PSF (a Gaussian
of FWHM ``target_fwhm`` ~1-1.5 px, so stars are never single-pixel spikes), in linear flux
units above the sky, shape ``(C, H, W)`` float64. :mod:`astroswin.train.degrade` then blurs and
adds noise to make the matching input.

Three kinds, mixed by :func:`make_scene`:

* star fields: power-law (Salpeter-like) luminosity function, crowding, colours, a few stars
  far brighter than the rest (they saturate in the degraded input);
* galaxies: galsim bulge (Sersic) + inclined disk (exponential) + star-forming knots
  (``RandomKnots``), with dust lanes, over a sparse star field;
* nebulae: log-normal turbulent textures (power-law spectra) with filaments and dark lanes,
  different per emission line in RGB, plus stars.

Any of them may also get a satellite trail (:func:`satellite_trail`), added by the training
data (``data.trail_probability``).
"""

from __future__ import annotations

from functools import partial

import numpy as np

from .psf import FWHM_PER_SIGMA

SCENE_KINDS = ("stars", "galaxy", "nebula")


def _render_points(shape, ys, xs, fluxes, fwhm: float) -> np.ndarray:
    """Sum of unit-flux Gaussians (FWHM ``fwhm``) at sub-pixel positions, times ``fluxes``.

    Each star is rendered exactly on a small stamp with pixel-integrated Gaussians (error
    functions), so the flux on the grid equals ``fluxes`` up to the stamp truncation (< 1e-6).
    """
    from scipy.special import erf

    h, w = shape
    out = np.zeros((fluxes.shape[0], h, w))
    sigma = fwhm / FWHM_PER_SIGMA
    r = int(np.ceil(5 * sigma)) + 1
    offs = np.arange(-r, r + 1)

    def integrated(centre_frac):
        edges = (offs[:, None] - 0.5 - centre_frac[None, :], offs[:, None] + 0.5 - centre_frac[None, :])
        return 0.5 * (erf(edges[1] / (np.sqrt(2) * sigma)) - erf(edges[0] / (np.sqrt(2) * sigma)))

    iy, ix = np.floor(ys + 0.5).astype(int), np.floor(xs + 0.5).astype(int)
    py, px = integrated(ys - iy), integrated(xs - ix)
    for k in range(ys.size):
        y0, x0 = iy[k] - r, ix[k] - r
        stamp = np.outer(py[:, k], px[:, k])
        ya, yb = max(0, y0), min(h, y0 + 2 * r + 1)
        xa, xb = max(0, x0), min(w, x0 + 2 * r + 1)
        if ya >= yb or xa >= xb:
            continue
        piece = stamp[ya - y0 : yb - y0, xa - x0 : xb - x0]
        out[:, ya:yb, xa:xb] += fluxes[:, k, None, None] * piece
    return out


def star_colours(rng: np.random.Generator, n: int, channels: int) -> np.ndarray:
    """``(C, n)`` colour multipliers (mean 1) from a blackbody-like temperature spread."""
    if channels == 1:
        return np.ones((1, n))
    t = rng.uniform(-1, 1, n)  # -1: red (cool), +1: blue (hot)
    rgb = np.stack([1 - 0.35 * t, np.ones(n), 1 + 0.45 * t])
    return rgb / rgb.mean(axis=0, keepdims=True)


def star_field(rng, shape, channels, target_fwhm, density=None, peak_flux=None) -> np.ndarray:
    """Stars with a power-law luminosity function (dN/dF ~ F^-2.35)."""
    h, w = shape
    density = density if density is not None else 10 ** rng.uniform(-2.7, -1.3)  # stars per px
    n = max(1, rng.poisson(density * h * w))
    f_min = 10.0
    f_max = peak_flux if peak_flux is not None else 10 ** rng.uniform(3, 5.5)
    a = 1.35  # cumulative slope of the Salpeter-like law
    u = rng.uniform(size=n)
    fluxes = (f_min ** -a - u * (f_min ** -a - f_max ** -a)) ** (-1 / a)
    ys, xs = rng.uniform(-4, h + 4, n), rng.uniform(-4, w + 4, n)
    return _render_points(shape, ys, xs, fluxes[None, :] * star_colours(rng, n, channels), target_fwhm)


def galaxy(rng, shape, channels, target_fwhm) -> tuple[np.ndarray, np.ndarray]:
    """A bulge + inclined disk + knots galaxy (galsim), with a dust lane; and field stars.

    Returns the galaxy's light and the stars apart (each ``(C, H, W)``)."""
    import galsim

    h, w = shape
    size = rng.uniform(3, min(h, w) / 4)
    q = rng.uniform(0.15, 1.0)
    beta = rng.uniform(0, 180) * galsim.degrees
    total = 10 ** rng.uniform(3.5, 5.5)
    bulge_frac = rng.uniform(0.05, 0.6)
    bulge = galsim.Sersic(n=float(rng.choice([1.5, 2.0, 3.0, 4.0])), half_light_radius=size * 0.35, flux=bulge_frac)
    disk = galsim.Exponential(half_light_radius=size, flux=(1 - bulge_frac) * 0.8)
    # galsim shear convention: q is the minor/major axis ratio.
    disk_profile = disk.shear(q=q, beta=beta)
    bulge_profile = bulge.shear(q=max(q, 0.6), beta=beta)
    psf = galsim.Gaussian(fwhm=target_fwhm)
    offset = (rng.uniform(-w / 6, w / 6), rng.uniform(-h / 6, h / 6))
    colours = [np.array([1.0]), np.array([1.0])] if channels == 1 else [np.array([1.3, 1.0, 0.7]), np.array([0.8, 1.0, 1.25])]
    layers = []
    for profile in (bulge_profile, disk_profile):
        image = galsim.Convolve(profile, psf).drawImage(nx=w, ny=h, scale=1.0, offset=offset)
        layers.append(image.array.astype(np.float64))
    scene = total * (colours[0][:, None, None] * layers[0] + colours[1][:, None, None] * layers[1])
    # Star-forming knots: points following the exponential disk (radius ~ Gamma(2) in units of
    # the scale length), inclined like the disk. Drawn directly: galsim's RandomKnots costs ~0.3 s.
    n_knots = int(rng.integers(10, 60))
    radius = rng.gamma(2.0, size / 1.678, n_knots)
    phi = rng.uniform(0, 2 * np.pi, n_knots)
    u, v = radius * np.cos(phi), radius * np.sin(phi) * q
    ang = beta.rad
    kx = w / 2 + offset[0] - 0.5 + u * np.cos(ang) - v * np.sin(ang)
    ky = h / 2 + offset[1] - 0.5 + u * np.sin(ang) + v * np.cos(ang)
    knot_flux = total * (1 - bulge_frac) * 0.2 * rng.dirichlet(np.ones(n_knots))
    scene += _render_points(shape, ky, kx, knot_flux[None, :] * colours[1][:, None], target_fwhm)
    if q < 0.5 and rng.uniform() < 0.7:  # edge-on-ish: a dust lane along the major axis
        yy, xx = np.mgrid[:h, :w]
        cy, cx = h / 2 + offset[1], w / 2 + offset[0]
        ang = beta.rad
        across = -(xx - cx) * np.sin(ang) + (yy - cy) * np.cos(ang)
        depth = rng.uniform(0.4, 0.9)
        scene *= 1 - depth * np.exp(-0.5 * (across / (0.15 * size * q + 0.7)) ** 2)
    return scene, star_field(rng, shape, channels, target_fwhm, density=10 ** rng.uniform(-3.3, -2.3))


def turbulence(rng, shape, slope: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian random field with power spectrum ~ k^-slope."""
    h, w = shape
    ky = np.fft.fftfreq(h)[:, None]
    kx = np.fft.rfftfreq(w)[None, :]
    k = np.sqrt(kx**2 + ky**2)
    k[0, 0] = 1.0
    amp = k ** (-slope / 2)
    amp[0, 0] = 0
    phase = rng.normal(size=(h, kx.shape[1])) + 1j * rng.normal(size=(h, kx.shape[1]))
    field = np.fft.irfft2(amp * phase, s=(h, w))
    return field / (field.std() + 1e-12)


#: log10 range of a nebula's mean level (the stars' fluxes are fixed by :func:`star_field`), so
#: it sets how bright the emission under the stars is: the default gives training a median star
#: contrast of 6.3 (``scripts/star_contrast.py``), and the model is weakest below about 3.
NEBULA_LEVEL_LOG10 = (0.5, 2.5)


def nebula(rng, shape, channels, target_fwhm, level_log10: tuple[float, float] = NEBULA_LEVEL_LOG10) -> tuple[np.ndarray, np.ndarray]:
    """Emission nebula: log-normal turbulent texture with filaments and dark lanes; and stars.

    Returns the emission and the stars apart (each ``(C, H, W)``)."""
    level = 10 ** rng.uniform(*level_log10)
    n_lines = 1 if channels == 1 else 2
    lines = []
    for _ in range(n_lines):
        base = turbulence(rng, shape, rng.uniform(2.5, 3.5))
        filaments = np.abs(turbulence(rng, shape, rng.uniform(2.0, 3.0)))
        texture = np.exp(rng.uniform(0.5, 1.2) * base) * (1 + rng.uniform(0, 2) * np.exp(-filaments * 4))
        lines.append(texture)
    lanes = np.clip(turbulence(rng, shape, 3.5) - rng.uniform(0.5, 1.5), 0, None)
    absorption = np.exp(-rng.uniform(0.5, 3.0) * lanes)
    if channels == 1:
        scene = lines[0][None]
    else:
        ha, oiii = lines
        scene = np.stack([ha + 0.2 * oiii, 0.3 * ha + 0.8 * oiii, 0.1 * ha + oiii])
    scene = level * scene * absorption / scene.mean()
    # The texture is band-limited by the target PSF like everything else.
    from scipy.ndimage import gaussian_filter

    scene = np.stack([gaussian_filter(c, target_fwhm / FWHM_PER_SIGMA, mode="wrap") for c in scene])
    return scene, star_field(rng, shape, channels, target_fwhm)


#: log10 range of a satellite trail's flux per pixel of its length, scene units (before the
#: stream's brightness multiplier): blurred to FWHM 4 px and in the training data's typical
#: noise, about 1 to 300 sigma at its crest.
TRAIL_FLUX_LOG10 = (1.0, 3.5)


def satellite_trail(rng, shape, channels, target_fwhm, flux_log10: tuple[float, float] = TRAIL_FLUX_LOG10) -> np.ndarray:
    """A straight satellite or aircraft trail across the scene, ``(C, H, W)``.

    A trail is a moving point source: across it, its profile is the PSF's line spread, as wide
    as the stars (here the target PSF's Gaussian; the degradation blurs it like everything
    else). Along it, its brightness glints: a smooth modulation of up to +-50%. Sunlight
    reflected off a satellite, so nearly white. The bundled weights without trails in training
    kept 0.38-0.64 of a 500-3000 sigma trail of the stars' width (the flux anchor then scaled
    30 sigma stars 9-16 px from it by 1.24-2.08; ``bench/trail_photometry.md``).
    """
    h, w = shape
    sigma = target_fwhm / FWHM_PER_SIGMA
    angle = rng.uniform(0, np.pi)
    cy, cx = rng.uniform(h / 4, 3 * h / 4), rng.uniform(w / 4, 3 * w / 4)  # through the middle, where the crop is
    yy, xx = np.mgrid[:h, :w]
    across = (xx - cx) * np.sin(angle) - (yy - cy) * np.cos(angle)
    along = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
    flux = 10 ** rng.uniform(*flux_log10)
    glint = 1 + rng.uniform(0, 0.5) * np.sin(along / rng.uniform(5, 40) + rng.uniform(0, 2 * np.pi))
    profile = flux * glint * np.exp(-0.5 * (across / sigma) ** 2) / (np.sqrt(2 * np.pi) * sigma)
    colour = np.ones(channels) if channels == 1 else rng.uniform(0.9, 1.1, channels)
    return colour[:, None, None] * profile[None]


def make_scene(seed: int, shape: tuple[int, int], channels: int | None = None, kind: str | None = None, target_fwhm: float | None = None, nebula_level_log10: tuple[float, float] = NEBULA_LEVEL_LOG10) -> tuple[np.ndarray, dict]:
    """Generate one target scene, deterministically from ``seed``.

    Parameters
    ----------
    seed : int
    shape : (int, int)
        ``(H, W)`` in pixels.
    channels : int, optional
        1 or 3; random (30% mono) when None.
    kind : str, optional
        One of :data:`SCENE_KINDS`; random when None.
    target_fwhm : float, optional
        FWHM of the target PSF in pixels; uniform in [1.0, 1.5] when None.
    nebula_level_log10 : (float, float)
        log10 range of a nebula's mean level (:data:`NEBULA_LEVEL_LOG10`); one draw whatever
        the range, so the rest of the scene stays the same for a seed.

    Returns
    -------
    scene : numpy.ndarray
        ``(C, H, W)`` float64, linear flux above the sky.
    info : dict
        ``kind``, ``channels``, ``target_fwhm``, and ``stars``: the scene's stars alone,
        ``(C, H, W)`` (the rest is the extended light under them: a galaxy and its knots, a
        nebula), so a benchmark can measure stars with the light under them taken out exactly.
    """
    rng = np.random.default_rng(seed)
    kind = kind or SCENE_KINDS[int(rng.integers(len(SCENE_KINDS)))]
    channels = channels or (1 if rng.uniform() < 0.3 else 3)
    target_fwhm = target_fwhm or rng.uniform(1.0, 1.5)
    makers = {"stars": _stars_alone, "galaxy": galaxy, "nebula": partial(nebula, level_log10=nebula_level_log10)}
    if kind not in makers:
        raise ValueError(f"unknown scene kind {kind!r}; choose one of {SCENE_KINDS}")
    light, stars = makers[kind](rng, shape, channels, target_fwhm)
    return light + stars, {"kind": kind, "channels": channels, "target_fwhm": target_fwhm, "stars": stars}


def _stars_alone(rng, shape, channels, target_fwhm) -> tuple[np.ndarray, np.ndarray]:
    """A star field as ``(light, stars)``: no extended light."""
    return np.zeros((channels, *shape)), star_field(rng, shape, channels, target_fwhm)
