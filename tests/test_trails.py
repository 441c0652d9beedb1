"""Satellite trails: the light the network took out of a straight trail is put back along it."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import gaussian_stars

from astroswin.engine import trails
from astroswin.engine.trails import find_trails, put_back_trails

SKY, SIGMA, SIZE = 1000.0, 10.0, 256
STAR_SIGMA = 3.5 / 2.3548


def _across(angle: float, shape=(SIZE, SIZE), offset: float = 0.0) -> np.ndarray:
    """Each pixel's distance from a line through the centre at ``angle`` degrees to the rows."""
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(float)
    t = np.deg2rad(angle)
    return (yy - shape[0] / 2) * np.cos(t) - (xx - shape[1] / 2) * np.sin(t) - offset


def _scene(angle: float, crest: float = 500.0, kept: float = 0.6, seed: int = 0, profile=None):
    """``(observed, restored, trail)``: sky, 30 sigma stars and a trail as wide as them, with
    noise; the 'network' kept ``kept`` of the trail, the stars and sky whole, and a third of
    the noise. ``(1, H, W)`` float32, the trail ``(H, W)``."""
    rng = np.random.default_rng(seed)
    d = _across(angle)
    trail = crest * SIGMA * (np.exp(-0.5 * (d / STAR_SIGMA) ** 2) if profile is None else profile(d))
    spots = rng.uniform(12, SIZE - 12, (40, 2))
    stars = gaussian_stars((SIZE, SIZE), spots, [30 * SIGMA * 2 * np.pi * STAR_SIGMA**2] * len(spots), 3.5)
    noise = rng.normal(0, SIGMA, (SIZE, SIZE))
    observed = (SKY + trail + stars + noise)[None].astype(np.float32)
    restored = (SKY + kept * trail + stars + noise / 3)[None].astype(np.float32)
    return observed, restored, trail


@pytest.mark.parametrize("angle", [0.0, 17.0, 30.0, 62.0, 90.0, 135.0])
def test_a_trail_the_network_dimmed_gets_its_light_back_and_nothing_else_changes(angle):
    observed, restored, trail = _scene(angle)
    before = restored.copy()
    found = put_back_trails(restored, observed, np.array([SKY]), SIGMA)
    assert len(found) == 1
    (dy, dx), d = found[0].direction, _across(angle)
    assert abs(abs(dy * np.cos(np.deg2rad(angle)) - dx * np.sin(np.deg2rad(angle)))) < np.sin(np.deg2rad(0.5))  # along the trail
    band = np.abs(d) <= 8
    put_back = (restored[0] - SKY)[band].sum() - (before[0] - SKY)[band].sum()
    assert put_back == pytest.approx(0.4 * trail[band].sum(), rel=0.02)
    # pixel by pixel, where it is steep: along a row every pixel of a row is at one distance
    # from the axis, and interpolating from the bins' centres once mixed in the next row's light
    core = np.abs(d) <= 4
    np.testing.assert_allclose((restored - before)[0][core], 0.4 * trail[core], atol=0.02 * 0.4 * trail.max())
    far = np.abs(d) > found[0].half_width + trails.PAD + 1
    assert far.sum() > 0.6 * far.size and np.array_equal(restored[0][far], before[0][far])


def test_a_star_on_the_trail_gets_only_the_trails_light():
    """The profile across is a median along the trail, so a star the network sharpened, on
    the trail, gets the trail's lost light and keeps its own shape."""
    observed, restored, trail = _scene(30.0)
    centre = (SIZE / 2 + 40 * np.sin(np.deg2rad(30)), SIZE / 2 + 40 * np.cos(np.deg2rad(30)))  # on the axis
    total = 3e3 * SIGMA * 2 * np.pi * STAR_SIGMA**2
    observed += gaussian_stars((SIZE, SIZE), [centre], [total], 3.5)[None].astype(np.float32)
    sharpened = gaussian_stars((SIZE, SIZE), [centre], [total], 1.5)[None].astype(np.float32)
    restored += sharpened
    before = restored.copy()
    put_back_trails(restored, observed, np.array([SKY]), SIGMA)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    near = np.hypot(yy - centre[0], xx - centre[1]) <= 6
    added = (restored - before)[0][near]
    np.testing.assert_allclose(added, 0.4 * trail[near], rtol=0.05, atol=2 * SIGMA)  # the trail's 0.4, not the star's difference
    assert np.abs((observed - before)[0][near]).max() > 100 * SIGMA  # which is large there


@pytest.mark.parametrize("direction", [(0.0, 1.0), (1.0, 0.0)])
def test_along_a_row_each_row_gets_its_own_profile(direction):
    """Along a row (column) every pixel of a row is at one distance from the axis, off its bin's
    centre, all to one side: the profile is read at the bins' own pixels' distances, so each
    row gets its own median, not a fifth of the next row's (which cut the flux of 30 sigma stars
    9 px from a 3000 sigma trail to 0.68)."""
    observed = np.zeros((1, 64, 200), np.float32)
    trail = trails.Trail(0, (30.2, 100.0), direction, (-90.0, 90.0), 6.13)
    if direction[0]:
        trail = trails.Trail(0, (30.0, 32.2), direction, (-25.0, 25.0), 6.13)
    band = trails._Band(trail, observed, False)
    values = (band.ys if direction[1] else band.xs).astype(float) ** 2  # one value per row (column)
    medians, counts = trails._group_medians(band.piece * band.bins + band.bin, values, band.pieces * band.bins)
    np.testing.assert_allclose(band.profile(medians, counts, band.distances(counts), band.piece), values, rtol=1e-12)


@pytest.mark.parametrize("angle", [0.0, 90.0, 0.5])
@pytest.mark.parametrize("width", [1, 2, 3])
def test_hot_columns_and_rows_are_left_to_the_anchor(angle, width, monkeypatch):
    """A hot or bad column is sharp-edged and along the pixels; the anchor's line test takes it
    out, and it is not put back. A trail along the pixels, its profile the stars', is."""
    hot = _scene(angle, crest=300.0, kept=0.0, profile=lambda d: ((d >= -0.5) & (d < width - 0.5)).astype(float))
    assert find_trails(*hot[:2], np.array([SKY]), SIGMA) == []
    assert len(find_trails(*_scene(angle)[:2], np.array([SKY]), SIGMA)) == 1
    monkeypatch.setattr(trails, "_is_sharp", lambda *a: False)
    assert len(find_trails(*hot[:2], np.array([SKY]), SIGMA)) == 1


@pytest.mark.parametrize("edge", [(slice(None), 0, slice(None)), (slice(None), slice(None), -1), (slice(None), slice(None), slice(0, 2))])
def test_a_stacks_bright_edge_is_left_to_the_anchor(edge, monkeypatch):
    """A stack's bright first row or last column (or two), which the network takes out, is a
    long line of lost light, but the light across it rises to the image's edge (and it is
    sharp-edged)."""
    observed, restored, _ = _scene(30.0, crest=0.0)
    observed[edge] += 200 * SIGMA
    assert find_trails(observed, restored, np.array([SKY]), SIGMA) == []
    monkeypatch.setattr(trails, "_is_centred", lambda *a: True)
    assert find_trails(observed, restored, np.array([SKY]), SIGMA) == []
    monkeypatch.setattr(trails, "_is_sharp", lambda *a: False)
    assert len(find_trails(observed, restored, np.array([SKY]), SIGMA)) == 1


@pytest.mark.parametrize("kept", [0.5, 1.5])
def test_compact_features_are_not_trails(kept):
    """Bright stars the network dimmed or sharpened as a whole, and a cosmic ray's short track,
    are regions of lost light far shorter than a trail."""
    positions = [(60, 60), (60, 190), (190, 120), (200, 200)]
    bright = gaussian_stars((SIZE, SIZE), positions, [1e5 * SIGMA] * 4, 6.0)
    rng = np.random.default_rng(1)
    noise = rng.normal(0, SIGMA, (SIZE, SIZE))
    track = np.where((np.abs(_across(40.0)) < 0.7) & (np.abs(_across(130.0)) < 30), 500 * SIGMA, 0.0)  # 60 px
    observed = (SKY + bright + track + noise)[None].astype(np.float32)
    restored = (SKY + kept * bright + noise / 3)[None].astype(np.float32)
    assert find_trails(observed, restored, np.array([SKY]), SIGMA) == []
    long = np.where((np.abs(_across(40.0)) < 0.7) & (np.abs(_across(130.0)) < 80), 500 * SIGMA, 0.0)  # 160 px: a trail
    assert len(find_trails(observed + long[None].astype(np.float32), restored, np.array([SKY]), SIGMA)) == 1


def test_the_edges_of_a_sharpened_straight_filament_are_not_trails(monkeypatch):
    """The network moves light off both edges of a long straight ridge (a filament, an edge-on
    disk) onto its crest: each edge is a long thin line of lost light, but the input's light
    across it rises to one side, and it is left alone."""
    d = _across(30.0)
    wide, narrow = (300 * SIGMA * np.exp(-0.5 * (d / (fwhm / 2.3548)) ** 2) * 10 / fwhm for fwhm in (10.0, 5.0))
    noise = np.random.default_rng(3).normal(0, SIGMA, (SIZE, SIZE))
    args = ((SKY + wide + noise)[None].astype(np.float32), (SKY + narrow + noise / 3)[None].astype(np.float32), np.array([SKY]), SIGMA)
    assert find_trails(*args) == []
    monkeypatch.setattr(trails, "_is_centred", lambda *a: True)
    assert len(find_trails(*args)) == 2  # one edge on each side


def test_a_long_diffraction_spike_is_not_a_trail(monkeypatch):
    """A very bright star's spikes, at any angle, are long thin lines that the network moves
    into the star's core; they fade away from that raised core and are left alone."""
    yy, xx = np.mgrid[:SIZE, :SIZE].astype(float)
    cy, cx, t = 128.3, 127.6, np.deg2rad(30)
    along, across = (yy - cy) * np.sin(t) + (xx - cx) * np.cos(t), (yy - cy) * np.cos(t) - (xx - cx) * np.sin(t)
    spikes = 1e5 * SIGMA * 0.02 * (1 + (np.abs(along) / 3) ** 2) ** -0.8 * np.exp(-0.5 * (across / 0.6) ** 2)
    total = 1e5 * SIGMA * 2 * np.pi * STAR_SIGMA**2
    rng = np.random.default_rng(2)
    noise = rng.normal(0, SIGMA, (SIZE, SIZE))
    observed = (SKY + gaussian_stars((SIZE, SIZE), [(cy, cx)], [total], 3.5) + spikes + noise)[None].astype(np.float32)
    restored = (SKY + gaussian_stars((SIZE, SIZE), [(cy, cx)], [total + spikes.sum()], 1.5) + noise / 3)[None].astype(np.float32)
    args = (observed, restored, np.array([SKY]), SIGMA)
    assert find_trails(*args) == []
    monkeypatch.setattr(trails, "_is_diffraction_spike", lambda *a: False)
    assert len(find_trails(*args)) == 1  # the two arms and the ring between them: one line of lost light


def test_pixels_without_data_are_neither_counted_nor_changed():
    observed, restored, trail = _scene(30.0)
    observed[0, 124:132, :] = np.nan  # a gap across the trail
    observed[0, :, :20] = 0.0  # a blank border
    before = restored.copy()
    found = put_back_trails(restored, observed, np.array([SKY]), SIGMA, blank=True)
    assert len(found) == 2  # a piece on each side of the gap
    np.testing.assert_array_equal(restored[0, 124:132], before[0, 124:132])
    np.testing.assert_array_equal(restored[0, :, :20], before[0, :, :20])
    band = (np.abs(_across(30.0)) <= 8) & np.isfinite(observed[0]) & (observed[0] != 0)
    assert ((restored - before)[0][band]).sum() == pytest.approx(0.4 * trail[band].sum(), rel=0.03)


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_non_finite_network_outputs_on_the_trail_stay_local(bad):
    """Non-finite outputs are left as they are (the anchor keeps them local) and count nowhere:
    in the lost light's running average one would carry across the rest of its row and column."""
    observed, restored, trail = _scene(30.0)
    clean = restored.copy()
    put_back_trails(clean, observed, np.array([SKY]), SIGMA)
    spot = (0, slice(124, 132), slice(124, 132))  # on the axis
    restored[spot] = bad
    assert put_back_trails(restored, observed, np.array([SKY]), SIGMA)  # (in two pieces: the block is a gap)
    others = np.isfinite(restored[0])
    assert others.sum() == others.size - 64
    np.testing.assert_allclose(restored[0][others], clean[0][others], atol=0.05 * 0.4 * trail.max())


def test_shapes_are_checked():
    observed, restored, _ = _scene(30.0)
    for args in ((observed[0], restored[0], np.array([SKY])), (observed, restored[:, :-1], np.array([SKY])), (observed, restored, np.array([SKY, SKY]))):
        with pytest.raises(ValueError, match="expected"):
            put_back_trails(*args, SIGMA)


def test_lost_light_read_in_bands_matches_the_whole_image(monkeypatch):
    observed, restored, _ = _scene(30.0)
    whole = trails._lost_light(observed[0], restored[0], False, SIGMA)
    monkeypatch.setattr(trails, "BAND_VALUES", 7 * SIZE)  # 6 rows a band (a multiple of POOL)
    np.testing.assert_array_equal(trails._lost_light(observed[0], restored[0], False, SIGMA), whole)
    assert whole.any()


def test_the_bundled_model_keeps_a_tilted_trail_and_the_stars_beside_it():
    """End to end: the network takes part of a 500 sigma trail out; the engine puts it back
    without scaling the 30 sigma stars 9-16 px from it (1.24-1.35x before, whatever the angle)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import trail_photometry

    from astroswin.engine import load_model

    kept, stars = trail_photometry.measure(load_model("small"), 500, trail_photometry.gaussian, 30.0, range(1), alone=False)
    assert kept == pytest.approx(1.0, abs=0.02)
    assert all(0.9 < ratio < 1.08 for ratio in stars)


def test_looking_for_trails_holds_under_half_a_channel(monkeypatch):
    """The lost light is read in bands and kept on the 2x2 grid, so looking for trails in an
    image with none (the usual case) holds under 0.4 of one channel's float32."""
    import tracemalloc

    rng = np.random.default_rng(4)
    observed = (SKY + rng.normal(0, SIGMA, (3, 512, 512))).astype(np.float32)
    restored = observed.copy()
    monkeypatch.setattr(trails, "BAND_VALUES", 16 * 512)
    tracemalloc.start()
    try:
        assert put_back_trails(restored, observed, np.full(3, SKY), SIGMA) == []
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 0.4 * 512 * 512 * 4  # 0.36 measured: the 2x2 grid's float32 sums and one band
