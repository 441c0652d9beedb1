"""Saturated stars: kept as the input has them, with a soft edge, never deconvolved.

A clipped core holds an unknown amount of light, so no restoration can recover the star. The
engine passes the clipped pixels (the plateau) through untouched; but the network still
sharpens the star's unclipped shoulders, and it moves their light into the core, where the
plateau cannot take it. Measured on a clipped Gaussian star (FWHM 4.7 px, twice the clip level
at its peak, ``tests/test_saturated.py``): the output was a flat disc with a cliff around it
(33472 ADU beside the plateau became 5697 on one side and 13297 on the other) and kept 0.43 of
the light in a 21 px box; over six sizes and depths, 0.43-0.89.

So the whole clipped star is the input's, in every channel (one weight for all: a star clipped
in red alone, given back in red only, came out with a red ring): the pixels connected to a
plateau through values above :data:`WING` of the way from the local sky (the median of a ring
:data:`REACH` px out) to the clip level, and at least :data:`NOISE_SIGMAS` sigma above that sky,
within :data:`REACH` px of the plateau, and :data:`SHOULDER` px around them, with a
:data:`FEATHER` px Gaussian edge into the restored image. On the same star: 0.9994 of the
light, the profile the input's to within the sky noise, and an unclipped star 30 px away still
sharpened (peak 6.3x). A plateau with nothing above that level around it (a hot pixel, a cosmic
ray at the clip level) is only itself: grown, it left 7x7 blotches of unrestored noise.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: Fraction of the way from the local sky to the clip level above which a pixel connected to a
#: plateau belongs to the clipped star. Relative to the local sky: from the frame's, a clipped
#: star on a nebula 1500 ADU bright (1% of the range: 645 ADU) took the nebula within 32 px
#: with it, a disc of unrestored noise.
WING = 0.01
#: ... and at least this many noise sigmas above the local sky, so that the noise of a frame
#: with little headroom does not join the star.
NOISE_SIGMAS = 5.0
#: Farthest a clipped star's pixels reach from its plateau, px.
REACH = 32
#: Pixels beyond the clipped star's outline that are the input's too: the network draws the
#: light of the wing just outside into the star, so the soft edge starts farther out.
SHOULDER = 2
#: Sigma of the Gaussian edge between a clipped star and the restored image around it, px.
FEATHER = 1.5
#: How far a plateau's weight can reach, px: rows of input a band needs around it.
CONTEXT = REACH + SHOULDER + int(np.ceil(4 * FEATHER))


def clipped_star_weight(image: np.ndarray, levels: np.ndarray, background: np.ndarray, noise: float) -> np.ndarray | None:
    """Weight of the input in the output, around clipped stars: 1 on them, 0 away from them.

    Parameters
    ----------
    image : numpy.ndarray
        ``(C, H, W)`` float32 input (a band of rows, with :data:`CONTEXT` rows around the ones
        whose weights are used), data units; non-finite pixels count as below every level.
    levels : numpy.ndarray
        ``(C,)`` clip level of each channel (+inf where a channel has none), data units:
        :func:`astroswin.engine.restore.saturation_level`.
    background : numpy.ndarray
        ``(C,)`` background of each channel, data units: the sky where a ring holds no data.
    noise : float
        Per-pixel noise sigma, data units.

    Returns
    -------
    numpy.ndarray or None
        ``(H, W)`` float32 in [0, 1], the same for every channel; None where no channel
        reaches its level.
    """
    levels = np.asarray(levels, dtype=np.float64)
    clips = [c for c in range(image.shape[0]) if np.isfinite(levels[c])]
    with np.errstate(invalid="ignore"):
        plateaus = [image[c] >= levels[c] for c in clips]
    if not any(p.any() for p in plateaus):
        return None
    stars, _ = ndimage.label(np.logical_or.reduce(plateaus), np.ones((3, 3), bool))
    h, w = stars.shape
    weight = np.zeros((h, w), dtype=np.float32)
    for index, box in enumerate(ndimage.find_objects(stars), 1):
        rows = slice(max(0, box[0].start - CONTEXT), min(h, box[0].stop + CONTEXT))
        cols = slice(max(0, box[1].start - CONTEXT), min(w, box[1].stop + CONTEXT))
        plateau = stars[rows, cols] == index
        distance = ndimage.distance_transform_edt(~plateau)
        ring = (distance > REACH - 3) & (distance <= REACH)
        star = plateau.copy()
        for c, clipped in zip(clips, plateaus):
            if not clipped[rows, cols][plateau].any():
                continue
            values = image[c, rows, cols]
            around = values[ring & np.isfinite(values)]
            sky = float(np.median(around)) if around.size else float(background[c])
            with np.errstate(invalid="ignore"):
                bright = values > sky + max(WING * (levels[c] - sky), NOISE_SIGMAS * noise)
            parts, _ = ndimage.label(bright | plateau, np.ones((3, 3), bool))
            star |= np.isin(parts, np.unique(parts[plateau])) & (distance <= REACH)
        if star.sum() > plateau.sum():  # a star: its shoulders and a soft edge too
            star = ndimage.binary_dilation(star, iterations=SHOULDER)
            part = np.maximum(ndimage.gaussian_filter(star.astype(np.float32), FEATHER), star)
        else:  # nothing bright around it: a hot pixel or a cosmic ray at the clip level
            part = star.astype(np.float32)
        np.maximum(weight[rows, cols], part, out=weight[rows, cols])
    return weight
