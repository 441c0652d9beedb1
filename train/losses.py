"""Loss terms of the staged curriculum, as pure tensor functions ``(B, C, H, W) -> scalar``.

Predictions ``p`` and targets ``t`` are in the engine's stretched space
(:mod:`astroswin.engine.normalize`); :func:`flux`, :func:`bright_flux`, :func:`linear_sharp`,
:func:`star_shape`, :func:`false_peaks` and :func:`sky_level` map them back to linear
(noise-sigma units) first. The original AstroSWIN's terms are reproduced as they were, with
its one real bug fixed (AHBG's mask pointed the wrong way); :func:`flux` is new: a loss on a
display stretch hardly weighs bright cores, and without it the model learns to dim stars by
20-35%.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from astroswin.engine.normalize import RANGE, SOFTENING


def _check(p: torch.Tensor, t: torch.Tensor) -> None:
    if p.shape != t.shape or p.ndim != 4:
        raise ValueError(f"expected two (B, C, H, W) tensors of one shape, got {tuple(p.shape)} and {tuple(t.shape)}")


def l1(p, t):
    """Mean absolute error."""
    _check(p, t)
    return (p - t).abs().mean()


def mse(p, t):
    """Mean squared error."""
    _check(p, t)
    return ((p - t) ** 2).mean()


def brightness_mask(p, t):
    """``mean(sigmoid(1 - t) (p - t)^2) + mean(sigmoid(t) |p - t|)``: L2 on dark, L1 on bright."""
    _check(p, t)
    d = p - t
    return (torch.sigmoid(1 - t) * d**2).mean() + (torch.sigmoid(t) * d.abs()).mean()


def finite_differences(x):
    """Forward differences along W and H, each cropped to ``(B, C, H-1, W-1)``."""
    return x[..., :-1, 1:] - x[..., :-1, :-1], x[..., 1:, :-1] - x[..., :-1, :-1]


def gradient(p, t, emphasis: float = 1.0):
    """L1 between finite-difference gradients, emphasised where the target is smooth.

    The weight ``1 + emphasis * exp(-|grad t| / mean|grad t|)`` makes flat areas (sky) count
    more, as the original did, so noise there is not mistaken for detail.
    """
    _check(p, t)
    loss = 0.0
    for gp, gt in zip(finite_differences(p), finite_differences(t)):
        scale = gt.abs().mean().clamp_min(1e-6)
        weight = 1 + emphasis * torch.exp(-gt.abs() / scale)
        loss = loss + (weight * (gp - gt).abs()).mean()
    return loss / 2


def soft_histogram(x, bins: int = 256, bandwidth: float = 0.1, lo: float = -0.1, hi: float = 1.0):
    """Per-channel soft histogram ``(B, C, bins)`` with a triangular kernel.

    The kernel's half-width is ``bandwidth * bins / 10`` bins (0.1, the original's default, is
    about 2.6 bins); values outside ``[lo, hi]`` fall off the ends. Each row sums to 1.
    """
    centres = torch.linspace(lo, hi, bins, device=x.device, dtype=x.dtype)
    width = bandwidth * bins / 10 * (hi - lo) / (bins - 1)
    flat = x.flatten(2).unsqueeze(-1)  # (B, C, N, 1)
    weights = (1 - (flat - centres).abs() / width).clamp_min(0)
    hist = weights.sum(2)
    return hist / hist.sum(-1, keepdim=True).clamp_min(1e-12)


def histogram(p, t, bandwidth: float = 0.1, bins: int = 256):
    """L1 between soft per-channel histograms (global tone distribution)."""
    _check(p, t)
    return (soft_histogram(p, bins, bandwidth) - soft_histogram(t, bins, bandwidth)).abs().sum(-1).mean()


def ahbg(p, t, block: int = 32, threshold: float = 1e-3):
    """Adaptive homogeneous-background loss.

    The image is cut into ``block x block`` blocks; where the *target* is homogeneous (its
    pixel variance within the block below ``threshold``), the variance of the prediction's pixels
    in that block is penalised in excess of the target's. This penalises noise left on
    smooth background, the direction the name says (the original's mask was inverted and
    penalised the structured regions).
    """
    _check(p, t)
    b = min(block, p.shape[-1], p.shape[-2])
    vp = F.avg_pool2d(p**2, b) - F.avg_pool2d(p, b) ** 2
    vt = F.avg_pool2d(t**2, b) - F.avg_pool2d(t, b) ** 2
    mask = (vt < threshold).to(p.dtype)
    return (mask * (vp - vt).clamp_min(0)).sum() / mask.sum().clamp_min(1.0)


LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def laplacian(x):
    """Discrete 5-point Laplacian per channel, 'valid' region ``(B, C, H-2, W-2)``."""
    c = x.shape[1]
    kernel = LAPLACIAN.to(x).expand(c, 1, 3, 3)
    return F.conv2d(x, kernel, groups=c)


def sharp(p, t, alpha: float = 0.7):
    """``alpha * L1(p, t) + (1 - alpha) * L1(laplacian(p), laplacian(t))``."""
    _check(p, t)
    return alpha * l1(p, t) + (1 - alpha) * (laplacian(p) - laplacian(t)).abs().mean()


def to_sigma_units(s):
    """Stretched -> linear above background in units of the noise sigma (bg cancels)."""
    return torch.sinh(s * RANGE) * SOFTENING


def aperture_sums(x, aperture: int):
    """Sums over every ``aperture x aperture`` box, 'valid' region ``(B, C, H-a+1, W-a+1)``."""
    return F.avg_pool2d(x, aperture, stride=1) * aperture * aperture


def flux(p, t, apertures: tuple[int, ...] = (5, 11), softening: float = 30.0):
    """Flux conservation: compare local sums (box apertures) in *linear* space.

    Each aperture sum ``A`` (in noise-sigma units) is compared as ``asinh(A / softening)``:
    relative error for bright stars and galaxy cores, absolute near the noise. Box apertures of
    5 and 11 px hold most of a star's flux at the FWHMs trained on.
    """
    _check(p, t)
    lp, lt = to_sigma_units(p.float()), to_sigma_units(t.float())
    loss = 0.0
    for a in apertures:
        sp, st = aperture_sums(lp, a), aperture_sums(lt, a)
        loss = loss + (torch.asinh(sp / softening) - torch.asinh(st / softening)).abs().mean()
    return loss / len(apertures)


def bright_flux(p, t, aperture: int = 11, threshold: float = 100.0):
    """Relative flux error ``|A_p / A_t - 1|`` over the apertures whose target sum is bright.

    :func:`flux` averages over every aperture position, so a few bright stars in a crop of sky
    weigh almost nothing: a sharpening fine-tune dimmed stars above 1e4 e- by ~10% with it in
    place. Here the mean runs over the box apertures (``aperture`` px) whose *target* sum
    exceeds ``threshold`` noise sigmas (about SNR 20 for a star), so a bright star's flux
    counts the same however much empty sky surrounds it. Zero (with a gradient path) when no
    aperture is that bright.
    """
    _check(p, t)
    sp, st = aperture_sums(to_sigma_units(p.float()), aperture), aperture_sums(to_sigma_units(t.float()), aperture)
    bright = (st > threshold).float()  # a mask, not indexing: no host sync per step
    relative = (sp - st).abs() / st.clamp_min(threshold)  # = / st where bright; finite elsewhere
    return (relative * bright).sum() / bright.sum().clamp_min(1.0)


def linear_sharp(p, t, softening: float = 3.0):
    """Sharpness in linear space: L1 between ``asinh(laplacian(L) / softening)`` of the two.

    ``L`` is the image in noise-sigma units above the background (:func:`to_sigma_units`). On
    the stretch, asinh is nearly a logarithm over a bright nebula, so a star sitting on it is a
    small bump there and :func:`sharp` hardly sees it: the shipped model left such stars ~2x
    too wide while sharpening the same stars on dark sky. The Laplacian of the *linear* image
    cancels a smooth background, so a star's core counts the same on a nebula as on dark sky;
    asinh then makes the error relative for bright cores and absolute near the noise.
    """
    _check(p, t)
    lp, lt = laplacian(to_sigma_units(p.float())), laplacian(to_sigma_units(t.float()))
    return (torch.asinh(lp / softening) - torch.asinh(lt / softening)).abs().mean()


def _window_moments(x: torch.Tensor, window: int, outer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flux, central second moment (px^2) and centre pixel of each ``window`` box, above its ring's mean.

    The ring is the ``outer`` box less the ``window`` box; its mean is the local background.
    All three are 'valid', ``(B, C, H - outer + 1, W - outer + 1)``; moments are about the
    box's own centroid, so a star a pixel off the box's centre reads the same size.
    """
    c, r, margin = x.shape[1], window // 2, (outer - window) // 2
    ring = (aperture_sums(x, outer) - aperture_sums(x, window)[..., margin:-margin, margin:-margin]) / (outer**2 - window**2)
    offsets = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    dy, dx = offsets[:, None].expand(window, window), offsets[None, :].expand(window, window)
    kernels = torch.stack([torch.ones_like(dy), dy, dx, dy**2 + dx**2])[:, None].repeat(c, 1, 1, 1)
    sums = F.conv2d(x, kernels, groups=c)[..., margin:-margin, margin:-margin].unflatten(1, (c, 4))
    above = sums - ring[:, :, None] * kernels[:4, 0].sum((-2, -1))[None, None, :, None, None]
    s0, sy, sx, s2 = above.unbind(2)
    s0 = s0.clamp_min(1e-3)
    centre = x[..., outer // 2 : x.shape[-2] - outer // 2, outer // 2 : x.shape[-1] - outer // 2] - ring
    return s0, s2 / s0 - (sy / s0) ** 2 - (sx / s0) ** 2, centre


def star_shape(p, t, threshold: float = 10.0, window: int = 7, outer: int = 11, compact: float = 1.5, floor: float = 0.5):
    """Size error of point sources: ``|log((m_p + f) / (m_t + f))| / 2`` over the target's stars.

    ``m`` is the central second moment (px^2) of a ``window`` box above the mean of the ring
    out to ``outer`` px, in linear noise-sigma units (:func:`to_sigma_units`), about each
    box's own centroid; half the log of their ratio is the error of the log of the star's size.
    ``f`` (``floor``, px^2) is about a pixel's own second moment: a star of the ~1.2 px target
    PSF reads 0.2-0.7 px^2 as its centre falls on a pixel's centre or corner, and the floor
    keeps that sampling from weighing as much as a real size error.
    A star is a local maximum of the target (3 x 3), at least a tenth of its box's light, whose
    box holds more than ``threshold`` sigmas and whose target moment is under ``compact`` px^2 (a star through the ~1.2 px
    target PSF reads about 0.7; a galaxy's knot reads more). Every other term compares pixels
    at fixed positions, so a faint star whose position the noise leaves uncertain by a pixel
    is cheapest spread out; this term compares shape about the output's own centroid, as the
    benchmark's star fits do. Zero (with a gradient path) when no star is found.
    """
    _check(p, t)
    lp, lt = to_sigma_units(p.float()), to_sigma_units(t.float())
    flux_t, size_t, centre = _window_moments(lt, window, outer)
    flux_p, size_p, _ = _window_moments(lp, window, outer)
    edge = outer // 2
    peak = lt[..., edge:-edge, edge:-edge] == F.max_pool2d(lt, 3, stride=1, padding=1)[..., edge:-edge, edge:-edge]
    stars = (peak & (centre > 0.1 * flux_t) & (flux_t > threshold) & (size_t >= 0) & (size_t < compact)).float()
    # the output's star may be missing (flux near 0): its moment is then noise; flux terms see it
    ratio = (size_p.clamp(0.0, float(window**2)) + floor) / (size_t.clamp(0.0, float(window**2)) + floor)
    error = 0.5 * torch.log(ratio).abs() * (flux_p > 0.25 * flux_t).float()
    return (error * stars).sum() / stars.sum().clamp_min(1.0)


def dark_sky(linear_target, light: float = 1.0, clearance: int = 4):
    """Where the target is sky: ``(B, 1, H, W)``, true more than ``clearance`` px from every pixel
    (of any channel) further than ``light`` noise sigmas from the stretch's background.

    ``linear_target`` is the target in noise-sigma units (:func:`to_sigma_units`), which its
    callers have already computed.

    Further *below* counts too: in a crop of nebula or galaxy the true sky and the dark lanes lie
    under the background the stretch estimated (by up to tens of sigma), the noise there is the
    emission's shot noise, not the sky's, and restoring the blur's spill into them is the job of
    the other terms.
    """
    lit = F.max_pool2d((linear_target.abs() > light).float(), 2 * clearance + 1, stride=1, padding=clearance)
    return lit.amax(1, keepdim=True) == 0


def false_peaks(p, t, threshold: float = 1.0, light: float = 1.0, clearance: int = 4):
    """Excess of the output's compact peaks where the target is dark sky, in noise sigmas per pixel.

    A peak is a local maximum (3 x 3) of ``p - t`` in linear noise-sigma units
    (:func:`to_sigma_units`) above ``threshold``, on the target's :func:`dark_sky`. Each peak's
    3 x 3 neighbourhood adds ``relu(p - t - threshold)``; the sum is divided by the number of
    pixels, so a crop's loss grows with its count of false peaks. Noise correlated between
    pixels, as in every registered stack, comes in blobs that the sharpening terms
    (:func:`star_shape` most) reward making into compact peaks, and no other term penalises a
    peak where the target has nothing. This is the quantity ``scripts/correlated_noise.py``
    counts. Zero (with a gradient path) when no peak is found.
    """
    _check(p, t)
    lt = to_sigma_units(t.float())
    residual = to_sigma_units(p.float()) - lt
    peak = (residual == F.max_pool2d(residual, 3, stride=1, padding=1)) & (residual > threshold) & dark_sky(lt, light, clearance)
    near_peak = F.max_pool2d(peak.float(), 3, stride=1, padding=1)
    return (F.relu(residual - threshold) * near_peak).mean()


def sky_level(p, t, light: float = 1.0, clearance: int = 4):
    """Offset of the output's dark sky from the target's, ``|mean(p - t)|`` per image, in noise sigmas.

    The mean runs over the target's :func:`dark_sky` (every channel), and the absolute values
    are averaged over the batch. Every other term is an average over pixels in which a pedestal a
    few hundredths of a sigma high costs almost nothing, yet over a whole frame such a pedestal
    holds more light than its faint stars: fine-tuned with a first :func:`false_peaks` and
    without this term, the network raised the sky by 0.02 sigma, and a high-noise frame's total
    flux read 1.14 of the truth (``MODEL_CARD.md``, *False peaks*). Zero
    (with a gradient path) for an image with no dark sky.
    """
    _check(p, t)
    lt = to_sigma_units(t.float())
    residual = to_sigma_units(p.float()) - lt
    dark = dark_sky(lt, light, clearance).float().expand_as(residual)
    offset = (residual * dark).sum((1, 2, 3)) / dark.sum((1, 2, 3)).clamp_min(1.0)
    return offset.abs().mean()


#: Registry: name -> function. Config keys name these; ``params`` in the config pass keywords.
LOSSES = {
    "l1": l1,
    "mse": mse,
    "brightness_mask": brightness_mask,
    "gradient": gradient,
    "histogram": histogram,
    "ahbg": ahbg,
    "sharp": sharp,
    "flux": flux,
    "bright_flux": bright_flux,
    "linear_sharp": linear_sharp,
    "star_shape": star_shape,
    "false_peaks": false_peaks,
    "sky_level": sky_level,
}


def weighted_loss(p, t, weights: dict[str, float], params: dict[str, dict] | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of the named terms; returns the total and each term's value (for logging)."""
    params = params or {}
    total = p.new_zeros(())
    terms: dict[str, float] = {}
    for name, weight in weights.items():
        if name not in LOSSES:
            raise ValueError(f"unknown loss {name!r}; known: {sorted(LOSSES)}")
        value = LOSSES[name](p, t, **params.get(name, {}))
        terms[name] = float(value.detach())
        total = total + weight * value
    return total, terms
