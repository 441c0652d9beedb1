#!/usr/bin/env python
"""Cut training patches from real images and split them by source image.

    python scripts/make_patches.py data/raw/mast data/raw/esahubble --out data/patches \\
        --size 256 --stride 256 --seed 0 --split 0.8,0.1,0.1

Inputs (files or directories, searched recursively): FITS (.fits/.fit/.fts, also
.gz/.fz), XISF, TIFF, PNG, JPEG.

* FITS: the first image HDU holding data (2-D, or a 3-D cube of 1 or 3 planes).
* XISF: ``XISF(path).read_image(0, data_format="channels_last")``.
* TIFF: tifffile; channels-last or channels-first layouts; an alpha channel is dropped.
* PNG/JPEG: Pillow; values are scaled to [0, 1] and converted from sRGB to
  approximately linear light; their patches are flagged ``"linear": false``.
  (``--srgb-tiff`` treats TIFFs the same way, for stretched display TIFFs such as
  the ESA/Hubble ones.)

FITS/XISF/TIFF values are kept as read (cast to float32), never rescaled.

Output (the contract ``train/``'s ``FolderPatches`` reads):

* ``OUT/<split>/<stem>_<y>_<x>.npy`` - float32, shape (C, H, W), C = 1 or 3;
  ``<stem>`` is the source file name without extension (made unique if two sources
  share it), ``y``/``x`` the patch's top-left pixel in the source image.
* ``OUT/manifest.jsonl`` - one JSON object per patch, e.g.
  ``{"path": "train/m31_0_256.npy", "split": "train", "source": "m31.fits",
  "y": 0, "x": 256, "channels": 1, "linear": true}``.
* ``OUT/summary.json`` - parameters and per-source counts (for humans).

Splits are ``train``, ``val``, ``test``. Each *source image* is assigned to one split
from a seeded hash of its ``source`` name, so the same seed always gives the same
assignment, a source never straddles splits, and adding new sources never moves
existing ones (with few sources the realised fractions are therefore approximate).

Rejection rules (per patch; see the constants below, all adjustable by flags):

* non-finite: more than ``MAX_NONFINITE`` (5 %) of pixels are NaN/inf in any channel.
  Patches that pass have their few non-finite pixels replaced by the channel median.
* saturated: more than ``MAX_SATURATED`` (1 %) of pixels reach the source's saturation
  level in any channel: the header ``SATURATE`` value for FITS when present, else the
  largest value the integer type can hold, else (floating-point data) the image's
  maximum value - a clipped plateau at the maximum marks saturation.
* empty: the patch's robust standard deviation (1.4826 x MAD) is at most
  ``MIN_STD_RATIO`` (0.5) times the image's noise level, *and* nothing in it rises
  more than ``PEAK_SIGMA`` (5) x noise above its median (so a few stars on a flat
  background are kept). The image's noise level is the median over its patches of a
  pixel-to-pixel difference MAD estimate. Zero-filled borders (drizzled mosaics) and
  flat clipped backgrounds are rejected by this rule.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np
from tqdm import tqdm

PROG = "make_patches"
SPLITS = ("train", "val", "test")

MAX_NONFINITE = 0.05
MAX_SATURATED = 0.01
MIN_STD_RATIO = 0.5
PEAK_SIGMA = 5.0
MAD_TO_SIGMA = 1.4826

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz", ".fits.fz", ".fit.fz")
SUFFIXES = {
    **{s: "fits" for s in FITS_SUFFIXES},
    ".xisf": "xisf",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".png": "pil",
    ".jpg": "pil",
    ".jpeg": "pil",
}


class PatchError(Exception):
    """An expected problem with one source (unreadable, unsupported layout)."""


@dataclass
class Image:
    """A source image as read: ``raw`` is (C, H, W) in its native dtype."""

    raw: np.ndarray
    linear: bool
    srgb_scale: float | None = None  # not None: values/scale are sRGB-encoded in [0, 1]
    saturate: float | None = None  # known saturation level in raw units, if any

    def saturation_level(self) -> float | None:
        if self.saturate is not None:
            return self.saturate
        dtype = self.raw.dtype
        if np.issubdtype(dtype, np.integer):
            return float(np.iinfo(dtype).max)
        if np.issubdtype(dtype, np.bool_):
            return 1.0
        finite = self.raw[np.isfinite(self.raw)]
        return float(finite.max()) if finite.size else None

    def to_float(self, raw: np.ndarray) -> np.ndarray:
        x = raw.astype(np.float32)
        if self.srgb_scale is not None:
            x = srgb_to_linear(np.clip(x / np.float32(self.srgb_scale), 0.0, 1.0))
        return x


def srgb_to_linear(v: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 sRGB decoding (input and output in [0, 1])."""
    v = v.astype(np.float32, copy=False)
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4).astype(np.float32)


# --------------------------------------------------------------------------- readers


def _channels_first(a: np.ndarray, what: str, channels_last: bool | None = None) -> np.ndarray:
    while a.ndim > 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 2:
        return a[np.newaxis]
    if a.ndim != 3:
        raise PatchError(f"unsupported {what} shape {a.shape}")
    if channels_last is None:
        channels_last = a.shape[-1] in (1, 3, 4) and a.shape[0] not in (1, 3, 4)
    if channels_last:
        a = np.moveaxis(a, -1, 0)
    if a.shape[0] == 4:  # RGBA / RGBX
        a = a[:3]
    if a.shape[0] == 2:  # grey + alpha
        a = a[:1]
    if a.shape[0] not in (1, 3):
        raise PatchError(f"unsupported {what} layout {a.shape} (need 1 or 3 channels)")
    return a


def read_fits(path: Path) -> Image:
    from astropy.io import fits

    try:
        with fits.open(path, memmap=False) as hdul:
            for hdu in hdul:
                if hdu.is_image and hdu.data is not None and hdu.data.ndim >= 2:
                    data = np.asarray(hdu.data)
                    sat = hdu.header.get("SATURATE")
                    break
            else:
                raise PatchError("no image HDU with data")
    except OSError as e:
        raise PatchError(f"not a readable FITS file ({e})") from None
    if data.dtype.byteorder not in ("=", "|"):
        data = data.astype(data.dtype.newbyteorder("="))
    sat = float(sat) if isinstance(sat, (int, float)) and not isinstance(sat, bool) else None
    return Image(_channels_first(data, "FITS", channels_last=False), linear=True, saturate=sat)


def read_xisf(path: Path) -> Image:
    try:
        from xisf import XISF

        data = XISF(str(path)).read_image(0, data_format="channels_last")
    except Exception as e:  # noqa: BLE001 - the xisf package raises assorted exceptions
        raise PatchError(f"not a readable XISF file ({type(e).__name__}: {e})") from None
    return Image(_channels_first(np.asarray(data), "XISF", channels_last=True), linear=True)


def read_tiff(path: Path, srgb: bool) -> Image:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes = series.axes
            data = series.asarray()
    except Exception as e:  # noqa: BLE001 - tifffile raises assorted exceptions
        raise PatchError(f"not a readable TIFF file ({type(e).__name__}: {e})") from None
    channels_last = None
    if data.ndim == 3 and len(axes) == 3:
        if axes[-1] in "SC":
            channels_last = True
        elif axes[0] in "SC":
            channels_last = False
    raw = _channels_first(data, "TIFF", channels_last=channels_last)
    scale = None
    if srgb:
        scale = float(np.iinfo(raw.dtype).max) if np.issubdtype(raw.dtype, np.integer) else 1.0
    return Image(raw, linear=not srgb, srgb_scale=scale)


def read_pil(path: Path) -> Image:
    from PIL import Image as PILImage

    try:
        with PILImage.open(path) as im:
            im.load()
            mode = im.mode
            if mode in ("1", "LA", "La"):
                im = im.convert("L")
            elif mode in ("P", "PA", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "HSV", "LAB"):
                im = im.convert("RGB")
            data = np.asarray(im)
    except (OSError, ValueError, SyntaxError) as e:
        raise PatchError(f"not a readable PNG/JPEG file ({e})") from None
    if data.dtype == np.uint8:
        scale = 255.0
    elif data.dtype == np.uint16:
        scale = 65535.0
    elif np.issubdtype(data.dtype, np.integer):  # mode "I": 16-bit PNGs often arrive as int32
        scale = 65535.0 if data.max(initial=0) <= 65535 else float(np.iinfo(data.dtype).max)
    else:
        scale = 1.0
    sat = scale if np.issubdtype(data.dtype, np.integer) else None
    return Image(_channels_first(data, "image", channels_last=True), linear=False, srgb_scale=scale, saturate=sat)


def kind_of(path: Path) -> str | None:
    name = path.name.lower()
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return SUFFIXES[suffix]
    return None


def stem_of(path: Path) -> str:
    name = path.name
    lower = name.lower()
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def read_image(path: Path, srgb_tiff: bool = False) -> Image:
    kind = kind_of(path)
    if kind == "fits":
        return read_fits(path)
    if kind == "xisf":
        return read_xisf(path)
    if kind == "tiff":
        return read_tiff(path, srgb_tiff)
    if kind == "pil":
        return read_pil(path)
    raise PatchError("unsupported file type")


# --------------------------------------------------------------------------- statistics


def robust_std(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    if x.size == 0:
        return 0.0
    med = np.median(x)
    return float(MAD_TO_SIGMA * np.median(np.abs(x - med)))


def noise_sigma(lum: np.ndarray) -> float:
    """Per-pixel noise from horizontal neighbour differences (robust to structure)."""
    with np.errstate(invalid="ignore", over="ignore"):
        d = np.diff(lum, axis=-1)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return 0.0
    return float(MAD_TO_SIGMA * np.median(np.abs(d - np.median(d))) / np.sqrt(2.0))


@dataclass
class PatchStats:
    y: int
    x: int
    nonfinite: float
    saturated: float
    std: float
    peak: float  # max - median of the luminance
    noise: float


@dataclass
class Rules:
    max_nonfinite: float = MAX_NONFINITE
    max_saturated: float = MAX_SATURATED
    min_std_ratio: float = MIN_STD_RATIO
    peak_sigma: float = PEAK_SIGMA

    def verdict(self, s: PatchStats, image_noise: float) -> str | None:
        """Rejection reason, or None to keep."""
        if s.nonfinite > self.max_nonfinite:
            return "nonfinite"
        if s.saturated > self.max_saturated:
            return "saturated"
        if image_noise > 0:
            if s.std <= self.min_std_ratio * image_noise and s.peak <= self.peak_sigma * image_noise:
                return "empty"
        elif s.std <= 0 and s.peak <= 0:
            return "empty"
        return None


def patch_positions(h: int, w: int, size: int, stride: int) -> list[tuple[int, int]]:
    if h < size or w < size:
        return []
    return [(y, x) for y in range(0, h - size + 1, stride) for x in range(0, w - size + 1, stride)]


def patch_stats(img: Image, y: int, x: int, size: int, sat_level: float | None) -> PatchStats:
    raw = img.raw[:, y : y + size, x : x + size]
    f = img.to_float(raw)
    bad = ~np.isfinite(f).all(axis=0)
    nonfinite = float(bad.mean())
    if sat_level is not None:
        tol = abs(sat_level) * 1e-6
        with np.errstate(invalid="ignore"):
            sat = raw >= sat_level - tol
        if np.issubdtype(raw.dtype, np.floating):
            sat &= np.isfinite(raw)  # inf counts as non-finite, not as saturated
        saturated = float(sat.any(axis=0).mean())
    else:
        saturated = 0.0
    with np.errstate(invalid="ignore", over="ignore"):
        lum = f.mean(axis=0)
    finite = lum[np.isfinite(lum)]
    if finite.size:
        peak = float(finite.max() - np.median(finite))
    else:
        peak = 0.0
    return PatchStats(y, x, nonfinite, saturated, robust_std(lum), peak, noise_sigma(lum))


def fill_nonfinite(f: np.ndarray) -> np.ndarray:
    bad = ~np.isfinite(f)
    if not bad.any():
        return f
    f = f.copy()
    for c in range(f.shape[0]):
        good = f[c][~bad[c]]
        f[c][bad[c]] = np.median(good) if good.size else 0.0
    return f


def set_channels(f: np.ndarray, channels: str) -> np.ndarray:
    if channels == "1" and f.shape[0] != 1:
        return f.mean(axis=0, keepdims=True, dtype=np.float32)
    if channels == "3" and f.shape[0] == 1:
        return np.repeat(f, 3, axis=0)
    return f


# --------------------------------------------------------------------------- splitting


def parse_split(text: str) -> tuple[float, float, float]:
    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        raise click.BadParameter("expected three numbers, e.g. 0.8,0.1,0.1") from None
    if len(parts) != 3 or any(p < 0 for p in parts) or sum(parts) <= 0:
        raise click.BadParameter("expected three non-negative numbers, e.g. 0.8,0.1,0.1")
    total = sum(parts)
    if abs(total - 1.0) > 1e-6 and abs(total - 100.0) > 1e-6:
        raise click.BadParameter(f"fractions must sum to 1 (or 100), got {total:g}")
    return tuple(p / total for p in parts)  # type: ignore[return-value]


def assign_split(source: str, seed: int, fractions: tuple[float, float, float]) -> str:
    """Deterministic split of one source image from a seeded hash of its name."""
    digest = hashlib.sha256(f"astroswin-split\0{seed}\0{source}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    cumulative = 0.0
    for name, frac in zip(SPLITS, fractions, strict=True):
        cumulative += frac
        if u < cumulative and frac > 0:
            return name
    return next(name for name, frac in zip(reversed(SPLITS), reversed(fractions), strict=True) if frac > 0)


# --------------------------------------------------------------------------- sources


def find_sources(paths: tuple[Path, ...], out_dir: Path) -> tuple[list[Path], list[str]]:
    found: list[Path] = []
    problems: list[str] = []
    out_res = out_dir.resolve()
    for p in paths:
        if p.is_dir():
            for root, dirs, files in os.walk(p):
                rootp = Path(root)
                keep = []
                for d in sorted(dirs):
                    dp = rootp / d
                    if d.startswith(".") or dp.resolve() == out_res:
                        continue
                    if d == "raw" and (rootp / "manifest.jsonl").exists():
                        continue  # collect_mast --keep-raw originals duplicate the *_sci.fits
                    keep.append(d)
                dirs[:] = keep
                for name in sorted(files):
                    fp = rootp / name
                    if kind_of(fp) is not None:
                        found.append(fp)
        elif p.is_file():
            if kind_of(p) is None:
                problems.append(f"{p}: unsupported file type")
            else:
                found.append(p)
        else:
            problems.append(f"{p}: no such file or directory")
    unique = list(dict.fromkeys(f.resolve() for f in found))
    return unique, problems


def source_names(files: list[Path]) -> dict[Path, tuple[str, str]]:
    """file -> (manifest ``source`` name, unique patch-file stem)."""
    by_name: dict[str, list[Path]] = {}
    for f in files:
        by_name.setdefault(f.name, []).append(f)
    if len(files) > 1:
        common = Path(os.path.commonpath([str(f.parent) for f in files]))
    else:
        common = files[0].parent if files else Path(".")
    names: dict[Path, str] = {}
    for name, group in by_name.items():
        for f in group:
            names[f] = name if len(group) == 1 else f.relative_to(common).as_posix()
    stems: dict[str, list[Path]] = {}
    for f in files:
        stems.setdefault(re.sub(r"[^A-Za-z0-9._-]+", "_", stem_of(f)) or "source", []).append(f)
    out: dict[Path, tuple[str, str]] = {}
    for stem, group in stems.items():
        for f in group:
            s = stem
            if len(group) > 1:
                s = f"{stem}-{hashlib.sha256(names[f].encode()).hexdigest()[:8]}"
            out[f] = (names[f], s)
    return out


# --------------------------------------------------------------------------- main work


@dataclass
class SourceResult:
    source: str
    split: str
    shape: list[int] = field(default_factory=list)
    linear: bool = True
    kept: int = 0
    rejected: dict[str, int] = field(default_factory=lambda: {"nonfinite": 0, "saturated": 0, "empty": 0})
    noise: float = 0.0
    error: str | None = None


def cut_source(
    path: Path,
    source: str,
    stem: str,
    split: str,
    out_dir: Path,
    size: int,
    stride: int,
    rules: Rules,
    channels: str,
    srgb_tiff: bool,
) -> tuple[SourceResult, list[dict[str, Any]]]:
    result = SourceResult(source=source, split=split)
    img = read_image(path, srgb_tiff)
    c, h, w = img.raw.shape
    result.shape = [int(c), int(h), int(w)]
    result.linear = img.linear
    positions = patch_positions(h, w, size, stride)
    sat_level = img.saturation_level()
    stats = [patch_stats(img, y, x, size, sat_level) for y, x in positions]
    noises = [s.noise for s in stats if s.nonfinite <= rules.max_nonfinite and s.noise > 0]
    image_noise = float(np.median(noises)) if noises else 0.0
    result.noise = image_noise
    entries = []
    (out_dir / split).mkdir(parents=True, exist_ok=True)
    for s in stats:
        reason = rules.verdict(s, image_noise)
        if reason:
            result.rejected[reason] += 1
            continue
        f = img.to_float(img.raw[:, s.y : s.y + size, s.x : s.x + size])
        f = set_channels(fill_nonfinite(f), channels)
        rel = f"{split}/{stem}_{s.y}_{s.x}.npy"
        np.save(out_dir / rel, np.ascontiguousarray(f, dtype=np.float32))
        entries.append(
            {
                "path": rel,
                "split": split,
                "source": source,
                "y": s.y,
                "x": s.x,
                "channels": int(f.shape[0]),
                "linear": img.linear,
            }
        )
        result.kept += 1
    return result, entries


def _remove_previous(out_dir: Path) -> None:
    manifest = out_dir / "manifest.jsonl"
    with open(manifest, encoding="utf-8") as fh:
        for line in fh:
            try:
                rel = json.loads(line)["path"]
            except (ValueError, KeyError, TypeError):
                continue
            target = (out_dir / rel).resolve()
            if target.suffix == ".npy" and out_dir.resolve() in target.parents:
                target.unlink(missing_ok=True)
    manifest.unlink()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("sources", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output dir.")
@click.option("--size", type=click.IntRange(min=8), default=256, show_default=True, help="Patch size (pixels).")
@click.option(
    "--stride", type=click.IntRange(min=1), default=None, help="Step between patches (default: --size, no overlap)."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the source-to-split hash.")
@click.option("--split", "split_text", default="0.8,0.1,0.1", show_default=True, help="train,val,test fractions.")
@click.option(
    "--max-nonfinite",
    type=click.FloatRange(0, 1),
    default=MAX_NONFINITE,
    show_default=True,
    help="Reject a patch with more than this fraction of NaN/inf pixels.",
)
@click.option(
    "--max-saturated",
    type=click.FloatRange(0, 1),
    default=MAX_SATURATED,
    show_default=True,
    help="Reject a patch with more than this fraction of saturated pixels.",
)
@click.option(
    "--min-std-ratio",
    type=click.FloatRange(min=0),
    default=MIN_STD_RATIO,
    show_default=True,
    help="'Empty' if robust std <= this x image noise (and no peak above --peak-sigma x noise).",
)
@click.option(
    "--peak-sigma",
    type=click.FloatRange(min=0),
    default=PEAK_SIGMA,
    show_default=True,
    help="A patch whose maximum exceeds its median by this many noise sigmas is never 'empty'.",
)
@click.option(
    "--channels",
    type=click.Choice(["auto", "1", "3"]),
    default="auto",
    show_default=True,
    help="Keep source channels, or force grey (mean) / 3 channels (repeat).",
)
@click.option("--srgb-tiff", is_flag=True, help="Treat TIFFs as sRGB display images (de-gamma, linear=false).")
@click.option("--overwrite", is_flag=True, help="Replace an existing OUT/manifest.jsonl and the patches it lists.")
def main(
    sources: tuple[Path, ...],
    out_dir: Path,
    size: int,
    stride: int | None,
    seed: int,
    split_text: str,
    max_nonfinite: float,
    max_saturated: float,
    min_std_ratio: float,
    peak_sigma: float,
    channels: str,
    srgb_tiff: bool,
    overwrite: bool,
) -> None:
    """Cut SIZE x SIZE patches from SOURCES into OUT/<split>/ with OUT/manifest.jsonl."""
    try:
        fractions = parse_split(split_text)
    except click.BadParameter as e:
        e.param_hint = "'--split'"
        raise
    stride = stride or size
    rules = Rules(max_nonfinite, max_saturated, min_std_ratio, peak_sigma)

    def fail(msg: str, code: int = 1) -> None:
        click.echo(f"{PROG}: {msg}", err=True)
        sys.exit(code)

    manifest_path = out_dir / "manifest.jsonl"
    if manifest_path.exists():
        if not overwrite:
            fail(f"{manifest_path} exists; pass --overwrite to replace it", 2)
        _remove_previous(out_dir)

    files, problems = find_sources(sources, out_dir)
    for p in problems:
        click.echo(f"{PROG}: skipping {p}", err=True)
    if not files:
        fail("no FITS/XISF/TIFF/PNG/JPEG sources found")
    names = source_names(files)
    out_dir.mkdir(parents=True, exist_ok=True)

    results: list[SourceResult] = []
    all_entries: list[dict[str, Any]] = []
    order = sorted(files, key=lambda f: names[f][0])
    for f in tqdm(order, desc="sources", unit="img", file=sys.stderr, disable=None):
        source, stem = names[f]
        split = assign_split(source, seed, fractions)
        try:
            result, entries = cut_source(f, source, stem, split, out_dir, size, stride, rules, channels, srgb_tiff)
        except PatchError as e:
            tqdm.write(f"{PROG}: skipping {f}: {e}", file=sys.stderr)
            results.append(SourceResult(source=source, split=split, error=str(e)))
            continue
        if not result.shape or result.shape[1] < size or result.shape[2] < size:
            tqdm.write(f"{PROG}: {source} is smaller than {size}x{size}; no patches", file=sys.stderr)
        results.append(result)
        all_entries.extend(entries)

    tmp = manifest_path.with_name("manifest.jsonl.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for entry in all_entries:
            fh.write(json.dumps(entry) + "\n")
    os.replace(tmp, manifest_path)

    counts = {s: sum(1 for e in all_entries if e["split"] == s) for s in SPLITS}
    sources_per_split = {s: sum(1 for r in results if r.split == s and r.kept) for s in SPLITS}
    summary = {
        "params": {
            "size": size,
            "stride": stride,
            "seed": seed,
            "split": dict(zip(SPLITS, fractions, strict=True)),
            "max_nonfinite": max_nonfinite,
            "max_saturated": max_saturated,
            "min_std_ratio": min_std_ratio,
            "peak_sigma": peak_sigma,
            "channels": channels,
            "srgb_tiff": srgb_tiff,
        },
        "patches": counts,
        "sources_per_split": sources_per_split,
        "sources": [r.__dict__ for r in results],
    }
    with open(out_dir / "summary.json", "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=2)
    rejected = {k: sum(r.rejected[k] for r in results) for k in ("nonfinite", "saturated", "empty")}
    click.echo(
        f"{PROG}: {len(all_entries)} patches from {sum(1 for r in results if r.kept)} of {len(results)} sources "
        f"(train {counts['train']}, val {counts['val']}, test {counts['test']}); rejected "
        + ", ".join(f"{k} {v}" for k, v in rejected.items())
        + f"; manifest: {manifest_path}",
        err=True,
    )
    for s, frac in zip(SPLITS, fractions, strict=True):
        if frac > 0 and not sources_per_split[s] and len(results) >= len(SPLITS):
            click.echo(f"{PROG}: note: no source landed in '{s}' with seed {seed}", err=True)
    if not all_entries:
        sys.exit(1)


if __name__ == "__main__":
    main()
