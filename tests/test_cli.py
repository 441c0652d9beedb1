"""The CLI as a user runs it: a subprocess, real files, exit codes, stderr, outputs, JSON progress."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from astropy.io import fits
from conftest import sha256
from xisf import XISF

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "astroswin", *map(str, args)], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=300)


def assert_one_error_line(result, *needles):
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("astroswin: error:") and "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture()
def mono_fits(tmp_path, star_field) -> Path:
    folder = tmp_path / "my stacks"
    folder.mkdir()
    path = folder / "m 31.fits"
    h = fits.Header()
    h["OBJECT"] = "M31"
    h["CTYPE1"], h["CTYPE2"], h["CRVAL1"], h["CRVAL2"] = "RA---TAN", "DEC--TAN", 10.68, 41.27
    fits.PrimaryHDU(star_field[1], h).writeto(path)
    return path


def test_restore_mono_fits_with_spaces_keeps_header_sky_and_flux(mono_fits, star_field):
    """The foundation's done-criterion, end to end with the bundled model."""
    before = sha256(mono_fits)
    result = run("restore", mono_fits, "--progress", "none")
    assert result.returncode == 0, result.stderr
    out = mono_fits.with_name("m 31_astroswin.fits")
    assert str(out) in result.stdout
    with fits.open(out) as hdul:
        data, header = hdul[0].data.astype(np.float64), hdul[0].header
    observed = star_field[1].astype(np.float64)
    assert data.shape == observed.shape and hdul[0].header["BITPIX"] == -32
    assert header["OBJECT"] == "M31" and header["CTYPE1"] == "RA---TAN" and "AstroSWIN" in str(header["HISTORY"])
    sky_out = np.median(data)
    assert abs(sky_out - 100.0) / 100.0 < 0.02  # the true sky (the input's median is lifted by star wings)
    assert abs((data - 100.0).sum() / (observed - 100.0).sum() - 1) < 0.05  # total flux above the sky
    assert sha256(mono_fits) == before


def test_rgb_xisf_and_16bit_tiff_keep_shape_and_dtype(tmp_path, tiny_model_dir):
    rgb = np.random.default_rng(0).uniform(0.05, 0.2, (40, 50, 3)).astype(np.float32)
    XISF.write(str(tmp_path / "rgb.xisf"), rgb, image_metadata={"FITSKeywords": {"OBJECT": [{"value": "M42", "comment": ""}]}})
    tif = np.random.default_rng(1).integers(1000, 5000, (30, 20)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "mono16.tif", tif)
    result = run("restore", tmp_path / "rgb.xisf", tmp_path / "mono16.tif", "--model", tiny_model_dir, "--progress", "none")
    assert result.returncode == 0, result.stderr
    x = XISF(str(tmp_path / "rgb_astroswin.xisf"))
    assert x.read_image(0).shape == (40, 50, 3) and x.read_image(0).dtype == np.float32
    assert x.get_images_metadata()[0]["FITSKeywords"]["OBJECT"][0]["value"] == "M42"
    t = tifffile.imread(tmp_path / "mono16_astroswin.tif")
    assert t.shape == (30, 20) and t.dtype == np.uint16
    np.testing.assert_array_equal(t, tif)  # the tiny model is the identity: exact round trip
    assert "2 restored, 0 failed" in result.stdout


@pytest.mark.parametrize("case", ["missing", "text_as_fits", "truncated"])
def test_bad_inputs_give_one_line_and_no_output(tmp_path, tiny_model_dir, case):
    path = tmp_path / f"{case}.fits"
    if case == "text_as_fits":
        path.write_text("this is not an image\n" * 10)
    elif case == "truncated":
        fits.PrimaryHDU(np.ones((200, 200), np.float32)).writeto(path)
        path.write_bytes(path.read_bytes()[:5000])
    before = sorted(os.listdir(tmp_path))
    result = run("restore", path, "--model", tiny_model_dir, "--progress", "none")
    assert_one_error_line(result, path.name)
    assert sorted(os.listdir(tmp_path)) == before


def test_existing_output_is_not_overwritten_without_flag(mono_fits, tiny_model_dir):
    out = mono_fits.with_name("m 31_astroswin.fits")
    out.write_bytes(b"keep me")
    result = run("restore", mono_fits, "--model", tiny_model_dir, "--progress", "none")
    assert_one_error_line(result, "exists", "--overwrite")
    assert out.read_bytes() == b"keep me"
    result = run("restore", mono_fits, "--model", tiny_model_dir, "--progress", "none", "--overwrite")
    assert result.returncode == 0 and fits.getdata(out).shape == (128, 128)


def test_batch_goes_on_after_a_failure_and_exits_nonzero(tmp_path, tiny_model_dir):
    for name in ("a", "c"):
        fits.PrimaryHDU(np.ones((20, 20), np.float32)).writeto(tmp_path / f"{name}.fits")
    (tmp_path / "b.fits").write_bytes(b"")
    result = run("restore", tmp_path, "--model", tiny_model_dir, "--progress", "none")
    assert result.returncode == 1
    assert "2 restored, 1 failed" in result.stdout
    assert (tmp_path / "a_astroswin.fits").exists() and (tmp_path / "c_astroswin.fits").exists()
    assert "b.fits: empty file" in result.stderr


def test_two_inputs_never_share_an_output(tmp_path, tiny_model_dir):
    """Same name in two folders, one --output-dir: --overwrite replaces earlier runs' files,
    never this run's own."""
    for sub, value in (("d1", 1.0), ("d2", 2.0)):
        (tmp_path / sub).mkdir()
        fits.PrimaryHDU(np.full((20, 20), value, np.float32)).writeto(tmp_path / sub / "a.fits")
    (tmp_path / "out").mkdir()
    result = run("restore", tmp_path / "d1", tmp_path / "d2", "--output-dir", tmp_path / "out", "--overwrite", "--model", tiny_model_dir, "--progress", "none")
    assert result.returncode == 1 and "1 restored, 1 failed" in result.stdout
    assert "was written from" in result.stderr and str(tmp_path / "d1" / "a.fits") in result.stderr
    assert np.median(fits.getdata(tmp_path / "out" / "a_astroswin.fits")) == pytest.approx(1.0, abs=0.05)


def test_fpacked_fits_in_a_folder_is_restored_under_a_plain_name(tmp_path, tiny_model_dir):
    h = fits.Header()
    h["HIERARCH ESO DET GAIN"] = 1.5  # astropy warns about such cards unless told not to
    data = np.random.default_rng(0).normal(1000, 20, (24, 24)).astype(np.float32)
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data, h)]).writeto(tmp_path / "m31.fits.fz")
    result = run("restore", tmp_path, "--model", tiny_model_dir, "--progress", "none")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    out = fits.getheader(tmp_path / "m31_astroswin.fits")
    assert out["ESO DET GAIN"] == 1.5


def test_gzipped_fits_in_a_folder_is_restored_under_a_plain_name(tmp_path, tiny_model_dir):
    """A folder scan skipped m31.fits.gz without a word, and named, it was 'unrecognised'."""
    import gzip

    data = np.random.default_rng(0).normal(1000, 20, (24, 24)).astype(np.float32)
    fits.PrimaryHDU(data).writeto(tmp_path / "plain.fits")
    (tmp_path / "m31.fits.gz").write_bytes(gzip.compress((tmp_path / "plain.fits").read_bytes()))
    (tmp_path / "plain.fits").unlink()
    (tmp_path / "notes.txt.gz").write_bytes(gzip.compress(b"log"))
    result = run("restore", tmp_path, "--model", tiny_model_dir, "--progress", "none")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    np.testing.assert_allclose(fits.getdata(tmp_path / "m31_astroswin.fits"), data, rtol=1e-6)


def test_alpha_a_fits_output_cannot_hold_is_named(tmp_path, tiny_model_dir):
    rgba = np.random.default_rng(0).integers(1000, 2000, (16, 18, 4), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "in.tif", rgba, photometric="rgb", extrasamples=["unassalpha"])
    result = run("restore", tmp_path / "in.tif", "-o", tmp_path / "out.fits", "--model", tiny_model_dir, "--progress", "none")
    assert result.returncode == 0, result.stderr
    assert "astroswin: warning:" in result.stderr and "1 extra (alpha) channel(s) cannot go into" in result.stderr
    assert fits.getdata(tmp_path / "out.fits").shape == (3, 16, 18)
    kept = run("restore", tmp_path / "in.tif", "--model", tiny_model_dir, "--progress", "none")
    assert kept.returncode == 0 and kept.stderr == "" and tifffile.imread(tmp_path / "in_astroswin.tif").shape == (16, 18, 4)


def test_json_progress_contract(mono_fits, tiny_model_dir):
    """The contract the PixInsight script reads: JSON lines only on stdout, in this order."""
    out = mono_fits.with_name("out.fits")
    result = run("restore", mono_fits, "-o", out, "--model", tiny_model_dir, "--progress", "json", "--tile", "64", "--overlap", "16")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-2:] == ["done", "summary"] and set(kinds[1:-2]) == {"progress"}
    start = events[0]
    assert start["file"] == str(mono_fits) and start["output"] == str(out)
    assert (start["width"], start["height"], start["channels"]) == (128, 128, 1)
    fractions = [e["fraction"] for e in events if e["event"] == "progress"]
    assert len(fractions) == start["tiles"] // 4 + (start["tiles"] % 4 > 0) and fractions[-1] == 1.0
    assert events[-1] == {"event": "summary", "ok": 1, "failed": 0}
    failed = run("restore", mono_fits.with_name("nope.fits"), "-o", out, "--model", tiny_model_dir, "--progress", "json")
    bad = [json.loads(line) for line in failed.stdout.splitlines()]
    assert bad[0]["event"] == "error" and "no such file" in bad[0]["message"] and bad[-1]["failed"] == 1
    (mono_fits.parent / "empty").mkdir()
    empty = run("restore", mono_fits.parent / "empty", "--model", tiny_model_dir, "--progress", "json")
    events = [json.loads(line) for line in empty.stdout.splitlines()]
    assert empty.returncode == 1 and events[0]["event"] == "error" and "no FITS" in events[0]["message"]
    assert events[-1] == {"event": "summary", "ok": 0, "failed": 1}


def test_pattern_through_a_folder_with_brackets(tmp_path, tiny_model_dir):
    """"M42 [Ha]/*.fits": the brackets are the folder's name, not a character class."""
    folder = tmp_path / "M42 [Ha]"
    folder.mkdir()
    fits.PrimaryHDU(np.ones((20, 20), np.float32)).writeto(folder / "a.fits")
    result = run("restore", f"{folder}/*.fits", "--model", tiny_model_dir, "--progress", "none")
    assert result.returncode == 0, result.stderr
    assert (folder / "a_astroswin.fits").exists()


def test_a_pattern_picks_what_a_folder_picks(tmp_path, tiny_model_dir):
    """Re-running ``restore "dir/*"`` restored its own outputs again (a_astroswin_astroswin)
    and failed on notes.txt; a folder skipped both. An empty --suffix once made every file look
    like an earlier output, so a folder read as empty."""
    fits.PrimaryHDU(np.ones((20, 20), np.float32)).writeto(tmp_path / "a.fits")
    (tmp_path / "notes.txt").write_text("flat frames taken at dusk")
    for _ in range(2):
        result = run("restore", f"{tmp_path}/*", "--model", tiny_model_dir, "--progress", "none", "--overwrite")
        assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.fits", "a_astroswin.fits", "notes.txt"]
    (tmp_path / "out").mkdir()
    result = run("restore", tmp_path, "--suffix", "", "--output-dir", tmp_path / "out", "--model", tiny_model_dir, "--progress", "none")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.fits", "a_astroswin.fits"]


def test_usage_errors(tmp_path, tiny_model_dir):
    result = run("restore", tmp_path / "a.fits", tmp_path / "b.fits", "-o", tmp_path / "x.fits")
    assert result.returncode == 2 and "exactly one input" in result.stderr
    assert run("restore", tmp_path / "a.fits", "--strength", "2").returncode == 2
    assert run("restore", tmp_path / "a.fits", "--strength", "nan").returncode == 2
    for name in ("x.png", "newdir/"):  # the extension picks the format: none, or an unknown one, is refused
        result = run("restore", tmp_path / "a.fits", "-o", tmp_path / name)
        assert result.returncode == 2 and "must end in .fits" in result.stderr and not (tmp_path / name).exists()
    result = run("restore", tmp_path / "a.fits", "--model", "nobody/nothing-here", "--progress", "none")
    assert_one_error_line(result, "nobody/nothing-here")


def test_help_explains_the_options():
    result = run("restore", "--help")
    assert result.returncode == 0
    for option in ("--strength", "--tile", "--overlap", "--device", "--precision", "--progress", "--overwrite", "--output-dir", "--emission-scale"):
        assert option in result.stdout


def test_demo_restores_the_bundled_sample(tmp_path):
    result = run("demo", "--out", tmp_path / "demo")
    assert result.returncode == 0, result.stderr
    assert "median star FWHM" in result.stdout
    import re

    before, after = map(float, re.search(r"FWHM: ([\d.]+) px before .* -> ([\d.]+) px after", result.stdout).groups())
    assert after < 0.7 * before
    for name in ("sample_input.fits", "sample_restored.fits", "sample_before_after.png"):
        assert (tmp_path / "demo" / name).stat().st_size > 0


def test_emission_scale_is_recorded_and_checked(tmp_path, tiny_model_dir):
    src = tmp_path / "in.fits"
    fits.PrimaryHDU(np.random.default_rng(0).normal(100, 5, (48, 40)).astype(np.float32)).writeto(src)
    result = run("restore", src, "--model", tiny_model_dir, "--progress", "none", "--emission-scale", "0")
    assert result.returncode == 0, result.stderr
    with fits.open(tmp_path / "in_astroswin.fits") as hdul:
        assert "emission_scale=0" in str(hdul[0].header["HISTORY"])
    result = run("restore", src, "--model", tiny_model_dir, "--progress", "none", "--emission-scale", "2", "-o", tmp_path / "x.fits")
    assert_one_error_line(result, "emission scale")
    assert not (tmp_path / "x.fits").exists()


def test_clipped_highlights_are_reported(tmp_path):
    """A uint16 output cannot hold a restored star brighter than 65535: the file is written,
    and one warning line says how many pixels were clipped (bundled model, a blurred star
    peaking at 30000 ADU)."""
    yy, xx = np.mgrid[:48, :48]
    star = 30000 * np.exp(-((yy - 24) ** 2 + (xx - 24) ** 2) / (2 * 2.5**2))
    data = np.random.default_rng(0).poisson(1000 + star).astype(np.uint16)
    tifffile.imwrite(tmp_path / "star.tif", data)
    result = run("restore", tmp_path / "star.tif", "--progress", "none")
    assert result.returncode == 0, result.stderr
    out = tifffile.imread(tmp_path / "star_astroswin.tif")
    assert out.dtype == np.uint16 and out.max() == 65535
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("astroswin: warning:") and "clipped" in lines[0]
    assert int(lines[0].split(": ")[3].split()[0]) == np.count_nonzero(out == 65535)


def one_line(result, prefix: str = "astroswin: error:") -> str:
    """The single non-empty stderr line, checked to start with ``prefix`` (no traceback)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(prefix) and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_overlap_too_large_for_the_tile_is_a_usage_error(tmp_path, tiny_model_dir):
    """Two options that cannot work together are bad usage (exit 2), as -o with several
    inputs is, not a failed restoration (exit 1); the default tile counts when --tile is not given."""
    src = tmp_path / "a.fits"
    fits.PrimaryHDU(np.ones((20, 20), np.float32)).writeto(src)
    result = run("restore", src, "--tile", "16", "--overlap", "16", "--model", tiny_model_dir, "--progress", "none")
    assert result.returncode == 2
    line = one_line(result)
    assert "--overlap 16" in line and "--tile 16" in line and "at most 7" in line
    result = run("restore", src, "--overlap", "64", "--device", "cpu", "--model", tiny_model_dir, "--progress", "none")
    assert result.returncode == 2 and "default tile of 128" in one_line(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.fits"]


def test_fp16_on_the_cpu_is_reported_once_per_run(tmp_path, tiny_model_dir):
    """A setting no file can change is refused once, before any file is read, not once per file."""
    for name in ("a", "b", "c"):
        fits.PrimaryHDU(np.ones((20, 20), np.float32)).writeto(tmp_path / f"{name}.fits")
    result = run("restore", tmp_path, "--device", "cpu", "--precision", "fp16", "--model", tiny_model_dir, "--progress", "none")
    assert result.returncode == 1
    assert "fp16" in one_line(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.fits", "b.fits", "c.fits"]


def test_float16_tiff_keeps_its_type_and_clips_what_float16_cannot_hold(tmp_path):
    """--help says XISF and TIFF outputs keep the input's type: a float16 TIFF came out float32.
    A restored star brighter than float16's 65504 would be stored as inf: it is clipped, with
    the same one warning line as integer outputs (bundled model, a star peaking at 40000)."""
    yy, xx = np.mgrid[:48, :48]
    data = (1000 + 40000 * np.exp(-((yy - 24) ** 2 + (xx - 24) ** 2) / (2 * 2.5**2))).astype(np.float16)
    tifffile.imwrite(tmp_path / "star.tif", data)
    before = sha256(tmp_path / "star.tif")
    result = run("restore", tmp_path / "star.tif", "--progress", "none")
    assert result.returncode == 0, result.stderr
    out = tifffile.imread(tmp_path / "star_astroswin.tif")
    assert out.dtype == np.float16 and np.isfinite(out).all() and out.max() == np.finfo(np.float16).max
    line = one_line(result, "astroswin: warning:")
    assert "clipped" in line and "float16" in line and "65504" in line
    assert sha256(tmp_path / "star.tif") == before


def test_xisf_history_comes_before_ours_in_fits(tmp_path, tiny_model_dir):
    """HISTORY is chronological: the XISF input's own lines, then AstroSWIN's."""
    keywords = {"OBJECT": [{"value": "'M42'", "comment": ""}], "HISTORY": [{"value": "", "comment": "calibrated"}, {"value": "", "comment": "stacked"}]}
    XISF.write(str(tmp_path / "in.xisf"), np.full((20, 24, 1), 0.1, np.float32), image_metadata={"FITSKeywords": keywords})
    result = run("restore", tmp_path / "in.xisf", "-o", tmp_path / "out.fits", "--model", tiny_model_dir, "--progress", "none")
    assert result.returncode == 0, result.stderr
    header = fits.getheader(tmp_path / "out.fits")
    history = list(header["HISTORY"])
    assert history[:2] == ["calibrated", "stacked"] and history[2].startswith("AstroSWIN")  # ours may wrap over cards
    assert not {"calibrated", "stacked"} & set(history[2:]) and header["OBJECT"] == "M42"


@pytest.mark.parametrize("source", ["fits", "xisf"])
def test_keywords_a_tiff_output_cannot_keep_are_named(tmp_path, tiny_model_dir, source):
    """-o x.tif dropped the input's FITS keywords (its WCS too) without a word: one warning
    line names them, and the run succeeds."""
    wcs = dict(CTYPE1="RA---TAN", CTYPE2="DEC--TAN", CRVAL1=10.68, CRVAL2=41.27, CRPIX1=10.0, CRPIX2=10.0)
    data = np.full((20, 20), 0.1, np.float32)
    if source == "fits":
        header = fits.Header()
        header["OBJECT"] = "M31"
        header.update(wcs)
        fits.PrimaryHDU(data, header).writeto(tmp_path / "in.fits")
    else:
        keywords = {"OBJECT": [{"value": "'M31'", "comment": ""}], **{k: [{"value": f"'{v}'" if isinstance(v, str) else str(v), "comment": ""}] for k, v in wcs.items()}}
        XISF.write(str(tmp_path / "in.xisf"), data[..., None], image_metadata={"FITSKeywords": keywords})
    result = run("restore", tmp_path / f"in.{source}", "-o", tmp_path / "out.tif", "--model", tiny_model_dir, "--progress", "none")
    assert result.returncode == 0, result.stderr
    line = one_line(result, "astroswin: warning:")
    assert "TIFF" in line and "OBJECT" in line and "CTYPE1" in line and "WCS" in line
    assert tifffile.imread(tmp_path / "out.tif").shape == (20, 20)


def test_suffix_with_a_path_separator_is_a_usage_error(tmp_path, tiny_model_dir):
    """--suffix /../x put the output in another folder (or failed as a missing one)."""
    (tmp_path / "in").mkdir()
    fits.PrimaryHDU(np.ones((20, 20), np.float32)).writeto(tmp_path / "in" / "a.fits")
    result = run("restore", tmp_path / "in" / "a.fits", "--suffix", "/../x", "--model", tiny_model_dir, "--progress", "none")
    assert result.returncode == 2 and "--suffix" in one_line(result)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == ["in", "in/a.fits"]


def test_demo_out_below_a_file_is_one_clear_line(tmp_path):
    (tmp_path / "notes.txt").write_text("not a folder")
    result = run("demo", "--out", tmp_path / "notes.txt" / "sub")
    assert result.returncode == 1
    line = one_line(result)
    assert str(tmp_path / "notes.txt" / "sub") in line and "is a file, not a folder" in line and "Errno" not in line
    assert (tmp_path / "notes.txt").read_text() == "not a folder"


@pytest.mark.parametrize("args,needle", [(["restore", "--bogus", "a.fits"], "--bogus"), (["restore"], "INPUT"), (["restore", "a.fits", "--device", "tpu"], "--device"), (["nocommand"], "nocommand"), (["demo", "extra"], "extra")])
def test_usage_errors_are_one_line(tmp_path, args, needle):
    """click's four lines (Usage, Try, blank, Error) are one: the line a host plugin shows."""
    result = run(*args, cwd=tmp_path)
    assert result.returncode == 2
    line = one_line(result)
    assert needle in line and "--help" in line and result.stdout == ""


def test_help_and_no_arguments_are_unchanged():
    result = run("restore", "--help")
    assert result.returncode == 0 and result.stdout.startswith("Usage: astroswin restore [OPTIONS] INPUT...") and result.stderr == ""
    bare = run()
    assert bare.returncode == 2 and "Commands:" in bare.stdout + bare.stderr


def test_images_after_the_first_are_named_not_dropped_silently(tmp_path, tiny_model_dir):
    """A stack written with its rejection maps as further image extensions: the first image is
    restored as before, and one warning line says the other two are not in the output."""
    data = np.full((20, 24), 0.1, np.float32)
    fits.HDUList([fits.PrimaryHDU(data), fits.ImageHDU(data * 0), fits.ImageHDU(data * 0)]).writeto(tmp_path / "stack.fits")
    result = run("restore", tmp_path / "stack.fits", "--model", tiny_model_dir, "--progress", "none")
    assert result.returncode == 0, result.stderr
    line = one_line(result, "astroswin: warning:")
    assert "holds 3 images" in line and "only the first" in line and "stack_astroswin.fits" in line
    with fits.open(tmp_path / "stack_astroswin.fits") as hdul:
        assert len(hdul) == 1 and hdul[0].data.shape == (20, 24)
