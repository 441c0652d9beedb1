"""Hostile inputs for ``astroswin restore``: a corpus generated on the fly.

Every case must end in either a correct result, or exactly one line on stderr starting
``astroswin: error:`` with a non-zero exit -- never a traceback, never a partial or corrupt
output file (nor a leftover ``.*.astroswin-tmp``), and the input's bytes unchanged.

Most cases run the CLI in-process with click's ``CliRunner`` (fast) on a tiny random model;
a few run it as a real subprocess, where only a real process shows the failure mode:
Ctrl-C (SIGINT), a full disk (simulated with ``RLIMIT_FSIZE``, see :func:`test_full_disk`) and
two processes racing for one output name.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from click.testing import CliRunner

from astroswin.cli import cli

ERROR_PREFIX = "astroswin: error:"


# -- fixtures and helpers --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny random AstroSwin2SR folder (the architecture of the shipped models, 5k weights)."""
    import torch

    from astroswin.engine.model import AstroSwin2SR, AstroSwin2SRConfig

    torch.manual_seed(0)
    model = AstroSwin2SR(AstroSwin2SRConfig.named("tiny"))
    torch.nn.init.normal_(model.resample.weight, std=0.01)  # not the identity: outputs differ from inputs
    folder = tmp_path_factory.mktemp("model") / "tiny"
    model.save_pretrained(folder)
    return folder


def sky(shape: tuple[int, ...], seed: int = 0, level: float = 1000.0, noise: float = 10.0) -> np.ndarray:
    """A linear sky: background, Gaussian noise and a few stars, float64."""
    rng = np.random.default_rng(seed)
    data = level + noise * rng.standard_normal(shape)
    h, w = shape[-2:]
    for _ in range(max(1, h * w // 2000)):  # Gaussian stars, drawn in 15 x 15 stamps
        y, x = rng.uniform(0, h), rng.uniform(0, w)
        y0, y1, x0, x1 = max(0, int(y) - 7), min(h, int(y) + 8), max(0, int(x) - 7), min(w, int(x) + 8)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        data[..., y0:y1, x0:x1] += 50 * noise * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.5**2))
    return data


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".astroswin-tmp"))


def run(args: list[str], model: Path) -> object:
    """Run ``astroswin restore`` in-process; stdout and stderr are captured separately."""
    runner = CliRunner()
    return runner.invoke(cli, ["restore", *map(str, args), "--model", str(model), "--progress", "none", "--threads", "1"])


def assert_clean_failure(result, *, inputs: dict[Path, str], outputs: list[Path], message: str | None = None) -> str:
    """Non-zero exit, exactly one ``astroswin: error:`` stderr line, no output, inputs intact."""
    assert result.exit_code != 0, f"expected failure, got exit 0; stdout={result.output!r}"
    assert result.exception is None or isinstance(result.exception, SystemExit), f"escaped exception: {result.exception!r}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {lines!r}"
    assert lines[0].startswith(ERROR_PREFIX), lines[0]
    assert "Traceback" not in result.stderr + result.output
    if message is not None:
        assert message.lower() in lines[0].lower(), lines[0]
    for out in outputs:
        assert not out.exists(), f"partial output {out} left behind"
        if out.parent.is_dir():
            assert leftovers(out.parent) == []
    for path, before in inputs.items():
        assert digest(path) == before, f"input {path} was modified"
    return lines[0]


def assert_success(result, *, inputs: dict[Path, str], output: Path) -> None:
    assert result.exit_code == 0, f"exit {result.exit_code}: {result.stderr!r} {result.exception!r}"
    assert result.stderr.strip() == ""
    assert output.is_file(), f"no output {output}"
    assert leftovers(output.parent) == []
    for path, before in inputs.items():
        assert digest(path) == before, f"input {path} was modified"


def write_fits(path: Path, data: np.ndarray, **header) -> dict[Path, str]:
    hdu = fits.PrimaryHDU(data)
    for key, value in header.items():
        hdu.header[key] = value
    hdu.writeto(path)
    return {path: digest(path)}


def read_fits_data(path: Path) -> np.ndarray:
    with fits.open(path) as hdul:
        return np.array(hdul[0].data)


# -- successes: NaN, inf, pedestals, sample types, compression, odd shapes -------------------------
def test_nan_border_kept_exactly(tmp_path, tiny_model):
    data = sky((96, 80)).astype(np.float32)
    data[:7] = np.nan
    data[:, -5:] = np.nan
    data[40, 40] = np.nan
    src = tmp_path / "nan.fits"
    inputs = write_fits(src, data)
    out = tmp_path / "nan_astroswin.fits"
    assert_success(run([src], tiny_model), inputs=inputs, output=out)
    restored = read_fits_data(out)
    assert restored.shape == data.shape and restored.dtype == np.dtype(">f4")
    np.testing.assert_array_equal(np.isnan(restored), np.isnan(data))
    assert np.isfinite(restored[~np.isnan(data)]).all()


def test_inf_pixels_kept(tmp_path, tiny_model):
    data = sky((64, 64)).astype(np.float32)
    data[10, 10], data[20, 30], data[50, 5] = np.inf, -np.inf, np.inf
    src = tmp_path / "inf.fits"
    inputs = write_fits(src, data)
    out = tmp_path / "inf_astroswin.fits"
    assert_success(run([src], tiny_model), inputs=inputs, output=out)
    restored = read_fits_data(out)
    bad = ~np.isfinite(data)
    np.testing.assert_array_equal(restored[bad], data[bad])
    assert np.isfinite(restored[~bad]).all()
    # the infinities did not leak into their neighbourhood
    assert abs(float(np.median(restored)) - float(np.median(data))) < 5 * 10.0


def test_all_zero_image(tmp_path, tiny_model):
    src = tmp_path / "zero.fits"
    inputs = write_fits(src, np.zeros((48, 48), dtype=np.float32))
    out = tmp_path / "zero_astroswin.fits"
    assert_success(run([src], tiny_model), inputs=inputs, output=out)
    restored = read_fits_data(out)
    assert restored.shape == (48, 48) and np.isfinite(restored).all()


def test_all_nan_image_is_a_clear_error(tmp_path, tiny_model):
    src = tmp_path / "allnan.fits"
    inputs = write_fits(src, np.full((32, 32), np.nan, dtype=np.float32))
    assert_clean_failure(run([src], tiny_model), inputs=inputs, outputs=[tmp_path / "allnan_astroswin.fits"], message="no finite pixel")


@pytest.mark.parametrize("scale, dtype", [(2e38, np.float32), (1e300, np.float64), (-1e300, np.float64)], ids=["2e38-float32", "1e300-float64", "-1e300-float64"])
def test_values_beyond_float32_are_a_clear_error(tmp_path, tiny_model, scale, dtype):
    """The engine computes in float32: a sky of 2e38 (within float32) overflowed in its sums,
    and 1e300 (float64) in the cast; either came out as a file of inf and NaN, exit 0, with
    numpy's RuntimeWarnings on stderr. One line instead, with the value and the limit."""
    src = tmp_path / "huge.fits"
    data = (sky((48, 48)) / 1000.0 * scale).astype(dtype)
    inputs = write_fits(src, data)
    line = assert_clean_failure(run([src], tiny_model), inputs=inputs, outputs=[tmp_path / "huge_astroswin.fits"], message="1e+36")
    assert f"{float(np.abs(data).max()):.3g}" in line, line


def test_huge_but_representable_values_are_restored(tmp_path, tiny_model):
    """Values up to the limit work, in the input's units (a sky of 1e35, stars to 1.5e35)."""
    data = (sky((48, 48)) * 1e32).astype(np.float32)
    src = tmp_path / "big.fits"
    inputs = write_fits(src, data)
    out = tmp_path / "big_astroswin.fits"
    assert_success(run([src], tiny_model), inputs=inputs, output=out)
    restored = read_fits_data(out)
    assert np.isfinite(restored).all()
    assert abs(float(np.median(restored)) / float(np.median(data)) - 1) < 0.01


def test_negative_pedestal(tmp_path, tiny_model):
    data = sky((64, 64), level=-5000.0).astype(np.float32)
    src = tmp_path / "pedestal.fits"
    inputs = write_fits(src, data)
    out = tmp_path / "pedestal_astroswin.fits"
    assert_success(run([src], tiny_model), inputs=inputs, output=out)
    restored = read_fits_data(out)
    assert np.isfinite(restored).all()
    assert abs(float(np.median(restored)) - float(np.median(data))) < 5 * 10.0  # not clipped at 0


@pytest.mark.parametrize("name, extra", [("out.xisf", []), ("out.tif", ["--dtype", "uint16"])], ids=["xisf-float", "tiff-uint16"])
def test_negative_values_an_output_cannot_hold_are_reported(tmp_path, tiny_model, name, extra):
    """XISF floats are stored within [0, 1] and unsigned integers from 0: a bias-subtracted
    frame (sky near 0, half its pixels negative) or a negative pedestal lost every value below
    0 with exit 0 and nothing said; a pedestal of -5000 came out a black frame. The file is
    still written, clipped as documented, and one warning line gives the count and the
    input's lowest value, as for values above an output's ceiling."""
    data = sky((40, 48), level=-5000.0).astype(np.float32)
    src = tmp_path / "pedestal.fits"
    inputs = write_fits(src, data)
    out = tmp_path / name
    result = run([src, "-o", out, *extra], tiny_model)
    assert result.exit_code == 0, result.stderr
    assert out.is_file() and leftovers(tmp_path) == [] and digest(src) == inputs[src]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("astroswin: warning:"), lines
    assert f"{data.size} restored pixels below 0" in lines[0] and f"{float(data.min()):.6g}" in lines[0], lines[0]
    # an input within the output's range is not reported for the few restored values below 0
    from xisf import XISF

    XISF.write(str(tmp_path / "unit.xisf"), np.clip(sky((40, 48), level=0.02, noise=0.01), 0, 1).astype(np.float32)[..., None])
    result = run([tmp_path / "unit.xisf"], tiny_model)
    assert result.exit_code == 0 and result.stderr.strip() == "", result.stderr

@pytest.mark.parametrize(
    "dtype, level",
    [(np.int16, 1000.0), (np.int32, 100000.0), (np.uint8, 60.0), (np.float64, 1000.0), (np.uint16, 40000.0)],
    ids=["int16", "int32", "uint8", "float64", "bzero-uint16"],
)
def test_fits_sample_types(tmp_path, tiny_model, dtype, level):
    noise = 2.0 if dtype == np.uint8 else 10.0
    data = sky((40, 56), level=level, noise=noise)
    if np.dtype(dtype).kind in "ui":
        info = np.iinfo(dtype)
        data = np.clip(np.rint(data), info.min, info.max)
    data = data.astype(dtype)
    src = tmp_path / f"{np.dtype(dtype).name}.fits"
    inputs = write_fits(src, data)
    if dtype == np.uint16:
        assert fits.getheader(src)["BZERO"] == 32768  # stored as int16 + BZERO
    out = tmp_path / f"{np.dtype(dtype).name}_astroswin.fits"
    assert_success(run([src], tiny_model), inputs=inputs, output=out)
    restored = read_fits_data(out)
    assert restored.shape == data.shape and restored.dtype.kind == "f"
    assert np.isfinite(restored).all()
    assert abs(float(np.median(restored)) - float(np.median(data))) < 5 * noise  # same units as the input


def test_tile_compressed_fits(tmp_path, tiny_model):
    data = np.rint(sky((64, 72))).astype(np.int16)
    src = tmp_path / "compressed.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data, compression_type="RICE_1")]).writeto(src)
    inputs = {src: digest(src)}
    out = tmp_path / "compressed_astroswin.fits"
    assert_success(run([src], tiny_model), inputs=inputs, output=out)
    restored = read_fits_data(out)
    assert restored.shape == data.shape and np.isfinite(restored).all()


@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (1, 5000), (5000, 1)], ids=["1x1", "7x3", "1x5000", "5000x1"])
def test_tiny_and_extreme_shapes(tmp_path, tiny_model, shape):
    data = sky(shape).astype(np.float32)
    src = tmp_path / "odd.fits"
    inputs = write_fits(src, data)
    out = tmp_path / "odd_astroswin.fits"
    assert_success(run([src], tiny_model), inputs=inputs, output=out)
    restored = read_fits_data(out)
    assert restored.shape == shape and np.isfinite(restored).all()


def test_singleton_axes_are_squeezed(tmp_path, tiny_model):
    """4-D data with singleton leading axes (radio-style Stokes/frequency axes) is a mono image."""
    data = sky((1, 1, 24, 40)).astype(np.float32)
    src = tmp_path / "cube.fits"
    inputs = write_fits(src, data)
    out = tmp_path / "cube_astroswin.fits"
    assert_success(run([src], tiny_model), inputs=inputs, output=out)
    assert read_fits_data(out).shape == (24, 40)


def test_wrong_extension_for_content(tmp_path, tiny_model):
    data = sky((32, 32)).astype(np.float32)
    src = tmp_path / "really_fits.tif"  # FITS bytes behind a TIFF name: the content decides
    inputs = write_fits(src, data)
    out = tmp_path / "really_fits_astroswin.fits"
    assert_success(run([src], tiny_model), inputs=inputs, output=out)
    assert read_fits_data(out).shape == (32, 32)


def test_tiff_content_with_fits_extension(tmp_path, tiny_model):
    import tifffile

    src = tmp_path / "really_tiff.fits"
    tifffile.imwrite(src, np.rint(sky((32, 40))).astype(np.uint16))
    inputs = {src: digest(src)}
    out = tmp_path / "really_tiff_astroswin.tif"
    assert_success(run([src], tiny_model), inputs=inputs, output=out)
    assert tifffile.imread(out).shape == (32, 40)


def test_non_ascii_header_values(tmp_path, tiny_model):
    src = tmp_path / "utf8.fits"
    write_fits(src, sky((32, 32)).astype(np.float32), OBSERVER="Jxxrgen", SITE="Xx Teide")
    raw = src.read_bytes()
    raw = raw.replace(b"Jxxrgen", "J\u00fcrgen".encode("utf-8")[:7].ljust(7, b" "))  # 'J\xc3\xbcrgen': same length
    raw = raw.replace(b"Xx Teide", "\u00c9l Teide".encode("latin-1").ljust(8, b" "))
    src.write_bytes(raw)
    inputs = {src: digest(src)}
    out = tmp_path / "utf8_astroswin.fits"
    assert_success(run([src], tiny_model), inputs=inputs, output=out)
    assert read_fits_data(out).shape == (32, 32)
    header = fits.getheader(out)  # the cards survive, their non-ASCII bytes replaced: a valid FITS header
    assert header["OBSERVER"].startswith("J") and header["OBSERVER"].isascii()
    assert header["SITE"].endswith("Teide") and header["SITE"].isascii()


def test_rgba_tiff_alpha_passed_through(tmp_path, tiny_model):
    import tifffile

    rgb = np.clip(np.rint(sky((3, 40, 48), noise=20.0)), 0, 65535).astype(np.uint16)
    alpha = np.zeros((40, 48), dtype=np.uint16)
    alpha[5:30, 8:40] = 65535
    src = tmp_path / "rgba.tif"
    tifffile.imwrite(src, np.dstack([*rgb, alpha]), photometric="rgb", extrasamples=[2])
    inputs = {src: digest(src)}
    out = tmp_path / "rgba_astroswin.tif"
    assert_success(run([src], tiny_model), inputs=inputs, output=out)
    restored = tifffile.imread(out)
    assert restored.shape == (40, 48, 4) and restored.dtype == np.uint16
    np.testing.assert_array_equal(restored[..., 3], alpha)


def test_rgb_float_fits(tmp_path, tiny_model):
    data = sky((3, 40, 36)).astype(np.float32)
    data[1, :3] = np.nan
    src = tmp_path / "rgb.fits"
    inputs = write_fits(src, data)
    out = tmp_path / "rgb_astroswin.fits"
    assert_success(run([src], tiny_model), inputs=inputs, output=out)
    restored = read_fits_data(out)
    assert restored.shape == data.shape
    np.testing.assert_array_equal(np.isnan(restored), np.isnan(data))


# -- clear failures: unreadable or unsupported inputs ----------------------------------------------
def _table_only(path: Path) -> None:
    table = fits.BinTableHDU.from_columns([fits.Column(name="flux", format="E", array=np.arange(5, dtype=np.float32))])
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path)


def _truncated(path: Path) -> None:
    fits.PrimaryHDU(sky((128, 128)).astype(np.float32)).writeto(path)
    raw = path.read_bytes()
    path.write_bytes(raw[: 2880 + 5000])  # header and a fraction of the data


def _truncated_header(path: Path) -> None:
    fits.PrimaryHDU(sky((16, 16)).astype(np.float32)).writeto(path)
    path.write_bytes(path.read_bytes()[:400])


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)


def _one_d(path: Path) -> None:
    fits.PrimaryHDU(np.arange(100, dtype=np.float32)).writeto(path)


def _four_d(path: Path) -> None:
    fits.PrimaryHDU(sky((2, 3, 16, 16)).astype(np.float32)).writeto(path)


def _five_channels(path: Path) -> None:
    fits.PrimaryHDU(sky((5, 16, 16)).astype(np.float32)).writeto(path)


def _two_channels(path: Path) -> None:
    fits.PrimaryHDU(sky((2, 16, 16)).astype(np.float32)).writeto(path)


def _colour_last(path: Path) -> None:
    # (H, W, 3) as some converters write RGB: "has 24 planes" alone sent the user hunting
    fits.PrimaryHDU(sky((24, 40, 3)).astype(np.float32)).writeto(path)


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _broken_tiff(path: Path) -> None:
    path.write_bytes(b"II*\x00" + b"\xff" * 60)


def _broken_xisf(path: Path) -> None:
    path.write_bytes(b"XISF0100" + b"\x00" * 8 + b"<xisf nonsense")


def _complex(path: Path) -> None:
    # FITS has no complex images; a header that claims an unknown BITPIX must not crash us.
    fits.PrimaryHDU(np.zeros((8, 8), dtype=np.float32)).writeto(path)
    raw = bytearray(path.read_bytes())
    at = raw.index(b"BITPIX  =")
    raw[at : at + 30] = b"BITPIX  =                  -99"
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    "name, build, message",
    [
        ("table.fits", _table_only, "no image"),
        ("empty.fits", _empty, "empty"),
        ("truncated.fits", _truncated, None),
        ("truncated_header.fits", _truncated_header, None),
        ("garbage.fits", _garbage, "not a FITS"),
        ("one_d.fits", _one_d, "1-D"),
        ("four_d.fits", _four_d, "4-D"),
        ("five.fits", _five_channels, "5 planes"),
        ("two.fits", _two_channels, "2 planes"),
        ("colour_last.fits", _colour_last, "24 planes (shape (24, 40, 3))"),
        ("broken.tif", _broken_tiff, None),
        ("broken.xisf", _broken_xisf, None),
        ("bitpix.fits", _complex, None),
    ],
    ids=lambda v: v if isinstance(v, str) and "." in v else "",
)
def test_unreadable_inputs_fail_cleanly(tmp_path, tiny_model, name, build, message):
    src = tmp_path / name
    build(src)
    inputs = {src: digest(src)}
    outputs = [tmp_path / f"{src.stem}_astroswin{ext}" for ext in (".fits", ".tif", ".xisf", src.suffix)]
    assert_clean_failure(run([src], tiny_model), inputs=inputs, outputs=outputs, message=message)


def test_missing_input(tmp_path, tiny_model):
    assert_clean_failure(run([tmp_path / "nope.fits"], tiny_model), inputs={}, outputs=[tmp_path / "nope_astroswin.fits"], message="no such file")


def test_input_folder_without_images(tmp_path, tiny_model):
    (tmp_path / "notes.txt").write_text("hello")
    assert_clean_failure(run([tmp_path], tiny_model), inputs={}, outputs=[], message="no FITS")


# -- clear failures: bad output locations ----------------------------------------------------------
@pytest.fixture()
def small_input(tmp_path) -> tuple[Path, dict[Path, str]]:
    src = tmp_path / "in.fits"
    return src, write_fits(src, sky((32, 32)).astype(np.float32))


def test_output_folder_missing(tmp_path, tiny_model, small_input):
    src, inputs = small_input
    target = tmp_path / "missing" / "out.fits"
    assert_clean_failure(run([src, "-o", target], tiny_model), inputs=inputs, outputs=[target], message="does not exist")
    assert not (tmp_path / "missing").exists()


def test_output_dir_option_missing(tmp_path, tiny_model, small_input):
    src, inputs = small_input
    assert_clean_failure(run([src, "--output-dir", tmp_path / "missing"], tiny_model), inputs=inputs, outputs=[], message="does not exist")
    assert not (tmp_path / "missing").exists()


def test_output_folder_not_writable(tmp_path, tiny_model, small_input):
    """As an ordinary user a chmod 0o500 folder is not writable; as root (CI) permissions are not
    enforced, so the test writes into /sys, where even root cannot create files."""
    src, inputs = small_input
    if os.geteuid() == 0:
        folder = Path("/sys")
        if not folder.is_dir() or os.access(folder, os.W_OK) and _can_create(folder):
            pytest.skip("no folder that root cannot write into")
    else:
        folder = tmp_path / "readonly"
        folder.mkdir()
        folder.chmod(0o500)
    target = folder / "astroswin_out.fits"
    try:
        assert_clean_failure(run([src, "-o", target], tiny_model), inputs=inputs, outputs=[target], message="cannot write")
    finally:
        if os.geteuid() != 0:
            folder.chmod(0o700)


def _can_create(folder: Path) -> bool:
    probe = folder / ".astroswin-probe"
    try:
        probe.touch()
    except OSError:
        return False
    probe.unlink()
    return True


def test_output_path_is_a_folder(tmp_path, tiny_model, small_input):
    src, inputs = small_input
    target = tmp_path / "a_folder.fits"
    target.mkdir()
    for extra in ([], ["--overwrite"]):
        result = run([src, "-o", target, *extra], tiny_model)
        assert_clean_failure(result, inputs=inputs, outputs=[], message="is a folder")
        assert target.is_dir() and not any(target.iterdir())


@pytest.mark.parametrize("kind", ["fifo", "link-to-device"])
def test_output_is_a_special_file_never_replaced(tmp_path, tiny_model, small_input, kind):
    """``-o <device or pipe> --overwrite`` must not replace it with a regular file. Built safely
    inside tmp_path: a named pipe, and a symlink to /dev/null (replacing the link, had the check
    regressed, would leave /dev/null itself alone)."""
    src, inputs = small_input
    target = tmp_path / "special.fits"
    if kind == "fifo":
        os.mkfifo(target)
    else:
        target.symlink_to("/dev/null")
    before = os.lstat(target)
    for extra in ([], ["--overwrite"]):
        result = run([src, "-o", target, *extra], tiny_model)
        assert_clean_failure(result, inputs=inputs, outputs=[], message="not a regular file")
    after = os.lstat(target)
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)
    assert leftovers(tmp_path) == []


def test_existing_output_not_replaced(tmp_path, tiny_model, small_input):
    src, inputs = small_input
    target = tmp_path / "taken.fits"
    target.write_bytes(b"precious")
    result = run([src, "-o", target], tiny_model)
    assert result.exit_code != 0 and "exists" in result.stderr
    assert target.read_bytes() == b"precious"


def test_output_would_replace_input(tmp_path, tiny_model, small_input):
    src, inputs = small_input
    assert_clean_failure(run([src, "-o", src, "--overwrite"], tiny_model), inputs=inputs, outputs=[], message="replace the input")


# -- real processes: full disk, Ctrl-C, two writers ------------------------------------------------
def _cli_command(model: Path, *args) -> list[str]:
    return [sys.executable, "-m", "astroswin", "restore", *map(str, args), "--model", str(model), "--threads", "1"]


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1", ASTROSWIN_COMPILE="0")
    env.pop("PYTHONWARNINGS", None)
    return env


def _assert_one_error_line(stderr: str, message: str | None = None) -> None:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1 and lines[0].startswith(ERROR_PREFIX), lines
    if message:
        assert message.lower() in lines[0].lower(), lines[0]


def test_full_disk(tmp_path, tiny_model):
    """A full disk, simulated: the child process runs with ``RLIMIT_FSIZE`` of 64 KiB and SIGXFSZ
    ignored, so writing past 64 KiB fails with EFBIG exactly where a full disk fails with ENOSPC
    (inside the output writer, after the temporary file was created). The 256x256 float32 output
    needs 256 KiB. Writing to /dev/full is not used: the output must be a file in a folder."""
    src = tmp_path / "in.fits"
    inputs = write_fits(src, sky((256, 256)).astype(np.float32))
    target = tmp_path / "out.fits"

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    proc = subprocess.run(_cli_command(tiny_model, src, "-o", target, "--progress", "none"), capture_output=True, text=True, env=_env(), preexec_fn=limit, timeout=300)
    assert proc.returncode != 0
    _assert_one_error_line(proc.stderr, "cannot write")
    assert not target.exists() and leftovers(tmp_path) == []
    assert digest(src) == inputs[src]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_mid_run(tmp_path, tiny_model, signum):
    """SIGINT (Ctrl-C) or SIGTERM (kill, a host stopping the engine) after the first progress
    event: exit 130, one line, no output, no temp file.

    The child gets SIGINT's default action back, as a terminal gives it: under a shell's
    background job (``pytest &``) SIGINT is ignored and inherited, Python then installs no
    handler, and the run finished with exit 0 whatever the CLI does."""
    src = tmp_path / "big.fits"
    inputs = write_fits(src, sky((1536, 1536), noise=10.0).astype(np.float32))
    target = tmp_path / "big_out.fits"
    proc = subprocess.Popen(
        _cli_command(tiny_model, src, "-o", target, "--progress", "json", "--tile", "64", "--overlap", "8", "--batch-size", "1"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        for line in proc.stdout:
            if json.loads(line).get("event") == "progress":
                break
        else:
            pytest.fail(f"no progress event; stderr={proc.stderr.read()!r}")
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, (proc.returncode, stderr)
    _assert_one_error_line(stderr, "interrupted")
    assert not target.exists() and leftovers(tmp_path) == []
    assert digest(src) == inputs[src]


@pytest.mark.parametrize("overwrite", [False, True], ids=["no-overwrite", "overwrite"])
def test_two_runs_same_output(tmp_path, tiny_model, overwrite):
    """Two processes writing one output name at once: never a mixed or partial file. Without
    --overwrite exactly one wins and the other says the output exists; with it both succeed
    and the file is one complete result."""
    src = tmp_path / "in.fits"
    data = sky((192, 192)).astype(np.float32)
    inputs = write_fits(src, data)
    target = tmp_path / "shared.fits"
    extra = ["--overwrite"] if overwrite else []
    procs = [subprocess.Popen(_cli_command(tiny_model, src, "-o", target, "--progress", "none", *extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    codes = sorted(code for code, _, _ in results)
    if overwrite:
        assert codes == [0, 0], results
    else:
        assert codes == [0, 1], results
        loser = next(err for code, _, err in results if code != 0)
        _assert_one_error_line(loser, "exists")
    restored = read_fits_data(target)
    assert restored.shape == data.shape and np.isfinite(restored).all()
    assert leftovers(tmp_path) == []
    assert digest(src) == inputs[src]


def test_no_cxx_compiler_falls_back_to_eager(tmp_path, tiny_model):
    """A machine without a working C++ compiler: ``torch.compile`` (forced on) fails inside the
    run, and the engine finishes eagerly -- exit 0, nothing on stderr, the same pixels as an
    eager run. Simulated by pointing ``CXX``/``CC`` at a missing file and an empty graph cache."""
    src = tmp_path / "in.fits"
    inputs = write_fits(src, sky((200, 200)).astype(np.float32))
    target, eager = tmp_path / "compiled.fits", tmp_path / "eager.fits"
    env = dict(_env(), ASTROSWIN_COMPILE="1", CXX=str(tmp_path / "no-c++"), CC=str(tmp_path / "no-cc"), TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor"))
    proc = subprocess.run(_cli_command(tiny_model, src, "-o", target, "--progress", "none", "--tile", "64", "--overlap", "8"), capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr
    assert_success(run([src, "-o", eager, "--tile", "64", "--overlap", "8"], tiny_model), inputs=inputs, output=eager)
    np.testing.assert_array_equal(read_fits_data(target), read_fits_data(eager))
