"""Tests of engine/preview.py: the before/after PNGs of the ``demo`` command and the benchmarks."""

from __future__ import annotations

import numpy as np
from PIL import Image

from astroswin.engine.preview import display, side_by_side


def _bright_stars(info, count=8):
    """``(y, x)`` pixels of the ``count`` brightest stars of the ``star_field`` fixture."""
    bright = np.argsort(info["fluxes"])[::-1][:count]
    return tuple(np.round(info["positions"][bright]).astype(int).T)


def test_display_stretches_a_linear_star_field_to_8_bit(star_field):
    """A linear frame is nearly black on screen; the asinh stretch lifts the sky to a visible
    grey with its noise showing, puts star cores near white, and a mono frame comes out grey
    (three equal channels)."""
    _, observed, info = star_field
    rgb = display(observed)
    assert rgb.shape == (*observed.shape, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 1])
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])
    grey = rgb[..., 0].astype(int)
    sky = np.median(grey)
    assert 10 <= sky <= 200 and np.percentile(grey, 99.9) >= 240  # visible sky, white cores
    assert np.ptp(np.percentile(grey, [10, 50, 90])) >= 5  # the sky's noise is not flattened
    stars = grey[_bright_stars(info)]
    assert (stars > sky + 50).all()


def test_display_keeps_colour_and_handles_nan():
    """Channels are stretched alike, so a red star stays red on grey sky; a NaN border (as
    registration leaves) is shown, not propagated."""
    rng = np.random.default_rng(0)
    image = rng.normal(100.0, 3.0, (3, 40, 50)).astype(np.float32)
    image[0, 18:22, 23:27] += 2000.0
    image[:, :, :4] = np.nan
    rgb = display(image).astype(int)
    red, green, blue = rgb[20, 25]
    assert red >= 200 and red > green + 100 and red > blue + 100
    sky = rgb[30:, 30:]
    assert abs(np.median(sky[..., 0]) - np.median(sky[..., 1])) <= 5


def test_a_reference_stretches_panels_alike():
    """With one reference every panel is stretched as it is: an image at half the brightness
    shows darker, not re-stretched to look the same."""
    rng = np.random.default_rng(1)
    image = rng.normal(1000.0, 10.0, (48, 48)).astype(np.float32)
    image[20:24, 20:24] += 5000.0
    full = display(image, reference=image).astype(int)
    half = display(image * 0.5, reference=image).astype(int)
    assert np.median(half) < np.median(full) - 20
    np.testing.assert_array_equal(display(image * 0.5, reference=image), display(image * 0.5, reference=image.copy()))


def test_side_by_side_writes_panels_stretched_alike(tmp_path, star_field):
    """One PNG, panels left to right with white gaps; the same data in two panels gives the
    same pixels (one stretch for all, the reference's), a restored panel its own."""
    _, observed, info = star_field
    dimmer = observed * 0.5
    path = side_by_side([observed, dimmer, observed], tmp_path / "panels.png", reference=observed, gap=4)
    png = np.asarray(Image.open(path).convert("RGB"))
    h, w = observed.shape
    assert png.shape == (h, 3 * w + 2 * 4, 3)
    panels = [png[:, k * (w + 4) : k * (w + 4) + w] for k in range(3)]
    np.testing.assert_array_equal(panels[0], panels[2])
    np.testing.assert_array_equal(panels[0], display(observed, observed))
    np.testing.assert_array_equal(panels[1], display(dimmer, observed))
    assert (png[:, w : w + 4] == 255).all() and (png[:, 2 * w + 4 : 2 * w + 8] == 255).all()
    grey = panels[0][..., 0].astype(int)
    assert np.ptp(grey) >= 200 and (grey[_bright_stars(info)] > np.median(grey) + 50).all()
    assert np.median(panels[1]) < np.median(panels[0])
