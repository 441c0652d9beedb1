"""Tests of engine/measure.py: the star measurements behind the demo and the benchmarks."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import gaussian_stars

from astroswin.engine.measure import aperture_flux, find_stars, fwhm, halo_depth, ring_means


@pytest.mark.parametrize("width", [1.3, 2.5, 4.0])
def test_fwhm_of_a_gaussian_star(width):
    image = gaussian_stars((41, 41), [(20.3, 19.8)], [5000.0], width)
    pixelated = 2.3548 * np.sqrt((width / 2.3548) ** 2 + 1 / 12)  # pixel integration adds 1/12 px^2
    assert fwhm(image, 20, 20) == pytest.approx(pixelated, rel=0.02)


def test_fwhm_finds_no_star_where_there_is_none():
    assert np.isnan(fwhm(np.zeros((41, 41)), 20, 20))
    noise = np.random.default_rng(0).normal(0.0, 1.0, (41, 41))
    assert np.isnan(fwhm(noise, 20, 20))


def test_aperture_flux_and_detection():
    image = gaussian_stars((64, 64), [(20.0, 20.0), (40.0, 44.0)], [1000.0, 300.0], 2.0)
    assert aperture_flux(image, 20, 20, 8) == pytest.approx(1000.0, rel=1e-3)
    assert find_stars(image, threshold=1.0).tolist() == [[20, 20], [40, 44]]


def test_detection_drops_stars_at_the_edges():
    """A star closer to an edge than ``border`` is dropped (its aperture would be cut), on
    every side; one just inside is kept."""
    inside = [(30.0, 30.0)]
    near_edges = [(3.0, 30.0), (60.0, 30.0), (30.0, 3.0), (30.0, 60.0)]  # 3 px from each edge
    image = gaussian_stars((64, 64), inside + near_edges, [1000.0] * 5, 2.0)
    assert find_stars(image, threshold=1.0).tolist() == [[30, 30]]
    assert len(find_stars(image, threshold=1.0, border=2)) == 5  # the edge stars are there
    kept = gaussian_stars((64, 64), [(8.0, 8.0), (55.0, 55.0)], [1000.0, 500.0], 2.0)
    assert find_stars(kept, threshold=1.0).tolist() == [[8, 8], [55, 55]]  # exactly ``border`` px in


def test_ring_means_and_halo_of_a_dark_ring():
    image = gaussian_stars((41, 41), [(20.0, 20.0)], [1000.0], 2.0)
    yy, xx = np.mgrid[:41, :41]
    image[(np.hypot(yy - 20, xx - 20) >= 4) & (np.hypot(yy - 20, xx - 20) < 5)] -= 3.0
    rings = ring_means(image, 20, 20)
    assert rings.shape == (8,) and rings[2] == pytest.approx(-3.0, abs=0.01)
    assert halo_depth(image, 20, 20) == pytest.approx(-3.0 / image[20, 20], rel=0.01)
