"""Saturated stars: kept as the input has them, with a soft edge, never deconvolved.

A clipped core holds an unknown amount of light, so no restoration can recover the star. The
engine passes the clipped pixels (the plateau) through untouched; but the network still
sharpens the star's unclipped shoulders, and it moves their light into the core, where the
plateau cannot take it. Measured on a clipped Gaussian star (FWHM 4.7 px, twice the clip level
at its peak, ``tests/test_saturated.py``): the output was a flat disc with a cliff around it
(33472 ADU beside the plateau became 5697 on one side and 13297 on the other) and kept 0.43 of
the light in a 21 px box; over six sizes and depths, 0.43-0.89.

So the whole clipped star is the input's: the pixels connected to a plateau through values
above :data:`WING` of the way from the background to the clip level, within :data:`REACH` px of
the plateau, and :data:`SHOULDER` px around them, with a :data:`FEATHER` px Gaussian edge into
the restored image. On the same star: 0.9994 of the light, the profile the input's to within
the sky noise, and an unclipped star 30 px away still sharpened (peak 6.3x).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: Fraction of the way from the background to the clip level above which a pixel connected to a
#: plateau belongs to the clipped star.
WING = 0.01
#: Farthest a clipped star's pixels reach from its plateau, px. With :data:`SHOULDER` and the
#: edge (4 :data:`FEATHER`), within the anchor's band context (:data:`astroswin.engine.anchor.MARGIN`
#: rows), so a band sees the whole of it.
REACH = 32
#: Pixels beyond the clipped star's outline that are the input's too: the network draws the
#: light of the wing just outside into the star, so the soft edge starts farther out.
SHOULDER = 2
#: Sigma of the Gaussian edge between a clipped star and the restored image around it, px.
FEATHER = 1.5


def clipped_star_weight(image: np.ndarray, levels: np.ndarray, background: np.ndarray) -> np.ndarray | None:
    """Weight of the input in the output, around clipped stars: 1 on them, 0 away from them.

    Parameters
    ----------
    image : numpy.ndarray
        ``(C, H, W)`` float32 input (a band of rows is fine), data units; non-finite pixels
        count as below every level.
    levels : numpy.ndarray
        ``(C,)`` clip level of each channel (+inf where a channel has none), data units:
        :func:`astroswin.engine.restore.saturation_level`.
    background : numpy.ndarray
        ``(C,)`` background of each channel, data units.

    Returns
    -------
    numpy.ndarray or None
        ``(C, H, W)`` float32 in [0, 1], or None where no channel reaches its level.
    """
    weight = None
    for channel, level in enumerate(np.asarray(levels, dtype=np.float64)):
        if not np.isfinite(level):
            continue
        with np.errstate(invalid="ignore"):
            plateau = image[channel] >= level
            if not plateau.any():
                continue
            bright = image[channel] > background[channel] + WING * (level - background[channel])
        labels, _ = ndimage.label(bright)
        boxes = ndimage.find_objects(labels)
        star = np.zeros(plateau.shape, dtype=bool)
        for index in np.unique(labels[plateau]):  # each clipped star, within its bounding box
            box = boxes[index - 1]
            near = ndimage.distance_transform_edt(~plateau[box]) <= REACH
            star[box] |= (labels[box] == index) & near
        if weight is None:
            weight = np.zeros(image.shape, dtype=np.float32)
        star = ndimage.binary_dilation(star, iterations=SHOULDER)
        weight[channel] = np.maximum(ndimage.gaussian_filter(star.astype(np.float32), FEATHER), star)
    return weight
