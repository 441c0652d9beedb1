"""restore_array: shapes, bad pixels, strength, saturation, settings."""

from __future__ import annotations

import mmap

import numpy as np
import pytest

from astroswin.engine import EngineError, RestoreSettings, restore_array

FAST = RestoreSettings(tile=64, overlap=16, device="cpu")


def _noise(shape, seed=0, sky=300.0):
    return np.random.default_rng(seed).normal(sky, 5.0, shape).astype(np.float32)


@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (1, 500), (3, 1, 1), (1, 20, 30), (3, 33, 47), (90, 70)])
def test_any_size_mono_and_rgb_keep_shape_and_dtype(shape, perturbed_model):
    data = _noise(shape)
    out = restore_array(data, perturbed_model, FAST)
    assert out.shape == data.shape and out.dtype == np.float32 and np.isfinite(out).all()


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32, np.float64])
def test_integer_and_double_inputs(dtype, tiny_model):
    data = (np.random.default_rng(0).uniform(10, 100, (40, 40))).astype(dtype)
    out = restore_array(data, tiny_model, FAST)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, data.astype(np.float32), rtol=1e-5)


def test_nan_and_inf_pixels_come_back_exactly(perturbed_model):
    data = _noise((3, 60, 80))
    data[:, :4, :] = np.nan  # a NaN border, as registration leaves
    data[:, :, -3:] = np.nan
    data[1, 30, 30] = np.inf
    data[2, 31, 31] = -np.inf
    out = restore_array(data, perturbed_model, FAST)
    bad = ~np.isfinite(data)
    np.testing.assert_array_equal(out[bad], data[bad])
    assert np.isfinite(out[~bad]).all()
    assert abs(float(np.median(out[~bad])) - 300.0) < 5.0  # the fill did not leak into the sky


@pytest.mark.parametrize("fill", [0.0, np.nan])
def test_an_empty_border_changes_nothing_beyond_it(fill):
    """A registration border or a mosaic's empty corner, exact zeros (blank: the sky is far
    from zero) or NaN, comes back as it was, and the data beside it restores as without it.
    Zeros used to drag the stretch to 0; either border shifted the emission map with its size
    (a bright star 60 px away came back 3.4% brighter with a 55% border)."""
    from astroswin.engine import load_model

    model = load_model("small")
    rng = np.random.default_rng(1)
    image = rng.normal(1000.0, 10.0, (160, 160)).astype(np.float32)
    yy, xx = np.mgrid[:160, :160]
    image += (3e4 / (2 * np.pi * 4.0) * np.exp(-((yy - 80) ** 2 + (xx - 130) ** 2) / 8.0)).astype(np.float32)
    settings = RestoreSettings(device="cpu")
    whole = restore_array(image, model, settings)
    bordered = image.copy()
    bordered[:, :88] = fill  # 55%
    out = restore_array(bordered, model, settings)
    np.testing.assert_array_equal(out[:, :88], bordered[:, :88])
    beyond = np.abs(out[:, 104:] - whole[:, 104:])
    assert beyond.mean() < 0.05 * 10.0 and beyond.max() < 0.005 * whole[80, 130]


def test_all_nan_image_is_a_clear_error(tiny_model):
    with pytest.raises(EngineError, match="no finite pixel"):
        restore_array(np.full((10, 10), np.nan, np.float32), tiny_model, FAST)


@pytest.mark.parametrize("shape", [(4, 10, 10), (2, 10, 10), (10,), (1, 1, 10, 10)])
def test_unsupported_shapes_are_clear_errors(shape, tiny_model):
    with pytest.raises(EngineError, match="unsupported image shape"):
        restore_array(np.ones(shape, np.float32), tiny_model, FAST)


def test_strength_blends_linearly(perturbed_model):
    data = _noise((50, 50))
    data[20:23, 20:23] += 2000
    full = restore_array(data, perturbed_model, FAST)
    np.testing.assert_array_equal(restore_array(data, perturbed_model, RestoreSettings(strength=0.0, tile=64, overlap=16, device="cpu")), data)
    half = restore_array(data, perturbed_model, RestoreSettings(strength=0.5, tile=64, overlap=16, device="cpu"))
    np.testing.assert_allclose(half, 0.5 * full + 0.5 * data, rtol=1e-5, atol=1e-3)


def test_saturated_plateau_is_passed_through(perturbed_model):
    data = _noise((64, 64))
    data[30:34, 30:34] = 65535.0  # a clipped star core
    out = restore_array(data, perturbed_model, FAST)
    np.testing.assert_array_equal(out[30:34, 30:34], 65535.0)


def test_a_faint_repeated_maximum_is_not_a_saturated_plateau(perturbed_model):
    """A plateau is a shared maximum far (>50 sigma) above the background: a faint patch of
    pixels sharing the image's maximum 30 sigma above the sky (a quantised faint source, an
    integer image's flat top) is data to restore, not a clipped core to pass through; a
    plateau at 65535 still is passed through."""
    from astroswin.engine.normalize import estimate_stretch
    from astroswin.engine.restore import saturation_level

    faint = _noise((64, 64))
    faint[30:32, 30:32] = 300.0 + 30 * 5.0  # 4 pixels at the maximum, 30 sigma up
    params = estimate_stretch(faint[None])
    assert (faint == faint.max()).sum() == 4 and faint.max() < params.background[0] + 50 * params.noise
    assert saturation_level(faint[None], params) is None
    out = restore_array(faint, perturbed_model, FAST)
    assert np.abs(out[30:32, 30:32] - faint[30:32, 30:32]).min() > 5.0  # restored (by 35-58 ADU), every one

    clipped = faint.copy()
    clipped[10:12, 50:52] = 65535.0
    out = restore_array(clipped, perturbed_model, FAST)
    np.testing.assert_array_equal(out[10:12, 50:52], 65535.0)
    assert np.abs(out[30:32, 30:32] - clipped[30:32, 30:32]).min() > 5.0  # under the clip level


def test_each_colour_channel_clips_at_its_own_level(perturbed_model):
    """White-balanced RGB clips each channel at its own level; only the brightest channel's
    core was once passed through, the others came back 3-4x brighter and falsely coloured."""
    data = np.stack([_noise((64, 64), seed) for seed in range(3)])
    levels = np.array([65535.0, 52428.0, 39321.0], np.float32)
    data[:, 28:35, 28:35] += 30000.0  # a bright star whose core clips in every channel
    data[:, 30:33, 30:33] = 1e6
    data = np.minimum(data, levels[:, None, None])
    out = restore_array(data, perturbed_model, FAST)
    for channel, level in enumerate(levels):
        clipped = data[channel] == level
        assert clipped.sum() >= 9
        np.testing.assert_array_equal(out[channel][clipped], level)


@pytest.mark.parametrize("value", [0.0, 1e-20, 1234.5])
def test_a_constant_image_comes_back_unchanged(value, perturbed_model):
    """Nothing to restore; the stretch had no noise to key on and once added an offset."""
    data = np.full((3, 40, 50), value, np.float32)
    data[1, 5, 5] = np.nan
    out = restore_array(data, perturbed_model, FAST)
    np.testing.assert_array_equal(out, data)
    assert restore_array(np.full((1, 1), value), perturbed_model, FAST).item() == np.float32(value)


def test_input_is_not_modified(perturbed_model):
    data = _noise((3, 40, 40))
    data[0, 0, 0] = np.nan
    before = data.copy()
    restore_array(data, perturbed_model, FAST)
    np.testing.assert_array_equal(data, before)


@pytest.mark.parametrize("kwargs,match", [({"tile": 64.0}, "tile must be a whole"), ({"emission_scale": 25.5}, "emission scale must be a whole"), ({"strength": "0.5"}, "strength must be a number"), ({"threads": -1}, "threads must be >= 1"), ({"threads": 2.5}, "threads must be a whole"), ({"batch_size": True}, "batch size must be a whole"), ({"strength": 1.5}, "strength"), ({"tile": 32, "overlap": 16}, "tile"), ({"batch_size": 0}, "batch"), ({"device": "tpu"}, "unknown device"), ({"precision": "fp8"}, "unknown precision"), ({"precision": "fp16", "device": "cpu"}, "fp16")])
def test_bad_settings_are_clear_errors(kwargs, match, tiny_model):
    with pytest.raises(EngineError, match=match):
        restore_array(_noise((20, 20)), tiny_model, RestoreSettings(**kwargs))


def test_a_modified_copy_on_write_map_is_neither_reverted_nor_read_from_the_file(tmp_path, perturbed_model):
    """Pages of a read-only view were dropped (MADV_DONTNEED) whatever the mapping: for a
    copy-on-write memmap that drops the caller's changes, and the restoration read the file."""
    path = tmp_path / "frame.raw"
    _noise((64, 64)).tofile(path)
    mapped = np.memmap(path, dtype=np.float32, mode="c", shape=(64, 64))
    mapped -= 300.0  # the caller's own change, held privately
    view = mapped.view()
    view.flags.writeable = False
    expected = restore_array(np.array(mapped), perturbed_model, FAST)
    out = restore_array(view, perturbed_model, FAST)
    assert abs(float(mapped.mean())) < 1.0
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-3)


def test_threads_setting_is_the_calls_own(tiny_model):
    import torch

    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    restore_array(_noise((20, 20)), tiny_model, RestoreSettings(threads=wanted, device="cpu"))
    assert torch.get_num_threads() == before


def test_progress_reports_every_batch(tiny_model):
    calls = []
    restore_array(_noise((200, 200)), tiny_model, RestoreSettings(tile=64, overlap=16, batch_size=2, device="cpu"), progress=lambda d, t: calls.append((d, t)))
    total = calls[0][1]
    assert [d for d, _ in calls] == list(range(2, total + 1, 2)) + ([total] if total % 2 else [])
    assert calls[-1] == (total, total)


def test_bundled_model_sharpens_and_keeps_flux_and_sky(star_field):
    """The shipped model: stars sharper and closer to the truth, flux and background kept."""
    from astroswin.engine import load_model
    from astroswin.engine.measure import aperture_flux, fwhm

    truth, observed, info = star_field
    out = restore_array(observed, load_model("small"), RestoreSettings(device="cpu"))
    sky_in, sky_out = np.median(observed), np.median(out)
    # The true sky is 100; the input's median sits ~2.5% above it on the wings of blurred stars,
    # which deconvolution gives back to the stars.
    assert abs(sky_out - 100.0) / 100.0 < 0.02
    bright = np.argsort(info["fluxes"])[::-1][:8]
    ratios, fw_in, fw_out = [], [], []
    for k in bright:
        y, x = np.round(info["positions"][k]).astype(int)
        if not (12 <= y < 116 and 12 <= x < 116):
            continue
        # Against the truth on the true sky: the input's median sky is lifted by the wings, so
        # its own aperture sums run ~5% low and are no reference for a restored star.
        ratios.append(aperture_flux(out - 100.0, y, x, 8) / aperture_flux(truth - 100.0, y, x, 8))
        fw_in.append(fwhm(observed - sky_in, y, x))
        fw_out.append(fwhm(out - sky_out, y, x))
    assert 0.95 < np.median(ratios) < 1.05
    assert np.nanmedian(fw_out) < 0.85 * np.nanmedian(fw_in)
    assert np.mean((out - truth) ** 2) < np.mean((observed - truth) ** 2)


def _nebula(shape, level):
    """Smooth emission above the sky: a gradient and a wide blob, peaking near ``level``."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return level * (0.4 * xx / shape[1] + 0.6 * np.exp(-((yy - shape[0] / 2) ** 2 + (xx - shape[1] / 2) ** 2) / (2 * 40.0**2)))


def test_emission_follows_smooth_light_and_passes_over_stars():
    from conftest import gaussian_stars

    from astroswin.engine.emission import smooth_emission

    rng = np.random.default_rng(3)
    light = _nebula((160, 200), 300.0)
    positions = np.stack([rng.uniform(20, 140, 40), rng.uniform(20, 180, 40)], axis=1)
    stars = gaussian_stars((160, 200), positions, np.full(40, 2e4), 1.5)
    emission = smooth_emission((100.0 + light + stars)[None], 31, np.array([100.0])).rows(0, 160)[0]
    above = light - np.median(light)  # relative to the frame's typical level
    inner = (slice(16, -16), slice(16, -16))
    assert np.abs(emission - above)[inner].max() < 0.08 * np.ptp(light)  # a median flattens peaks a little
    cores = tuple(np.round(positions).astype(int).T)
    assert np.max(emission[cores] - above[cores]) < 0.01 * stars[cores].min()  # stars stay out


@pytest.mark.parametrize("channels", [1, 3])
def test_emission_on_threads_is_the_same_map(channels):
    """Bands of bins and pieces of the running median run on threads: any count gives the
    one-thread map to the bit, a NaN border and an odd size included."""
    from astroswin.engine.emission import smooth_emission

    data = (100.0 + _nebula((301, 263), 500.0)) + _noise((channels, 301, 263), sky=0.0)
    data[:, :, :9] = np.nan
    maps = [smooth_emission(data, 25, np.full(channels, 100.0), workers=n).binned for n in (1, 2, 5)]
    assert np.ptp(maps[0]) > 100  # a nebula, not a flat map
    for other in maps[1:]:
        np.testing.assert_array_equal(other, maps[0])


def test_emission_is_put_back_exactly(tiny_model):
    """Taken out before the network and added after: with the identity model, nothing changes."""
    from dataclasses import replace

    data = (100.0 + _nebula((97, 131), 2000.0))[None].repeat(3, axis=0) + _noise((3, 97, 131), sky=0.0)
    data[1, 10, 10] = np.nan
    on = restore_array(data, tiny_model, FAST)
    off = restore_array(data, tiny_model, replace(FAST, emission_scale=0))
    np.testing.assert_allclose(on, data, rtol=1e-5, atol=1e-2, equal_nan=True)
    np.testing.assert_allclose(on, off, rtol=1e-5, atol=1e-2, equal_nan=True)
    with pytest.raises(EngineError, match="emission scale"):
        replace(FAST, emission_scale=2).check()


def test_bundled_model_sharpens_stars_on_bright_emission():
    """Stars on a nebula far brighter than their blurred peaks: with the emission taken out
    first they come back sharper (the network sees them on flat sky)."""
    from dataclasses import replace

    from conftest import gaussian_stars

    from astroswin.engine import load_model
    from astroswin.engine.measure import fwhm
    from astroswin.train import psf
    from astroswin.train.degrade import add_noise, convolve

    rng = np.random.default_rng(4)
    positions = np.stack([rng.uniform(16, 112, 12), rng.uniform(16, 112, 12)], axis=1)
    light = _nebula((128, 128), 3000.0)
    truth = gaussian_stars((128, 128), positions, np.full(12, 1e4), 1.3) + light  # blurred peaks ~400
    observed = add_noise(rng, convolve(truth[None], [psf.moffat(4.5, 3.0)]), 100.0, 1.0, 2.0)[0].astype(np.float32)
    settings = RestoreSettings(device="cpu")
    model = load_model("small")
    widths = {}
    for scale in (0, settings.emission_scale):
        out = restore_array(observed, model, replace(settings, emission_scale=scale)) - 100.0
        widths[scale] = np.nanmedian([fwhm(out, *np.round(p).astype(int)) for p in positions])
    # the truth's FWHM is 1.3 px: within 1.3x of it with the emission out, not without
    assert widths[settings.emission_scale] < 1.3 * 1.3 < widths[0]


@pytest.mark.parametrize("shape", [(150, 170), (3, 97, 203)])
def test_device_resident_path_matches_streaming(shape, perturbed_model, monkeypatch):
    """On CUDA the image is kept on the GPU and tiles are cut and blended there. Forced here on
    the CPU, that path must give the streaming path's pixels, NaN/inf and saturation handling
    included, through the compiled-shape padding of a partial last batch too."""
    from astroswin.engine import restore

    rng = np.random.default_rng(3)
    data = (100 + 5 * rng.standard_normal(shape)).astype(np.float32)
    data[..., 10:14, 20:60] = np.nan
    data[..., 50, 50] = np.inf
    data[..., 80:83, 80:83] = 5000.0  # a clipped plateau
    settings = RestoreSettings(tile=64, overlap=16, batch_size=4, compile="off")
    streamed = restore_array(data, perturbed_model, settings)
    monkeypatch.setattr(restore, "_fits_on_device", lambda shape, device: True)
    monkeypatch.setattr(restore, "_CPU_ONE_TILE_PER_PASS", False)  # batches of 4 as on a GPU
    resident = restore_array(data, perturbed_model, settings)
    assert not np.array_equal(streamed[np.isfinite(data)], data[np.isfinite(data)])  # the model did act
    np.testing.assert_allclose(resident, streamed, rtol=0, atol=1e-4 * 5)
    np.testing.assert_array_equal(np.isnan(resident), np.isnan(data))


def test_batches_pad_alike_for_arrays_and_tensors():
    """A partial last batch is padded to the compiled batch size with copies of its last tile,
    the same way for numpy tiles (CPU path) and tensors (GPU path)."""
    import torch

    from astroswin.engine.restore import _stack

    tiles = [np.full((3, 4, 5), i, dtype=np.float32) for i in range(3)]
    padded = _stack(tiles, 5)
    assert padded.shape == (5, 3, 4, 5) and [float(t[0, 0, 0]) for t in padded] == [0, 1, 2, 2, 2]
    np.testing.assert_array_equal(_stack([torch.from_numpy(t) for t in tiles], 5).numpy(), padded)
    assert _stack(tiles, 3).shape == (3, 3, 4, 5)


def test_tiling_defaults_follow_the_device(monkeypatch):
    """Measured defaults: 128/16 on the CPU, 512/32 on a large GPU, 256/32 on a small one; a
    given tile gets tile/8 overlap; an impossible pair is a clear error on any device."""
    import types

    import torch

    memory = {"bytes": 80 * 1024**3}
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: types.SimpleNamespace(total_memory=memory["bytes"]))
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert RestoreSettings().tiling(cpu) == (128, 16)
    assert RestoreSettings().tiling(cuda) == (512, 32)
    memory["bytes"] = 6 * 1024**3
    assert RestoreSettings().tiling(cuda) == (256, 32)
    assert RestoreSettings(tile=256).tiling(cpu) == (256, 32)
    assert RestoreSettings(tile=96, overlap=8).tiling(cpu) == (96, 8)
    assert RestoreSettings(overlap=24).tiling(cpu) == (128, 24)
    with pytest.raises(EngineError, match="overlap"):
        RestoreSettings(overlap=64).tiling(cpu)
    with pytest.raises(EngineError, match="overlap=64"):  # checked up front, before any image
        RestoreSettings(overlap=64, device="cpu").check()


def test_gpu_out_of_memory_is_a_memory_error(monkeypatch, tiny_model):
    """CUDA's out-of-memory error becomes a MemoryError, which the CLI and the Siril plugin
    report as 'out of memory; try a smaller tile' instead of an internal error."""
    import torch

    from astroswin.engine import restore

    def exhausted(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(restore, "_restore", exhausted)
    with pytest.raises(MemoryError, match="GPU ran out of memory"):
        restore_array(np.ones((32, 32), dtype=np.float32), tiny_model)


def test_emission_step_holds_no_full_size_copy(tiny_model):
    """The emission is held binned and made full-resolution a tile or a band of rows at a time:
    while the tiles run, the step holds its bins, 1/16 of the image at the default window (a
    full-size float32 copy, as an earlier version kept, would be 100%)."""
    import tracemalloc
    from dataclasses import replace

    image = (100.0 + _nebula((512, 1024), 500.0))[None].repeat(3, axis=0).astype(np.float32) + _noise((3, 512, 1024), sky=0.0)
    settings = replace(FAST, tile=128, batch_size=1, compile="off")
    restore_array(image[:, :200, :200].copy(), tiny_model, settings)  # imports (scipy) out of the way
    held = {}
    for scale in (0, 25):
        during: list[int] = []
        tracemalloc.start()
        restore_array(image, tiny_model, replace(settings, emission_scale=scale), lambda done, total, during=during: during.append(tracemalloc.get_traced_memory()[0]))
        tracemalloc.stop()
        held[scale] = np.median(during)  # memory held between tiles, transients excluded
    assert held[25] - held[0] < 0.1 * image.nbytes, f"the step held {(held[25] - held[0]) / image.nbytes:.0%} of the image"


@pytest.mark.parametrize("resident", [False, True])
def test_a_nan_border_is_filled_with_sky_not_zero(resident, monkeypatch):
    """Pixels without data are filled with the channel's background before the network (on the
    streaming path per tile, on the device-resident path once for all): the network then sees
    sky there. Filled with 0 instead, the cliff at the border rang into the data beside it,
    13.6 ADU off the sky on average within 8 px of it at a noise of 10 ADU (1.3 ADU with the
    sky fill)."""
    from astroswin.engine import load_model, restore

    if resident:
        monkeypatch.setattr(restore, "_fits_on_device", lambda shape, device: True)
    rng = np.random.default_rng(2)
    image = rng.normal(1000.0, 10.0, (128, 128)).astype(np.float32)
    image[:12], image[-12:], image[:, :12], image[:, -12:] = np.nan, np.nan, np.nan, np.nan
    out = restore_array(image, load_model("small"), RestoreSettings(device="cpu"))
    near = np.isfinite(image)
    near[20:-20, 20:-20] = False  # the data within 8 px of the border
    assert np.isnan(out[~np.isfinite(image)]).all()
    assert np.abs(out[near] - 1000.0).mean() < 0.4 * 10.0


def _resident_kb(path) -> int | None:
    """Resident size (kB) of this process's mappings of ``path`` (/proc/self/smaps), or None
    where that file does not exist."""
    try:
        lines = open("/proc/self/smaps").read().splitlines()
    except OSError:
        return None
    total, inside = 0, False
    for line in lines:
        fields = line.split()
        if fields and "-" in fields[0] and not fields[0].endswith(":"):  # a mapping's header line
            inside = line.endswith(str(path))
        elif inside and fields[0] == "Rss:":
            total += int(fields[1])
    return total


@pytest.mark.skipif(not hasattr(mmap, "MADV_DONTNEED") or not hasattr(mmap.mmap, "madvise"), reason="no madvise here")
def test_a_memory_mapped_fits_input_has_its_pages_dropped(tmp_path, monkeypatch, perturbed_model):
    """A read-only memory-mapped FITS input is read pass after pass (extremes, emission, tiles,
    anchor); each pass drops its pages again (MADV_DONTNEED over the whole mapping), so a
    720 MB file costs a few MB of resident memory, not 720, and the pixels read back alike."""
    import mmap

    from astropy.io import fits

    from astroswin.engine.io import read_fits

    calls = []

    class Spy(mmap.mmap):
        def madvise(self, *args):
            calls.append(args)
            return super().madvise(*args)

    path = tmp_path / "frame.fits"
    data = _noise((512, 512))
    data[200:204, 300:304] += 3000.0
    fits.PrimaryHDU(data).writeto(path)
    with monkeypatch.context() as patch:
        patch.setattr(mmap, "mmap", Spy)  # numpy's memmap (under astropy's) maps through it
        mapped = read_fits(path).data
    base = mapped
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
    assert isinstance(base, Spy) and not mapped.flags.writeable
    float(mapped.sum())  # every page resident
    before = _resident_kb(path)
    out = restore_array(mapped, perturbed_model, FAST)
    after = _resident_kb(path)
    assert len(calls) >= 3 and all(args == (mmap.MADV_DONTNEED,) for args in calls)
    if before is not None:
        assert before >= data.nbytes // 1024 and after < 0.1 * before
    np.testing.assert_array_equal(out, restore_array(np.array(mapped), perturbed_model, FAST))
