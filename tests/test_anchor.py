"""The flux anchor: each channel's light, over boxes wider than a star, held to the input's."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import gaussian_stars

from astroswin.engine import restore
from astroswin.engine.anchor import BOX, MARGIN, RATIO_LIMITS, SMOOTHING, flux_gain
from astroswin.engine.normalize import Stretch

SKY, SIGMA = 1000.0, 10.0


def _field(shape=(120, 180), seed=0, flux=2e5):
    """Sky with noise and three bright stars, as ``(1, H, W)`` float32."""
    rng = np.random.default_rng(seed)
    stars = gaussian_stars(shape, [(30, 40), (60, 100), (95, 30)], [flux, flux / 3, flux], 3.0)
    return (SKY + stars + rng.normal(0, SIGMA, shape))[None].astype(np.float32)


def test_a_scaled_star_is_scaled_back_and_the_sky_is_left_alone():
    """The network kept 0.8 of the light everywhere: around the bright stars the factor is
    1 / 0.8 (the ratio of the sums, by hand); on the empty sky, noise only, it is exactly 1."""
    observed = _field()
    restored = SKY + 0.8 * (observed - SKY)
    gain = flux_gain(observed, restored, np.array([SKY]), SIGMA, np.ones_like(observed, bool))[0]
    np.testing.assert_allclose(gain[25:36, 35:46], 1.25, rtol=1e-5)  # within 5 px of a star: its box holds it all
    sky = gain[:, 150:]  # beyond the reach of every star's boxes
    assert sky.size and np.all(sky == 1.0)
    assert gain.min() >= 1.0 and gain.max() <= 1.25 + 1e-5


def test_the_factor_has_no_steps():
    """A star entering a box changes its sums at once; averaged, the factor ramps instead of
    stepping (a step drew a square into bright stars' faint wings)."""
    observed = _field()
    restored = SKY + 0.8 * (observed - SKY)
    gain = flux_gain(observed, restored, np.array([SKY]), SIGMA, np.ones_like(observed, bool))[0]
    gain = gain[SMOOTHING // 2 : -(SMOOTHING // 2), SMOOTHING // 2 : -(SMOOTHING // 2)]  # the image's edges average fewer pixels
    largest = 0.25 / SMOOTHING + 1e-5  # the whole change of 0.25 spread over SMOOTHING px at least
    assert np.abs(np.diff(gain, axis=0)).max() <= largest and np.abs(np.diff(gain, axis=1)).max() <= largest


def test_a_faint_star_beside_a_bright_one_keeps_its_own_flux():
    """The network moves a bright star's wings into its core. A 31 px box beside the star then
    holds wing light in the input and none in the output, and its ratio (up to 2) once scaled
    a faint star 16-34 px away by 1.16-1.56. Where the 31 px box's ratio disagrees with the
    63 px box's, which holds the whole star, the box is not trusted."""
    yy, xx = np.mgrid[:160, :160]
    moffat = (1 + (np.hypot(yy - 80, xx - 70) / 3.43) ** 2) ** -3.0
    bright = 1e4 * SIGMA * moffat
    faint = gaussian_stars((160, 160), [(80, 95)], [30 * SIGMA * 2 * np.pi * 1.27**2], 3.0)  # 25 px away
    rng = np.random.default_rng(3)
    noise = rng.normal(0, SIGMA, (160, 160))
    compact = gaussian_stars((160, 160), [(80, 70)], [1.4 * bright.sum()], 1.5)  # wings moved in, 1.4x
    observed = (SKY + bright + faint + noise)[None].astype(np.float32)
    restored = (SKY + compact + faint + 0.3 * noise)[None].astype(np.float32)
    gain = flux_gain(observed, restored, np.array([SKY]), SIGMA, np.ones_like(observed, bool))[0]
    assert gain[80, 70] == pytest.approx(1 / 1.4, rel=0.01)  # the bright star is held to its input light
    star = np.hypot(yy - 80, xx - 95) < 5
    anchored = (restored[0] - SKY) * gain
    assert abs(anchored[star].sum() / (restored[0] - SKY)[star].sum() - 1) < 0.02


def test_hot_pixels_and_cosmic_rays_the_network_took_out_do_not_count(monkeypatch):
    """A hot pixel of 500 sigma 6-10 px from a faint star once doubled the star's flux: the
    network removes it, so the input's sum held light the output's lacked."""
    from astroswin.engine import anchor

    observed = _field(flux=2e4)
    restored = SKY + 0.8 * (observed - SKY)  # the network kept 0.8 of the light, and took out:
    observed[0, 38, 44] += 500 * SIGMA  # a hot pixel 8 px from the star at (30, 40)
    observed[0, 22, 44:47] += 300 * SIGMA  # a cosmic ray's 3 px track
    observed[0, 65, 95] += 500 * SIGMA  # a hot pixel on the star at (60, 100)'s wing
    args = (np.array([SKY]), SIGMA, np.ones_like(observed, bool))
    spikes = anchor.removed_spikes(observed, restored, args[0].reshape(-1, 1, 1), SIGMA, args[2])
    assert np.argwhere(spikes[0]).tolist() == [[22, 44], [22, 45], [22, 46], [38, 44], [65, 95]]
    gain = flux_gain(observed, restored, *args)[0]
    np.testing.assert_allclose(gain[25:36, 35:46], 1.25, rtol=1e-5)
    np.testing.assert_allclose(gain[55:66, 95:106], 1.25, rtol=1e-3)  # a fainter star: w just under 1 at its edge
    monkeypatch.setattr(anchor, "removed_spikes", lambda o, *a: np.zeros_like(o, bool))
    assert flux_gain(observed, restored, *args)[0][25:36, 35:46].max() > 1.5  # counted, they pull it up


@pytest.mark.parametrize("width", [1, 2, 3])
def test_hot_columns_and_rows_the_network_took_out_do_not_count(width):
    """A hot column of 300 sigma, 1-2 px wide, once scaled 30 sigma stars up to 22 px from it by
    1.25-4 (``scripts/trail_photometry.py``'s frame): a line of candidates, each too like its
    neighbours along the line to be a local maximum, that the 3x3 spike test missed."""
    from astroswin.engine import anchor

    observed = _field(flux=2e4)
    restored = SKY + 0.8 * (observed - SKY)  # the network kept 0.8 of the stars, and took out:
    observed[0, :, 52 : 52 + width] += 300 * SIGMA  # a hot column 12 px from the star at (30, 40)
    observed[0, 80 : 80 + width, 60:170] += 100 * SIGMA  # a bad row segment 20 px from the star at (60, 100)
    args = (np.array([SKY]), SIGMA, np.ones_like(observed, bool))
    spikes = anchor.removed_spikes(observed, restored, args[0].reshape(-1, 1, 1), SIGMA, args[2])[0]
    lines = np.zeros_like(spikes)
    lines[:, 52 : 52 + width] = lines[80 : 80 + width, 60:170] = True
    np.testing.assert_array_equal(spikes, lines)
    gain = flux_gain(observed, restored, *args)[0]
    np.testing.assert_allclose(gain[25:36, 35:46], 1.25, rtol=1e-5)
    np.testing.assert_allclose(gain[55:66, 95:106], 1.25, rtol=1e-3)


def test_a_hot_column_through_a_bright_star_is_still_a_line(monkeypatch):
    """A hot column breaks where it crosses a star, and each piece ends at the star's core,
    which the network raised, as a diffraction spike does; but a column is even along, where
    a spike fades away from its star, so the pieces still count as a line."""
    from astroswin.engine import anchor

    observed = _field(flux=2e4)
    bright = gaussian_stars((120, 180), [(90.0, 150.2)], [3e6], 3.0)
    restored = SKY + 0.8 * (observed - SKY) + gaussian_stars((120, 180), [(90.0, 150.2)], [3e6], 1.3)
    observed = observed + bright[None].astype(np.float32)
    observed[0, :, 150] += 300 * SIGMA  # through the bright star's core
    args = (np.array([SKY]), SIGMA, np.ones_like(observed, bool))
    spikes = anchor.removed_spikes(observed, restored, args[0].reshape(-1, 1, 1), SIGMA, args[2])[0]
    far = np.r_[0:80, 101:120]  # the column away from the star
    assert spikes[far, 150].all()
    monkeypatch.setattr(anchor, "_is_diffraction_spike", lambda heights, *a: True)  # as if every piece were a spike
    assert not anchor.removed_spikes(observed, restored, args[0].reshape(-1, 1, 1), SIGMA, args[2])[0][far, 150].all()


def test_a_stars_diffraction_spikes_are_not_taken_for_lines(monkeypatch):
    """A Newtonian's four spikes are thin lines along the rows and columns that a deconvolution
    takes out, moving their light into the star's core; left out of the sums as lines, spikes
    holding 14% of a star's light left it 0.86 of its flux."""
    from astroswin.engine import anchor

    yy, xx = np.mgrid[:120, :120].astype(float)
    cy, cx = 60.3, 59.6
    total = 1e4 * SIGMA * 2 * np.pi * (3.0 / 2.3548) ** 2

    def arm(along, across):
        return np.where(along > 0, 0.1 * (1 + (along / 3) ** 2) ** -0.8 * np.exp(-0.5 * (across / 0.5) ** 2), 0.0)

    spikes = sum(arm(s * (xx - cx), yy - cy) + arm(s * (yy - cy), xx - cx) for s in (1, -1))
    spikes *= 1e4 * SIGMA
    star = gaussian_stars((120, 120), [(cy, cx)], [total], 3.0)
    observed = (SKY + star + spikes)[None].astype(np.float32)
    share = spikes.sum() / (star.sum() + spikes.sum())
    restored = (SKY + gaussian_stars((120, 120), [(cy, cx)], [total / (1 - share)], 1.3))[None].astype(np.float32)
    args = (np.array([SKY]), SIGMA, np.ones_like(observed, bool))
    assert share > 0.1
    inside = np.hypot(yy - cy, xx - cx) < 6
    gain = flux_gain(observed, restored, *args)[0][inside]
    with monkeypatch.context() as patched:
        patched.setattr(anchor, "_long_runs", lambda *a: (np.zeros(0, int),) * 4)  # no line test at all
        np.testing.assert_array_equal(gain, flux_gain(observed, restored, *args)[0][inside])
    assert gain.mean() > 0.95  # (the spikes' light beyond the 31 px box is not in its input sum)
    monkeypatch.setattr(anchor, "LINE_REACH", 0)  # the spikes taken for hot columns and rows
    assert flux_gain(observed, restored, *args)[0][inside].mean() < gain.mean() - 0.05


@pytest.mark.parametrize("fwhm", [1.5, 2.0, 2.5, 3.5])
def test_a_star_the_network_dimmed_whole_is_not_taken_for_a_line(fwhm):
    """The row and column through a compact star stand out across like a line's; along them
    its light falls off too fast to make a run, however bright it is."""
    from astroswin.engine import anchor

    yy, xx = np.mgrid[:64, :64]
    sigma = fwhm / 2.3548
    star = 1e6 * SIGMA * np.exp(-0.5 * ((yy - 32.3) ** 2 + (xx - 31.8) ** 2) / sigma**2)
    observed = (SKY + star)[None].astype(np.float32)
    restored = SKY + 0.1 * (observed - SKY)  # every pixel lost 90%
    spikes = anchor.removed_spikes(observed, restored, np.full((1, 1, 1), SKY, np.float32), SIGMA, np.ones_like(observed, bool))
    assert spikes.sum() <= 9  # at most the core and its neighbours, as a hot pixel (what the 3x3 test always did)


@pytest.mark.parametrize("kept", [0.1, 0.0])
def test_the_factor_is_clipped(kept):
    """Also where the network kept no light at all (the ratio's denominator 0): the upper
    limit, not a jump back to 1."""
    observed = _field()
    restored = SKY + kept * (observed - SKY)
    gain = flux_gain(observed, restored, np.array([SKY]), SIGMA, np.ones_like(observed, bool))
    assert gain.max() == pytest.approx(RATIO_LIMITS[1])
    np.testing.assert_allclose(gain[0, 25:36, 35:46], RATIO_LIMITS[1], rtol=1e-5)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_network_output_stays_local(bad):
    """A running box sum carries a NaN or inf on along its line: one such network output
    (fp16 overflow) turned the anchor off over a quadrant of the image."""
    observed = _field()
    restored = SKY + 0.8 * (observed - SKY)
    restored[0, 10, 10] = bad
    gain = flux_gain(observed, restored, np.array([SKY]), SIGMA, np.ones_like(observed, bool))
    assert np.isfinite(gain).all()
    np.testing.assert_allclose(gain[0, 55:66, 95:106], 1.25, rtol=1e-5)  # the star at (60, 100)


def test_pixels_without_data_count_like_pixels_outside_the_image():
    """A NaN border pulls neither sum: beside it the factors are those of the image cut at it."""
    observed = _field()
    restored = SKY + 0.8 * (observed - SKY) + np.float32(30.0)  # not a uniform scale
    bordered, out = observed.copy(), restored.copy()
    bordered[:, :, :50] = np.nan
    out[:, :, :50] = 7.0  # whatever the network made of the filled pixels
    valid = np.isfinite(bordered)
    gain = flux_gain(bordered, out, np.array([SKY]), SIGMA, valid)
    cut = flux_gain(observed[:, :, 50:], restored[:, :, 50:], np.array([SKY]), SIGMA, np.ones_like(valid[:, :, 50:]))
    np.testing.assert_allclose(gain[:, :, 50:], cut, rtol=1e-5, atol=1e-6)
    assert np.isfinite(gain).all() and (cut != 1).any()


@pytest.mark.parametrize("line_row", [None, 3, 12])
def test_a_band_with_its_margin_gets_the_whole_images_factors(line_row):
    """Also with a hot column across the band and a hot row in its context rows, which the
    network took out: the spike test's runs reach beyond the band."""
    a = MARGIN + 10
    b = a + 30
    observed = _field((b + MARGIN + 10, 180))
    restored = SKY + 0.7 * (observed - SKY) + np.float32(20.0)
    if line_row is not None:
        observed[0, :, 150] += 300 * SIGMA
        observed[0, a - MARGIN + line_row, 60:120] += 300 * SIGMA
    args = (np.array([SKY]), SIGMA)
    whole = flux_gain(observed, restored, *args, np.ones_like(observed, bool))
    band = flux_gain(observed[:, a - MARGIN : b + MARGIN], restored[:, a - MARGIN : b + MARGIN], *args, np.ones((1, b - a + 2 * MARGIN, 180), bool))
    np.testing.assert_allclose(band[:, MARGIN:-MARGIN], whole[:, a:b], rtol=1e-5)
    assert (whole[:, a:b] != 1).any()


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="matching"):
        flux_gain(np.ones((1, 8, 8)), np.ones((1, 8, 9)), np.zeros(1), 1.0, np.ones((1, 8, 8), bool))


@pytest.mark.parametrize("band_rows", [3, 14, 40])
def test_finish_in_bands_of_any_height_matches_one_band(band_rows, monkeypatch):
    """``_finish`` anchors in row bands (bounded memory), keeping the network's output of the
    rows above each band aside; bands thinner than the box's margin included."""
    rgb = np.concatenate([_field(seed=s) for s in range(3)])
    rgb[1, :6] = np.nan  # a border without data
    rgb[2, 58:63, 98:103] = 60000.0  # a clipped core
    network = (SKY + 0.75 * (rgb - SKY) + 5.0).astype(np.float32)
    network[:, :6] = SKY
    for row in range(20, 50, 3):  # hot pixels the network took out, across band edges
        rgb[row % 3, row, 60 + row] += 500 * SIGMA
        network[row % 3, row, 60 + row] = SKY
    params = Stretch(background=np.full(3, SKY), noise=SIGMA)
    saturation = np.array([np.inf, np.inf, 60000.0])

    def finish(values_per_band):
        monkeypatch.setattr(restore, "ANCHOR_BAND_VALUES", values_per_band)
        out = network.copy()
        restore._finish(out, rgb, 1.0, saturation, params)
        return out

    banded, single = finish(3 * 180 * band_rows), finish(1 << 30)
    np.testing.assert_allclose(banded, single, rtol=1e-6, equal_nan=True)
    np.testing.assert_array_equal(single[2, 58:63, 98:103], 60000.0)
    np.testing.assert_array_equal(np.isnan(single), np.isnan(rgb))
    star = (slice(0, 1), slice(15, 46), slice(25, 56))  # the box around a star
    assert abs((single[star] - SKY).sum() / (rgb[star] - SKY).sum() - 1) < 0.1  # 0.77 without the anchor


def test_finish_on_threads_matches_one_thread():
    """Each channel is cut into column pieces, one per thread, each with the anchor's margin of
    columns: stars, and the cosmic rays the network took out, across the pieces' edges get the
    same factors as on one thread (to float32 rounding: scipy's running sums start where a
    piece starts). Dense enough that two columns less of margin change about 100 pixels."""
    from astroswin.engine.anchor import MIN_PIECE

    rng = np.random.default_rng(1)
    shape = (100, 3 * MIN_PIECE + 41)
    positions = np.stack([rng.uniform(5, 95, 60), rng.uniform(5, shape[1] - 5, 60)], axis=1)
    stars = gaussian_stars(shape, positions, 10 ** rng.uniform(4, 5.5, 60), 3.0)
    rgb = (SKY + stars + rng.normal(0, SIGMA, (3, *shape))).astype(np.float32)
    network = (SKY + 0.7 * (rgb - SKY)).astype(np.float32)
    c, y, x = rng.integers(0, 3, 2000), rng.integers(1, 99, 2000), rng.integers(1, shape[1] - 2, 2000)
    for dx, height in ((0, 400 * SIGMA), (1, 280 * SIGMA)):  # two-pixel tracks, taken out by the network
        rgb[c, y, x + dx] += height
        network[c, y, x + dx] = SKY
    params = Stretch(background=np.full(3, SKY), noise=SIGMA)

    def finish(workers):
        out = network.copy()
        restore._finish(out, rgb, 1.0, None, params, workers)
        return out

    one = finish(1)
    assert not np.allclose(one, network)  # the anchor acted
    for workers in (2, 3, 8):
        np.testing.assert_allclose(finish(workers), one, rtol=3e-7, atol=0)


def test_the_bundled_model_keeps_a_bright_white_stars_flux_and_colour():
    """A white star 1e4 sigma bright, Gaussian FWHM 2.4 px: the network alone kept 0.66 of
    its flux and split its channels by 7% (``bench/star_photometry.md``)."""
    from astroswin.engine import RestoreSettings, load_model, restore_array

    rng = np.random.default_rng(2)
    star = gaussian_stars((64, 64), [(32.3, 31.6)], [1e4 * SIGMA * 2 * np.pi * (2.4 / 2.3548) ** 2], 2.4)
    observed = (SKY + star + rng.normal(0, SIGMA, (3, 64, 64))).astype(np.float32)
    out = restore_array(observed, load_model("small"), RestoreSettings(device="cpu"))
    box = (slice(None), slice(32 - BOX // 2, 33 + BOX // 2), slice(32 - BOX // 2, 33 + BOX // 2))
    fluxes = (out[box] - SKY).sum(axis=(1, 2)) / star[box[1:]].sum()
    assert np.all(np.abs(fluxes - 1) < 0.01), fluxes
    assert np.ptp(fluxes) < 0.005, fluxes


@pytest.mark.parametrize("colour", [(0.0, 1.0, 0.0), (1.0, 1.0, 0.0)], ids=["green only", "red and green"])
def test_a_star_in_some_channels_only_keeps_each_channels_flux(colour):
    """Narrowband palettes put light in one channel alone. The network alone kept 0.34 of a
    green-only star's flux and gave a red+green star 2.8x in red; the anchor, limited to a
    factor of 2, left them at 0.68 and 1.42."""
    from astroswin.engine import RestoreSettings, load_model, restore_array

    rng = np.random.default_rng(0)
    flux = 2e4 * 2 * np.pi * 1.3**2
    star = gaussian_stars((96, 96), [(48.3, 47.6)], [flux], 1.3 * 2.3548)
    observed = (SKY + np.asarray(colour)[:, None, None] * star + rng.normal(0, SIGMA, (3, 96, 96))).astype(np.float32)
    out = restore_array(observed, load_model("small"), RestoreSettings(device="cpu", threads=1))
    box = (slice(None), slice(33, 64), slice(33, 64))
    fluxes = (out[box] - SKY).sum(axis=(1, 2)) / star[box[1:]].sum()
    lit = np.asarray(colour) > 0
    np.testing.assert_allclose(fluxes[lit], 1.0, atol=0.05)


@pytest.mark.parametrize("edge", ["first row", "last column"])
def test_a_bright_edge_line_the_network_took_out_does_not_scale_stars_near_it(edge):
    """A stack's bright edge row, removed by the network, is a line of spikes; padded with its
    own values its 3x3 medians were bright, it was never taken for spikes, and stars 12-20 px
    from it were scaled by 1.3-1.8."""
    rng = np.random.default_rng(5)
    stars = gaussian_stars((96, 96), [(14.0, 40.0), (50.0, 80.0)], [2e4, 2e4], 3.0)[None]
    observed = SKY + stars + rng.normal(0, SIGMA, (1, 96, 96))
    restored = SKY + stars + rng.normal(0, SIGMA, (1, 96, 96))  # the network: stars kept, line gone
    line = (slice(None), 0, slice(None)) if edge == "first row" else (slice(None), slice(None), -1)
    observed[line] += 2000.0
    gain = flux_gain(observed.astype(np.float32), restored.astype(np.float32), np.array([SKY]), SIGMA, np.ones(observed.shape, bool))
    near = (slice(None), slice(4, 25), slice(30, 51)) if edge == "first row" else (slice(None), slice(40, 61), slice(70, 91))
    scaled = ((restored[near] - SKY) * gain[near]).sum() / stars[near].sum()
    assert scaled == pytest.approx(1.0, abs=0.05)
