"""Tests of scripts/make_patches.py: cutting, rejection rules, formats, splits."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import make_patches as mp  # noqa: E402

CONTRACT_KEYS = {"path", "split", "source", "y", "x", "channels", "linear"}


def noise(shape, seed=0, sigma=1.0, level=100.0, dtype=np.float32):
    return (np.random.default_rng(seed).normal(level, sigma, shape)).astype(dtype)


def write_fits(path: Path, data: np.ndarray, **header) -> Path:
    from astropy.io import fits

    hdu = fits.PrimaryHDU(data)
    for k, v in header.items():
        hdu.header[k] = v
    hdu.writeto(path)
    return path


def run(*args: str):
    return CliRunner().invoke(mp.main, [str(a) for a in args], catch_exceptions=False)


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def test_cut_positions_values_and_manifest_contract(tmp_path):
    data = noise((300, 600))
    src = write_fits(tmp_path / "m31.fits", data)
    out = tmp_path / "out"
    result = run(src, "--out", out, "--size", 128, "--stride", 128, "--split", "1,0,0")
    assert result.exit_code == 0, result.output
    entries = manifest(out)
    assert [(e["y"], e["x"]) for e in entries] == [(y, x) for y in (0, 128) for x in (0, 128, 256, 384)]
    for e in entries:
        assert set(e) == CONTRACT_KEYS
        assert e["split"] == "train" and e["source"] == "m31.fits" and e["channels"] == 1 and e["linear"] is True
        assert e["path"] == f"train/m31_{e['y']}_{e['x']}.npy"
        arr = np.load(out / e["path"])
        assert arr.dtype == np.float32 and arr.shape == (1, 128, 128)
        np.testing.assert_array_equal(arr[0], data[e["y"] : e["y"] + 128, e["x"] : e["x"] + 128])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["patches"] == {"train": 8, "val": 0, "test": 0}


def test_stride_overlap_and_small_images(tmp_path):
    write_fits(tmp_path / "a.fits", noise((100, 160)))
    write_fits(tmp_path / "tiny.fits", noise((20, 20)))
    out = tmp_path / "out"
    result = run(tmp_path, "--out", out, "--size", 64, "--stride", 32)
    assert result.exit_code == 0, result.output
    positions = sorted((e["y"], e["x"]) for e in manifest(out))
    assert positions == [(y, x) for y in (0, 32) for x in (0, 32, 64, 96)]
    assert "tiny.fits is smaller than 64x64" in result.stderr


def test_rejection_rules(tmp_path):
    size = 64
    tiles = []
    rng = np.random.default_rng(1)
    good = noise((size, size), 1)
    good[10:13, 10:13] += 50  # a star
    tiles.append(good)  # x=0: kept
    nan10 = noise((size, size), 2)
    nan10.flat[rng.choice(size * size, int(0.10 * size * size), replace=False)] = np.nan
    tiles.append(nan10)  # x=64: > 5 % NaN -> rejected
    nan3 = noise((size, size), 3)
    nan3.flat[rng.choice(size * size, int(0.03 * size * size), replace=False)] = np.inf
    tiles.append(nan3)  # x=128: kept, non-finite filled
    tiles.append(np.zeros((size, size), np.float32))  # x=192: flat (drizzle padding) -> empty
    stars = np.zeros((size, size), np.float32)
    stars[30:32, 30:32] = 400.0
    tiles.append(stars)  # x=256: stars on a flat background -> kept (peak rule)
    sat = noise((size, size), 4)
    sat.flat[rng.choice(size * size, int(0.02 * size * size), replace=False)] = 1000.0  # clipped at image max
    tiles.append(sat)  # x=320: > 1 % saturated -> rejected
    sat_few = noise((size, size), 5)
    sat_few.flat[rng.choice(size * size, int(0.005 * size * size), replace=False)] = 1000.0
    tiles.append(sat_few)  # x=384: 0.5 % saturated -> kept
    src = write_fits(tmp_path / "rules.fits", np.concatenate(tiles, axis=1))
    out = tmp_path / "out"
    result = run(src, "--out", out, "--size", size, "--split", "1,0,0")
    assert result.exit_code == 0, result.output
    kept = {e["x"]: e for e in manifest(out)}
    assert sorted(kept) == [0, 128, 256, 384]
    filled = np.load(out / kept[128]["path"])
    assert np.isfinite(filled).all()
    src_summary = json.loads((out / "summary.json").read_text())["sources"][0]
    assert src_summary["rejected"] == {"nonfinite": 1, "saturated": 1, "empty": 1}
    # thresholds are flags: relax them and everything non-flat is kept
    out2 = tmp_path / "out2"
    result = run(src, "--out", out2, "--size", size, "--max-nonfinite", 0.5, "--max-saturated", 0.5)
    assert sorted(e["x"] for e in manifest(out2)) == [0, 64, 128, 256, 320, 384]


def test_integer_saturation_uses_type_maximum(tmp_path):
    data = np.random.default_rng(0).integers(1000, 1100, (64, 128)).astype(np.uint16)
    data[:, 64:][np.random.default_rng(1).random((64, 64)) < 0.03] = 65535
    src = write_fits(tmp_path / "u16.fits", data)
    out = tmp_path / "out"
    assert run(src, "--out", out, "--size", 64, "--split", "1,0,0").exit_code == 0
    assert [e["x"] for e in manifest(out)] == [0]
    # a FITS SATURATE keyword takes precedence
    data2 = np.random.default_rng(2).normal(500, 5, (64, 128)).astype(np.float32)
    data2[:, :64][np.random.default_rng(3).random((64, 64)) < 0.03] = 900.0
    data2[0, 100] = 5000.0  # the image maximum, but below 1 %
    src2 = write_fits(tmp_path / "sat.fits", data2, SATURATE=900.0)
    out2 = tmp_path / "out2"
    assert run(src2, "--out", out2, "--size", 64, "--split", "1,0,0").exit_code == 0
    assert [e["x"] for e in manifest(out2)] == [64]


def test_formats(tmp_path):
    import tifffile
    from PIL import Image
    from xisf import XISF

    rng = np.random.default_rng(0)
    rgb8 = rng.integers(0, 250, (64, 64, 3), dtype=np.uint8)  # no 255: that would be "saturated"
    Image.fromarray(rgb8).save(tmp_path / "c.png")
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(tmp_path / "g.jpg", quality=95)
    rgb16 = rng.integers(100, 60000, (64, 64, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "t.tif", rgb16, photometric="rgb")
    xisf_data = rng.normal(0.2, 0.01, (64, 64, 1)).astype(np.float32)
    XISF.write(str(tmp_path / "x.xisf"), xisf_data)
    cube = rng.normal(10, 1, (3, 64, 64)).astype(np.float32)
    write_fits(tmp_path / "cube.fits", cube)
    out = tmp_path / "out"
    result = run(tmp_path, "--out", out, "--size", 64, "--split", "1,0,0")
    assert result.exit_code == 0, result.output
    by_source = {e["source"]: e for e in manifest(out)}
    assert set(by_source) == {"c.png", "g.jpg", "t.tif", "x.xisf", "cube.fits"}
    expect = {"c.png": (3, False), "g.jpg": (1, False), "t.tif": (3, True), "x.xisf": (1, True), "cube.fits": (3, True)}
    for name, (channels, linear) in expect.items():
        e = by_source[name]
        arr = np.load(out / e["path"])
        assert arr.shape == (channels, 64, 64) and arr.dtype == np.float32
        assert e["channels"] == channels and e["linear"] is linear
    np.testing.assert_allclose(
        np.load(out / by_source["c.png"]["path"]), mp.srgb_to_linear(np.moveaxis(rgb8, -1, 0) / 255.0), rtol=1e-6
    )
    np.testing.assert_array_equal(
        np.load(out / by_source["t.tif"]["path"]), np.moveaxis(rgb16, -1, 0).astype(np.float32)
    )
    np.testing.assert_array_equal(np.load(out / by_source["x.xisf"]["path"])[0], xisf_data[..., 0])
    np.testing.assert_array_equal(np.load(out / by_source["cube.fits"]["path"]), cube)
    # --srgb-tiff: display TIFFs are de-gammaed too; --channels 1 averages colour
    out2 = tmp_path / "out2"
    assert run(tmp_path / "t.tif", "--out", out2, "--size", 64, "--srgb-tiff", "--channels", "1").exit_code == 0
    e = manifest(out2)[0]
    assert e["linear"] is False and e["channels"] == 1
    np.testing.assert_allclose(
        np.load(out2 / e["path"])[0], mp.srgb_to_linear(rgb16 / 65535.0).mean(axis=-1), rtol=1e-5
    )


def make_sources(folder: Path, names, size=32) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        write_fits(folder / name, noise((size * 2, size), seed=i))


def test_split_is_deterministic_by_source_and_stable(tmp_path):
    names = [f"img{i:02d}.fits" for i in range(30)]
    make_sources(tmp_path / "src", names)
    args = ("--size", 32, "--seed", 7, "--split", "0.6,0.2,0.2")
    assert run(tmp_path / "src", "--out", tmp_path / "a", *args).exit_code == 0
    assert run(tmp_path / "src", "--out", tmp_path / "b", *args).exit_code == 0
    a, b = manifest(tmp_path / "a"), manifest(tmp_path / "b")
    assert a == b  # same seed, same split, same order
    splits_of: dict[str, set[str]] = {}
    for e in a:
        splits_of.setdefault(e["source"], set()).add(e["split"])
        assert e["path"].startswith(e["split"] + "/") and (tmp_path / "a" / e["path"]).is_file()
    assert all(len(s) == 1 for s in splits_of.values())  # no source straddles splits
    assert len(splits_of) == 30 and {next(iter(s)) for s in splits_of.values()} == {"train", "val", "test"}
    # another seed reshuffles; adding sources never moves the existing ones
    run(tmp_path / "src", "--out", tmp_path / "c", "--size", 32, "--seed", 8, "--split", "0.6,0.2,0.2")
    assert {e["source"]: e["split"] for e in manifest(tmp_path / "c")} != {e["source"]: e["split"] for e in a}
    make_sources(tmp_path / "src", ["extra.fits"])
    run(tmp_path / "src", "--out", tmp_path / "d", *args)
    d = {e["source"]: e["split"] for e in manifest(tmp_path / "d")}
    assert all(d[e["source"]] == e["split"] for e in a)


def test_assign_split_unit():
    fr = (0.8, 0.1, 0.1)
    assert mp.assign_split("m31.fits", 0, fr) == mp.assign_split("m31.fits", 0, fr)
    counts = {s: 0 for s in mp.SPLITS}
    for i in range(2000):
        counts[mp.assign_split(f"s{i}", 0, fr)] += 1
    assert 1500 < counts["train"] < 1700 and 130 < counts["val"] < 270 and 130 < counts["test"] < 270
    assert {mp.assign_split(f"s{i}", 3, (0.0, 1.0, 0.0)) for i in range(50)} == {"val"}


def test_same_file_names_in_different_folders(tmp_path):
    write_fits((tmp_path / "a").mkdir() or tmp_path / "a" / "m31.fits", noise((32, 32), 1))
    write_fits((tmp_path / "b").mkdir() or tmp_path / "b" / "m31.fits", noise((32, 32), 2))
    write_fits(tmp_path / "b" / "m31.tif.fits", noise((32, 32), 3))
    out = tmp_path / "out"
    assert run(tmp_path / "a", tmp_path / "b", "--out", out, "--size", 32, "--split", "1,0,0").exit_code == 0
    entries = manifest(out)
    assert sorted(e["source"] for e in entries) == ["a/m31.fits", "b/m31.fits", "m31.tif.fits"]
    assert len({e["path"] for e in entries}) == 3


def test_overwrite_guard_and_bad_split(tmp_path):
    write_fits(tmp_path / "one.fits", noise((64, 64)))
    out = tmp_path / "out"
    assert run(tmp_path / "one.fits", "--out", out, "--size", 32, "--split", "1,0,0").exit_code == 0
    result = run(tmp_path / "one.fits", "--out", out, "--size", 32)
    assert result.exit_code == 2 and "--overwrite" in result.stderr and len(result.stderr.splitlines()) == 1
    old = {e["path"] for e in manifest(out)}
    result = run(tmp_path / "one.fits", "--out", out, "--size", 64, "--overwrite", "--split", "1,0,0")
    assert result.exit_code == 0
    assert [e["path"] for e in manifest(out)] == ["train/one_0_0.npy"]
    assert not [p for p in old if p != "train/one_0_0.npy" and (out / p).exists()]
    result = run(tmp_path / "one.fits", "--out", tmp_path / "x", "--split", "0.5,0.5")
    assert result.exit_code == 2 and "--split" in result.output


def test_unreadable_source_is_skipped(tmp_path):
    (tmp_path / "broken.fits").write_bytes(b"not a fits file at all")
    write_fits(tmp_path / "ok.fits", noise((32, 32)))
    out = tmp_path / "out"
    result = run(tmp_path, "--out", out, "--size", 32)
    assert result.exit_code == 0
    assert "skipping" in result.stderr and "broken.fits" in result.stderr
    assert [e["source"] for e in manifest(out)] == ["ok.fits"]


def test_folder_patches_trains_on_the_split(tmp_path):
    """The lead's loader (train/data.py FolderPatches) reads this output directly."""
    from astroswin.train.config import DataConfig
    from astroswin.train.data import FolderPatches
    from astroswin.train.degrade import DegradeConfig

    names = [f"s{i}.fits" for i in range(12)]
    make_sources(tmp_path / "src", names, size=64)
    out = tmp_path / "out"
    assert run(tmp_path / "src", "--out", out, "--size", 64, "--split", "0.5,0.25,0.25").exit_code == 0
    for split in mp.SPLITS:
        folder = FolderPatches(out, split)
        assert len(folder) > 0
    x, y = FolderPatches(out, "train").example(0, DataConfig(crop=48), DegradeConfig())
    assert x.shape == y.shape == (3, 48, 48) and np.isfinite(x).all() and np.isfinite(y).all()
