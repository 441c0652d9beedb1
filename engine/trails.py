"""Satellite trails: put back, along each straight trail, the light the network took out of it.

The network was never shown a trail and takes part of one out, as it does hot pixels: it keeps
0.64 of a 500 sigma trail as wide as the stars, 0.38 of a 3000 sigma one
(``bench/trail_photometry.md``). The flux anchor (:mod:`~astroswin.engine.anchor`) would put
that light back, but as a factor over 31 px boxes it scales whatever else is in them: 30 sigma
stars 9-16 px from such trails came out at 1.24-2.65x their flux. So before the anchor, each
trail gets its own light back, where it was lost:

- ``observed - restored``, summed over 2x2 px squares and averaged over 3x3 of them, is
  significant (more than :data:`~astroswin.engine.anchor.SIGNIFICANCE` sigmas of that
  average) on a long thin region along a trail: at least :data:`TRAIL_LENGTH` px long and
  :data:`SLENDER` times longer than wide by its second moments, so straight; the input's light
  across it peaks on its axis; and it is not a sharp-edged line along a row or column of pixels
  (a hot or bad column, which the anchor's line test takes out);
- across that line, in pieces of :data:`SEGMENT` px along it, the median of
  ``observed - restored`` at each distance from its axis (in :data:`BIN` px bins) is the
  trail's lost light; a star on the trail is a few pixels of a piece and leaves the median
  alone. It is added to ``restored``, interpolated between the pieces, where it is significant.

Compact features, however bright, make no such line: on the quality benchmark's scenes the
longest region of lost light is 34 px long (a bright star's ring), and nothing there changes.
Nor do the edges of a sharpened filament (the light across them rises to one side), or a
bright star's diffraction spikes (they fade away from a core the network raised).
Measured in ``bench/trail_photometry.md`` (3 noise draws): beside trails of 500 and 3000 sigma,
along the rows or at 30 degrees, 30 sigma stars 9-22 px away read 0.97-1.04x their flux (the
network alone 0.95-1.03x; up to 2.65x before), and the trails keep 1.000 of their light. A
trail of 100 sigma is not always found (at 30 degrees the stars read 1.05-1.07x, 1.07-1.09x
before); one of 10 sigma, which the network keeps, never is. Looking costs 0.45 s per 9 MP RGB
frame on one thread.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .anchor import LINE_REACH, SIGNIFICANCE
from .normalize import no_data

#: Shortest line taken for a trail, px: three anchor boxes. A satellite crosses the frame; a
#: cosmic ray's track is a few tens of pixels at most.
TRAIL_LENGTH = 96
#: A trail's region of lost light is at least this many times longer than wide (the square
#: roots of its second moments' ratio). A bright star's ring, or a star's four spikes, is about
#: as wide as long.
SLENDER = 8.0
#: Lines within this angle of a row or a column, degrees, may be hot or bad columns or rows
#: (:func:`_is_sharp`), which the anchor's line test takes out.
AXIS_TOLERANCE = 1.0
#: Greatest distance from a trail's axis (its lost light's) of its crest (the input's), px.
CREST = 3.0
#: Length of the pieces along a trail whose profiles are measured apart, px: a trail glints and
#: fades along its length.
SEGMENT = 64
#: Width of a profile's bins across the trail, px.
BIN = 0.5
#: Light lost is found on a grid this many times coarser (its sum over squares of this side,
#: px): the labels then cost a quarter of the memory, and the average below a quarter of the time.
POOL = 2
#: Side of the square of the coarse grid's squares over which the lost light is averaged to find trails.
AVERAGE = 3
#: Values of one channel read at a time to find trails (16 MB of float32).
BAND_VALUES = 1 << 22
#: Pixels beyond the region of lost light, across and along, whose profile is put back too.
PAD = 3


@dataclass(frozen=True)
class Trail:
    """A straight trail in one channel, in pixel coordinates of the image.

    Attributes
    ----------
    channel : int
    centre : tuple of float
        ``(y, x)`` of a point on its axis, px.
    direction : tuple of float
        Unit vector ``(dy, dx)`` along it.
    along : tuple of float
        First and last position along it from ``centre``, px.
    half_width : float
        Largest distance from its axis of the lost light found, px.
    """

    channel: int
    centre: tuple[float, float]
    direction: tuple[float, float]
    along: tuple[float, float]
    half_width: float


def put_back_trails(restored: np.ndarray, observed: np.ndarray, background: np.ndarray, noise: float, blank: bool = False) -> list[Trail]:
    """Find the trails the network dimmed and add their lost light back to ``restored``, in place.

    Parameters
    ----------
    restored : numpy.ndarray
        ``(C, H, W)`` float32 network output, data units; changed in place along trails.
    observed : numpy.ndarray
        ``(C, H, W)`` linear input, data units (any real dtype; may be memory-mapped).
    background : numpy.ndarray
        ``(C,)`` per-channel black point, data units.
    noise : float
        Per-pixel noise sigma of the input, data units (> 0).
    blank : bool
        Exact zeros hold no data (:attr:`~astroswin.engine.normalize.Stretch.blank`); nor do
        non-finite pixels. Pixels without data are neither counted nor changed.

    Returns
    -------
    list of Trail
        The trails found, each put back.

    Notes
    -----
    Looking holds under 0.4 of one channel's float32 (the lost light's 2x2 sums, and one band
    of :data:`BAND_VALUES`); putting a trail back, about 120 bytes per pixel within its reach.
    """
    if observed.shape != restored.shape or observed.ndim != 3 or np.shape(background) != observed.shape[:1]:
        raise ValueError(f"expected (C, H, W) arrays and (C,) background, got {observed.shape}, {restored.shape}, {np.shape(background)}")
    trails = []
    for channel in range(observed.shape[0]):  # a channel's trails are found before any is put back
        found = _channel_trails(observed, restored, background, noise, blank, channel)
        for trail, band in found:
            _put_back(restored, band, noise, trail)
        trails += [trail for trail, _ in found]
    return trails


def find_trails(observed: np.ndarray, restored: np.ndarray, background: np.ndarray, noise: float, blank: bool = False) -> list[Trail]:
    """The straight trails of lost light; arguments as :func:`put_back_trails`."""
    return [trail for channel in range(observed.shape[0]) for trail, _ in _channel_trails(observed, restored, background, noise, blank, channel)]


def _channel_trails(observed: np.ndarray, restored: np.ndarray, background: np.ndarray, noise: float, blank: bool, channel: int) -> list[tuple[Trail, _Band]]:
    """:func:`find_trails` in one channel (its labels freed before the next is looked at), each
    trail with its :class:`_Band`, read once for the tests and the put-back."""
    labels, _ = ndimage.label(_lost_light(observed[channel], restored[channel], blank, noise), np.ones((3, 3), bool))
    found = []
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None or POOL * max(s.stop - s.start for s in box) < TRAIL_LENGTH / 2:  # too short whatever its shape
            continue
        ys, xs = np.nonzero(labels[box] == index)
        trail = _as_trail(channel, POOL * (ys + box[0].start) + (POOL - 1) / 2, POOL * (xs + box[1].start) + (POOL - 1) / 2)
        if trail is None:
            continue
        band = _Band(trail, observed, blank)
        light = band.observed - background[channel]
        if band.d.size == 0 or not _is_centred(band, light) or _is_sharp(trail, band, light):
            continue
        if not _is_diffraction_spike(trail, band, light, observed, restored, noise, blank):
            found.append((trail, band))
    return found


def _lost_light(observed: np.ndarray, restored: np.ndarray, blank: bool, noise: float) -> np.ndarray:
    """``(ceil(H / POOL), ceil(W / POOL))`` bool for one ``(H, W)`` channel: where
    ``observed - restored``, averaged over the :data:`AVERAGE` x :data:`AVERAGE` squares of
    :data:`POOL` px squares around each (pixels without data count as 0), is significant.
    Read in bands of :data:`BAND_VALUES` values."""
    h, w = observed.shape
    pooled = np.zeros((-(-h // POOL), -(-w // POOL)), np.float32)  # each square's lost light
    rows = max(POOL, BAND_VALUES // max(w, 1) // POOL * POOL)
    for a in range(0, h, rows):
        b = min(h, a + rows)
        src = np.asarray(observed[a:b], dtype=np.float32)
        lost = np.zeros((-(-(b - a) // POOL) * POOL, pooled.shape[1] * POOL), np.float32)
        with np.errstate(invalid="ignore"):
            difference = src - restored[a:b]
        lost[: b - a, :w] = np.where(no_data(src, blank) | ~np.isfinite(difference), np.float32(0), difference)
        pooled[a // POOL : a // POOL + lost.shape[0] // POOL] = lost.reshape(-1, POOL, pooled.shape[1], POOL).sum(axis=(1, 3))
    ndimage.uniform_filter(pooled, AVERAGE, mode="constant", output=pooled)  # in place (line buffers): the mean square's sum
    with np.errstate(invalid="ignore"):
        return pooled > POOL**2 * SIGNIFICANCE * noise / (AVERAGE * POOL)  # the mean of its pixels over its noise


def _as_trail(channel: int, ys: np.ndarray, xs: np.ndarray) -> Trail | None:
    """A region of lost light at pixels ``(ys, xs)`` as a trail, or None where it is not long,
    thin and straight."""
    centre = np.array([ys.mean(), xs.mean()])
    offsets = np.stack([ys, xs], axis=1) - centre
    values, vectors = np.linalg.eigh(offsets.T @ offsets / len(ys))
    length, width = np.sqrt(12 * np.maximum(values[::-1], 0))  # a uniform segment's length and width
    if length < TRAIL_LENGTH or length < SLENDER * max(width, POOL):
        return None
    direction = vectors[:, 1]
    along = offsets @ direction
    across = offsets @ np.array([-direction[1], direction[0]])
    return Trail(channel, (float(centre[0]), float(centre[1])), (float(direction[0]), float(direction[1])), (float(along.min()), float(along.max())), float(np.abs(across).max()) + POOL)


def _is_centred(band: _Band, light: np.ndarray) -> bool:
    """Whether the input's light (``light``, above the background, one per pixel of ``band``)
    across the trail (the median in each :data:`BIN` px bin, all
    along) peaks within :data:`CREST` px of its axis, at more than 3x its mean within 2 px of
    either edge. A deconvolution moves light off both edges of a long straight filament or an
    edge-on disk onto its crest, so each edge is a line of lost light, but the light across it
    rises to one side."""
    profile, counts = _group_medians(band.bin, light, band.bins)
    centres = np.arange(band.bins) * BIN - band.half
    filled = counts > 0
    profile, centres = profile[filled], centres[filled]
    peak = profile.max()
    edges = [profile[centres < centres.min() + 2].mean(), profile[centres > centres.max() - 2].mean()]
    return bool(abs(centres[np.argmax(profile)]) <= CREST and peak > 3 * max(edges))


def _is_sharp(trail: Trail, band: _Band, light: np.ndarray) -> bool:
    """Whether ``trail`` is a hot or bad column or row, or a stack's bright edge: along a row or
    column (within :data:`AXIS_TOLERANCE` degrees), and the input's light across it (the median
    of each row or column all along) falls from more than 0.6 of its crest to less than 0.15 in
    one pixel, within 3 px of the crest. The anchor's line test takes those out. A trail's
    profile is the stars', which takes two pixels for that from a FWHM of 2.5 px up."""
    if min(abs(trail.direction[0]), abs(trail.direction[1])) >= np.sin(np.deg2rad(AXIS_TOLERANCE)):
        return False
    offset = np.floor(band.d - band.d.min() + 0.5).astype(np.int64)  # whole rows (columns) along a row (column)
    profile, counts = _group_medians(offset, light, int(offset.max()) + 1)
    crest = int(np.argmax(np.where(counts > 0, profile, -np.inf)))
    peak = profile[crest]
    for step in (1, -1):
        for k in range(crest, crest + 3 * step, step):
            if 0 <= k + step < profile.size and counts[k + step] and profile[k] > 0.6 * peak and profile[k + step] < 0.15 * peak:
                return True
    return False


def _is_diffraction_spike(trail: Trail, band: _Band, light: np.ndarray, observed: np.ndarray, restored: np.ndarray, noise: float, blank: bool) -> bool:
    """Whether ``trail`` is a star's diffraction spike (one arm, or two opposite ones through
    the star): its crest (the median along each :data:`SEGMENT` px piece, within 1 px of its
    axis) is brightest in a piece where the network raised a pixel on the axis by more than
    :data:`SIGNIFICANCE` noise sigmas (a deconvolved core, within
    :data:`~astroswin.engine.anchor.LINE_REACH` px), and fades to less than a third of that at
    an end. A trail is even along, give or take its glints, and a star on it is a few pixels of
    its piece, which leave the median alone."""
    crest = band.medians(light, across=1.0)
    brightest = int(np.argmax(crest))
    if not crest[brightest] > 3 * min(crest[0], crest[-1]):
        return False
    first = trail.along[0] - PAD + brightest * SEGMENT
    core = _Band(trail, observed, blank, along=(first - LINE_REACH, first + SEGMENT + LINE_REACH), half_width=1.0)
    raised = np.asarray(restored[trail.channel, core.ys, core.xs], np.float32) - core.observed
    return bool((raised > SIGNIFICANCE * noise).any())


def _rectangle(shape: tuple[int, int], centre: tuple[float, float], direction: tuple[float, float], along: tuple[float, float], half: float) -> tuple[np.ndarray, np.ndarray]:
    """The pixels ``(ys, xs)`` of an ``(H, W)`` image whose centres lie between positions
    ``along`` on the line through ``centre`` in ``direction`` (a unit vector ``(dy, dx)``) and
    within ``half`` px of it: row by row, an interval each."""
    (cy, cx), (uy, ux) = centre, direction
    uy, ux = (np.copysign(max(abs(v), 1e-9), v) for v in (uy, ux))  # along a row or column: no division by 0
    corners = [cy + s * uy + d * ux for s in along for d in (-half, half)]
    rows = np.arange(max(0, int(np.floor(min(corners)))), min(shape[0], int(np.ceil(max(corners))) + 1))
    dy = rows - cy
    bounds = [(dy * ux - half) / uy, (dy * ux + half) / uy, (along[0] - dy * uy) / ux, (along[1] - dy * uy) / ux]  # x - cx
    low = np.maximum(np.minimum(bounds[0], bounds[1]), np.minimum(bounds[2], bounds[3]))  # |d| <= half, and s within along
    high = np.minimum(np.maximum(bounds[0], bounds[1]), np.maximum(bounds[2], bounds[3]))
    first = np.clip(np.ceil(cx + low), 0, shape[1]).astype(np.int64)
    last = np.clip(np.floor(cx + high), -1, shape[1] - 1).astype(np.int64)
    counts = np.maximum(last - first + 1, 0)
    starts = np.repeat(first - np.cumsum(counts) + counts, counts)  # each pixel's row's first x, less the pixels before
    return np.repeat(rows, counts), starts + np.arange(counts.sum())


class _Band:
    """The pixels holding data within a trail's reach: within ``half_width`` (default the
    trail's, plus :data:`PAD`) of its axis, between positions ``along`` on it (default its
    ends, :data:`PAD` beyond), each once; with their positions along (``s``) and across
    (``d``), px, their :data:`SEGMENT` px piece and :data:`BIN` px bin, and their input light."""

    def __init__(self, trail: Trail, observed: np.ndarray, blank: bool, along: tuple[float, float] | None = None, half_width: float | None = None):
        self.first, last = along if along is not None else (trail.along[0] - PAD, trail.along[1] + PAD)
        self.half = half_width if half_width is not None else trail.half_width + PAD
        (cy, cx), (uy, ux) = trail.centre, trail.direction
        ys, xs = _rectangle(observed.shape[1:], trail.centre, trail.direction, (self.first, last), self.half)
        light = np.asarray(observed[trail.channel, ys, xs], dtype=np.float32)
        keep = ~no_data(light, blank)
        self.ys, self.xs, self.observed = ys[keep], xs[keep], light[keep]
        self.s = (self.ys - cy) * uy + (self.xs - cx) * ux
        self.d = (self.ys - cy) * ux - (self.xs - cx) * uy
        self.pieces = max(1, int(np.ceil((last - self.first) / SEGMENT)))
        self.bins = int(np.ceil(2 * self.half / BIN)) + 1
        self.piece = np.clip(((self.s - self.first) / SEGMENT).astype(np.int64), 0, self.pieces - 1)
        self.bin = np.clip(np.rint((self.d + self.half) / BIN).astype(np.int64), 0, self.bins - 1)

    def keep(self, mask: np.ndarray) -> None:
        """Drop the pixels where ``mask`` (one per pixel) is False."""
        for name in ("ys", "xs", "observed", "s", "d", "piece", "bin"):
            setattr(self, name, getattr(self, name)[mask])

    def medians(self, values: np.ndarray, across: float) -> np.ndarray:
        """``(pieces,)`` median of ``values`` (one per pixel) in each piece within ``across`` px
        of the axis."""
        near = np.abs(self.d) <= across
        return _group_medians(self.piece[near], values[near], self.pieces)[0]

    def distances(self, counts: np.ndarray) -> np.ndarray:
        """Each bin's pixels' mean distance from the axis, px (``counts``: its pixels, per piece
        and bin, flat; the same shape out): where :meth:`profile` reads the bin's median."""
        return np.bincount(self.piece * self.bins + self.bin, self.d, self.pieces * self.bins) / np.maximum(counts, 1)

    def profile(self, medians: np.ndarray, counts: np.ndarray, where: np.ndarray, piece: np.ndarray) -> np.ndarray:
        """Each pixel's value of the profile of ``piece`` (one per pixel), linear between the
        bins with pixels (``medians``, ``counts`` and ``where`` per piece and bin, flat), each
        at its pixels' mean distance from the axis (``where``, :meth:`distances`): where the
        pixel grid crosses the trail at a steady phase (along a row, every pixel of a row is at
        one distance), some bins hold none, and the others' pixels are off their centres, all
        to one side; interpolated from the centres, a row of a 3000 sigma trail took in a fifth
        of the next row's light."""
        medians, counts, where = (a.reshape(self.pieces, self.bins) for a in (medians, counts, where))
        values = np.zeros(self.d.size)
        for k in np.unique(piece):
            mine, filled = piece == k, counts[k] > 0
            values[mine] = np.interp(self.d[mine], where[k, filled], medians[k, filled])
        return values


def _put_back(restored: np.ndarray, band: _Band, noise: float, trail: Trail) -> None:
    """Add ``trail``'s lost light to ``restored``: the median profile across it of each
    :data:`SEGMENT` px piece, in :data:`BIN` px bins, at each pixel's distance from the axis,
    linearly interpolated between the pieces' centres so the trail has no steps along.

    The medians are taken twice: a bin spans part of the profile's slope, across which a star
    on the trail pulled the first median by up to a fifth of the bin's light; the second is of
    what is left about the first profile. A median within 3 standard errors of 0 adds nothing,
    one beyond 6 all of itself: the trail's edges fade into the sky, and the sky beside it is
    left as it was.
    """
    lost = band.observed - restored[trail.channel, band.ys, band.xs]
    finite = np.isfinite(lost)  # a non-finite network output is left as it is (the anchor keeps it local)
    band.keep(finite)
    lost = lost[finite]
    key, groups = band.piece * band.bins + band.bin, band.pieces * band.bins
    medians, counts = _group_medians(key, lost, groups)
    where = band.distances(counts)  # the bins' pixels stay the same from here on: found once
    medians += _group_medians(key, lost - band.profile(medians, counts, where, band.piece), groups)[0]
    error = 1.2533 * noise / np.sqrt(np.maximum(counts, 1))  # a median's standard error
    medians *= np.clip(np.abs(medians) / (3 * error) - 1, 0, 1)
    # along, between the centres of the pixel's piece and of the nearer neighbour
    position = (band.s - band.first) / SEGMENT - 0.5
    other = np.clip(np.where(position < band.piece, band.piece - 1, band.piece + 1), 0, band.pieces - 1)
    other = np.where(counts.reshape(band.pieces, -1).any(axis=1)[other], other, band.piece)  # a piece lost to a gap in the data
    share = np.clip(np.abs(position - band.piece), 0, 0.5)
    added = (1 - share) * band.profile(medians, counts, where, band.piece) + share * band.profile(medians, counts, where, other)
    restored[trail.channel, band.ys, band.xs] += added.astype(np.float32)


def _group_medians(group: np.ndarray, values: np.ndarray, groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Median of ``values`` in each of ``groups`` groups (``group``: each value's, 0 to
    ``groups - 1``), and the groups' sizes; 0 and 0 for an empty one."""
    if group.size == 0:
        return np.zeros(groups), np.zeros(groups, np.int64)
    order = np.lexsort((values, group))
    g, v = group[order], values[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    counts = np.diff(np.r_[starts, g.size])
    medians, sizes = np.zeros(groups), np.zeros(groups, np.int64)
    medians[g[starts]] = 0.5 * (v[starts + (counts - 1) // 2] + v[starts + counts // 2])
    sizes[g[starts]] = counts
    return medians, sizes
