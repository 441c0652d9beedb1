"""Flux anchor: hold each channel's light, summed over boxes much wider than a star, to the input's.

A deconvolution moves light; it should not create or destroy it. The network alone keeps
0.60-1.37 of a bright isolated star's flux and splits a white star's channels by 2-20%
(``scripts/star_photometry.py``). Per channel, with ``bg`` the stretch's background and sums
over a :data:`BOX` px square of pixels holding data::

    r = sum(in - bg) / sum(out - bg)                  clipped to RATIO_LIMITS
    w = clip(mean(in - bg) / (SIGNIFICANCE * sigma_mean) - 1, 0, 1)
    g = 1 + w * (r - 1),  averaged over a SMOOTHING px square
    out' = bg + (out - bg) * g

where ``sigma_mean`` is the noise of the box's mean. The average makes ``g`` continuous: a
star entering or leaving a box changes its sums at once, and unsmoothed ``g`` stepped there,
drawing a 31 px square into a bright star's faint wings. On faint sky ``w = 0`` and nothing
changes; around a bright star the star is rescaled as a whole (its shape is kept) and each
channel is held to its own input light (its colour is too). Measured in
``docs/flux-anchor.md``: isolated stars keep 0.995-1.000 of their flux from 100 sigma up,
and a white star's channels stay within 0.2% of each other from 1000 sigma.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: Side of the summing box, px: much wider than a star's light (FWHM up to about 8 px). A
#: Gaussian window of the same reach weighs a wide input star less than a compact output one
#: and left 0.87-0.98 of the flux (``docs/flux-anchor.md``).
BOX = 31
#: Side of the square over which the factor is averaged, px: continuous, yet a compact star's
#: pixels (within 8 px of it) only average boxes that hold all of its light.
SMOOTHING = 15
#: Rows of context a band of rows needs on each side.
MARGIN = BOX // 2 + SMOOTHING // 2
#: The correction starts where a box's mean input light is this many times its noise, and is
#: whole at twice that.
SIGNIFICANCE = 10.0
#: Limits of the correction factor: the network never misplaces more light than this.
RATIO_LIMITS = (0.5, 2.0)


def flux_gain(observed: np.ndarray, restored: np.ndarray, background: np.ndarray, noise: float, valid: np.ndarray) -> np.ndarray:
    """Factor by which to scale ``restored - background`` so that its light matches the input's.

    Parameters
    ----------
    observed, restored : numpy.ndarray
        ``(C, H, W)`` linear input and network output, data units.
    background : numpy.ndarray
        ``(C,)`` per-channel black point, data units.
    noise : float
        Per-pixel noise sigma of the input, data units (> 0).
    valid : numpy.ndarray
        ``(C, H, W)`` bool, the pixels holding data; the others count in neither sum (a NaN or
        blank border does not pull the ratio) and their factor is meaningless.

    Returns
    -------
    numpy.ndarray
        ``(C, H, W)`` float32 factors within :data:`RATIO_LIMITS`; exactly 1 where no box
        within reach holds significant light. Pixels outside the image count as holding no data, so a band
        of rows with :data:`MARGIN` rows of context on each side gets the whole image's factors.
    """
    if observed.shape != restored.shape or observed.shape != valid.shape or observed.ndim != 3:
        raise ValueError(f"expected matching (C, H, W) arrays, got {observed.shape}, {restored.shape}, {valid.shape}")
    bg = np.asarray(background, dtype=np.float32).reshape(-1, 1, 1)
    mean_in, fraction = _box_mean(observed - bg, valid, BOX)
    mean_out, _ = _box_mean(restored - bg, valid, BOX)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(mean_out > 0, np.clip(mean_in / mean_out, *RATIO_LIMITS), 1.0)
    significance = mean_in * BOX * np.sqrt(np.maximum(fraction, 0.0)) / noise  # sigma_mean = noise / (BOX sqrt(fraction))
    weight = np.clip(significance / SIGNIFICANCE - 1.0, 0.0, 1.0)
    gain, _ = _box_mean(1.0 + weight * (ratio - 1.0), valid, SMOOTHING, empty=1.0)
    return gain


def _box_mean(values: np.ndarray, valid: np.ndarray, side: int, empty: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``values`` over the ``valid`` pixels of the ``side`` px square around each pixel
    (``empty`` where it holds none), and the fraction of the square they fill; float32."""
    size = (1, side, side)
    fraction = ndimage.uniform_filter(valid.astype(np.float32), size, mode="constant")
    total = ndimage.uniform_filter(np.where(valid, values, 0).astype(np.float32), size, mode="constant")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(fraction > 0, total / fraction, empty).astype(np.float32), fraction
