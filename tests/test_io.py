"""FITS / XISF / TIFF round trips: data, sample types, headers, WCS, alpha; atomic writes."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import tifffile
from astropy.io import fits
from astropy.wcs import WCS
from xisf import XISF

from astroswin.engine import EngineError
from astroswin.engine.io import read_image, write_image


def _header():
    h = fits.Header()
    h["OBJECT"] = "M 31"
    h["EXPTIME"] = (300.0, "[s]")
    for k, v in dict(CTYPE1="RA---TAN", CTYPE2="DEC--TAN", CRVAL1=10.68, CRVAL2=41.27, CRPIX1=20.0, CRPIX2=15.0, CDELT1=-2e-4, CDELT2=2e-4).items():
        h[k] = v
    return h


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.uint8, np.float32, np.float64])
def test_fits_sample_types_read_as_their_values(tmp_path, dtype):
    data = np.arange(12 * 9).reshape(12, 9).astype(dtype)
    fits.PrimaryHDU(data).writeto(tmp_path / "a.fits")
    image = read_image(tmp_path / "a.fits")
    np.testing.assert_array_equal(np.asarray(image.data, dtype=np.float64), data.astype(np.float64))


def test_fits_bzero_uint16_is_read_unsigned(tmp_path):
    data = np.array([[0, 1000], [40000, 65535]], dtype=np.uint16)
    fits.PrimaryHDU(data).writeto(tmp_path / "u.fits")
    assert fits.getheader(tmp_path / "u.fits")["BZERO"] == 32768
    image = read_image(tmp_path / "u.fits")
    np.testing.assert_array_equal(np.asarray(image.data, np.float64), data.astype(np.float64))


@pytest.mark.parametrize("fmt", ["tif", "xisf"])
def test_uint16_camera_fits_is_written_as_uint16(tmp_path, fmt):
    """A camera's FITS (BITPIX 16 + BZERO 32768) into TIFF or XISF keeps its unsigned values;
    the stored int16 type clipped every pixel above 32767 (a sky at 39000 came out flat)."""
    data = np.array([[0, 1000], [39000, 65535]], dtype=np.uint16)
    fits.PrimaryHDU(data).writeto(tmp_path / "cam.fits")
    image = read_image(tmp_path / "cam.fits")
    assert image.dtype == np.uint16
    write_image(tmp_path / f"out.{fmt}", np.asarray(image.data, np.float32), image)
    back = tifffile.imread(tmp_path / "out.tif") if fmt == "tif" else XISF(str(tmp_path / "out.xisf")).read_image(0)[..., 0]
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, data)


def test_compressed_uint16_fits_and_blank_pixels(tmp_path):
    """fpack'd camera frames (scaled, compressed) are read; BLANK pixels come back as NaN
    (missing), not as zeros the network would ring around."""
    data = np.full((12, 10), 30000, np.uint16)
    data[2:4, 3:5] = 50000
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data)]).writeto(tmp_path / "cam.fits.fz")
    image = read_image(tmp_path / "cam.fits.fz")
    assert image.dtype == np.uint16
    np.testing.assert_array_equal(np.asarray(image.data), data)
    hdu = fits.PrimaryHDU(data)
    hdu.header["BLANK"] = -32768  # raw -32768 + BZERO 32768: physical 0
    hdu.data[0, 0] = 0
    hdu.writeto(tmp_path / "blank.fits")
    blank = read_image(tmp_path / "blank.fits")
    assert blank.dtype == np.uint16 and np.isnan(blank.data[0, 0]) and np.isnan(blank.data).sum() == 1
    assert blank.data[2, 3] == 50000
    signed = fits.PrimaryHDU(np.array([[0, 10], [200, 5]], np.uint8))  # BITPIX 8 read as int8 through BZERO -128
    signed.header["BZERO"], signed.header["BLANK"] = -128, 0
    signed.writeto(tmp_path / "int8.fits")
    assert np.isnan(read_image(tmp_path / "int8.fits").data[0, 0]) and read_image(tmp_path / "int8.fits").data[1, 0] == 72


def test_extension_inherits_the_primary_keywords(tmp_path):
    primary = fits.PrimaryHDU()
    primary.header["OBJECT"], primary.header["EXPTIME"] = "NGC 7000", 60.0
    ext = fits.ImageHDU(np.ones((8, 8), np.float32))
    primary.header["HISTORY"], primary.header["HISTORY"] = "p1", "p2"
    ext.header["INHERIT"], ext.header["EXPTIME"] = True, 120.0
    fits.HDUList([primary, ext]).writeto(tmp_path / "ext.fits")
    header = read_image(tmp_path / "ext.fits").header
    assert header["OBJECT"] == "NGC 7000" and header["EXPTIME"] == 120.0  # the extension's own wins
    assert list(header["HISTORY"]) == ["p1", "p2"]


def test_xisf_keywords_keep_their_types_both_ways(tmp_path):
    """XISF FITSKeywords hold FITS value text: a WCS read from XISF is numbers in FITS, and a
    FITS header written to XISF has its strings quoted, as PixInsight writes them."""
    keywords = dict(CTYPE1="'RA---TAN'", CTYPE2="'DEC--TAN'", CRVAL1="10.68", CRVAL2="41.27", CRPIX1="5", CRPIX2="5", CDELT1="-2e-4", CDELT2="2e-4", OBJECT="'M 31'", NAXIS3="1")
    meta = {"FITSKeywords": {k: [{"value": v, "comment": ""}] for k, v in keywords.items()}}
    XISF.write(str(tmp_path / "in.xisf"), np.full((10, 10, 1), 0.1, np.float32), image_metadata=meta)
    image = read_image(tmp_path / "in.xisf")
    write_image(tmp_path / "out.fits", np.asarray(image.data, np.float32), image, history=["h1"])
    h = fits.getheader(tmp_path / "out.fits")
    assert h["CRVAL1"] == 10.68 and h["CRPIX1"] == 5 and h["OBJECT"] == "M 31" and "NAXIS3" not in h
    np.testing.assert_allclose(WCS(h).wcs.crval, [10.68, 41.27])
    write_image(tmp_path / "back.xisf", np.asarray(read_image(tmp_path / "out.fits").data), read_image(tmp_path / "out.fits"))
    xml = (tmp_path / "back.xisf").read_bytes()[:20000].decode("utf-8", "replace")
    assert '<FITSKeyword name="OBJECT" value="\'M 31\'"' in xml and '<FITSKeyword name="CRVAL1" value="10.68"' in xml
    assert '<FITSKeyword name="HISTORY" value="h1"' in xml


def test_fits_strings_stay_strings_through_xisf(tmp_path):
    """Typed FITS values are written as they are: a quoted '0012' keeps its zeros, an
    apostrophe is escaped once, and both come back unchanged after FITS -> XISF -> FITS."""
    h = fits.Header()
    h["SERIAL"], h["OBJECT"], h["FLAG"], h["GAIN"] = "0012", "O'Brien", True, 100
    fits.PrimaryHDU(np.full((6, 6), 0.5, np.float32), h).writeto(tmp_path / "in.fits")
    image = read_image(tmp_path / "in.fits")
    write_image(tmp_path / "mid.xisf", np.asarray(image.data), image)
    mid = read_image(tmp_path / "mid.xisf")
    write_image(tmp_path / "out.fits", np.asarray(mid.data), mid)
    out = fits.getheader(tmp_path / "out.fits")
    assert out["SERIAL"] == "0012" and out["OBJECT"] == "O'Brien" and out["FLAG"] is True and out["GAIN"] == 100


def test_integer_input_to_float_xisf_is_scaled_not_clipped(tmp_path):
    data = np.array([[100, 1000], [20000, 60000]], np.uint16)
    tifffile.imwrite(tmp_path / "in.tif", data)
    image = read_image(tmp_path / "in.tif")
    write_image(tmp_path / "out.xisf", np.asarray(image.data, np.float32), image, dtype="float32")
    x = XISF(str(tmp_path / "out.xisf"))
    scale = x.get_images_metadata()[0]["XISFProperties"]["AstroSWIN:Scale"]["value"]
    np.testing.assert_allclose(x.read_image(0)[..., 0] * float(scale), data, rtol=1e-6)


def test_normalised_float_to_integer_is_scaled_and_signed_to_xisf_is_float(tmp_path):
    """--dtype uint16 on a [0, 1] float image means 0..65535, as in PixInsight: unscaled, 0.3
    was stored as 0. XISF stores no signed integers, so a signed FITS becomes float32 there."""
    data = np.array([[0.0, 0.3], [0.5, 1.0]], np.float32)
    XISF.write(str(tmp_path / "n.xisf"), data[..., None])
    image = read_image(tmp_path / "n.xisf")
    write_image(tmp_path / "n.tif", np.asarray(image.data, np.float32), image, dtype="uint16")
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "n.tif"), np.rint(data * 65535))
    fits.PrimaryHDU(np.array([[-5, 100], [2000, 30000]], np.int16)).writeto(tmp_path / "s.fits")
    signed = read_image(tmp_path / "s.fits")
    write_image(tmp_path / "s.xisf", np.asarray(signed.data, np.float32), signed)
    assert XISF(str(tmp_path / "s.xisf")).read_image(0).dtype == np.float32


def test_an_inf_pixel_does_not_decide_the_scale(tmp_path):
    """One +inf pixel (a hot pixel gone wrong in a stack) once made the XISF writer's scale inf,
    storing every pixel as 0 in a file nothing could read, and kept a [0, 1] image from being
    scaled to uint16. The scale comes from finite pixels; the bad pixel stays bad."""
    data = np.array([[0.0, 0.3], [0.5, 1.0]], np.float32)
    bad = data.copy()
    bad[0, 0] = np.inf
    fits.PrimaryHDU(bad).writeto(tmp_path / "n.fits")
    image = read_image(tmp_path / "n.fits")
    write_image(tmp_path / "n.tif", np.asarray(image.data, np.float32), image, dtype="uint16")
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "n.tif").ravel()[1:], np.rint(data * 65535).ravel()[1:])
    adu = np.array([[np.inf, 100.0], [2000.0, 30000.0]], np.float32)
    fits.PrimaryHDU(adu).writeto(tmp_path / "adu.fits")
    image = read_image(tmp_path / "adu.fits")
    write_image(tmp_path / "adu.xisf", np.asarray(image.data, np.float32), image)
    x = XISF(str(tmp_path / "adu.xisf"))
    scale = float(x.get_images_metadata()[0]["XISFProperties"]["AstroSWIN:Scale"]["value"])
    assert scale == 30000.0
    np.testing.assert_allclose(x.read_image(0)[..., 0].ravel()[1:] * scale, adu.ravel()[1:], rtol=1e-6)
    assert read_image(tmp_path / "adu.xisf").data.shape == (2, 2)


def test_lzw_tiff_is_read(tmp_path):
    data = np.random.default_rng(5).integers(0, 65535, (20, 30)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "lzw.tif", data, compression="lzw")
    np.testing.assert_array_equal(np.asarray(read_image(tmp_path / "lzw.tif").data), data)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_named_pipe_is_refused_not_waited_on(tmp_path):
    os.mkfifo(tmp_path / "pipe.fits")
    with pytest.raises(EngineError, match="not a regular file"):
        read_image(tmp_path / "pipe.fits")


def test_fits_header_and_wcs_survive_with_history(tmp_path):
    data = np.random.default_rng(0).normal(100, 3, (30, 40)).astype(np.float32)
    fits.PrimaryHDU(data, _header()).writeto(tmp_path / "in.fits")
    image = read_image(tmp_path / "in.fits")
    write_image(tmp_path / "out.fits", np.asarray(image.data, np.float32) * 2, image, history=["AstroSWIN test line"])
    with fits.open(tmp_path / "out.fits") as hdul:
        h = hdul[0].header
        assert hdul[0].data.dtype == np.dtype(">f4") and hdul[0].data.shape == (30, 40)
        assert h["OBJECT"] == "M 31" and h["EXPTIME"] == 300.0
        assert "AstroSWIN test line" in str(h["HISTORY"])
        np.testing.assert_allclose(WCS(h).wcs.crval, [10.68, 41.27])
        np.testing.assert_allclose(WCS(h).pixel_to_world_values(5, 5), WCS(_header()).pixel_to_world_values(5, 5))


def test_fits_image_in_extension_and_compressed(tmp_path):
    data = np.random.default_rng(1).normal(50, 2, (3, 16, 20)).astype(np.float32)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data, _header())]).writeto(tmp_path / "ext.fits")
    image = read_image(tmp_path / "ext.fits")
    assert image.data.shape == (3, 16, 20) and image.header["OBJECT"] == "M 31"
    counts = (data[0] * 100).astype(np.int16)  # RICE is lossless on integers
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(counts, _header(), compression_type="RICE_1")]).writeto(tmp_path / "comp.fits")
    comp = read_image(tmp_path / "comp.fits")
    np.testing.assert_array_equal(np.asarray(comp.data), counts)
    assert comp.dtype == np.int16


def test_fits_with_only_a_table_is_refused(tmp_path):
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns([fits.Column(name="x", format="E", array=np.ones(3))])]).writeto(tmp_path / "t.fits")
    with pytest.raises(EngineError, match="no image"):
        read_image(tmp_path / "t.fits")


def test_xisf_rgb_round_trip_keeps_keywords_and_dtype(tmp_path):
    rgb = np.random.default_rng(2).uniform(0, 0.5, (20, 24, 3)).astype(np.float32)
    meta = {"FITSKeywords": {"OBJECT": [{"value": "NGC 7000", "comment": "target"}]}, "XISFProperties": {"Observation:Object:Name": {"id": "Observation:Object:Name", "type": "String", "value": "NGC 7000"}}}
    XISF.write(str(tmp_path / "in.xisf"), rgb, image_metadata=meta)
    image = read_image(tmp_path / "in.xisf")
    assert image.data.shape == (3, 20, 24)
    write_image(tmp_path / "out.xisf", image.data * 1.5, image, history=["h1"])
    out = XISF(str(tmp_path / "out.xisf"))
    back = out.read_image(0)
    assert back.shape == (20, 24, 3) and back.dtype == np.float32
    np.testing.assert_allclose(back, rgb * 1.5, rtol=1e-6)
    m = out.get_images_metadata()[0]
    assert m["FITSKeywords"]["OBJECT"][0]["value"] == "NGC 7000"
    assert m["FITSKeywords"]["HISTORY"][-1]["value"] == "h1"
    assert m["XISFProperties"]["Observation:Object:Name"]["value"] == "NGC 7000"


def test_xisf_float_output_stays_within_unit_range(tmp_path):
    mono = np.random.default_rng(3).uniform(0, 0.9, (10, 10, 1)).astype(np.float32)
    XISF.write(str(tmp_path / "in.xisf"), mono)
    image = read_image(tmp_path / "in.xisf")
    data = np.asarray(image.data, np.float32).copy()
    data[0, 0] = 1.3
    data[1, 1] = -0.2
    write_image(tmp_path / "out.xisf", data, image)
    back = XISF(str(tmp_path / "out.xisf")).read_image(0)
    assert back.min() >= 0.0 and back.max() <= 1.0


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("layout", ["mono", "rgb", "rgba"])
def test_tiff_keeps_bit_depth_layout_and_alpha(tmp_path, dtype, layout):
    rng = np.random.default_rng(4)
    top = 1.0 if dtype == np.float32 else np.iinfo(dtype).max
    channels = {"mono": 1, "rgb": 3, "rgba": 4}[layout]
    data = (rng.uniform(0, top, (12, 14, channels))).astype(dtype)
    kwargs = {"photometric": "minisblack"} if layout == "mono" else {"photometric": "rgb"}
    if layout == "rgba":
        kwargs["extrasamples"] = [2]
    tifffile.imwrite(tmp_path / "in.tif", data[..., 0] if layout == "mono" else data, **kwargs)
    image = read_image(tmp_path / "in.tif")
    assert image.data.shape == ((12, 14) if layout == "mono" else (3, 12, 14))
    write_image(tmp_path / "out.tif", np.asarray(image.data, np.float32), image)
    back = tifffile.imread(tmp_path / "out.tif")
    assert back.dtype == dtype
    np.testing.assert_array_equal(back, data[..., 0] if layout == "mono" else data)


@pytest.mark.parametrize("pages", [2, 3])
def test_multi_page_grey_tiff_is_refused_not_read_as_colour(tmp_path, pages):
    """Grey pages are frames: three were read as RGB, two as grey plus an alpha channel.
    Planar RGB (one page, separate planes) still reads as colour."""
    frames = np.arange(pages * 8 * 9, dtype=np.uint16).reshape(pages, 8, 9)
    tifffile.imwrite(tmp_path / "stack.tif", frames, photometric="minisblack", metadata=None)
    with pytest.raises(EngineError, match=f"{pages} grey pages"):
        read_image(tmp_path / "stack.tif")
    if pages == 3:
        tifffile.imwrite(tmp_path / "planar.tif", frames, photometric="rgb", planarconfig="separate")
        np.testing.assert_array_equal(read_image(tmp_path / "planar.tif").data, frames)


@pytest.mark.parametrize(("axes", "planes"), [("TYX", 3), ("ZYX", 3), ("TYX", 2), ("CYX", 2), ("CYX", 4)])
def test_imagej_stacks_are_refused_not_read_as_colour(tmp_path, axes, planes):
    """ImageJ stacks of frames (time, depth, or channels other than three) were read as colour:
    three frames became R, G and B, a second frame an alpha channel, and were restored so."""
    frames = np.random.default_rng(0).integers(900, 1100, (planes, 8, 9), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", frames, imagej=True, metadata={"axes": axes})
    with pytest.raises(EngineError, match=f"{planes} grey pages \\(axes {axes}"):
        read_image(tmp_path / "stack.tif")


def test_imagej_three_channel_composite_is_colour(tmp_path):
    planes = np.random.default_rng(1).integers(900, 1100, (3, 8, 9), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "rgb.tif", planes, imagej=True, metadata={"axes": "CYX"})
    np.testing.assert_array_equal(read_image(tmp_path / "rgb.tif").data, planes)


@pytest.mark.parametrize("photometric", ["miniswhite", "palette", "separated"])
def test_tiff_values_that_are_not_light_are_refused(tmp_path, photometric):
    """Inverted grey was restored upside down and written back as ordinary grey; palette indices
    and CMYK inks were restored as if they were light."""
    shape = (8, 9, 4) if photometric == "separated" else (8, 9)
    data = np.random.default_rng(2).integers(0, 200, shape, dtype=np.uint8)
    extra = {"colormap": np.zeros((3, 256), np.uint16)} if photometric == "palette" else {}
    tifffile.imwrite(tmp_path / "odd.tif", data, photometric=photometric, **extra)
    with pytest.raises(EngineError, match=f"a TIFF of {photometric} pixels"):
        read_image(tmp_path / "odd.tif")


def test_gzipped_fits_is_read_and_other_gzip_named(tmp_path):
    import gzip

    data = np.arange(20 * 30, dtype=np.float32).reshape(20, 30)
    fits.PrimaryHDU(data, fits.Header([("OBJECT", "M 1")])).writeto(tmp_path / "m1.fits")
    (tmp_path / "m1.fits.gz").write_bytes(gzip.compress((tmp_path / "m1.fits").read_bytes()))
    image = read_image(tmp_path / "m1.fits.gz")
    np.testing.assert_array_equal(image.data, data)
    assert image.format == "fits" and image.header["OBJECT"] == "M 1"
    (tmp_path / "notes.fits.gz").write_bytes(gzip.compress(b"not a FITS file at all"))
    with pytest.raises(EngineError, match="gzip-compressed, and not a FITS file inside"):
        read_image(tmp_path / "notes.fits.gz")
    (tmp_path / "cut.fits.gz").write_bytes(gzip.compress((tmp_path / "m1.fits").read_bytes())[:10])
    with pytest.raises(EngineError, match="not a readable gzip file"):
        read_image(tmp_path / "cut.fits.gz")


def test_data_range_keywords_are_dropped_not_copied(tmp_path):
    """DATAMIN / DATAMAX describe the input's values; kept, a DATAMAX of 21025 over a restored
    peak of 110067 clips the display in viewers that use it."""
    header = fits.Header([("DATAMIN", 0.0), ("DATAMAX", 21025.0), ("OBJECT", "M 51")])
    fits.PrimaryHDU(np.ones((6, 7), np.float32), header).writeto(tmp_path / "in.fits")
    image = read_image(tmp_path / "in.fits")
    for name in ("out.fits", "out.xisf"):
        write_image(tmp_path / name, np.full((6, 7), 5e4, np.float32), image)
    out = fits.getheader(tmp_path / "out.fits")
    assert "DATAMAX" not in out and "DATAMIN" not in out and out["OBJECT"] == "M 51"
    keywords = read_image(tmp_path / "out.xisf").xisf_metadata["FITSKeywords"]
    assert "DATAMAX" not in keywords and "OBJECT" in keywords
    write_image(tmp_path / "again.xisf", np.ones((6, 7), np.float32), read_image(tmp_path / "out.xisf"))
    _raw_xisf(tmp_path / "pi.xisf", np.ones((1, 6, 7), np.float32), children='<FITSKeyword name="DATAMAX" value="1.0" comment=""/>')
    write_image(tmp_path / "pi_out.xisf", np.full((6, 7), 0.5, np.float32), read_image(tmp_path / "pi.xisf"))
    assert "DATAMAX" not in read_image(tmp_path / "pi_out.xisf").xisf_metadata["FITSKeywords"]


def test_tiff_orientation_icc_profile_and_resolution_are_kept(tmp_path):
    """Dropped, a viewer showed the restored image turned against the input (Orientation 3:
    rotated 180 degrees) and without its colour profile."""
    rgb = np.random.default_rng(3).integers(1000, 5000, (8, 9, 3), dtype=np.uint16)
    icc = b"\x00\x00\x02\x0clcms" + bytes(120)
    tifffile.imwrite(tmp_path / "in.tif", rgb, photometric="rgb", iccprofile=icc, resolution=(300, 300), resolutionunit="INCH", extratags=[(274, "H", 1, 3, True)])
    image = read_image(tmp_path / "in.tif")
    write_image(tmp_path / "out.tif", image.data.astype(np.float32), image)
    with tifffile.TiffFile(tmp_path / "out.tif") as tif:
        page = tif.pages[0]
        assert page.tags["Orientation"].value == 3 and bytes(page.iccprofile) == icc
        assert page.resolution == (300.0, 300.0) and int(page.resolutionunit) == 2
        np.testing.assert_array_equal(page.asarray(), rgb)
    tifffile.imwrite(tmp_path / "plain.tif", rgb[..., 0])
    write_image(tmp_path / "plain_out.tif", read_image(tmp_path / "plain.tif").data.astype(np.float32), read_image(tmp_path / "plain.tif"))
    with tifffile.TiffFile(tmp_path / "plain_out.tif") as tif:
        assert "Orientation" not in tif.pages[0].tags and not tif.pages[0].iccprofile


def test_integer_output_is_rounded_and_clipped(tmp_path):
    tifffile.imwrite(tmp_path / "in.tif", np.zeros((4, 4), np.uint16))
    image = read_image(tmp_path / "in.tif")
    write_image(tmp_path / "out.tif", np.array([[-5.0, 1.6, 70000.0, 2.4]] * 4, np.float32), image)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out.tif")[0], [0, 2, 65535, 2])


def test_format_comes_from_content_not_extension(tmp_path):
    fits.PrimaryHDU(np.ones((5, 5), np.float32)).writeto(tmp_path / "actually_fits.tif")
    assert read_image(tmp_path / "actually_fits.tif").format == "fits"
    (tmp_path / "text.fits").write_text("SIMPLE? no, just text\n")
    with pytest.raises(EngineError, match="not a FITS, XISF or TIFF"):
        read_image(tmp_path / "text.fits")


def test_writes_never_clobber_and_leave_no_temp_files(tmp_path):
    fits.PrimaryHDU(np.ones((5, 5), np.float32)).writeto(tmp_path / "in.fits")
    image = read_image(tmp_path / "in.fits")
    target = tmp_path / "out.fits"
    target.write_bytes(b"precious")
    with pytest.raises(EngineError, match="exists"):
        write_image(target, np.zeros((5, 5), np.float32), image)
    assert target.read_bytes() == b"precious"
    write_image(target, np.zeros((5, 5), np.float32), image, overwrite=True)
    assert fits.getdata(target).sum() == 0
    assert [p.name for p in tmp_path.iterdir() if "astroswin-tmp" in p.name] == []


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    from astroswin.engine import io

    fits.PrimaryHDU(np.ones((5, 5), np.float32)).writeto(tmp_path / "in.fits")
    image = read_image(tmp_path / "in.fits")

    def broken(tmp: Path, *args):
        Path(tmp).write_bytes(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setitem(io.WRITERS, "fits", broken)
    with pytest.raises(EngineError, match="No space left"):
        write_image(tmp_path / "out.fits", np.zeros((5, 5), np.float32), image)
    assert sorted(os.listdir(tmp_path)) == ["in.fits"]


def test_float16_tiff_stays_float16_and_never_stores_inf(tmp_path):
    """A float16 TIFF is written back as float16 (the type --help promises); a value beyond
    float16's 65504 is clipped to it (the CLI reports how many), never stored as inf; NaN stays."""
    from astroswin.engine.io import clip_ceiling, output_format

    tifffile.imwrite(tmp_path / "in.tif", np.full((6, 8), 1000, np.float16))
    image = read_image(tmp_path / "in.tif")
    fmt, dtype = output_format(tmp_path / "out.tif", image)
    assert (fmt, dtype) == ("tiff", np.float16) and clip_ceiling(fmt, dtype, image) == 65504.0
    data = np.full((6, 8), 1000, np.float32)
    data[0, 0], data[0, 1], data[0, 2] = 70000.0, np.nan, 1234.0
    write_image(tmp_path / "out.tif", data, image)
    back = tifffile.imread(tmp_path / "out.tif")
    assert back.dtype == np.float16 and back[0, 0] == 65504 and np.isnan(back[0, 1]) and back[0, 2] == 1234
    assert output_format(tmp_path / "out.fits", image)[1] == np.float32  # FITS has no float16


def _raw_xisf(path: Path, planes: np.ndarray, children: str = "", attached: bytes = b"", **attributes: str) -> None:
    """A one-image XISF file written by hand, with Image attributes the xisf package does not
    write: ``pixelStorage="Normal"`` (pixels interleaved) and ``byteOrder="big"``, and child
    elements of the Image (``children``, XML text) such as ``ColorFilterArray``. ``attached``
    is a second data block after the pixels; ``{attached}`` in ``children`` is its location."""
    c, h, w = planes.shape
    big = attributes.get("byteOrder") == "big"
    interleaved = attributes.get("pixelStorage") == "Normal"
    samples = np.moveaxis(planes, 0, -1) if interleaved else planes
    block = np.ascontiguousarray(samples, dtype=planes.dtype.newbyteorder(">" if big else "<")).tobytes()
    extra = "".join(f' {k}="{v}"' for k, v in attributes.items())
    second = 4096 * (2 + len(block) // 4096)
    children = children.replace("{attached}", f"attachment:{second}:{len(attached)}")
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?><xisf version="1.0" xmlns="http://www.pixinsight.com/xisf">'
        f'<Image geometry="{w}:{h}:{c}" sampleFormat="Float32" bounds="0:1" colorSpace="{"RGB" if c == 3 else "Gray"}"{extra} location="attachment:4096:{len(block)}">{children}</Image>'
        '<Metadata><Property id="XISF:CreationTime" type="String">2024-01-01T00:00:00Z</Property>'
        '<Property id="XISF:CreatorApplication" type="String">test</Property></Metadata></xisf>'
    ).encode()
    head = b"XISF0100" + len(xml).to_bytes(4, "little") + bytes(4) + xml
    path.write_bytes((head.ljust(4096, b"\0") + block).ljust(second if attached else 0, b"\0") + attached)


@pytest.mark.parametrize("attributes", [{"pixelStorage": "Normal"}, {"byteOrder": "big"}, {"pixelStorage": "Normal", "byteOrder": "big"}], ids=["normal", "big-endian", "both"])
def test_xisf_interleaved_and_big_endian_pixels_are_read_as_stored(tmp_path, attributes):
    """XISF allows interleaved pixels (``pixelStorage="Normal"``) and big-endian samples; the
    xisf package reads every block as planar and little-endian, so such an RGB image came in
    scrambled (three channels of the same mixed values) or as numbers like 2e35, and was
    restored without a word."""
    rgb = np.stack([np.full((5, 7), level, np.float32) for level in (0.1, 0.3, 0.5)])
    rgb[1, 2, 3] = 0.9
    _raw_xisf(tmp_path / "odd.xisf", rgb, **attributes)
    image = read_image(tmp_path / "odd.xisf")
    assert image.data.dtype == np.float32 and image.data.dtype.isnative and image.dtype == np.float32
    np.testing.assert_array_equal(image.data, rgb)


def test_xisf_colour_filter_array_and_fits_pattern_keywords_name_a_mosaic(tmp_path):
    """An XISF raw frame (N.I.N.A. writes a ColorFilterArray element, which the xisf package
    does not read) and a FITS one (BAYERPAT; MaxIm DL's COLORTYP) are known as CFA mosaics;
    'NONE' and a colour type without a pattern are not."""
    mono = np.full((1, 6, 8), 0.2, np.float32)
    _raw_xisf(tmp_path / "raw.xisf", mono, children='<ColorFilterArray pattern="GBRG" width="2" height="2" name="GBRG Bayer Filter"/>'
              '<FITSKeyword name="OBJECT" value="\'M 42\'" comment=""/>')
    image = read_image(tmp_path / "raw.xisf")
    assert image.cfa == ("GBRG", "ColorFilterArray") and image.xisf_metadata["FITSKeywords"]["OBJECT"][0]["value"] == "'M 42'"
    _raw_xisf(tmp_path / "kw.xisf", mono, children='<FITSKeyword name="BAYERPAT" value="\'RGGB\'" comment=""/>')
    assert read_image(tmp_path / "kw.xisf").cfa == ("RGGB", "BAYERPAT")
    _raw_xisf(tmp_path / "plain.xisf", mono)
    assert read_image(tmp_path / "plain.xisf").cfa is None
    for cards, expected in [({"BAYERPAT": "BGGR"}, ("BGGR", "BAYERPAT")), ({"COLORTYP": "RGGB"}, ("RGGB", "COLORTYP")),
                            ({"BAYERPAT": "NONE", "COLORTYP": "RGB"}, None), ({"COLORTYP": 0}, None)]:
        fits.PrimaryHDU(mono[0], fits.Header(list(cards.items()))).writeto(tmp_path / "f.fits", overwrite=True)
        assert read_image(tmp_path / "f.fits").cfa == expected, cards


def test_xisf_output_with_non_ascii_metadata_reads_back(tmp_path):
    """PixInsight headers often hold "°C" or accented names. The xisf package declared its UTF-8
    header as 'utf8', which expat decodes byte by byte: such an output was unreadable (to that
    package and to us) after an exit status of 0."""
    mono = np.full((1, 6, 8), 0.25, np.float32)
    _raw_xisf(tmp_path / "in.xisf", mono, children='<FITSKeyword name="CCD-TEMP" value="-10.0" comment="Temperature in °C"/>'
              '<Property id="Observation:Object:Name" type="String">Cœur</Property>')
    image = read_image(tmp_path / "in.xisf")
    write_image(tmp_path / "out.xisf", image.data, image, history=["restauré"])
    back = read_image(tmp_path / "out.xisf")
    np.testing.assert_array_equal(back.data, mono[0])
    assert back.xisf_metadata["FITSKeywords"]["CCD-TEMP"][0]["comment"] == "Temperature in °C"
    assert back.xisf_metadata["XISFProperties"]["Observation:Object:Name"]["value"] == "Cœur"
    assert XISF(str(tmp_path / "out.xisf")).get_images_metadata()[0]["FITSKeywords"]["HISTORY"][-1]["value"] == "restauré"
    assert (tmp_path / "out.xisf").read_bytes()[16:54] == b'<?xml version="1.0" encoding="UTF-8"?>'



def _attached_block(path: Path, element) -> bytes:
    _, position, size = element.get("location").split(":")
    with open(path, "rb") as fh:
        fh.seek(int(position))
        return fh.read(int(size))


def test_xisf_resolution_colour_space_and_screen_stretch_survive(tmp_path):
    """The xisf package writes keywords and properties only: an XISF output lost its
    Resolution, its DisplayFunction (PixInsight then opened the linear result black), its ICC
    profile and RGB working space. They are carried, the profile's block byte for byte with
    its compression and checksum attributes, through a second generation too; the stretch is
    dropped when the values are stored scaled, as it would no longer fit them."""
    from astroswin.engine.io import _first_image_element

    rgb = np.stack([np.full((5, 7), level, np.float32) for level in (0.1, 0.3, 0.5)])
    rgb[2, 4, 6] = 0.75
    profile = bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8))
    resolution = {"horizontal": "300", "vertical": "300", "unit": "inch"}
    stretch = {"m": "0.0012:0.0012:0.0012:0.5", "s": "0.01:0.01:0.01:0", "h": "1:1:1:1", "l": "0:0:0:0", "r": "1:1:1:1", "name": "AutoStretch"}
    space = {"gamma": "2.2", "x": "0.648431:0.321152:0.155886", "y": "0.330856:0.597871:0.066044", "Y": "0.3:0.6:0.1", "name": "Adobe RGB"}
    attrs = lambda d: " ".join(f'{k}="{v}"' for k, v in d.items())  # noqa: E731
    children = (f"<Resolution {attrs(resolution)}/><DisplayFunction {attrs(stretch)}/><RGBWorkingSpace {attrs(space)}/>"
                '<ICCProfile location=" {attached}" compression="zlib:5200" checksum="sha-1:00"/><Thumbnail geometry="2:2:1" location="inline:base64">AAAA</Thumbnail>')
    ns = "{http://www.pixinsight.com/xisf}"
    for scale in (1.0, 40.0):
        _raw_xisf(tmp_path / "in.xisf", rgb * scale, attached=profile, children=children)
        image = read_image(tmp_path / "in.xisf")
        write_image(tmp_path / "out.xisf", image.data * 0.5, image, history=["restored"], overwrite=True)
        back = read_image(tmp_path / "out.xisf")
        stored_as = float(back.xisf_metadata["FITSKeywords"]["ASWSCALE"][0]["value"]) if scale > 1 else 1.0  # original = stored * ASWSCALE
        np.testing.assert_allclose(back.data * stored_as, rgb * scale * 0.5, rtol=1e-6)
        write_image(tmp_path / "again.xisf", back.data, back, overwrite=True)  # a second generation
        for name in ("out.xisf", "again.xisf"):
            element = _first_image_element(tmp_path / name)
            assert element.find(f"{ns}Resolution").attrib == resolution and element.find(f"{ns}RGBWorkingSpace").attrib == space
            assert (element.find(f"{ns}DisplayFunction") is None) == (scale > 1) and element.find(f"{ns}Thumbnail") is None
            icc = element.find(f"{ns}ICCProfile")
            assert icc.get("compression") == "zlib:5200" and icc.get("checksum") == "sha-1:00"
            assert _attached_block(tmp_path / name, icc) == profile and int(icc.get("location").split(":")[1]) % 4096 == 0
        np.testing.assert_array_equal(XISF(str(tmp_path / "again.xisf")).read_image(0, data_format="channels_first"), back.data)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.xisf", "in.xisf", "out.xisf"]


def test_xisf_header_grown_past_the_first_block_moves_every_block_whole_units(tmp_path):
    """Carried elements that no longer fit before the first data block move every attached
    block (pixels and an attached property alike) by whole alignment units."""
    from astroswin.engine.io import _first_image_element
    from astroswin.engine.xisf_header import add_image_elements

    planes = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4).transpose(1, 2, 0) / 24
    note = "x" * 5000  # a String property over the inline limit: the xisf package attaches it
    XISF.write(str(tmp_path / "f.xisf"), np.ascontiguousarray(planes[..., :1]), image_metadata={"XISFProperties": {"Note": {"id": "Note", "type": "String", "value": note}}})
    before = (tmp_path / "f.xisf").stat().st_size
    long = '<DisplayFunction xmlns="http://www.pixinsight.com/xisf" name="' + "s" * 6000 + '"/>'
    add_image_elements(tmp_path / "f.xisf", ((long, None), ('<ICCProfile xmlns="http://www.pixinsight.com/xisf" location="inline:base64">AAAA</ICCProfile>', None)))
    raw = (tmp_path / "f.xisf").read_bytes()
    header_end = 16 + int.from_bytes(raw[8:12], "little")
    moved = XISF(str(tmp_path / "f.xisf"))
    np.testing.assert_array_equal(moved.read_image(0)[..., 0], planes[..., 0])
    assert moved.get_images_metadata()[0]["XISFProperties"]["Note"]["value"] == note
    assert (len(raw) - before) % 4096 == 0 and len(raw) > before
    locations = [e.get("location") for e in ET.fromstring(raw[16:header_end]).iter() if (e.get("location") or "").startswith("attachment")]
    assert len(locations) == 2 and all(int(loc.split(":")[1]) % 4096 == 0 and int(loc.split(":")[1]) >= header_end for loc in locations)
    assert _first_image_element(tmp_path / "f.xisf").find("{http://www.pixinsight.com/xisf}ICCProfile").text == "AAAA"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.xisf"]

def _second_xisf_image(path: Path) -> None:
    """Rewrite a one-image XISF file to list its image twice (both on the same data block):
    the xisf package writes one image per file. The data block is 4096-aligned, so the longer
    header still ends before it and no offset moves."""
    import re

    raw = path.read_bytes()
    length = int.from_bytes(raw[8:12], "little")
    xml = raw[16:16 + length].decode()
    image = re.search(r"<Image [^>]*?/>|<Image .*?</Image>", xml, re.S).group(0)
    doubled = xml.replace(image, image + image).encode()
    data_at = int(re.search(r'location="attachment:(\d+):', xml).group(1))
    assert 16 + len(doubled) <= data_at
    header = raw[:8] + len(doubled).to_bytes(4, "little") + raw[12:16] + doubled
    path.write_bytes(header + b"\0" * (data_at - len(header)) + raw[data_at:])


def test_further_images_in_a_file_are_counted(tmp_path):
    """A FITS with a second image extension (a rejection map) or an XISF with two images:
    the first is read, and the count of the others lets the CLI say they are not restored.
    A table after the image is not an image."""
    data = np.random.default_rng(2).normal(50, 2, (16, 20)).astype(np.float32)
    table = fits.BinTableHDU.from_columns([fits.Column(name="x", format="E", array=np.ones(3))])
    fits.HDUList([fits.PrimaryHDU(data), fits.ImageHDU(data[::-1]), fits.ImageHDU(data * 2), table]).writeto(tmp_path / "three.fits")
    image = read_image(tmp_path / "three.fits")
    assert image.other_images == 2
    np.testing.assert_array_equal(np.asarray(image.data), data)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data), table]).writeto(tmp_path / "one.fits")
    assert read_image(tmp_path / "one.fits").other_images == 0
    XISF.write(str(tmp_path / "two.xisf"), data[..., None])
    assert read_image(tmp_path / "two.xisf").other_images == 0
    _second_xisf_image(tmp_path / "two.xisf")
    image = read_image(tmp_path / "two.xisf")
    assert image.other_images == 1
    np.testing.assert_array_equal(image.data, data)
    with tifffile.TiffWriter(tmp_path / "two.tif") as tif:
        tif.write(data)
        tif.write(data[:8])
    image = read_image(tmp_path / "two.tif")
    assert image.other_images == 1
    np.testing.assert_array_equal(image.data, data)
    tifffile.imwrite(tmp_path / "one.tif", data)
    assert read_image(tmp_path / "one.tif").other_images == 0


def test_xisf_pixels_inside_the_header_are_one_clear_error(tmp_path):
    """XISF may hold a small image's pixels in the XML itself (``location="inline:base64"``);
    the reader takes attached blocks only, and said "('value')"."""
    import base64
    import re

    XISF.write(str(tmp_path / "a.xisf"), np.ones((4, 5, 1), np.float32))
    raw = (tmp_path / "a.xisf").read_bytes()
    xml = raw[16:16 + int.from_bytes(raw[8:12], "little")].decode()
    offset, size = map(int, re.search(r'location="attachment:(\d+):(\d+)"', xml).groups())
    pixels = base64.b64encode(raw[offset:offset + size]).decode()
    inline = re.sub(r'location="attachment:\d+:\d+"\s*/>', f'location="inline:base64">{pixels}</Image>', xml).encode()
    (tmp_path / "inline.xisf").write_bytes(raw[:8] + len(inline).to_bytes(4, "little") + raw[12:16] + inline)
    with pytest.raises(EngineError, match="stored in the XML header .location inline:base64.*attached data"):
        read_image(tmp_path / "inline.xisf")
