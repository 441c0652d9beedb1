"""Tests of scripts/benchmark_quality.py's star measurements (the numbers the README reports)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import benchmark_quality as bq  # noqa: E402

from astroswin.train import psf  # noqa: E402
from astroswin.train.degrade import convolve  # noqa: E402


def star_scene(seed=7, size=96):
    case = bq.make_case(bq.SEED_BASE + seed, "stars", 3.5, 50.0, 1.0, size)
    np.testing.assert_array_equal(case.background, 50.0)  # a star field: only sky under the stars
    return case.truth, case.observed, case.kernel


def test_stars_on_a_nebula_are_measured_without_the_emission():
    """A result that dims every star to 80% and keeps the nebula exactly measures 0.8 in the
    photometric aperture once the emission is taken out; with only the sky taken out, the
    aperture sums mostly emission and reads nearly 1."""
    case = bq.make_case(bq.SEED_BASE + 7, "nebula", 4.5, 100.0, 1.0, 128)
    stars = case.truth - case.background
    assert (case.background > 100.0).mean() > 0.9 and stars.max() > 0
    dimmed = case.background + 0.8 * stars
    table = bq.star_table(dimmed, case.truth, case.background, noise=5.0)
    assert len(table) >= 3
    np.testing.assert_allclose(table[:, bq.FLUX], 0.8, rtol=1e-6)
    np.testing.assert_allclose(table[:, bq.FWHM], 1.0, rtol=1e-6)  # same shape, only fainter
    sky_only = bq.star_table(dimmed, case.truth, 100.0, noise=5.0)
    assert np.median(sky_only[:, bq.FLUX]) > 0.9


def test_case_noise_is_the_observed_noise_of_the_light_under_the_stars():
    """The noise map is the observation's actual noise, both where the nebula's shot noise
    dominates and where the read noise does (gain 4, sky 2: a wrong gain or a missing read
    noise term is off by 2x or more in one of the two); on a nebula it follows the emission."""
    from astroswin.engine.normalize import robust_noise

    case = bq.make_case(bq.SEED_BASE + 7, "stars", 3.5, 50.0, 1.0, 128)
    assert np.ptp(case.noise) == 0 and case.noise[0, 0] == pytest.approx(robust_noise(case.observed.mean(0)), rel=0.15)
    sky = 2.0
    nebula = bq.make_case(bq.SEED_BASE + 7, "nebula", 3.0, sky, 4.0, 128, brightness=1.0)
    expected = bq.convolve(nebula.truth - sky, [nebula.kernel] * 3) + sky  # the sky outside the frame too
    z = (nebula.observed - expected).mean(0) / nebula.noise
    light = nebula.background.mean(0)
    bright, faint = light > np.percentile(light, 75), light < np.percentile(light, 25)
    assert np.median(nebula.noise[bright]) > 1.1 * np.median(nebula.noise[faint])
    shot = (np.clip(expected - sky, 0, None) / 4.0).mean(0)
    assert np.median(shot[faint]) < bq.READ_NOISE**2 < np.median(shot[bright])  # one regime each
    for region in (bright, faint):
        assert np.std(z[region]) == pytest.approx(1.0, rel=0.06)


def test_a_blurred_dimmed_copy_measures_its_known_ratios():
    """Gaussian stars (FWHM 1.5 px) against a copy blurred by a Gaussian of FWHM 2 px and
    dimmed to 80%: the copy's stars are Gaussians of FWHM hypot(1.5, 2) = 2.5 px, and a fit
    to pixel-integrated data sees FWHM^2 + 2.3548^2 / 12 (see test_measure), so the FWHM
    ratio is 1.573 (1.667 without the pixels' term); both flux ratios are 0.8, the 2.5 px
    stars lying wholly within the apertures. (The truth against itself measured 1 for any
    deterministic measure, a swapped or mis-scaled one included.)"""
    from conftest import gaussian_stars

    rng = np.random.default_rng(0)
    grid = np.arange(18.0, 80.0, 20.0)
    positions = np.array([(y, x) for y in grid for x in grid]) + rng.uniform(-0.5, 0.5, (16, 2))
    flux = np.full(16, 5000.0)
    truth = 50.0 + gaussian_stars((96, 96), positions, flux, 1.5)[None]
    blurred = 50.0 + gaussian_stars((96, 96), positions, 0.8 * flux, np.hypot(1.5, 2.0))[None]
    table = bq.star_table(blurred, truth, background=50.0, noise=5.0)
    assert len(table) == 16
    pixel = 2.3548**2 / 12
    np.testing.assert_allclose(table[:, bq.FWHM], np.sqrt((1.5**2 + 2.0**2 + pixel) / (1.5**2 + pixel)), rtol=0.01)
    np.testing.assert_allclose(table[:, [bq.FLUX, bq.WIDE]], 0.8, rtol=1e-4)
    assert bq.summarise(table)["halo"] > -1e-3  # a blur on a flat sky leaves no dark ring


def test_blur_widens_stars_and_spills_flux_out_of_the_aperture():
    truth, _, _ = star_scene()
    blurred = convolve(truth - 50.0, [psf.moffat(4.0, 2.0)]) + 50.0
    table = bq.star_table(blurred, truth, background=50.0, noise=5.0)
    summary = bq.summarise(table)
    assert summary["fwhm_ratio"] > 2.0
    assert summary["flux_ratio"] < 0.97  # a beta-2 Moffat leaves flux outside r = 2.5 FWHM + 2
    assert summary["flux_ratio_wide"] > summary["flux_ratio"]


def test_a_ringing_restoration_shows_a_halo():
    truth, _, _ = star_scene()
    signal = truth - 50.0
    ringing = signal - 0.2 * (convolve(signal, [psf.moffat(6.0, 4.0)]) - signal)  # unsharp mask: dark rings
    assert bq.summarise(bq.star_table(ringing + 50.0, truth, background=50.0, noise=5.0))["halo"] < -0.002


def test_an_erased_star_counts_against_the_method():
    truth, _, _ = star_scene()
    flat = np.full_like(truth, 50.0)
    table = bq.star_table(flat, truth, background=50.0, noise=5.0)
    assert np.isinf(table[:, bq.FWHM]).all()
    assert bq.summarise(table)["fwhm_ratio"] == np.inf


def test_only_point_sources_count_as_stars(monkeypatch):
    # one star (FWHM 1.3 px) and one bright extended knot (FWHM 4 px, as a nebula's) on flat sky
    yy, xx = np.mgrid[:96, :96]

    def gaussian(y, x, fwhm, peak):
        return peak * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * (fwhm / 2.3548) ** 2))

    truth = (50.0 + gaussian(30, 30, 1.3, 2000.0) + gaussian(66, 66, 4.0, 3000.0))[None]
    table = bq.star_table(truth, truth, background=50.0, noise=5.0)
    assert len(table) == 1  # the star, not the knot
    monkeypatch.setattr(bq, "POINT_SOURCE_FWHM", 10.0)
    assert len(bq.star_table(truth, truth, background=50.0, noise=5.0)) == 2


def test_snr_scales_with_the_noise_given():
    truth, _, _ = star_scene()
    a = bq.star_table(truth, truth, background=50.0, noise=5.0)
    b = bq.star_table(truth, truth, background=50.0, noise=10.0)
    np.testing.assert_allclose(a[:, bq.SNR], 2 * b[:, bq.SNR])


def rows(*stars):
    """Star-table rows from (snr, fwhm ratio, flux ratio, halo) with a flat ring profile at halo."""
    return np.array([[snr, w, f, 1.0] + [h] * 8 for snr, w, f, h in stars], dtype=np.float64)


def test_summary_keeps_detections_and_looks_for_halos_around_bright_stars():
    stars = rows(
        (2.0, 9.0, 0.1, -0.5),  # below 5 sigma: not a detection, ignored
        (6.0, 1.2, 0.96, -0.3),  # a detection, too faint for the halo check
        (8.0, 1.1, 1.00, -0.1),
        (50.0, 1.0, 1.02, -0.004),
        (60.0, 1.0, 1.02, -0.002),
    )
    s = bq.summarise(stars)
    assert s["stars"] == 4
    assert s["fwhm_ratio"] == 1.05
    assert s["fwhm_ratio_bright"] == 1.0  # the two stars at SNR >= 30
    assert s["flux_ratio"] == 1.01
    assert s["halo"] == -0.003  # the bright stars' mean profile
    assert 0.005 < s["flux_se"] < 0.05
    assert 0.0 < s["fwhm_se"] < 0.1


def test_bootstrap_error_shrinks_with_stars_and_is_absent_where_fits_failed():
    rng = np.random.default_rng(1)
    few, many = (rng.normal(1.3, 0.3, n) for n in (16, 256))
    assert abs(bq.bootstrap_se(many) / (1.2533 * 0.3 / np.sqrt(256)) - 1) < 0.3  # a median's s.e. for normal values
    assert 1.5 < bq.bootstrap_se(few) / bq.bootstrap_se(many) < 6  # ~sqrt(16)
    assert np.isnan(bq.bootstrap_se(np.array([1.2, np.inf, np.inf])))  # median of a draw inf
    assert np.isnan(bq.bootstrap_se(np.array([1.2])))
    assert bq.plus_minus(1.4171, 0.083, 2) == "1.42 ± 0.08" and bq.plus_minus(2.1, float("nan"), 2) == "2.10"


def test_summary_of_no_stars_is_empty_not_an_error():
    empty = bq.star_table(np.full((1, 64, 64), 50.0), np.full((1, 64, 64), 50.0), background=50.0, noise=5.0)
    assert empty.shape == (0, bq.COLUMNS)
    s = bq.summarise(empty)
    assert s["stars"] == 0 and np.isnan(s["flux_ratio"]) and np.isnan(s["halo"])
    assert bq.finite_or_null({"a": [s["flux_ratio"], 1.0, np.inf]}) == {"a": [None, 1.0, None]}


def test_by_snr_bins_every_star_once():
    stars = rows(*[(snr, 1.0, r, 0.0) for snr, r in [(1, 0.5), (4, 0.7), (7, 0.9), (12, 1.0), (40, 1.0), (400, 1.0)]])
    bins = bq.by_snr(stars)
    assert [b["snr"] for b in bins] == ["0-5", "5-10", "10-30", ">=30"]
    assert [b["stars"] for b in bins] == [2, 1, 1, 2]
    assert bins[0]["flux_ratio"] == 0.6


def test_markdown_aligns_numbers_and_signs_halos():
    rows = [dict(scene="a", psnr=30.123, halo=-0.00123), dict(scene="b", psnr=9.5, halo=0.002)]
    table = bq.markdown(rows, ["scene", "psnr", "halo"], ["scene", "PSNR dB", "halo depth"]).splitlines()
    assert table[1] == "|---|---:|---:|"
    assert table[2] == "| a | 30.12 | -0.0012 |"
    assert table[3] == "| b | 9.50 | +0.0020 |"
    assert bq.markdown([dict(scene="c", psnr=float("nan"), halo=None)], ["scene", "psnr", "halo"], ["s", "p", "h"]).endswith("| c | – | – |")
    assert bq.markdown([], ["scene"], ["scene"]) == "| scene |"


def test_summary_gives_the_model_margin_over_the_better_classical_method():
    def row(method, psnr, **star):
        return dict(scene="s", method=method, psnr=psnr, stars=10, fwhm_ratio=1.1, fwhm_se=0.04, fwhm_ratio_bright=1.02, fwhm_per_scene=[1.22, float("nan"), 8.18, 1.1], flux_ratio=0.99, flux_se=0.01, total_flux=0.98, halo=-0.001, **star)

    rows = [row("input", 20.0), row("model", 30.0), row("RL (true PSF)", 25.0), row("Wiener (true PSF, oracle)", 27.5)]
    (s,) = bq.summary(rows)
    assert s["gain"] == 2.5
    assert (s["input"], s["rl"], s["wiener"], s["model"]) == (20.0, 25.0, 27.5, 30.0)
    assert s["flux"] == "0.990 ± 0.010" and s["total_flux"] == 0.98
    assert s["fwhm_ratio"] == "1.10 ± 0.04" and s["per_scene"] == "1/3 (worst 8.18)" and s["fwhm_ratio_bright"] == 1.02


def test_per_scene_fwhm_needs_enough_detected_stars():
    """A realization's own median counts detections only, and needs MIN_SCENE_STARS of them:
    a sparse scene's one bad star is not reported as the scene."""
    stars = np.zeros((8, bq.COLUMNS))
    stars[:, bq.SNR] = [50, 50, 50, 50, 50, 1, 1, 1]
    stars[:, bq.FWHM] = [1.0, 1.1, 1.2, 1.3, 9.0, 20.0, 20.0, 20.0]
    assert bq.per_scene_fwhm(stars) == 1.2  # the undetected ones left out
    assert np.isnan(bq.per_scene_fwhm(stars[3:]))  # two detections only


def test_total_flux_is_unity_for_the_truth_and_sees_dimming():
    truth, _, _ = star_scene()
    assert bq.total_flux_ratio(truth, truth, 50.0) == pytest.approx(1.0)
    dimmed = (truth - 50.0) * 0.9 + 50.0
    assert bq.total_flux_ratio(dimmed, truth, 50.0) == pytest.approx(0.9)


def test_snr_is_against_the_noise_under_each_star():
    """SNR is the aperture flux over the noise summed in that aperture: a star where the noise
    map is 10x higher (a bright nebula's shot noise) has 10x lower SNR."""
    truth, _, _ = star_scene()
    flat = bq.star_table(truth, truth, background=50.0, noise=5.0)
    xx = np.arange(truth.shape[-1])[None, :]
    noise = np.broadcast_to(np.where(xx < 48, 5.0, 50.0), truth.shape[-2:])
    mapped = bq.star_table(truth, truth, background=50.0, noise=noise)
    xs = np.array([x for _, x, _, _ in bq.point_sources(truth.mean(0) - 50.0)])
    left, right = xs < 40, xs > 56  # apertures wholly on one side (r < 7 px)
    assert left.any() and right.any()
    np.testing.assert_allclose(mapped[left, bq.SNR], flat[left, bq.SNR], rtol=1e-9)
    np.testing.assert_allclose(mapped[right, bq.SNR], flat[right, bq.SNR] / 10, rtol=1e-9)


def test_star_contrast_is_the_peak_over_the_emission_around_it():
    """A star of peak 600 on flat emission of 200 has contrast 3; on empty sky, inf."""
    import star_contrast as sc

    yy, xx = np.mgrid[:64, :64]
    star = lambda y, x: 600.0 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 0.55**2))  # noqa: E731
    contrast = np.sort(sc.star_contrast(star(32, 14) + star(32, 48) + np.where(xx < 32, 200.0, 0.0)))
    assert len(contrast) == 2 and contrast[0] == pytest.approx(3.0, rel=1e-6) and np.isinf(contrast[1])


def test_correlated_noise_counts_peaks_off_the_true_stars_only():
    """scripts/correlated_noise.py: its noiseless observation is the benchmark's (the noise is
    the only difference), and a fake faint star on empty sky is one spurious peak while the
    true stars, however restored, are none."""
    import correlated_noise as cn

    case = bq.make_case(bq.SEED_BASE + 7, "stars", 3.5, 50.0, 1.0, 96)
    light = cn.noiseless(bq.SEED_BASE + 7, "stars", 96, 20.0, case.kernel, 50.0)
    noise = case.observed - light
    assert abs(noise.mean()) < 0.5 and 4 < noise.std() < 12  # shot noise of a sky of 50 at gain 1, read noise 2
    sigma = 7.0
    dimmed = case.background + 0.5 * (case.truth - case.background)  # every true star at half its light
    assert cn.spurious_peaks(dimmed, case.truth, case.background, sigma) == 0
    starlight = (case.truth - case.background).mean(0) > 0.05 * sigma
    y, x = _empty_spot(starlight)
    fake = dimmed.copy()
    fake[:, y - 1 : y + 2, x - 1 : x + 2] += sigma * np.array([[0.5, 1, 0.5], [1, 2, 1], [0.5, 1, 0.5]])  # a faint blob
    assert cn.spurious_peaks(fake, case.truth, case.background, sigma) == 1


def _empty_spot(starlight: np.ndarray) -> tuple[int, int]:
    """A pixel at least 10 px from any star's light and from the edges."""
    from scipy.ndimage import distance_transform_edt

    distance = distance_transform_edt(~starlight)
    distance[:12, :], distance[-12:, :], distance[:, :12], distance[:, -12:] = 0, 0, 0, 0
    return tuple(np.unravel_index(np.argmax(distance), distance.shape))
