"""Smooth emission under the stars: what the restoration takes out first and puts back after.

The network sees the image on an asinh stretch (:mod:`astroswin.engine.normalize`) that is
nearly logarithmic over bright emission, so a star sitting on a bright nebula reaches it as a
small bump and comes back ~2x too wide, even at SNR >= 100 against the local noise
(``bench/faint.md``, by SNR for every scene kind). Taking out the smooth emission first (a
running median, which passes over stars) and adding it back afterwards shows the network the
stars on flat sky, where it was trained to restore them. The emission put back is the input's
own, so the flux is kept exactly; structure finer than the median's window stays in and is
restored as before.

Measured on the quality benchmark (``scripts/benchmark_quality.py``), 4 realizations per row,
with the weights bundled until 2026-11-28 evening (0.35 of them trained with this step; 0.8 of
the current ones, ``MODEL_CARD.md``), stars measured with the
nebula under them taken out: stars at SNR >= 30 on the nebulae at blur FWHM 3 and 4.5 go from
1.26x and 1.53x the true FWHM to 1.15x and 1.16x (``sharpen_linear`` alone: 1.29x and 1.55x to
1.15x and 1.18x); the galaxy fields' within 0.03x; PSNR within 0.8 dB on the star and galaxy
fields, the crowded bright star field included (-0.78 dB, still 3.05 dB above Richardson-Lucy).
"""

from __future__ import annotations

import numpy as np

from .normalize import no_data
from .parallel import available_cpus, run_all, spans

#: Default running-median window in pixels: wide enough that crowded star fields' wings do not
#: fill it, narrow enough to follow a nebula's structure. Measured on the quality benchmark, the
#: nebula at blur FWHM 4.5 (stars' FWHM over the truth) against the crowded bright star field
#: (PSNR change): 25 px 1.30x / -0.8 dB, 31 px 1.36x / -0.5 dB; with block medians instead of
#: the 25th percentile, 21 px 1.27x / -1.3 dB, 31 px 1.32x / -0.7 dB; with an exact median,
#: 15 px 1.25x / -2.6 dB. Switched off: 1.98x / 0 dB. (Those FWHMs were measured with the
#: nebula left under the stars. Re-measured without it, stars at SNR >= 30: 25 px 1.18x,
#: 13 px 1.15x / -3.4 dB, off 1.55x.) Re-checked 2026-11-28 with the averaged weights (benchmark
#: seeds): 19 px narrows the nebula at FWHM 4.5's pooled stars (1.91x against 2.10x) for -0.78 dB
#: on the bright field and -0.36 dB on the FWHM-4.5 galaxy; 31 px gains up to 0.29 dB but puts
#: that nebula's star flux at 1.051 and the FWHM-3 nebula's pooled FWHM at 1.27x (1.21x).
EMISSION_SCALE = 25
#: The median runs on the image binned by about ``scale / BIN_DIVISOR``: 16x less work at the
#: default, the same window on the sky.
BIN_DIVISOR = 6
#: Each bin is summarised by this percentile of its pixels (50: the median): a lower one keeps
#: more of the stars' light out of the emission, which the bright star field prefers.
BLOCK_PERCENTILE = 25.0
#: Pixels per band, when binning (whole bin rows) and when adding the emission back: 4 MB of
#: float32, so the step's temporaries stay near 20 MB whatever the frame's size.
BAND_VALUES = 1 << 20


class EmissionMap:
    """The smooth emission, held binned; full resolution only for the rows or tile asked for.

    A full-size copy would cost as much memory as the image itself (720 MB for a 60 MP RGB
    frame); the binned map is ``factor**2`` times smaller (16x at the default window), and
    linear interpolation of one tile's rows and columns costs little next to the network.

    Parameters
    ----------
    binned : numpy.ndarray
        ``(C, Hb, Wb)`` float32 smoothed bins, already zeroed on the frame's typical level.
    factor : int
        Bin size in pixels.
    shape : tuple of int
        ``(H, W)`` of the full image.
    """

    def __init__(self, binned: np.ndarray, factor: int, shape: tuple[int, int]):
        self.binned, self.factor, self.shape = binned, factor, shape

    def _axis(self, index: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Neighbouring bins and weight of the upper one, for pixel ``index`` (bin centres at
        ``(i + 0.5) * factor - 0.5``, edges held: scipy's ``zoom(grid_mode=True, mode="nearest")``)."""
        u = np.clip((np.asarray(index, dtype=np.float64) + 0.5) / self.factor - 0.5, 0, bins - 1)
        lo = np.floor(u).astype(np.intp)
        return lo, np.minimum(lo + 1, bins - 1), (u - lo).astype(np.float32)

    def at(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """``(C, len(rows), len(cols))`` float32: the emission at those pixel rows and columns
        (any index arrays, such as a tile's reflected ones), in the image's units. Peak memory:
        twice the result."""
        y0, y1, fy = self._axis(rows, self.binned.shape[1])
        x0, x1, fx = self._axis(cols, self.binned.shape[2])
        by = self.binned[:, y0] * (1 - fy)[:, None]
        by += self.binned[:, y1] * fy[:, None]
        out = by[:, :, x0]
        out *= 1 - fx
        upper = by[:, :, x1]
        upper *= fx
        out += upper
        return out

    def rows(self, start: int, stop: int) -> np.ndarray:
        """``(C, stop - start, W)``: whole rows ``start:stop``."""
        return self.at(np.arange(start, stop), np.arange(self.shape[1]))


def smooth_emission(image: np.ndarray, scale: int, background: np.ndarray, blank: bool = False, workers: int = 1) -> EmissionMap:
    """The smooth emission: a running median of ``scale`` px, relative to the frame's median.

    Zero on the frame's typical level (the median of the smoothed bins, within a fraction of a
    noise sigma of the stretch's black point on a frame), positive on nebulosity and galaxies,
    negative in dark lanes. Only the network's view changes: the restoration adds the same
    values back. The image is read in bands of bin rows, so a memory-mapped frame is never
    copied whole (peak extra memory: a few bands of ~4 MB, and the bins).

    Parameters
    ----------
    image : numpy.ndarray
        ``(C, H, W)`` linear image, any real dtype.
    scale : int
        Window of the running median in pixels (>= 3).
    background : numpy.ndarray
        ``(C,)`` level per channel that non-finite pixels count as, in the image's units.
    blank : bool
        Exact zeros count as that level too (:attr:`astroswin.engine.normalize.Stretch.blank`).
    workers : int
        Threads (:mod:`astroswin.engine.parallel`); the bands shrink with them, so the
        temporaries stay the same. The result does not depend on it.

    Returns
    -------
    EmissionMap
        In the image's units; :meth:`EmissionMap.rows` and :meth:`EmissionMap.at` give pixels.
    """
    from scipy.ndimage import median_filter

    c, h, w = image.shape
    factor = max(1, scale // BIN_DIVISOR)
    window = max(3, int(round(scale / factor)))
    hb, wb = -(-h // factor), -(-w // factor)
    workers = max(1, min(workers, available_cpus()))
    band = max(1, BAND_VALUES // (wb * factor * factor * workers))  # bin rows per band
    summary = np.empty((c, hb, wb), dtype=np.float32)
    whole = np.empty((c, hb, wb), dtype=bool)  # bins where every pixel holds data

    def summarise(channel: int, i0: int, i1: int) -> None:
        slab = np.asarray(image[channel, i0 * factor : i1 * factor], dtype=np.float32)
        valid = ~no_data(slab, blank)
        pad = ((0, (i1 - i0) * factor - slab.shape[0]), (0, wb * factor - w))
        slab = np.pad(np.where(valid, slab, np.float32(background[channel])), pad, mode="edge")
        blocks = slab.reshape(i1 - i0, factor, wb, factor).swapaxes(1, 2).reshape(i1 - i0, wb, factor * factor)
        summary[channel, i0:i1] = np.percentile(blocks, BLOCK_PERCENTILE, axis=2)
        whole[channel, i0:i1] = np.pad(valid, pad, mode="edge").reshape(i1 - i0, factor, wb, factor).all(axis=(1, 3))

    run_all([lambda ch=ch, i0=i0: summarise(ch, i0, min(hb, i0 + band)) for ch in range(c) for i0 in range(0, hb, band)], workers)
    binned = np.empty((c, hb, wb), dtype=np.float32)
    reach = window  # rows of context on each side: more than the window's half, odd or even

    def smooth(channel: int, i0: int, i1: int) -> None:
        lo, hi = max(0, i0 - reach), min(hb, i1 + reach)
        binned[channel, i0:i1] = median_filter(summary[channel, lo:hi], size=window, mode="nearest")[i0 - lo : i1 - lo]

    run_all([lambda ch=ch, i0=i0, i1=i1: smooth(ch, i0, i1) for ch in range(c) for i0, i1 in spans(hb, -(-workers // c), 4 * reach)], workers)
    for channel in range(c):
        # Zero on the frame's typical sky, whatever the percentile's bias, judged where there is
        # data: bins filled with the sky level sit above the percentile's level, and a border of
        # NaN or blank pixels once shifted the whole map with its size (3% on a bright star).
        smoothed, counted = binned[channel], whole[channel]
        smoothed -= np.median(smoothed[counted] if counted.any() else smoothed)
    return EmissionMap(binned, factor, (h, w))
