"""Training examples: synthetic scenes or the user's patches, degraded and stretched like inference.

An example is ``(input, target)`` in the engine's stretched space, shape ``(3, crop, crop)``
float32. The stretch is estimated on the *degraded input crop* with
:func:`astroswin.engine.normalize.estimate_stretch` -- the same function inference applies to
the whole image; because it keys on sky level and noise, a crop and a frame of the same sky get
the same stretch. (On bright emission they do not: a frame's black point and noise are the
sky's, a crop's the nebula's. Stretching crops with their whole canvas's statistics instead
was tried, commit 8e5ebce, and made stars on nebulae wider.) Mono scenes are replicated to 3
channels, as :mod:`astroswin.engine.restore` does.

The engine's emission step (:mod:`astroswin.engine.emission`) is off by default
(``data.emission_scale = 0``): putting it in the restoring network's loop (commits 4cab6f9 to
8e5ebce) made stars on nebulae wider, not narrower; see the project's issue notes of
2026-11-27. A star remover may be trained on its residual (``docs/star-emission-split.md``).

Everything is deterministic from an integer seed, so ``--resume`` replays the exact data stream
from the step number alone.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from astroswin.engine.emission import smooth_emission
from astroswin.engine.normalize import estimate_stretch, stretch

from .config import DataConfig
from .degrade import DegradeConfig, convolve, degrade
from .scenes import make_scene, satellite_trail


def to_three_channels(image: np.ndarray) -> np.ndarray:
    """``(1, H, W)`` -> ``(3, H, W)`` by replication; 3 channels pass through."""
    return np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image


def augment(rng: np.random.Generator, *images: np.ndarray, permute: bool = False) -> list[np.ndarray]:
    """The same random flip / 90-degree rotation applied to every image (the sky has no 'up'),
    and with ``permute`` the same shuffle of their channels (drawn after, so the stream
    without it is unchanged)."""
    k, flip = int(rng.integers(4)), bool(rng.integers(2))
    order = rng.permutation(3) if permute else None
    out = []
    for im in images:
        im = np.rot90(im, k, axes=(-2, -1))
        if order is not None and im.shape[0] == 3:
            im = im[order]
        out.append(np.ascontiguousarray(im[..., ::-1] if flip else im))
    return out


def stretched_pair(degraded: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stretch an (input, target) pair with the input's statistics, as inference would."""
    params = estimate_stretch(degraded)
    return stretch(degraded, params).astype(np.float32), stretch(target, params).astype(np.float32)


def view_pair(rng: np.random.Generator, degraded: np.ndarray, target: np.ndarray, y0: int, x0: int, crop: int, permute: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The network's ``(3, crop, crop)`` view of a degraded canvas and its target: cut at
    ``(y0, x0)``, augmented alike (``permute``: colour channels shuffled too), stretched."""
    window = (slice(None), slice(y0, y0 + crop), slice(x0, x0 + crop))
    degraded, target = augment(rng, degraded[window], target[window], permute=permute)
    return stretched_pair(to_three_channels(degraded), to_three_channels(target))


def without_emission(degraded: np.ndarray, target: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """Take the engine's smooth emission estimate (:func:`~astroswin.engine.emission.smooth_emission`,
    a running median of ``scale`` px of the *degraded* canvas) out of input and target alike:
    the view a network gets inside the engine's emission step. ``scale = 0``: unchanged."""
    if not scale:
        return degraded, target
    emission = smooth_emission(degraded, scale, estimate_stretch(degraded).background).rows(0, degraded.shape[1])
    return degraded - emission, target - emission


def synthetic_scene(seed: int, data: DataConfig) -> tuple[np.random.Generator, str, np.ndarray, np.ndarray]:
    """Training seed ``seed``'s clean scene ``(C, H, W)`` (the target before degradation, with
    the stream's brightness multiplier), its kind, its stars alone (same shape and multiplier),
    and the generator, positioned where :func:`synthetic_example` degrades it."""
    rng = np.random.default_rng([seed, 7])
    kinds = list(data.kinds)
    weights = np.array([data.kinds[k] for k in kinds], dtype=float)
    kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
    channels = 1 if rng.uniform() < data.mono_fraction else 3
    size = data.crop + 2 * data.margin
    scene, info = make_scene(seed, (size, size), channels=channels, kind=kind, nebula_level_log10=data.nebula_level_log10)
    trail_rng = np.random.default_rng([seed, 11])  # its own stream: a trail changes nothing else in the example
    if data.trail_probability and trail_rng.uniform() < data.trail_probability:
        scene = scene + satellite_trail(trail_rng, (size, size), channels, info["target_fwhm"])
    brightness = 10 ** rng.uniform(*data.brightness_log10)  # SNR spread: faint to bright fields
    return rng, kind, scene * brightness, info["stars"] * brightness


def synthetic_example(seed: int, data: DataConfig, degradations: DegradeConfig) -> tuple[np.ndarray, np.ndarray]:
    """One stretched ``(input, target)`` pair of ``(3, crop, crop)`` from a synthetic scene.

    With ``data.target == "starless"`` the target is the scene without its stars seen through
    the observation's own PSF, noiseless, over the same sky and pedestal: what a star remover
    should leave of the input (``docs/star-emission-split.md``)."""
    rng, _, scene, stars = synthetic_scene(seed, data)
    degraded, target, info = degrade(rng, scene, degradations)
    if data.target == "starless":
        target = convolve(scene - stars, info["kernels"]) + info["sky"] + info["pedestal"]
    degraded, target = without_emission(degraded, target, data.emission_scale)
    return view_pair(rng, degraded, target, data.margin, data.margin, data.crop, data.channel_permutation)


class FolderPatches:
    """Patches written by ``scripts/make_patches.py``: ``DIR/manifest.jsonl`` + ``.npy`` arrays.

    Each manifest line is ``{"path", "split", "source", "y", "x", "channels", "linear"}`` with
    ``path`` relative to ``DIR`` and arrays of shape ``(C, H, W)`` float32. A patch is treated
    as the *target*: it is blurred and noised with the same degradations as synthetic scenes
    (real images are already blurred and noisy, so this teaches the model their look on top of
    the synthetic truth; see the README's training section).
    """

    def __init__(self, folder: str | Path, split: str = "train"):
        self.folder = Path(folder)
        manifest = self.folder / "manifest.jsonl"
        if not manifest.is_file():
            raise FileNotFoundError(f"{manifest} not found: run scripts/make_patches.py first")
        with manifest.open() as fh:
            self.entries = [e for e in map(json.loads, filter(str.strip, fh)) if e["split"] == split]
        if not self.entries:
            raise ValueError(f"{manifest} has no {split!r} patches")

    def __len__(self) -> int:
        return len(self.entries)

    def example(self, seed: int, data: DataConfig, degradations: DegradeConfig) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([seed, 11])
        entry = self.entries[int(rng.integers(len(self.entries)))]
        patch = np.load(self.folder / entry["path"]).astype(np.float64)
        patch = downsampled(np.random.default_rng([seed, 17]), patch, data)  # its own stream: rng's draws stay as they were
        patch = np.nan_to_num(patch - np.nanmedian(patch))
        scale = np.abs(patch).max() or 1.0
        scene = patch / scale * 10 ** rng.uniform(2, 4)  # to the flux range of synthetic scenes
        h, w = scene.shape[-2:]
        crop, margin = data.crop, data.margin
        if h < crop or w < crop:
            raise ValueError(f"{self.folder / entry['path']} is {h}x{w} px, smaller than data.crop = {crop}: cut bigger patches (make_patches.py --size) or lower data.crop")
        y0, x0 = (int(rng.integers(*crop_range(n, crop, margin))) for n in (h, w))
        # The blur is computed on the crop and its margin, like a synthetic scene's canvas: a
        # blur of the whole patch saw zeros beyond its edges, and a crop near an edge then had
        # input light missing (up to half of it) that its target still held.
        canvas = with_margin(scene, y0, x0, crop, margin)
        degraded, target, _ = degrade(rng, canvas, degradations)
        degraded, target = without_emission(degraded, target, data.emission_scale)
        return view_pair(rng, degraded, target, margin, margin, crop, data.channel_permutation)


def crop_range(size: int, crop: int, margin: int) -> tuple[int, int]:
    """``[low, high)`` of a crop's first pixel along an axis of ``size``: the crop and its
    ``margin`` of real pixels on both sides where the patch is big enough, else anywhere."""
    if size >= crop + 2 * margin:
        return margin, size - crop - margin + 1
    return 0, size - crop + 1


def with_margin(image: np.ndarray, y0: int, x0: int, crop: int, margin: int) -> np.ndarray:
    """``image[:, y0 - margin : y0 + crop + margin, x0 - margin : ...]``, mirrored (reflect)
    where that window runs past the image's edge."""
    padded = np.pad(image, ((0, 0), (margin, margin), (margin, margin)), mode="reflect")
    return padded[:, y0 : y0 + crop + 2 * margin, x0 : x0 + crop + 2 * margin]


def downsampled(rng: np.random.Generator, patch: np.ndarray, data: DataConfig) -> np.ndarray:
    """``(C, H, W)`` patch binned by a random integer factor (block means, so flux per area is
    kept and nothing is interpolated) with probability ``data.downsample_probability``; the
    factor is at most ``data.downsample_max`` and never leaves less than ``data.crop``."""
    if data.downsample_probability == 0 or rng.uniform() >= data.downsample_probability:
        return patch
    largest = min(data.downsample_max, min(patch.shape[-2:]) // data.crop)
    if largest < 2:
        return patch
    factor = int(rng.integers(2, largest + 1))
    c, h, w = patch.shape
    h, w = h - h % factor, w - w % factor
    return patch[:, :h, :w].reshape(c, h // factor, factor, w // factor, factor).mean(axis=(2, 4))


def make_batch(seeds: list[int], data: DataConfig, degradations: DegradeConfig, folder: FolderPatches | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack examples for ``seeds`` into ``(B, 3, crop, crop)`` input and target tensors."""
    xs, ys = [], []
    for seed in seeds:
        use_folder = folder is not None and np.random.default_rng([seed, 13]).uniform() < data.folder_fraction
        x, y = folder.example(seed, data, degradations) if use_folder else synthetic_example(seed, data, degradations)
        xs.append(x)
        ys.append(y)
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))


#: Seeds of validation scenes start here; training seeds stay far below it.
VALIDATION_SEED_BASE = 10**9


def validation_set(count: int, size: int, degradations: DegradeConfig, kinds: Sequence[str] = ("stars", "galaxy", "nebula"), target: str = "restored", emission_scale: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed validation set, disjoint from training seeds, cycling through ``kinds``.

    The trainer passes the kinds it trains on, so a run without galaxies (a machine without
    galsim) validates without them too; with the default mix the set never changes. It also
    passes the target and the emission step it trains with, so validation sees what training
    sees.
    """
    data = DataConfig(crop=size, margin=32, mono_fraction=0.3, target=target, emission_scale=emission_scale)
    xs, ys = [], []
    for i in range(count):
        data.kinds = {kinds[i % len(kinds)]: 1.0}
        x, y = synthetic_example(VALIDATION_SEED_BASE + i, data, degradations)
        xs.append(x)
        ys.append(y)
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))
