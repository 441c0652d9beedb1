"""Raw CFA (Bayer / X-Trans) mosaics: refused with one line, never restored into a wrong image;
debayered images that still carry the raw frame's keyword are restored, with a note."""

from __future__ import annotations

import math

import numpy as np
import pytest
from astropy.io import fits
from conftest import sha256
from scipy import ndimage
from test_cli import assert_one_error_line, run

from astroswin.engine import EngineError
from astroswin.engine.cfa import SITE_CONTRAST, check_not_mosaic, pattern_in_header, pattern_of, site_contrast

#: Rows and columns of each RGGB site.
SITES = {"R": (0, 0), "G1": (0, 1), "G2": (1, 0), "B": (1, 1)}


def sky_scene(rng, shape=(120, 160)) -> np.ndarray:
    """Linear sky of level 1 with a smooth nebula and stars (their peaks a few times the sky)."""
    scene = np.zeros(shape)
    scene[rng.integers(0, shape[0], 60), rng.integers(0, shape[1], 60)] = rng.pareto(1.5, 60) * 30
    nebula = ndimage.gaussian_filter(rng.normal(size=shape), 12)
    return 1.0 + ndimage.gaussian_filter(scene, 1.5) + 2 * (nebula - nebula.min()) / np.ptp(nebula)


def raw_mosaic(rng, scene, electrons: float, red: float, blue: float) -> np.ndarray:
    """An RGGB raw frame of ``scene`` (its sky at ``electrons`` e- in green, red and blue sites
    at ``red`` / ``blue`` of green), Poisson + 3 e- read noise on a 100 e- pedestal."""
    gain = np.ones(scene.shape)
    gain[0::2, 0::2], gain[1::2, 1::2] = red, blue
    return (rng.poisson(scene * electrons * gain) + rng.normal(0, 3, scene.shape) + 100).astype(np.float32)


def bilinear_luminance(raw: np.ndarray) -> np.ndarray:
    """Luminance of a bilinear debayer: what an extracted channel of a debayered frame looks like."""
    rows, cols = np.indices(raw.shape) % 2
    green = (rows != cols).astype(float)
    red = ((rows == 0) & (cols == 0)).astype(float)
    blue = ((rows == 1) & (cols == 1)).astype(float)
    cross, box = np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]]) / 4, np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 4
    planes = [ndimage.convolve(raw * m, k, mode="mirror") for m, k in ((red, box), (green, cross), (blue, box))]
    return np.mean(planes, axis=0).astype(np.float32)


@pytest.mark.parametrize(("value", "pattern"), [("'RGGB'", "RGGB"), ("bggr", "BGGR"), ("'RGGB    '", "RGGB"), ("NONE", None), ("", None), (0, None), ("RGB", None), ("OSC", None), (None, None), ("GRBGBR" * 6, "GRBGBR" * 6), ("RGGX", None), ("R0G0", "R0G0")])
def test_pattern_names_a_square_cell_of_filters(value, pattern):
    """BAYERPAT = 'NONE' (Siril's empty), COLORTYP = 0 or 'RGB' (MaxIm DL for mono and for
    colour) name no mosaic; a 2x2 or a 6x6 (X-Trans) cell of filter letters does."""
    assert pattern_of(value) == pattern


def test_pattern_in_header_text_one_card_a_line_or_run_together():
    """Hosts hand headers over as text: Siril one card a line, others 80-character cards
    run together; a pattern in a comment or another keyword's value does not count."""
    header = fits.Header([("SIMPLE", True), ("OBJECT", "BAYERPAT RGGB", "not a keyword"), ("COLORTYP", "RGB"), ("BAYERPAT", "GRBG", "Bayer pattern")])
    lines = "\n".join(str(card) for card in header.cards)
    assert pattern_in_header(lines) == ("GRBG", "BAYERPAT")
    assert pattern_in_header(header.tostring()) == ("GRBG", "BAYERPAT")
    del header["BAYERPAT"]
    assert pattern_in_header(header.tostring()) is None and pattern_in_header("") is None


@pytest.mark.parametrize(("electrons", "red", "blue", "shape"), [(330, 0.6, 0.5, (120, 160)), (20, 0.6, 0.5, (120, 160)), (7, 0.9, 0.9, (400, 600))], ids=["bright sky", "faint sky", "faint and nearly neutral"])
def test_raw_mosaics_are_refused_debayered_and_mono_images_pass(electrons, red, blue, shape):
    rng = np.random.default_rng(3)
    scene = sky_scene(rng, shape)
    raw = raw_mosaic(rng, scene, electrons, red, blue)
    assert site_contrast(raw, 2)[0] > SITE_CONTRAST
    with pytest.raises(EngineError, match=r"raw CFA mosaic \(BAYERPAT RGGB; its 2x2 colour sites differ by [\d.]+ noise sigma\): debayer it first"):
        check_not_mosaic(raw, "RGGB", "BAYERPAT")
    with pytest.raises(EngineError):
        check_not_mosaic(raw[None], "RGGB", "BAYERPAT")  # (1, H, W) is mono too
    luminance = bilinear_luminance(raw)
    assert "do not show a 2x2 colour pattern" in check_not_mosaic(luminance, "RGGB", "BAYERPAT")
    mono = rng.poisson(scene * electrons).astype(np.float32)
    for pattern in ("RGGB", "GGRGGBGGBGGRBRGRBGGGBGGRGGRGGBRBRBGR"):  # Bayer; X-Trans (6x6)
        assert "restored as a mono image" in check_not_mosaic(mono, pattern, "BAYERPAT")


def test_colour_images_and_images_without_a_pattern_are_not_asked():
    rgb = np.zeros((3, 8, 8), np.float32)
    rgb[0, ::2, ::2] = 1.0  # a pattern in one channel of a colour image is not a mosaic
    assert check_not_mosaic(rgb, "RGGB", "BAYERPAT") is None
    mosaic = np.tile(np.array([[1.0, 2.0], [2.0, 3.0]], np.float32), (8, 8))
    assert check_not_mosaic(mosaic, None, "BAYERPAT") is None
    assert site_contrast(mosaic, 2)[0] == math.inf  # noiseless, sites apart


def test_site_contrast_ignores_missing_pixels_and_tiny_images():
    rng = np.random.default_rng(0)
    raw = raw_mosaic(rng, sky_scene(rng), 330, 0.6, 0.5)
    raw[:, :40] = np.nan  # a registration border
    raw[10, 50] = np.inf
    contrast, chance = site_contrast(raw, 2)
    assert contrast > 10 and chance < 1
    assert site_contrast(np.full((40, 40), np.nan, np.float32), 2)[0] == 0.0
    assert site_contrast(raw[:3, :3], 2) == (0.0, math.inf)  # under two cells: nothing to say


def _fits_with_pattern(path, data, pattern="RGGB"):
    header = fits.Header()
    header["BAYERPAT"] = pattern
    header["XBAYROFF"], header["YBAYROFF"] = 0, 0
    fits.PrimaryHDU(data, header).writeto(path)


def test_cli_refuses_a_raw_mosaic_and_restores_its_debayered_luminance(tmp_path, tiny_model_dir):
    """A raw RGGB frame as N.I.N.A. writes it: one error line naming the fix, no output, the
    input untouched; its luminance with the keyword copied along is restored with a note."""
    rng = np.random.default_rng(5)
    raw = raw_mosaic(rng, sky_scene(rng, (64, 80)), 330, 0.6, 0.5)
    _fits_with_pattern(tmp_path / "light.fits", raw)
    before = sha256(tmp_path / "light.fits")
    refused = run("restore", tmp_path / "light.fits", "--model", tiny_model_dir, "--progress", "none")
    assert refused.returncode == 1
    assert_one_error_line(refused, "light.fits", "raw CFA mosaic (BAYERPAT RGGB", "debayer it first", "delete its BAYERPAT keyword")
    assert not (tmp_path / "light_astroswin.fits").exists() and sha256(tmp_path / "light.fits") == before

    _fits_with_pattern(tmp_path / "lum.fits", bilinear_luminance(raw))
    restored = run("restore", tmp_path / "lum.fits", "--model", tiny_model_dir, "--progress", "none")
    assert restored.returncode == 0, restored.stderr
    assert "astroswin: warning:" in restored.stderr and "restored as a mono image" in restored.stderr
    with fits.open(tmp_path / "lum_astroswin.fits") as hdul:
        assert hdul[0].data.shape == raw.shape and hdul[0].header["BAYERPAT"] == "RGGB"


def test_quantised_integer_frames_are_judged_beyond_their_step():
    """Site medians of integer data are whole numbers: a debayered uint16 frame with 2-3 ADU
    of noise once read 0.3-0.5 sigma apart by rounding alone, and was refused."""
    rng = np.random.default_rng(0)
    for noise in (2.0, 3.0):
        for seed in range(6):
            rng = np.random.default_rng(seed)
            smooth = 1000 + 40 * ndimage.gaussian_filter(rng.normal(size=(300, 400)), 8)
            luminance = np.round(smooth + rng.normal(0, noise, smooth.shape)).astype(np.uint16)
            assert check_not_mosaic(luminance, "RGGB", "BAYERPAT") is not None, (noise, seed)
    raw = np.round(raw_mosaic(rng, sky_scene(rng, (300, 400)), 330, 0.6, 0.5)).astype(np.uint16)
    with pytest.raises(EngineError, match="raw CFA mosaic"):
        check_not_mosaic(raw, "RGGB", "BAYERPAT")


@pytest.mark.parametrize("border", [0.3, 0.5, 0.7])
def test_zero_filled_canvas_counts_as_missing(border):
    """A registration or mosaic canvas filled with 0: at half the frame the site medians jumped
    between 0 and the sky (a mono image refused), and past it a raw frame read as no pattern."""
    rng = np.random.default_rng(4)
    scene = sky_scene(rng, (240, 320))
    raw = raw_mosaic(rng, scene, 330, 0.6, 0.5)
    luminance, mono = bilinear_luminance(raw), rng.poisson(scene * 330).astype(np.float32)
    cut = int(border * raw.shape[1])
    for image in (raw, luminance, mono):
        image[:, :cut] = 0
    with pytest.raises(EngineError):
        check_not_mosaic(raw, "RGGB", "BAYERPAT")
    assert check_not_mosaic(luminance, "RGGB", "BAYERPAT") is not None
    assert check_not_mosaic(mono, "RGGB", "BAYERPAT") is not None


def test_site_contrast_reads_only_its_sample_of_a_memory_map(tmp_path):
    """A big-endian float64 FITS, memory-mapped: only the sampled rows are converted."""
    import tracemalloc

    from astroswin.engine import cfa

    rng = np.random.default_rng(2)
    raw = raw_mosaic(rng, sky_scene(rng, (1024, 1024)), 330, 0.6, 0.5).astype(">f8")
    fits.PrimaryHDU(raw).writeto(tmp_path / "raw.fits")
    with fits.open(tmp_path / "raw.fits", memmap=True) as hdul:
        data = hdul[0].data
        old = cfa.SAMPLE_PIXELS
        cfa.SAMPLE_PIXELS = 1 << 16  # 1/16 of the frame
        try:
            tracemalloc.start()
            contrast, _ = site_contrast(data, 2)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        finally:
            cfa.SAMPLE_PIXELS = old
    assert contrast > 5 and peak < raw.nbytes / 4  # the whole frame in float32: raw.nbytes / 2
