"""Normalisation: robust black point and noise scale, and an exactly invertible asinh stretch.

The network sees ``s = asinh((x - background) / (SOFTENING * noise)) / RANGE``:

* ``background`` is a per-channel median (robust to stars, hot pixels and pedestals);
* ``noise`` is one robust pixel-to-pixel noise estimate shared by all channels (a *linked*
  scale keeps colour ratios above the background);
* the asinh is linear near the noise floor and logarithmic on bright stars, and
  :func:`unstretch` is its exact analytic inverse.

Because both statistics are local properties of the data (sky level and noise), a 64 px
training crop and a whole 60 MP frame of the same sky get the same stretch: the original
AstroSWIN stretched crops in training and whole images at inference, by min/max, so one hot
pixel changed everything. Training uses these same functions (``astroswin.train`` imports them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Softening of the asinh, in units of the noise sigma: below a few sigma the stretch is linear.
SOFTENING = 3.0
#: Divisor that maps the brightest useful signal (about 1e5 sigma) to about 1.
RANGE = 12.0
#: Samples per channel used for the statistics: the median's standard error is then about
#: 0.0013 sigma and the noise's about 0.1%; 0.2 s for a 16.7 MP RGB frame on this project's CPU
#: (4x more samples cost 1.1 s, half of the whole restoration's time on an H200).
_MAX_SAMPLES = 1 << 20
#: Relative floor of the noise for noiseless data (synthetic images, all-constant frames).
_NOISE_FLOOR = 1e-4
#: Exact zeros are blank (no data) when every channel's sky is this many sigma from zero.
BLANK_SIGMA = 5.0


@dataclass(frozen=True)
class Stretch:
    """Parameters of the stretch of one image.

    Attributes
    ----------
    background : numpy.ndarray
        ``(C,)`` black point per channel, in data units.
    noise : float
        Robust noise sigma shared by all channels, in data units; always > 0.
    """

    background: np.ndarray
    noise: float
    #: Exact zeros carry no data (registration borders, mosaics' empty corners): the image's
    #: sky lies more than :data:`BLANK_SIGMA` noise sigma from zero, where no real pixel is
    #: exactly 0. They are left out of these statistics and treated like NaN by the engine.
    blank: bool = False

    def shaped(self, ndim: int, like=None):
        """Background as a broadcastable ``(C, 1, 1)`` (or ``(1, C, 1, 1)``) array/tensor."""
        bg = self.background.reshape((-1,) + (1,) * (ndim - 1 if ndim == 3 else 2))
        if ndim == 4:
            bg = bg[None]
        if like is not None and not isinstance(like, np.ndarray):
            import torch

            return torch.as_tensor(bg, dtype=like.dtype, device=like.device)
        return bg


def _subsample(channel: np.ndarray) -> np.ndarray:
    """A strided view with at most about ``_MAX_SAMPLES`` pixels (no copy of a big frame)."""
    step = max(1, int(np.ceil(np.sqrt(channel.size / _MAX_SAMPLES))))
    return channel[::step, ::step]


def _whole_rows(channel: np.ndarray) -> np.ndarray:
    """Every k-th row, whole, with at most about ``_MAX_SAMPLES`` pixels (a view, no copy).

    Whole rows keep horizontal neighbours adjacent: registered, debayered or drizzled stacks
    have noise correlated between neighbouring pixels, and differences of pixels further apart
    would measure about sqrt(2) more noise than in a training crop of the same data.
    """
    step = max(1, int(np.ceil(channel.size / _MAX_SAMPLES)))
    return channel[::step]


def no_data(values: np.ndarray, blank: bool) -> np.ndarray:
    """Where ``values`` hold no data: non-finite pixels, and with ``blank``
    (:attr:`Stretch.blank`) exact zeros too. The one definition the statistics, the emission
    map and the restoration share."""
    bad = ~np.isfinite(values)
    if blank:
        bad |= values == 0
    return bad


def robust_noise(channel: np.ndarray, blank: bool = False) -> float:
    """Pixel-to-pixel noise sigma of a 2-D array, in data units.

    Uses the median absolute deviation of horizontal first differences divided by sqrt(2):
    smooth structure (nebulae, galaxies, gradients) cancels in the differences, and the median
    ignores stars and hot pixels. Non-finite pixels are ignored, and with ``blank`` exact zeros
    too (:attr:`Stretch.blank`). Returns 0 for noiseless data.
    """
    if channel.shape[1] < 2:
        channel = channel.T
    rows = _whole_rows(channel).astype(np.float64)
    rows[no_data(rows, blank)] = np.nan
    diff = np.diff(rows, axis=1).ravel()
    diff = diff[np.isfinite(diff)]
    if diff.size == 0:
        return 0.0
    mad = np.median(np.abs(diff - np.median(diff)))
    return float(1.4826 * mad / np.sqrt(2.0))


def estimate_stretch(image: np.ndarray) -> Stretch:
    """Estimate the :class:`Stretch` of an image.

    Parameters
    ----------
    image : numpy.ndarray
        ``(C, H, W)`` linear data, any units; NaN/inf are ignored.

    Returns
    -------
    Stretch
        Per-channel background and one linked noise sigma (> 0 even for noiseless data:
        then a small fraction of the robust signal range is used instead).
    """
    if image.ndim != 3:
        raise ValueError(f"expected a (C, H, W) image, got shape {image.shape}")
    samples = [_subsample(channel).astype(np.float64) for channel in image]
    if any((sample == 0).any() for sample in samples):  # blank borders? judged on the rest
        rest = _statistics(image, samples, blank=True)
        if all(abs(b) > BLANK_SIGMA * rest.noise for b in rest.background):
            return rest
    return _statistics(image, samples, blank=False)


def _statistics(image: np.ndarray, samples: list[np.ndarray], blank: bool) -> Stretch:
    """:func:`estimate_stretch` over ``samples`` (each channel's subsample), exact zeros
    left out with ``blank``."""
    background = np.empty(image.shape[0], dtype=np.float64)
    noises = []
    spans = []
    for c, (channel, sample) in enumerate(zip(image, samples)):
        finite = sample[~no_data(sample, blank)]
        if finite.size == 0:
            background[c] = 0.0
            continue
        background[c] = np.median(finite)
        noises.append(robust_noise(channel, blank))
        spans.append(float(np.max(np.abs(finite - background[c]))))
    noise = float(np.median(noises)) if noises else 0.0
    span = max(spans) if spans else 0.0
    if not np.isfinite(noise) or noise <= 0:  # noiseless data only: a floor on real noise made
        floor = _NOISE_FLOOR * span  # one star 1e4 sigma bright change the whole frame's stretch
        noise = floor if floor > 0 else 1.0
    return Stretch(background=background, noise=noise, blank=blank)


def stretch(x, params: Stretch):
    """Linear data -> network space. Works on numpy arrays and torch tensors.

    Parameters
    ----------
    x : numpy.ndarray or torch.Tensor
        ``(C, H, W)`` or ``(B, C, H, W)`` linear data in the units ``params`` were measured in.
    params : Stretch
    """
    xp = np if isinstance(x, np.ndarray) else _torch()
    bg = params.shaped(x.ndim, like=x)
    return xp.asinh((x - bg) / (SOFTENING * params.noise)) / RANGE


def unstretch(s, params: Stretch):
    """Exact inverse of :func:`stretch` (network space -> linear data)."""
    xp = np if isinstance(s, np.ndarray) else _torch()
    bg = params.shaped(s.ndim, like=s)
    return xp.sinh(s * RANGE) * (SOFTENING * params.noise) + bg


def _torch():
    import torch

    return torch
