"""Flux anchor: hold each channel's light, summed over boxes much wider than a star, to the input's.

A deconvolution moves light; it should not create or destroy it. The network alone keeps
0.60-1.37 of a bright isolated star's flux and splits a white star's channels by 2-20%
(``scripts/star_photometry.py``). Per channel, with ``bg`` the stretch's background and sums
over a :data:`BOX` px square of pixels holding data::

    r = sum(in - bg) / sum(out - bg)                  clipped to RATIO_LIMITS (the upper
                                                      one where sum(out - bg) <= 0)
    w = clip(mean(in - bg) / (SIGNIFICANCE * sigma_mean) - 1, 0, 1)
        * clip(1 - |ln(r / r_wide)| / AGREEMENT, 0, 1)    r_wide: r over a 2 BOX + 1 px box
    g = 1 + w * (r - 1),  averaged over a SMOOTHING px square
    out' = bg + (out - bg) * g

where ``sigma_mean`` is the noise of the box's mean. The second factor of ``w`` trusts a box
only where the twice wider box agrees with it: the network moves a bright star's wings into
its core, so a box beside the star holds wing light in the input and none in the output, and
its ratio (up to 2) once scaled faint stars 16-34 px from the star by 1.16-1.56. The average
makes ``g`` continuous: a star entering or leaving a box changes its sums at once, and
unsmoothed ``g`` stepped there, drawing a 31 px square into a bright star's faint wings. On
faint sky ``w = 0`` and nothing changes; around a bright star the star is rescaled as a whole
(its shape is kept) and each channel is held to its own input light (its colour is too). Measured in
``docs/flux-anchor.md``: isolated stars keep 0.993-1.002 of their flux from 1000 sigma up,
and a white star's channels stay within 0.5% of each other.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .parallel import run_all, spans

#: Side of the summing box, px: much wider than a star's light (FWHM up to about 8 px). A
#: Gaussian window of the same reach weighs a wide input star less than a compact output one
#: and left 0.87-0.98 of the flux (``docs/flux-anchor.md``).
BOX = 31
#: Side of the square over which the factor is averaged, px: continuous, yet a compact star's
#: pixels (within 8 px of it) only average boxes that hold all of its light.
SMOOTHING = 15
#: Shortest run of pixels along a row or column that :func:`removed_spikes` takes for a line, px.
#: A star's arm of pixels that lost more than half their light, standing out across, is at
#: most 4 long (a compact star, FWHM 2.5 px, of 10^6 sigma), and the core, which a
#: deconvolution raises, breaks it.
LINE_RUN = 7
#: Pixels across a line over which :func:`removed_spikes` takes the median: a line up to 3 px
#: wide stands above it, a star wider than about 3 px FWHM does not.
LINE_ACROSS = 7
#: How far beyond a line's ends :func:`removed_spikes` looks for a pixel the network raised by
#: more than :data:`SIGNIFICANCE` noise sigmas, px: a star's diffraction spike ends at its core,
#: into which a deconvolution moves the spike's light, so the spike counts. Taken for a line,
#: spikes holding 14% of a 10^4 sigma star's light left it 0.86 of its flux.
LINE_REACH = 12
#: Rows of context a band of rows needs on each side: the wide box's and the average's half
#: sides, and what the spike test needs beyond them (the growth to neighbours, a run of
#: :data:`LINE_RUN` along a column with its last pixel's neighbour, and the reach beyond).
MARGIN = BOX + SMOOTHING // 2 + LINE_RUN + 1 + LINE_REACH
#: The correction starts where a box's mean input light is this many times its noise, and is
#: whole at twice that.
SIGNIFICANCE = 10.0
#: Limits of the correction factor: the network never misplaces more light than this. A star in
#: one channel only (a green-only star: an H-alpha knot in the G of an SHO palette) is far from
#: the colours it was trained on: the network alone kept 0.34 of such a star's flux, and of a
#: red+green star 2.8x in red. Within (0.5, 2) the anchor left them at 0.68 and 1.42; within
#: these limits, 0.98 and 1.0. The quality benchmark (4 realizations) reads the same with both,
#: but for one faint-star flux bin (0.778 -> 0.784).
RATIO_LIMITS = (0.25, 4.0)
#: A box's ratio counts fully where the twice wider box's is the same, and not at all where
#: the two are 25% apart.
AGREEMENT = float(np.log(1.25))
#: Narrowest column piece :func:`scale_band` hands a thread, px: its :data:`MARGIN` columns of
#: context on each side then add at most half its work.
MIN_PIECE = 4 * MARGIN


def scale_band(light: np.ndarray, observed: np.ndarray, restored: np.ndarray, background: np.ndarray, noise: float, valid: np.ndarray, first: int, workers: int = 1) -> None:
    """Multiply a band's restored light above the background by :func:`flux_gain`, in place.

    Parameters
    ----------
    light : numpy.ndarray
        ``(C, B, W)`` float32, the band's ``restored - background``; scaled in place.
    observed, restored, valid : numpy.ndarray
        ``(C, R, W)``, as :func:`flux_gain`, for the band and its context rows (up to
        :data:`MARGIN` on each side); the band is rows ``first : first + B``.
    background, noise
        As :func:`flux_gain`, ``background`` ``(C,)``.
    workers : int
        Threads. Each channel is cut into up to ``workers`` column pieces of at least
        :data:`MIN_PIECE` px, with :data:`MARGIN` columns of context, so the pieces get the
        whole band's factors (to float32 rounding), and as many run at once as one channel
        has: together they hold about one channel's temporaries, as one thread did.
    """
    c, rows, w = light.shape
    band = slice(first, first + rows)

    def piece(ch: int, x0: int, x1: int) -> None:
        lo, hi = max(0, x0 - MARGIN), min(w, x1 + MARGIN)
        one, cols = slice(ch, ch + 1), slice(lo, hi)
        gain = flux_gain(observed[one, :, cols], restored[one, :, cols], background[one], noise, valid[one, :, cols])
        light[one, :, x0:x1] *= gain[:, band, x0 - lo : x1 - lo]

    cuts = spans(w, workers, MIN_PIECE)
    run_all([lambda ch=ch, x0=x0, x1=x1: piece(ch, x0, x1) for ch in range(c) for x0, x1 in cuts], len(cuts))  # one channel's worth at a time


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
        blank border does not pull the ratio) and their factor is meaningless. Nor do the hot
        pixels and cosmic rays the network took out (:func:`removed_spikes`), nor non-finite
        network outputs (a running sum would carry one across the rest of the image).

    Returns
    -------
    numpy.ndarray
        ``(C, H, W)`` float32 factors within :data:`RATIO_LIMITS`; exactly 1 where no box
        within reach holds significant light. Pixels outside the image count as holding no
        data, so a band of rows, or a piece of columns, with :data:`MARGIN` rows (columns) of
        context on each side gets the whole image's factors (what :func:`scale_band`'s pieces
        rely on).
    """
    if observed.shape != restored.shape or observed.shape != valid.shape or observed.ndim != 3:
        raise ValueError(f"expected matching (C, H, W) arrays, got {observed.shape}, {restored.shape}, {valid.shape}")
    bg = np.asarray(background, dtype=np.float32).reshape(-1, 1, 1)
    counted = valid & np.isfinite(restored) & ~removed_spikes(observed, restored, bg, noise, valid)
    light_in, light_out = observed - bg, restored - bg
    ratio, mean_in, fraction = _ratio(light_in, light_out, counted, BOX)
    wide_ratio, _, _ = _ratio(light_in, light_out, counted, 2 * BOX + 1)
    significance = mean_in * BOX * np.sqrt(np.maximum(fraction, 0.0)) / noise  # sigma_mean = noise / (BOX sqrt(fraction))
    weight = np.clip(significance / SIGNIFICANCE - 1.0, 0.0, 1.0)  # 0 wherever mean_in <= 0
    weight *= np.clip(1.0 - np.abs(np.log(ratio / wide_ratio)) / AGREEMENT, 0.0, 1.0)
    return _box_mean(1.0 + weight * (ratio - 1.0), valid, _box_fraction(valid, SMOOTHING), SMOOTHING, empty=1.0)


def _ratio(light_in: np.ndarray, light_out: np.ndarray, counted: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ratio of the input's to the output's light over the ``counted`` pixels of each
    ``side`` px box, clipped to :data:`RATIO_LIMITS` (the upper one where the output's is
    <= 0); also the input's mean and the box's counted fraction."""
    fraction = _box_fraction(counted, side)
    mean_in = _box_mean(light_in, counted, fraction, side)
    mean_out = _box_mean(light_out, counted, fraction, side)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(mean_out > 0, np.clip(mean_in / mean_out, *RATIO_LIMITS), RATIO_LIMITS[1]), mean_in, fraction


def removed_spikes(observed: np.ndarray, restored: np.ndarray, background: np.ndarray, noise: float, valid: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` bool: hot pixels, cosmic-ray hits and thin lines that the network took out.

    Left in the sums, one hot pixel of 500 sigma doubled the flux of a faint star 6-10 px away,
    and a hot column of 300 sigma (1-3 px wide) scaled 30 sigma stars 9-22 px from it by
    1.2-4.0. Candidates are pixels more than :data:`SIGNIFICANCE` noise sigmas above the
    background that lost more than half their height to the network (a deconvolution raises
    star cores). Of them:

    - a spike is a local maximum (no brighter pixel among its 8 neighbours: a star's wing has
      one) standing more than half its height above the median of its 3x3 neighbourhood (a
      star's core, spread over a FWHM of 1.5 px or more, does not);
    - a line is a run of at least :data:`LINE_RUN` pixels along a row or column, each standing
      more than half its height above the median of the :data:`LINE_ACROSS` pixels across the
      run, and within a factor of 2 of its neighbours along it: a hot or bad column or row, or a
      stack's bright edge, up to 3 px wide. Along a star's row or column the light falls off
      faster than that within 2 px of its core wherever it stands out across (FWHM below about
      3 px), so no star makes such a run, even one the network dimmed as a whole. A star's
      diffraction spike does make one, but its light went into the star's core, which the
      network raised: a run that fades away from such a pixel within :data:`LINE_REACH` px
      beyond an end is a spike, and counts (:func:`_is_diffraction_spike`). A line at another
      angle is not caught here: a satellite trail, as wide as the stars, gets its own light
      back before the anchor (:mod:`~astroswin.engine.trails`; ``bench/trail_photometry.md``).

    Their neighbours that lost more than half theirs go with them (a cosmic ray's short track,
    a line's edges). Arguments as :func:`flux_gain`, ``background`` ``(C, 1, 1)``.
    """
    height = observed - background
    with np.errstate(invalid="ignore"):
        candidates = valid & (height > SIGNIFICANCE * noise) & (observed - restored > 0.5 * height)
    c, y, x = np.nonzero(candidates)
    if c.size == 0:
        return candidates
    # Beyond the edge is sky: padded with the edge's own values, a bright first or last row (a
    # stack's edge) made its 3x3 medians bright, was never taken for spikes, and its removal
    # scaled stars 12-20 px away by 1.3-2.8.
    pad = LINE_ACROSS // 2
    padded = np.broadcast_to(background, (observed.shape[0], observed.shape[1] + 2 * pad, observed.shape[2] + 2 * pad)).astype(observed.dtype)
    padded[:, pad:-pad, pad:-pad] = np.where(valid, observed, background)
    py, px = y + pad, x + pad  # the candidates in the padded image
    value, half_height = observed[c, y, x], 0.5 * height[c, y, x]
    around = np.stack([padded[c, py + dy, px + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)])  # (9, N), centre at 4
    peak = (value >= np.delete(around, 4, axis=0).max(axis=0)) & (value - np.median(around, axis=0) > half_height)
    spikes = np.zeros_like(candidates)
    spikes[c[peak], y[peak], x[peak]] = True
    across = np.arange(-pad, pad + 1)
    for axis in (1, 2):  # runs along columns (axis 1, the median across a row) and along rows
        dy, dx = (1, 0) if axis == 1 else (0, 1)
        along = np.stack([padded[c, py - dy, px - dx], padded[c, py + dy, px + dx]]) - background[c, 0, 0]
        even = np.nonzero(((along > half_height) & (along < 4 * half_height)).all(axis=0))[0]  # neighbours within 2x of its height
        if even.size < LINE_RUN:
            continue
        ce, ye, xe = c[even], py[even], px[even]
        line = padded[ce, ye, xe + across[:, None]] if axis == 1 else padded[ce, ye + across[:, None], xe]
        stands = value[even] - np.median(line, axis=0) > half_height[even]
        cs, ys, xs = ce[stands], y[even][stands], x[even][stands]
        for ch, n, first, length in zip(*(_long_runs(cs, xs, ys) if axis == 1 else _long_runs(cs, ys, xs))):
            run = (ch, slice(first, first + length), n) if axis == 1 else (ch, n, slice(first, first + length))
            if _is_diffraction_spike(observed[run] - background[ch, 0, 0], restored, observed, noise, (ch, n), first, axis):
                continue
            spikes[run] = True
    return ndimage.binary_dilation(spikes, np.ones((1, 3, 3), bool)) & candidates


def _is_diffraction_spike(heights: np.ndarray, restored: np.ndarray, observed: np.ndarray, noise: float, at: tuple[int, int], first: int, axis: int) -> bool:
    """Whether a run of ``heights`` (above the background) starting at ``first`` along ``axis``
    of channel and line ``at`` is a star's diffraction spike: a pixel the network raised by
    more than :data:`SIGNIFICANCE` noise sigmas (a deconvolved core) lies within
    :data:`LINE_REACH` px beyond an end, and the run fades away from it (its half nearer that
    end holds 1.5x the light of the farther half). A hot column that only passes a star is
    even along, and stays a line."""
    ch, n = at
    size = observed.shape[axis]

    def raised(lo: int, hi: int) -> bool:
        span = np.arange(max(0, lo), min(size, hi))
        where = (ch, span, n) if axis == 1 else (ch, n, span)
        return bool((restored[where] - observed[where] > SIGNIFICANCE * noise).any())

    before = raised(first - LINE_REACH, first)
    after = raised(first + heights.size, first + heights.size + LINE_REACH)
    half = heights.size // 2
    head, tail = heights[:half].sum(), heights[-half:].sum()
    return (before and head > 1.5 * tail) or (after and tail > 1.5 * head)


def _long_runs(channel: np.ndarray, line: np.ndarray, position: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The runs of at least :data:`LINE_RUN` consecutive positions among the pixels
    ``(channel, line, position)`` (1-D index arrays, no repeats): each run's channel, line,
    first position and length (a binary opening by a :data:`LINE_RUN` px segment, on the few
    pixels it could keep)."""
    if channel.size == 0:
        return channel, line, position, position
    order = np.lexsort((position, line, channel))
    c, n, p = channel[order], line[order], position[order]
    starts = np.flatnonzero(np.r_[True, (c[1:] != c[:-1]) | (n[1:] != n[:-1]) | (p[1:] != p[:-1] + 1)])
    lengths = np.diff(np.r_[starts, order.size])
    long = lengths >= LINE_RUN
    return c[starts][long], n[starts][long], p[starts][long], lengths[long]


def _box_fraction(valid: np.ndarray, side: int) -> np.ndarray:
    """Fraction of the ``side`` px square around each pixel that is ``valid``; float32."""
    return ndimage.uniform_filter(valid.astype(np.float32), (1, side, side), mode="constant")


def _box_mean(values: np.ndarray, valid: np.ndarray, fraction: np.ndarray, side: int, empty: float = 0.0) -> np.ndarray:
    """Mean of ``values`` over the ``valid`` pixels of the ``side`` px square around each pixel
    (``empty`` where it holds none); ``fraction``: :func:`_box_fraction` of ``valid``. float32."""
    total = ndimage.uniform_filter(np.where(valid, values, 0).astype(np.float32, copy=False), (1, side, side), mode="constant")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(fraction > 0, total / fraction, empty).astype(np.float32, copy=False)
