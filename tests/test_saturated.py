"""Clipped (saturated) stars come out as the input has them, with a soft edge: no flat disc with a
cliff around it, no lost light; unclipped stars beside them are restored as usual."""

from __future__ import annotations

import numpy as np
import pytest

from astroswin.engine import RestoreSettings, load_model, restore_array
from astroswin.engine.saturated import REACH, SHOULDER, clipped_star_weight

CLIP = 65535.0
SKY = 1000.0
NOISE = 10.0


def star(shape, y, x, sigma, peak) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return peak * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma**2))


def test_weight_covers_the_clipped_star_only():
    shape = (120, 140)
    image = SKY + star(shape, 40, 40, 2.0, 1e5) + star(shape, 40, 60, 1.5, 2e4) + star(shape, 90, 110, 2.0, 3e4)
    image = np.minimum(image, CLIP)[None].astype(np.float32)
    weight = clipped_star_weight(image, np.array([CLIP]), np.array([SKY]), NOISE)[None]
    assert weight.shape == image.shape and weight.dtype == np.float32
    assert np.all(weight[0, 37:44, 37:44] == 1.0)  # the clipped core and its shoulders
    assert weight[0, 40, 60] < 0.01  # an unclipped star 20 px away, not connected to it
    assert weight[0, 90, 110] == 0.0 and weight[0, 5, 130] == 0.0
    assert 0 < weight[0, 40, 50] < 1  # the soft edge, beyond the wing and its shoulder
    assert clipped_star_weight(image, np.array([np.inf]), np.array([SKY]), NOISE) is None


def test_weight_stops_at_its_reach():
    """A bright region connected to a clipped star (a galaxy's core) is the star's only within
    REACH px of its plateau."""
    shape = (80, 200)
    image = np.full(shape, SKY)
    image[35:45, :] += 10000.0  # a bright streak through the star, far above its wing threshold
    image[38:42, 10:14] = CLIP
    weight = clipped_star_weight(image[None].astype(np.float32), np.array([CLIP]), np.array([SKY]), NOISE)
    assert weight[40, 12 + REACH - 2] == 1.0 and weight[40, 13 + REACH + SHOULDER + 7] == 0.0


@pytest.fixture(scope="module")
def bundled():
    return load_model("small")


def test_clipped_star_keeps_its_light_and_has_no_cliff(bundled):
    """Measured before: 0.43 of the light in a 21 px box, 33472 ADU beside the plateau became
    5697 on one side and 13297 on the other."""
    shape = (96, 96)
    rng = np.random.default_rng(0)
    unclipped = SKY + rng.normal(0, 10, shape) + star(shape, 48, 48, 2.0, 1e5) + star(shape, 20, 75, 1.5, 2e4)
    data = np.minimum(unclipped, CLIP).astype(np.float32)
    out = restore_array(data, bundled, RestoreSettings(device="cpu", threads=1))
    box = (slice(38, 59), slice(38, 59))
    assert (out[box] - SKY).sum() / (data[box] - SKY).sum() == pytest.approx(1.0, abs=0.03)
    for profile_in, profile_out in ((data[48, 40:57], out[48, 40:57]), (data[40:57, 48], out[40:57, 48])):
        np.testing.assert_allclose(profile_out, profile_in, rtol=0.05)  # the input's shape, both sides alike
    neighbour = (slice(15, 26), slice(70, 81))
    assert out[neighbour].max() > 1.5 * data[neighbour].max()  # the unclipped star is still sharpened
    assert (out[neighbour] - SKY).sum() / (data[neighbour] - SKY).sum() == pytest.approx(1.0, abs=0.05)


def test_a_hot_pixel_at_the_clip_level_is_only_itself():
    """Grown like a star, each one left a 7x7 blotch of unrestored noise."""
    rng = np.random.default_rng(1)
    image = (SKY + rng.normal(0, NOISE, (1, 60, 60))).astype(np.float32)
    image[0, [10, 30, 45], [12, 40, 20]] = CLIP
    weight = clipped_star_weight(image, np.array([CLIP]), np.array([SKY]), NOISE)
    assert weight.sum() == 3 and np.all(weight[[10, 30, 45], [12, 40, 20]] == 1.0)


def test_a_star_clipped_in_one_channel_keeps_its_colour(bundled):
    """One weight for every channel: given back in the clipped red alone, the star came out with
    a red ring (red/green 1.87 in the input, 6-24 in the output, 2-6 px out)."""
    shape = (128, 128)
    rng = np.random.default_rng(2)
    profile = star(shape, 64, 64, 2.2, 1.0)
    rgb = SKY + rng.normal(0, NOISE, (3, *shape)) + np.array([1.6, 0.86, 0.5])[:, None, None] * CLIP * profile
    data = np.minimum(rgb, CLIP).astype(np.float32)
    out = restore_array(data, bundled, RestoreSettings(device="cpu", threads=1))
    for r in (2, 4, 6):
        ratio_in = (data[0, 64, 64 + r] - SKY) / (data[1, 64, 64 + r] - SKY)
        ratio_out = (out[0, 64, 64 + r] - SKY) / (out[1, 64, 64 + r] - SKY)
        assert ratio_out == pytest.approx(ratio_in, rel=0.05), r


def test_a_clipped_star_on_a_nebula_takes_only_itself(bundled):
    """Judged against the frame's sky, a clipped star on a nebula 1500 ADU bright took the
    nebula within 32 px with it: a disc of unrestored noise (29 ADU against 2.5 around it)."""
    shape = (160, 200)
    rng = np.random.default_rng(3)
    truth = SKY + 1500.0 * (np.arange(shape[1]) >= 100)[None, :] + star(shape, 80, 150, 2.2, 2e5)
    data = np.minimum(truth + rng.normal(0, 30, shape), CLIP).astype(np.float32)
    out = restore_array(data, bundled, RestoreSettings(device="cpu", threads=1))
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    r = np.hypot(yy - 80, xx - 150)
    annulus = (r > 14) & (r < 30)
    assert np.std(out[annulus] - truth[annulus]) < 0.5 * np.std(data[annulus] - truth[annulus])

