"""Raw colour-filter-array (CFA) mosaics: recognised and refused, never restored.

A one-shot-colour camera's raw frame is one plane in which neighbouring pixels sit behind
different colour filters (a 2x2 Bayer or 6x6 X-Trans pattern). The network was trained on mono
and debayered images; over a mosaic it would blend red, green and blue sites into each other,
and the result could no longer be debayered. Such a frame is refused with one line that says
what to do (debayer it first), not restored into something quietly wrong.

In a file, a keyword alone is not proof: PixInsight's Debayer copies the raw frame's keywords,
``BAYERPAT`` included, to its RGB result, and a channel extracted from that keeps them. So a
mono file that carries a pattern is refused when its pixels show it: the medians of the
pattern's sites (the four pixels of a Bayer cell, the 36 of an X-Trans one) differ by more than
:data:`SITE_CONTRAST` noise sigmas. A raw sky frame's sites differ by the sky's colour through
the filters (green about twice red or blue in raw counts: tens of sigmas); a debayered or mono
image's sites sample the same scene and agree to a small fraction of a sigma. (In Siril the
keyword is proof: Siril clears it when it debayers or splits a mosaic, and treats an image
that has it as a mosaic; the Siril script refuses on the keyword.)
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable

import numpy as np

from .errors import EngineError

#: FITS keywords that name a CFA pattern: ``BAYERPAT`` (N.I.N.A., INDI, Siril, SharpCap...) and
#: ``COLORTYP`` (MaxIm DL, which also writes 0 for a mono sensor: only a pattern counts).
KEYWORDS = ("BAYERPAT", "COLORTYP")
#: A pattern: filter letters (XISF's ``0`` for a site without a filter), one per site of a square
#: cell (4 for Bayer, 36 for X-Trans).
_PATTERN = re.compile(r"[RGBCMYW0]+")
#: Sites whose medians differ by more than this many noise sigmas are a mosaic (or by more than
#: :data:`CHANCE` times a site median's own sampling error, if that is more: on small images).
#: Simulated RGGB frames (``tests/test_cfa.py``): raw mosaics 0.28 sigma (a 7 e- sky, red and
#: blue at 0.9 of green, 400 x 600 px) to 14 sigma (330 e-, red 0.6 and blue 0.5 of green); their
#: bilinear-debayered luminance, and mono frames, at most 0.11 sigma at 300 x 400 px and 0.03
#: at 600 x 900 (8 seeds, skies of 7 to 5000 e-).
SITE_CONTRAST = 0.25
#: Site medians of a debayered or mono image differ by chance (noise, and which stars each site
#: lattice happens to hit) by at most 18.5 times ``1.2533 / sqrt(pixels per site)`` noise sigmas
#: in the same simulations (64 x 80 to 600 x 900 px, 2x2 and 6x6 cells).
CHANCE = 25.0
#: Pixels the site medians are taken over, at most (whole cells of rows, spread over the frame):
#: a fraction of a second on a 60 MP frame, and a sigma of the median far below the threshold.
SAMPLE_PIXELS = 1 << 22


def pattern_of(value) -> str | None:
    """The CFA pattern a keyword value names, upper-case without quotes (``'rggb '`` gives
    ``RGGB``), or None (missing, ``NONE``, ``0``, ``RGB``, or not a square cell of filter
    letters)."""
    if value is None:
        return None
    text = str(value).strip().strip("'").strip().upper()
    side = math.isqrt(len(text))
    if len(text) < 4 or side * side != len(text) or not _PATTERN.fullmatch(text):
        return None
    return text


def pattern_in(keyword: Callable[[str], object]) -> tuple[str, str] | None:
    """``(pattern, keyword name)`` for the first of :data:`KEYWORDS` that names a pattern, or
    None. ``keyword(name)`` gives a keyword's value (None where absent): ``header.get``."""
    for name in KEYWORDS:
        pattern = pattern_of(keyword(name))
        if pattern:
            return pattern, name
    return None


def pattern_in_header(text: str) -> tuple[str, str] | None:
    """:func:`pattern_in` of FITS header text (80-character cards, one per line or run
    together, as hosts hand them over)."""
    cards = [line[i : i + 80] for line in text.splitlines() for i in range(0, max(len(line), 1), 80)]
    values = {card[:8].strip(): card[10:].split("/")[0] for card in cards if card[8:10] == "= "}
    return pattern_in(values.get)


def site_contrast(data: np.ndarray, period: int) -> tuple[float, float]:
    """How far apart the medians of a ``period`` x ``period`` cell's sites are, in noise sigmas.

    Parameters
    ----------
    data : numpy.ndarray
        ``(H, W)`` or ``(1, H, W)`` mono image, any real dtype (memory-mapped too: only the
        sampled rows are read). Non-finite pixels are ignored, and so are exact zeros where
        they fill more than 1% of the sample (a registration or mosaic canvas).
    period : int
        Side of the CFA cell in pixels (2 for Bayer, 6 for X-Trans).

    Returns
    -------
    contrast : float
        ``(max - min)`` of the site medians, less one quantisation step of the data (the
        medians of integer data are whole numbers), over the per-pixel noise, estimated from
        differences between pixels one cell apart along rows (the same site, so the pattern
        itself does not count as noise). ``inf`` where the sites differ and the noise is not
        measurable; 0 where nothing can be told (under two cells, or no data).
    chance : float
        The contrast that chance alone may reach at this sample size (:data:`CHANCE` times a
        site median's sampling error, in the same sigmas).
    """
    plane = data[0] if data.ndim == 3 else data
    h, w = plane.shape
    cells = h // period
    if cells < 2 or w < 2 * period:
        return 0.0, math.inf
    step = max(1, (cells * period * w) // SAMPLE_PIXELS)
    rows = np.array(plane[: cells * period].reshape(cells, period, w)[::step], dtype=np.float32).reshape(-1, w)
    zeros = rows == 0
    if zeros.mean() > 0.01:
        rows[zeros] = np.nan
    sites = [rows[i::period, j::period] for i in range(period) for j in range(period)]
    counted = min(int(np.isfinite(site).sum()) for site in sites)
    if counted == 0:
        return 0.0, math.inf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN difference row is not counted
        medians = [float(np.nanmedian(site)) for site in sites]
        same_site = rows[:, period:] - rows[:, :-period]
        sigma = 1.4826 * float(np.nanmedian(np.abs(same_site - np.nanmedian(same_site)))) / math.sqrt(2.0)
    spread = max(0.0, max(medians) - min(medians) - _quantum(rows))
    chance = CHANCE * 1.2533 / math.sqrt(counted)
    if not sigma > 0:
        return (math.inf if spread > 0 else 0.0), chance
    return spread / sigma, chance


def _quantum(rows: np.ndarray) -> float:
    """The smallest step between distinct values among the first 65536 finite samples: 1 for
    integer data (1/65535 for 16-bit data scaled to [0, 1]), tiny for real float data."""
    values = np.unique(rows[np.isfinite(rows)][:65536])
    steps = np.diff(values)
    steps = steps[steps > 0]
    return float(steps.min()) if steps.size else 0.0


def check_not_mosaic(data: np.ndarray, pattern: str | None, source: str) -> str | None:
    """Refuse a raw CFA mosaic; say so when a pattern keyword does not hold.

    Parameters
    ----------
    data : numpy.ndarray
        ``(H, W)`` or ``(C, H, W)`` image.
    pattern : str or None
        The pattern its metadata names (:func:`pattern_of`), if any.
    source : str
        Where the pattern came from, for the message (a keyword or XISF element name).

    Returns
    -------
    str or None
        None when there is nothing to say (no pattern, or a colour image: a mosaic has one
        plane); a note when a mono image carries a pattern its pixels do not show (it is
        restored as the mono image it is).

    Raises
    ------
    EngineError
        When its pixels show the pattern: one line saying to debayer it first.
    """
    if pattern is None or (data.ndim == 3 and data.shape[0] != 1):
        return None
    period = math.isqrt(len(pattern))
    contrast, chance = site_contrast(data, period)
    cell = f"{period}x{period}"
    if contrast > max(SITE_CONTRAST, chance):
        apart = f"differ by {contrast:.3g} noise sigma" if math.isfinite(contrast) else "differ, on a frame without measurable noise"
        remedy = "" if source == "ColorFilterArray" else f"; if it is already debayered, delete its {source} keyword"
        raise EngineError(f"a raw CFA mosaic ({source} {pattern}; its {cell} colour sites {apart}): debayer it first "
                          f"(Siril, PixInsight: Debayer), since restoring a mosaic would blend its colours{remedy}")
    return f"carries {source} {pattern}, but its pixels do not show a {cell} colour pattern (sites within {contrast:.2g} noise sigma): restored as a mono image"
