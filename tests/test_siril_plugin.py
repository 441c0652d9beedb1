"""The Siril plugin (``astroswin.plugin.siril`` and the ``AstroSWIN.py`` shim) against a sirilpy double.

The double (``tests/sirilpy_double/sirilpy``) enforces Siril's rules: connection env var, write
only inside ``image_lock()``, float32/uint16 and <= 3 channels, progress in [0, 1], log lines
<= 1 KB, undo returns None headless. It records every call, so the tests assert "one write,
inside the lock, same dtype and layout" and "the image is untouched" directly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from astroswin.plugin import siril as plugin

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DOUBLE = HERE / "sirilpy_double"
SHIM = ROOT / "plugin" / "siril" / "AstroSWIN.py"


# --------------------------------------------------------------------------- fixtures and helpers
@pytest.fixture
def sp(monkeypatch):
    """The sirilpy double, importable as ``sirilpy``, reset, with MY_SOCKET set."""
    monkeypatch.syspath_prepend(str(DOUBLE))
    monkeypatch.delitem(sys.modules, "sirilpy", raising=False)
    for key in list(os.environ):
        if key.startswith("SIRILPY_DOUBLE_") or key in ("MY_PIPE", "SIRIL_PYTHON_CLI", "ASTROSWIN_SIRIL_CONFIG"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("MY_SOCKET", "/tmp/siril-double.sock")
    import sirilpy

    assert Path(sirilpy.__file__).resolve().is_relative_to(DOUBLE), "the real sirilpy shadows the double"
    sirilpy.reset()
    yield sirilpy
    sirilpy.reset()


@pytest.fixture(scope="module")
def tiny_model():
    """A tiny random model: fast; its zero-initialised residual head makes it the identity."""
    torch = pytest.importorskip("torch")
    from astroswin.engine.model import AstroSwin2SR, AstroSwin2SRConfig

    torch.manual_seed(0)
    return AstroSwin2SR(AstroSwin2SRConfig.named("tiny")).eval()


def connect(sp, image=None, cli=True, **config):
    sp.configure(**{"lock_error": None, "connect_fails": False, "free_ram_bytes": 16 << 30, **config,
                    "image": image, "cli": cli})
    siril = sp.SirilInterface()
    siril.connect()
    return siril


def star_field(h=64, w=72, n=18, seed=0, fwhm=1.3, background=0.01):
    """Gaussian stars (FWHM ``fwhm`` px) on a flat background, float64, 0..1 scale."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    sigma = fwhm / 2.3548
    img = np.full((h, w), background)
    for _ in range(n):
        y, x = rng.uniform(3, h - 3), rng.uniform(3, w - 3)
        amp = rng.uniform(0.05, 0.6)
        img += amp * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma**2))
    return img


def observed(truth, seed=1, fwhm=3.0, gain=20000.0, read=2e-4):
    """Blur by a Gaussian PSF of FWHM ``fwhm`` px, then Poisson-like and read noise."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    blurred = gaussian_filter(truth, fwhm / 2.3548, mode="reflect")
    noisy = rng.poisson(np.clip(blurred, 0, None) * gain) / gain + rng.normal(0, read, truth.shape)
    return noisy


def mono_f32(seed=0):
    return np.clip(observed(star_field(seed=seed)), 0, 1).astype(np.float32)


def mono_u16(seed=0):
    return np.round(np.clip(observed(star_field(seed=seed)), 0, 1) * 65535).astype(np.uint16)


def rgb_f32(seed=0):
    base = observed(star_field(seed=seed))
    return np.clip(np.stack([base * 0.8, base, base * 1.1]), 0, 1).astype(np.float32)


def never_ask(initial):  # headless runs must never open a dialog
    raise AssertionError("the settings dialog was opened")


def run_plugin(siril, argv=(), *, model, tmp_path, **kwargs):
    kwargs.setdefault("ask_settings", never_ask)
    kwargs.setdefault("config_path", tmp_path / "siril.json")
    loaded = []

    def loader(name):
        loaded.append(name)
        return model

    rc = plugin.run(siril, list(argv), model_loader=kwargs.pop("model_loader", loader), **kwargs)
    return rc, loaded


def names(siril):
    return [c["name"] for c in siril.calls]


def red_lines(siril):
    return [entry["text"] for entry in siril.logs if entry["color"] == "RED"]


def assert_untouched(siril, original):
    assert siril.writes == []
    assert "set_image_pixeldata" not in names(siril)
    assert siril.image.dtype == original.dtype and np.array_equal(siril.image, original, equal_nan=True)
    assert "reset_progress" in names(siril)


def assert_one_good_write(siril, original):
    """Exactly one write, inside the lock, same dtype and layout; progress reported and reset."""
    assert len(siril.writes) == 1
    sets = [c for c in siril.calls if c["name"] == "set_image_pixeldata"]
    assert len(sets) == 1 and sets[0]["in_lock"] and "refused" not in sets[0]
    written = siril.writes[0]["data"]
    assert written.dtype == original.dtype and written.shape == original.shape
    assert siril.lock_entries == 1
    # the heavy work and its progress happen outside the lock
    progress = [c for c in siril.calls if c["name"] == "update_progress"]
    assert progress and all(not c["in_lock"] for c in progress)
    assert all(0.0 <= c["fraction"] <= 1.0 for c in progress)
    assert any(c["fraction"] == 1.0 for c in progress)
    assert [n for n in names(siril) if n != "disconnect"][-1] == "reset_progress"
    assert red_lines(siril) == []
    assert all(len(e["text"].encode()) <= 1021 for e in siril.logs)
    return written


# --------------------------------------------------------------------------- the double itself
def test_double_needs_the_connection_env_var(sp, monkeypatch):
    monkeypatch.delenv("MY_SOCKET")
    with pytest.raises(sp.SirilConnectionError):
        sp.SirilInterface()
    monkeypatch.setenv("MY_PIPE", r"\\.\pipe\siril")
    sp.SirilInterface().connect()


def test_double_refuses_what_siril_refuses(sp):
    img = np.zeros((8, 8), np.float32)
    sp.configure(image=img, cli=True)
    siril = sp.SirilInterface()
    with pytest.raises(sp.SirilConnectionError):
        siril.get_image_pixeldata()  # not connected yet
    siril.connect()
    copy = siril.get_image_pixeldata()
    copy[:] = 1
    assert siril.image.max() == 0, "get_image_pixeldata must return a copy"
    with pytest.raises(sp.SirilError):
        siril.set_image_pixeldata(img)  # outside the lock
    with siril.image_lock():
        for bad in (np.zeros((8, 8)), np.zeros((8, 8), np.uint8), np.zeros(8, np.float32),
                    np.zeros((4, 8, 8), np.float32), np.zeros((1, 1, 8, 8), np.float32), [[0.0]]):
            with pytest.raises(ValueError):
                siril.set_image_pixeldata(bad)
        with pytest.raises(sp.ProcessingThreadBusyError):
            with siril.image_lock():  # nested claim
                pass
        assert siril.undo_save_state("x") is None  # headless: no undo
        with pytest.raises(ValueError):
            siril.undo_save_state("x" * 71)
    assert siril.writes == []
    for bad in (1.5, -0.1, -3.0, float("nan")):
        with pytest.raises(ValueError):
            siril.update_progress("p", bad)
    siril.update_progress("pulse", -1)
    siril.update_progress("text", -2)
    with pytest.raises(ValueError):
        siril.log("x" * 1022)
    with pytest.raises(ValueError):
        siril.log("ok", color="red")
    siril.log("é" * 510, sp.LogColor.RED)  # 1020 bytes: fine


def test_double_lock_errors_gui_undo_and_no_image(sp):
    with pytest.raises(sp.ProcessingThreadBusyError):
        with connect(sp, np.zeros((4, 4), np.uint16), lock_error="busy").image_lock():
            pass
    with pytest.raises(sp.ImageDialogOpenError):
        with connect(sp, np.zeros((4, 4), np.uint16), lock_error="dialog").image_lock():
            pass
    assert issubclass(sp.ProcessingThreadBusyError, sp.SirilError)
    assert issubclass(sp.ImageDialogOpenError, sp.SirilError)
    gui = connect(sp, np.zeros((3, 4, 4), np.float32), cli=False)
    with gui.image_lock():
        assert gui.undo_save_state("AstroSWIN test") is True
        gui.set_image_pixeldata(np.ones((3, 4, 4), np.float32))
    assert gui.undo_states[0]["in_lock"] and len(gui.writes) == 1 and gui.image.max() == 1
    small_ram = connect(sp, np.zeros((8, 8), np.float32), free_ram_bytes=400)
    with small_ram.image_lock(), pytest.raises(sp.SirilError, match="half the free RAM"):
        small_ram.set_image_pixeldata(np.zeros((8, 8), np.float32))  # 256 bytes > 400 / 2
    assert small_ram.writes == []
    empty = connect(sp, None)
    assert not empty.is_image_loaded() and empty.get_image_shape() is None
    with pytest.raises(sp.NoImageError):
        empty.get_image_pixeldata()
    with pytest.raises(sp.CommandError):
        empty.cmd("requires", "9.0.0")
    assert sp.check_module_version(">=1.0.8") and not sp.check_module_version(">=2")
    with pytest.raises(ValueError):
        sp.check_module_version("at least one")


# --------------------------------------------------------------------------- arguments, settings, conversion
def test_no_arguments_mean_the_defaults():
    assert plugin.parse_args([]) == plugin.PluginSettings()
    d = plugin.PluginSettings()
    assert (d.strength, d.model, d.device, d.tile, d.overlap) == (1.0, "small", "auto", None, None)
    import torch

    assert d.engine_settings().tiling(torch.device("cpu")) == (128, 16)  # the engine's measured default


def test_headless_arguments_are_parsed():
    s = plugin.parse_args(["-strength=0.8", "-model=small", "-device=cpu", "-tile=128", "--batch=2",
                           "-precision=FP32", "-threads=3", "-overlap=16"])
    assert (s.strength, s.model, s.device, s.tile, s.batch_size, s.precision, s.threads, s.overlap) == (
        0.8, "small", "cpu", 128, 2, "fp32", 3, 16)
    import torch

    small = plugin.parse_args(["-tile=48"])  # the default overlap follows the tile (tile / 8)
    assert small.overlap is None and small.engine_settings().tiling(torch.device("cpu")) == (48, 6)
    assert plugin.parse_args(["-tile=auto"]).tile is None
    assert plugin.parse_args(['-model="/data/my models/v2"']).model == "/data/my models/v2"
    assert plugin.parse_args(["-help"]) is None


@pytest.mark.parametrize("argv, fragment", [
    (["-bogus=1"], "unknown argument"),
    (["strength=0.8"], "unexpected argument"),
    (["-strength"], "needs a value"),
    (["-strength=abc"], "not a number"),
    (["-strength=1.5"], "outside 0..1"),
    (["-strength=nan"], "finite"),
    (["-tile=8"], "-tile"),
    (["-tile=12.5"], "whole number"),
    (["-device=tpu"], "-device"),
    (["-model="], "-model"),
    (["-tile=64", "-overlap=32"], "-overlap"),
    (["-strength=0.5", "-strength=0.6"], "twice"),
])
def test_bad_arguments_are_refused(argv, fragment):
    with pytest.raises(plugin.UsageError, match=fragment):
        plugin.parse_args(argv)


def test_to_siril_pixels_clips_and_counts():
    f, n = plugin.to_siril_pixels(np.array([[-0.1, 0.25, 1.5, np.nan]], np.float32), np.float32)
    assert f.dtype == np.float32 and n == 2
    assert f[0, :3].tolist() == [0.0, 0.25, 1.0] and np.isnan(f[0, 3])
    u, n = plugin.to_siril_pixels(np.array([[-0.1, 0.5, 1.2, np.nan, 1.0, 1 / 65535 * 0.6]], np.float32), np.uint16)
    assert u.dtype == np.uint16 and n == 3
    assert u.tolist() == [[0, 32768, 65535, 0, 65535, 1]]
    src = np.array([[2.0]], np.float32)
    plugin.to_siril_pixels(src, np.float32)
    assert src[0, 0] == 2.0, "not in place unless asked"


def test_undo_text_fits_a_fits_history_card(tmp_path):
    assert plugin.undo_text(plugin.PluginSettings(strength=0.8)) == "AstroSWIN strength=0.80 model=small"
    folder = tmp_path / ("a-very-long-model-folder-name-" * 4)
    folder.mkdir()
    text = plugin.undo_text(plugin.PluginSettings(model=str(folder)))
    assert len(text.encode()) <= 70 and str(tmp_path) not in text


def test_settings_are_remembered(tmp_path):
    path = tmp_path / "cfg" / "siril.json"
    assert plugin.load_remembered(path) == plugin.PluginSettings()
    chosen = plugin.settings_from_fields("0.55", "small", "CPU", "384")
    plugin.save_remembered(chosen, path)
    assert json.loads(path.read_text()) == {"strength": 0.55, "model": "small", "device": "cpu", "tile": 384}
    assert plugin.load_remembered(path) == chosen
    path.write_text('{"strength": 7, "tile": 512, "device": "gpu"}')  # a bad field falls back alone
    back = plugin.load_remembered(path)
    assert (back.strength, back.tile, back.device) == (1.0, 512, "auto")
    path.write_text("not json")
    assert plugin.load_remembered(path) == plugin.PluginSettings()


def test_default_config_path_follows_the_platform_dirs(monkeypatch, tmp_path):
    monkeypatch.delenv("ASTROSWIN_SIRIL_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    if not sys.platform.startswith("win"):
        assert plugin.default_config_path() == tmp_path / "astroswin" / "siril.json"
    monkeypatch.setenv("ASTROSWIN_SIRIL_CONFIG", str(tmp_path / "x.json"))
    assert plugin.default_config_path() == tmp_path / "x.json"


def test_double_mono_reads_back_2d_however_it_was_written(sp):
    """sirilpy reshapes a 1-channel image to (H, W): a (1, H, W) write or setting reads back 2-D."""
    siril = connect(sp, np.zeros((4, 5), np.float32))
    with siril.image_lock():
        siril.set_image_pixeldata(np.ones((1, 4, 5), np.float32))
    assert siril.writes[0]["data"].shape == (1, 4, 5)  # what the script sent
    assert siril.get_image_pixeldata().shape == (4, 5)  # what Siril gives back
    assert siril.get_image().data.shape == (4, 5) and siril.get_image().channels == 1
    assert siril.get_image_shape() == (1, 4, 5)
    assert siril.get_image_pixeldata(shape=[1, 1, 3, 2]).shape == (2, 3)
    assert connect(sp, np.zeros((1, 4, 5), np.uint16)).get_image_pixeldata().shape == (4, 5)
    rgb = connect(sp, np.zeros((3, 4, 5), np.float32))
    assert rgb.get_image_pixeldata().shape == (3, 4, 5) and rgb.get_image_shape() == (3, 4, 5)


# --------------------------------------------------------------------------- restoring through the plugin
@pytest.mark.parametrize("make", [mono_f32, mono_u16, rgb_f32], ids=["mono-float32", "mono-uint16", "rgb-float32"])
def test_headless_restores_in_place(sp, tiny_model, tmp_path, make):
    image = make()
    siril = connect(sp, image, cli=True)
    seen = {}

    def restore(data, model, settings, progress=None):
        from astroswin.engine import restore_array

        seen["in_lock"] = siril.in_lock
        seen["settings"] = settings
        return restore_array(data, model, settings, progress=progress)

    rc, loaded = run_plugin(siril, [], model=tiny_model, tmp_path=tmp_path, restore=restore)
    assert rc == 0
    assert loaded == ["small"] and seen["in_lock"] is False
    assert seen["settings"] == plugin.PluginSettings().engine_settings()
    written = assert_one_good_write(siril, image)
    assert "undo_save_state" not in names(siril)  # headless Siril keeps no undo
    assert not (tmp_path / "siril.json").exists()  # headless runs do not touch the remembered settings
    # the tiny model is the identity: same picture, in the same units
    scale = 65535.0 if image.dtype == np.uint16 else 1.0
    assert np.abs(written.astype(np.float64) - image).max() <= 1e-3 * scale


@pytest.mark.parametrize("layout", ["2d", "1hw"])
def test_mono_image_written_by_an_earlier_script_is_read_as_siril_gives_it(sp, tiny_model, tmp_path, layout):
    """Another script wrote the mono image as (H, W) or (1, H, W): Siril gives it back (H, W)."""
    image = mono_f32()
    earlier = connect(sp, np.zeros_like(image), cli=True)
    with earlier.image_lock():
        earlier.set_image_pixeldata(image if layout == "2d" else image[None])
    siril = connect(sp, earlier.image, cli=True)  # the next script finds what Siril holds now
    seen = {}

    def restore(data, model, settings, progress=None):
        seen["shape"] = data.shape
        return data

    rc, _ = run_plugin(siril, [], model=tiny_model, tmp_path=tmp_path, restore=restore)
    assert rc == 0 and seen["shape"] == image.shape
    written = assert_one_good_write(siril, image)
    assert np.array_equal(written, image) and siril.image.shape == image.shape


def test_a_1hw_mono_read_is_written_back_in_the_same_layout(sp, tiny_model, tmp_path, monkeypatch):
    """Should a sirilpy ever hand mono over as (1, H, W), the plugin restores and writes that layout."""
    image = mono_u16()
    siril = connect(sp, image, cli=True)
    real_get = siril.get_image_pixeldata
    monkeypatch.setattr(siril, "get_image_pixeldata", lambda *a, **k: real_get(*a, **k)[None])
    seen = {}

    def restore(data, model, settings, progress=None):
        seen["shape"] = data.shape
        return data

    rc, _ = run_plugin(siril, [], model=tiny_model, tmp_path=tmp_path, restore=restore)
    assert rc == 0 and red_lines(siril) == [] and seen["shape"] == (1,) + image.shape
    (write,) = siril.writes
    assert write["data"].shape == (1,) + image.shape and write["data"].dtype == np.uint16
    assert siril.image.shape == image.shape and np.array_equal(siril.image, image)


def test_gui_run_saves_undo_inside_the_lock_and_remembers(sp, tiny_model, tmp_path):
    image = rgb_f32()
    asked = []

    def ask(initial):
        asked.append(initial)
        return plugin.settings_from_fields("0.5", "small", "cpu", "128", base=initial)

    siril = connect(sp, image, cli=False)
    rc, _ = run_plugin(siril, [], model=tiny_model, tmp_path=tmp_path, ask_settings=ask)
    assert rc == 0
    assert_one_good_write(siril, image)
    undo = [c for c in siril.calls if c["name"] == "undo_save_state"]
    assert len(undo) == 1 and undo[0]["in_lock"] and undo[0]["result"] is True
    assert undo[0]["seq"] < siril.writes[0]["seq"]
    assert undo[0]["text"] == "AstroSWIN strength=0.50 model=small" and len(undo[0]["text"].encode()) <= 70
    assert asked == [plugin.PluginSettings()]
    # the next GUI run starts from what was chosen
    siril2 = connect(sp, image, cli=False)
    rc, _ = run_plugin(siril2, [], model=tiny_model, tmp_path=tmp_path, ask_settings=ask)
    assert rc == 0 and (asked[1].strength, asked[1].device, asked[1].tile) == (0.5, "cpu", 128)


def test_gui_cancel_changes_nothing(sp, tiny_model, tmp_path):
    image = mono_f32()
    siril = connect(sp, image, cli=False)
    rc, loaded = run_plugin(siril, [], model=tiny_model, tmp_path=tmp_path, ask_settings=lambda initial: None)
    assert rc == 0 and loaded == []
    assert_untouched(siril, image)
    assert siril.lock_entries == 0


def test_gui_with_arguments_skips_the_dialog(sp, tiny_model, tmp_path):
    image = mono_u16()
    siril = connect(sp, image, cli=False)
    rc, _ = run_plugin(siril, ["-strength=0.3"], model=tiny_model, tmp_path=tmp_path)
    assert rc == 0
    assert [c["text"] for c in siril.calls if c["name"] == "undo_save_state"] == ["AstroSWIN strength=0.30 model=small"]


@pytest.mark.parametrize("cli", [True, False], ids=["headless", "gui"])
def test_no_image_says_so_and_writes_nothing(sp, tiny_model, tmp_path, cli):
    siril = connect(sp, None, cli=cli)
    rc, loaded = run_plugin(siril, [], model=tiny_model, tmp_path=tmp_path)
    assert rc == 1 and loaded == []
    assert siril.writes == [] and siril.lock_entries == 0 and "set_image_pixeldata" not in names(siril)
    (line,) = red_lines(siril)
    assert "no image is loaded" in line and "Nothing was changed" in line
    assert names(siril)[-1] == "reset_progress"
    boxes = [m for m in siril.messageboxes if m["kind"] == "error"]
    assert len(boxes) == (0 if cli else 1)


@pytest.mark.parametrize("cli", [True, False], ids=["headless", "gui"])
@pytest.mark.parametrize("lock_error, fragment", [("busy", "busy"), ("dialog", "dialog is open"),
                                                  ("error", "could not claim")])
def test_busy_siril_is_one_clear_error(sp, tiny_model, tmp_path, cli, lock_error, fragment):
    image = mono_f32()
    siril = connect(sp, image, cli=cli, lock_error=lock_error)
    rc, _ = run_plugin(siril, ["-strength=0.9"], model=tiny_model, tmp_path=tmp_path)
    assert rc == 1
    assert_untouched(siril, image)
    (line,) = red_lines(siril)
    assert fragment in line and "not changed" in line
    assert len([m for m in siril.messageboxes if m["kind"] == "error"]) == (0 if cli else 1)
    assert "undo_save_state" not in names(siril)


def test_engine_failure_leaves_the_image_untouched(sp, tiny_model, tmp_path):
    from astroswin.engine import EngineError

    image = rgb_f32()
    siril = connect(sp, image, cli=False)

    def broken(data, model, settings, progress=None):
        progress(1, 4)
        raise EngineError("simulated engine failure")

    rc, _ = run_plugin(siril, ["-device=cpu"], model=tiny_model, tmp_path=tmp_path, restore=broken)
    assert rc == 1
    assert_untouched(siril, image)
    assert siril.lock_entries == 0
    (line,) = red_lines(siril)
    assert "simulated engine failure" in line
    assert [m["kind"] for m in siril.messageboxes] == ["error"]


def _header_text(**cards) -> str:
    """FITS header text as Siril hands it over: 80-character cards, one per line."""
    from astropy.io import fits

    return "\n".join(str(card) for card in fits.Header(list(cards.items())).cards)


@pytest.mark.parametrize("make", [mono_u16, mono_f32], ids=["raw uint16", "flat-equalised float"])
def test_raw_cfa_frame_is_refused_before_any_work(sp, tiny_model, tmp_path, make):
    """A raw frame opened without debayering: Siril keeps BAYERPAT until it debayers (or splits
    the mosaic) and treats an image that has it as a mosaic, so the keyword alone refuses it,
    whatever its pixels look like: one red line saying to debayer first; the model is never
    loaded and the image is untouched."""
    raw = make()
    siril = connect(sp, raw, cli=False, header=_header_text(SIMPLE=True, BAYERPAT="RGGB", XBAYROFF=0))
    rc, loaded = run_plugin(siril, ["-device=cpu"], model=tiny_model, tmp_path=tmp_path)
    assert rc == 1 and loaded == []
    assert_untouched(siril, raw)
    assert not any(e["text"].startswith("AstroSWIN: restoring") for e in siril.logs)
    (line,) = red_lines(siril)
    assert "raw CFA mosaic (BAYERPAT RGGB)" in line and "debayer it first" in line and "Nothing was changed" in line


def test_bayerpat_none_is_not_a_mosaic(sp, tiny_model, tmp_path):
    image = mono_f32()
    siril = connect(sp, image, cli=True, header=_header_text(SIMPLE=True, BAYERPAT="NONE"))
    rc, loaded = run_plugin(siril, ["-device=cpu"], model=tiny_model, tmp_path=tmp_path)
    assert rc == 0 and loaded
    assert_one_good_write(siril, image)


def test_unknown_model_is_an_engine_error(sp, tmp_path):
    pytest.importorskip("torch")
    from astroswin.engine import load_model

    image = mono_u16()
    siril = connect(sp, image, cli=True)
    rc, _ = run_plugin(siril, ["-model=" + "no/such/model/" * 80], model=None, tmp_path=tmp_path,
                       model_loader=load_model)
    assert rc == 1
    assert_untouched(siril, image)
    (line,) = red_lines(siril)
    assert "unknown model" in line and len(line.encode()) <= 1021


def test_unexpected_error_is_reported_not_raised(sp, tiny_model, tmp_path, capsys):
    image = mono_f32()
    siril = connect(sp, image, cli=True)

    def crash(*args, **kwargs):
        raise RuntimeError("boom\nsecond line")

    rc, _ = run_plugin(siril, [], model=tiny_model, tmp_path=tmp_path, restore=crash)
    assert rc == 1
    assert_untouched(siril, image)
    (line,) = red_lines(siril)
    assert "RuntimeError: boom second line" in line and "\n" not in line
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["-bogus=1"], ["-strength=abc"], ["-tile=3"]])
def test_bad_arguments_write_nothing(sp, tiny_model, tmp_path, argv):
    image = mono_f32()
    siril = connect(sp, image, cli=True)
    rc, loaded = run_plugin(siril, argv, model=tiny_model, tmp_path=tmp_path)
    assert rc == 2 and loaded == []
    assert_untouched(siril, image)
    (line,) = red_lines(siril)
    assert "usage:" in line and len(line.encode()) <= 1021


def test_help_logs_the_usage(sp, tiny_model, tmp_path):
    siril = connect(sp, mono_f32(), cli=True)
    rc, loaded = run_plugin(siril, ["-help"], model=tiny_model, tmp_path=tmp_path)
    assert rc == 0 and loaded == [] and siril.writes == []
    assert any("usage:" in e["text"] for e in siril.logs)


def test_clipping_is_logged_only_when_it_happens(sp, tiny_model, tmp_path):
    image = mono_f32()
    siril = connect(sp, image, cli=True)
    rc, _ = run_plugin(siril, [], model=tiny_model, tmp_path=tmp_path,
                       restore=lambda data, model, settings, progress=None: data * 20.0 - 0.25)
    assert rc == 0
    written = assert_one_good_write(siril, image)
    assert written.min() >= 0.0 and written.max() <= 1.0
    stretched = image * 20.0 - 0.25
    expected = int(np.count_nonzero((stretched > 1) | (stretched < 0)))
    assert expected > 0 and written.min() == 0.0 and written.max() == 1.0
    (line,) = [e["text"] for e in siril.logs if "clipped" in e["text"]]
    assert line.startswith(f"AstroSWIN: {expected} pixel(s)")
    siril2 = connect(sp, image, cli=True)
    assert run_plugin(siril2, [], model=tiny_model, tmp_path=tmp_path)[0] == 0
    assert not any("clipped" in e["text"] for e in siril2.logs)


def test_nan_pixels_stay_nan(sp, tiny_model, tmp_path):
    image = mono_f32()
    image[5, 7] = np.nan
    siril = connect(sp, image, cli=True)
    assert run_plugin(siril, [], model=tiny_model, tmp_path=tmp_path)[0] == 0
    written = assert_one_good_write(siril, image)
    assert np.isnan(written[5, 7]) and np.isfinite(np.delete(written.ravel(), 5 * image.shape[1] + 7)).all()


def test_progress_is_clamped_and_in_range(sp, tiny_model, tmp_path):
    image = mono_f32()
    siril = connect(sp, image, cli=True)

    def odd_progress(data, model, settings, progress=None):
        for done, total in [(0, 0), (1, 3), (5, 3), (3, 3)]:
            progress(done, total)
        return data

    assert run_plugin(siril, [], model=tiny_model, tmp_path=tmp_path, restore=odd_progress)[0] == 0
    assert_one_good_write(siril, image)


def test_main_connects_runs_and_disconnects(sp, tiny_model, tmp_path):
    image = mono_u16()
    sp.configure(image=image, cli=True)
    rc = plugin.main([], model_loader=lambda name: tiny_model, config_path=tmp_path / "c.json",
                     ask_settings=never_ask)
    assert rc == 0
    (siril,) = sp.INSTANCES
    assert_one_good_write(siril, image)
    assert names(siril)[0] == "connect" and names(siril)[-1] == "disconnect"


def test_main_without_siril_connection(sp, monkeypatch, capsys):
    monkeypatch.delenv("MY_SOCKET")
    assert plugin.main([]) == 3
    assert "cannot connect to Siril" in capsys.readouterr().err
    monkeypatch.setenv("MY_SOCKET", "x")
    sp.configure(connect_fails=True)
    assert plugin.main([]) == 3


# --------------------------------------------------------------------------- the trained model
def _bundled_small():
    pytest.importorskip("torch")
    from astroswin.engine import bundled_models

    assert "small" in bundled_models(), "the bundled 'small' weights are missing from engine/weights/small"


def test_restored_star_field_is_closer_to_the_truth(sp, tmp_path):
    _bundled_small()
    truth = star_field(h=96, w=96, n=30, seed=3)
    image = np.clip(observed(truth, seed=4), 0, 1).astype(np.float32)
    siril = connect(sp, image, cli=True)
    rc = plugin.run(siril, [], config_path=tmp_path / "c.json", ask_settings=never_ask)
    assert rc == 0
    restored = assert_one_good_write(siril, image).astype(np.float64)
    mse_in = np.mean((image - truth) ** 2)
    mse_out = np.mean((restored - truth) ** 2)
    assert mse_out < 0.9 * mse_in, (mse_in, mse_out)


# --------------------------------------------------------------------------- the AstroSWIN.py shim
def test_shim_header_and_requirement_line():
    text = SHIM.read_text()
    head = text.split('"""')[1]
    assert "AstroSWIN" in head and "Version:" in head and "SPDX-License-Identifier: MIT" in head
    assert "deconvolution" in head.lower()
    assert 's.check_module_version(">=1.0.8")' in text  # Siril's script index only matches double quotes
    assert "import sirilpy as s" in text and "ensure_installed" in text and "ASTROSWIN_PIP_SPEC" in text
    compile(text, str(SHIM), "exec")


def _shim_env(tmp_path, image=None, extra_path=(), **env):
    e = {k: v for k, v in os.environ.items() if not k.startswith("SIRILPY_DOUBLE_")}
    e.pop("MY_PIPE", None)
    e.update(MY_SOCKET="/tmp/siril-double.sock", SIRIL_PYTHON_CLI="1", OMP_NUM_THREADS="1",
             SIRILPY_DOUBLE_DUMP=str(tmp_path / "dump"), ASTROSWIN_SIRIL_CONFIG=str(tmp_path / "cfg.json"),
             PYTHONPATH=os.pathsep.join([*map(str, extra_path), str(DOUBLE), os.environ.get("PYTHONPATH", "")]))
    if image is not None:
        np.save(tmp_path / "image.npy", image)
        e["SIRILPY_DOUBLE_IMAGE"] = str(tmp_path / "image.npy")
    e.update(env)
    return e


def _run_shim(tmp_path, args=(), *, prelude=None, **env_kwargs):
    if prelude is None:
        cmd = [sys.executable, str(SHIM), *args]
    else:  # same shim, run as __main__ after a prelude (e.g. swapping in a test model)
        code = prelude + f"\nimport runpy, sys\nsys.argv = [{str(SHIM)!r}, *{list(args)!r}]\nrunpy.run_path({str(SHIM)!r}, run_name='__main__')\n"
        cmd = [sys.executable, "-c", code]
    proc = subprocess.run(cmd, env=_shim_env(tmp_path, **env_kwargs), capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    dump = tmp_path / "dump" / "calls.json"
    doc = json.loads(dump.read_text()) if dump.exists() else None
    return proc, doc


def _check_dump_one_write(doc, tmp_path, image):
    (iface,) = doc["interfaces"]
    assert len(iface["writes"]) == 1 and iface["writes"][0]["in_lock"]
    assert iface["lock_entries"] == 1
    assert [c["name"] for c in iface["calls"]].count("set_image_pixeldata") == 1
    assert "undo_save_state" not in [c["name"] for c in iface["calls"]]
    assert all(0.0 <= p["fraction"] <= 1.0 for p in iface["progress"])
    assert any(p["fraction"] == 1.0 for p in iface["progress"])
    assert iface["calls"][-2]["name"] == "reset_progress"  # then disconnect
    written = np.load(tmp_path / "dump" / iface["writes"][0]["file"])
    assert written.dtype == image.dtype and written.shape == image.shape
    assert {"name": "check_module_version", "requires": ">=1.0.8"} in doc["module_calls"]
    return written


TINY_PRELUDE = textwrap.dedent("""
    import torch, astroswin.engine as engine
    from astroswin.engine.model import AstroSwin2SR, AstroSwin2SRConfig
    torch.manual_seed(0)
    _tiny = AstroSwin2SR(AstroSwin2SRConfig.named("tiny")).eval()
    engine.load_model = lambda spec: _tiny
""")


def test_shim_headless_no_arguments_restores_once(tmp_path):
    """The shim run as Siril would, with a tiny model swapped in: exit 0, one write in the lock."""
    image = mono_u16()
    proc, doc = _run_shim(tmp_path, prelude=TINY_PRELUDE, image=image)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _check_dump_one_write(doc, tmp_path, image)
    assert "AstroSWIN: done" in proc.stdout


def test_shim_headless_default_model_end_to_end(tmp_path):
    """Exactly as Siril runs it (``pyscript AstroSWIN.py``): the bundled default model, no arguments."""
    _bundled_small()
    truth = star_field(h=80, w=88, n=24, seed=5)
    image = np.clip(observed(truth, seed=6), 0, 1).astype(np.float32)
    proc, doc = _run_shim(tmp_path, image=image)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    written = _check_dump_one_write(doc, tmp_path, image).astype(np.float64)
    assert np.mean((written - truth) ** 2) < np.mean((image - truth) ** 2)


def test_shim_no_image_writes_nothing(tmp_path):
    proc, doc = _run_shim(tmp_path, image=None)
    assert proc.returncode == 1
    (iface,) = doc["interfaces"]
    assert iface["writes"] == [] and iface["lock_entries"] == 0
    assert any("no image is loaded" in e["text"] and e["color"] == "RED" for e in iface["logs"])
    assert "no image is loaded" in proc.stdout


def test_shim_without_connection_exits_non_zero(tmp_path):
    proc, _ = _run_shim(tmp_path, image=mono_f32(), MY_SOCKET="")
    assert proc.returncode == 3 and "cannot connect to Siril" in proc.stderr


def test_shim_refuses_an_old_sirilpy(tmp_path):
    proc, doc = _run_shim(tmp_path, image=mono_f32(), SIRILPY_DOUBLE_VERSION="1.0.5")
    assert proc.returncode == 1 and "sirilpy >= 1.0.8" in proc.stdout
    assert doc["interfaces"] == []


@pytest.mark.parametrize("mode", ["fail", "ok"])
def test_shim_installs_missing_astroswin_or_says_how(tmp_path, mode):
    """astroswin not importable: ensure_installed(spec from ASTROSWIN_PIP_SPEC), else exact instructions."""
    shadow = tmp_path / "shadow"
    (shadow / "astroswin").mkdir(parents=True)
    (shadow / "astroswin" / "__init__.py").write_text("raise ImportError('simulated: astroswin is not installed')\n")
    proc, doc = _run_shim(tmp_path, image=mono_f32(), extra_path=[shadow], SIRILPY_DOUBLE_ENSURE=mode,
                          ASTROSWIN_PIP_SPEC="astroswin>=0.1")
    assert proc.returncode == 1
    ensure = [c for c in doc["module_calls"] if c["name"] == "ensure_installed"]
    assert ensure == [{"name": "ensure_installed", "packages": ["astroswin"], "version_constraints": ">=0.1",
                       "reinstall": False}]
    assert '-m pip install "astroswin>=0.1"' in proc.stdout
    (iface,) = doc["interfaces"]  # the shim connected only to log the instructions in red
    assert iface["writes"] == [] and iface["logs"][0]["color"] == "RED"


def test_image_replaced_during_restoration_is_not_overwritten(sp, tiny_model, tmp_path):
    image = mono_f32()
    siril = connect(sp, image, cli=True)
    other = np.zeros((3, 10, 12), np.float32)

    def user_opens_another_image(data, model, settings, progress=None):
        siril.image = other.copy()  # what Siril holds now
        return data

    rc, _ = run_plugin(siril, [], model=tiny_model, tmp_path=tmp_path, restore=user_opens_another_image)
    assert rc == 1
    assert siril.writes == [] and np.array_equal(siril.image, other)
    (line,) = red_lines(siril)
    assert "changed during the restoration" in line


def test_image_of_the_same_size_loaded_during_restoration_is_not_overwritten(sp, tiny_model, tmp_path):
    """Same shape, another image: its header tells it apart."""
    image = mono_f32()
    siril = connect(sp, image, cli=False)
    other = np.full_like(image, 0.25)

    def user_opens_another_image(data, model, settings, progress=None):
        siril.image, siril.header = other.copy(), "SIMPLE  =                    T\nOBJECT  = 'M42     '"
        return data

    rc, _ = run_plugin(siril, ["-strength=1"], model=tiny_model, tmp_path=tmp_path, restore=user_opens_another_image)
    assert rc == 1
    assert siril.writes == [] and siril.undo_states == [] and np.array_equal(siril.image, other)
    (line,) = red_lines(siril)
    assert "changed during the restoration" in line


def test_gui_without_a_display_falls_back_to_the_remembered_settings(sp, tiny_model, tmp_path, monkeypatch):
    tkinter = pytest.importorskip("tkinter")

    def no_display(*args, **kwargs):
        raise tkinter.TclError("no display name")

    monkeypatch.setattr(tkinter, "Tk", no_display)  # never opens a window, even where a display exists
    plugin.save_remembered(plugin.PluginSettings(strength=0.4, tile=128), tmp_path / "siril.json")
    image = mono_f32()
    siril = connect(sp, image, cli=False)
    seen = {}

    def restore(data, model, settings, progress=None):
        seen["settings"] = settings
        return data

    rc, _ = run_plugin(siril, [], model=tiny_model, tmp_path=tmp_path, ask_settings=None, restore=restore)
    assert rc == 0
    assert (seen["settings"].strength, seen["settings"].tile) == (0.4, 128)
    assert any("cannot open the settings dialog" in e["text"] and e["color"] == "SALMON" for e in siril.logs)
    assert_one_good_write(siril, image)


def test_remembered_auto_tile_round_trips(tmp_path):
    """The dialog's 'auto' tile is saved as null and comes back as auto, not as an error."""
    path = plugin.save_remembered(plugin.PluginSettings(strength=0.7), tmp_path / "siril.json")
    assert json.loads(path.read_text())["tile"] is None
    back = plugin.load_remembered(path)
    assert (back.strength, back.tile) == (0.7, None)
    assert plugin.settings_from_fields(0.5, "small", "cpu", "auto").tile is None


@pytest.mark.parametrize("call, fragment", [("undo_save_state", "undo state"), ("set_image_pixeldata", "did not accept")])
def test_a_write_that_fails_softly_is_reported_not_called_done(sp, tiny_model, tmp_path, call, fragment):
    """Older sirilpy prints some failures and returns False: the script must not call that done."""
    image = mono_f32()
    siril = connect(sp, image, cli=False, soft_failures=(call,))
    rc, _ = run_plugin(siril, ["-strength=0.9"], model=tiny_model, tmp_path=tmp_path)
    assert rc == 1 and siril.writes == []
    assert np.array_equal(siril.image, image) and "reset_progress" in names(siril)
    (line,) = red_lines(siril)
    assert fragment in line and "not changed" in line
    if call == "undo_save_state":
        assert "set_image_pixeldata" not in names(siril)  # no write without its undo state
    else:  # the undo step is in Siril's history already: the message says so
        assert "undo step" in line
