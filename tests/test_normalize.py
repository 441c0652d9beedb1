"""Normalisation: exact inverse, robustness, and crop/whole-image consistency."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from astroswin.engine.normalize import Stretch, estimate_stretch, robust_noise, stretch, unstretch


def _image(seed=0, shape=(3, 200, 200), sky=500.0, sigma=10.0):
    rng = np.random.default_rng(seed)
    return rng.normal(sky, sigma, shape)


def test_round_trip_float64_numpy_and_torch():
    x = _image()
    x[:, 50, 50] = 1e6  # a very bright star core
    x[:, 60, 60] = -300.0  # below the black point
    params = estimate_stretch(x)
    back = unstretch(stretch(x, params), params)
    np.testing.assert_allclose(back, x, rtol=1e-6, atol=1e-9 * np.abs(x).max())
    t = torch.from_numpy(x)
    back_t = unstretch(stretch(t, params), params)
    np.testing.assert_allclose(back_t.numpy(), x, rtol=1e-6, atol=1e-9 * np.abs(x).max())
    batch = torch.from_numpy(x[None])
    assert unstretch(stretch(batch, params), params).shape == batch.shape


def test_statistics_are_robust_to_hot_pixels_and_pedestals():
    x = _image(sigma=10.0)
    base = estimate_stretch(x)
    hot = x.copy()
    hot[:, ::37, ::41] = 65535.0  # hundreds of hot pixels
    with_hot = estimate_stretch(hot)
    assert with_hot.noise == pytest.approx(base.noise, rel=0.05)
    assert np.allclose(with_hot.background, base.background, atol=1.0)
    shifted = estimate_stretch(x + 1000.0)  # a pedestal moves the black point only
    assert shifted.noise == pytest.approx(base.noise, rel=1e-6)
    np.testing.assert_allclose(shifted.background, base.background + 1000.0, rtol=1e-9)
    assert base.noise == pytest.approx(10.0, rel=0.05)


def test_crop_and_whole_image_get_the_same_stretch():
    """The original stretched crops in training and whole frames at inference; here they agree."""
    x = _image(shape=(1, 1024, 1024))
    whole = estimate_stretch(x)
    crop = estimate_stretch(x[:, 300:364, 500:564])
    assert crop.noise == pytest.approx(whole.noise, rel=0.15)
    assert abs(crop.background[0] - whole.background[0]) < 0.3 * whole.noise


def test_linked_scale_and_per_channel_black_point():
    x = _image()
    x[1] += 200.0
    params = estimate_stretch(x)
    assert params.background[1] - params.background[0] == pytest.approx(200.0, abs=2.0)
    assert np.isscalar(params.noise)


def test_noiseless_constant_and_nan_data_are_safe():
    flat = np.full((1, 32, 32), 7.0)
    params = estimate_stretch(flat)
    assert params.noise > 0 and np.isfinite(stretch(flat, params)).all()
    smooth = np.linspace(0, 1, 64 * 64).reshape(1, 64, 64)
    assert estimate_stretch(smooth).noise > 0
    nan = _image(shape=(1, 64, 64))
    nan[:, :10] = np.nan
    p = estimate_stretch(nan)
    assert np.isfinite(p.background).all() and np.isfinite(p.noise)
    assert robust_noise(np.full((1, 1), 3.0)) == 0.0
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        estimate_stretch(np.zeros((8, 8)))


def test_stretch_is_monotonic_and_maps_bright_stars_near_one():
    params = Stretch(background=np.array([100.0]), noise=5.0)
    values = np.array([[[80.0, 100.0, 110.0, 1e3, 1e5, 5e5]]])
    s = stretch(values, params)[0, 0]
    assert np.all(np.diff(s) > 0)
    assert s[1] == 0.0 and 0.5 < s[-1] < 1.1


def test_noise_of_correlated_stacks_does_not_depend_on_frame_size():
    """Registered / debayered stacks have noise correlated between neighbouring pixels. The
    noise must be measured from neighbours on a large frame too (where the statistics use a
    sample), or a big frame gets ~sqrt(2) more noise than the training crops of the same data."""
    from astroswin.engine.normalize import estimate_stretch

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2101, 2101)).astype(np.float32)
    img = (0.25 * (x[:-1, :-1] + x[1:, :-1] + x[:-1, 1:] + x[1:, 1:]) + 100)[None]  # half-pixel shift
    crops = [estimate_stretch(img[:, y : y + 64, 0:64]).noise for y in range(0, 2048, 256)]
    assert abs(estimate_stretch(img).noise / np.median(crops) - 1) < 0.05


@pytest.mark.parametrize("peak", [1e6, 1e7, 1e9])
def test_one_very_bright_pixel_does_not_change_the_frames_noise(peak):
    """The noise was floored at 1e-4 of the brightest pixel's height: one saturated star in
    low-noise data raised the whole frame's noise (10 -> 1000 for a pixel at 1e7)."""
    img = np.random.default_rng(0).normal(1000.0, 10.0, (1, 128, 128))
    calm = estimate_stretch(img)
    img[0, 64, 64] += peak
    bright = estimate_stretch(img)
    assert abs(bright.noise / calm.noise - 1) < 0.01
    assert abs(bright.background[0] - calm.background[0]) < 0.1


def test_zeros_are_blank_where_the_sky_is_far_from_zero():
    """A registration border or a mosaic's empty corner (exact zeros) once pulled the median
    and the noise down: at 55% of the frame the black point went to 0 and the noise to 0.6
    of a sigma of 10. Where the sky itself is near zero, zeros are data."""
    sky = np.random.default_rng(0).normal(1000.0, 10.0, (3, 200, 200))
    for border in (0.3, 0.55):
        img = sky.copy()
        img[:, :, : int(200 * border)] = 0.0
        params = estimate_stretch(img)
        assert params.blank and np.all(np.abs(params.background - 1000.0) < 1.0) and abs(params.noise - 10.0) < 0.3
    near_zero = np.clip(np.random.default_rng(1).normal(0.0, 10.0, (1, 200, 200)), 0, None)  # clipped at 0: half the pixels
    params = estimate_stretch(near_zero)
    assert not params.blank and params.background[0] == 0.0
    assert not estimate_stretch(sky).blank
