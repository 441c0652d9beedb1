"""Training examples: synthetic scenes or the user's patches, degraded and stretched like inference.

An example is ``(input, target)`` in the engine's stretched space, shape ``(3, crop, crop)``
float32. The stretch is estimated on the *degraded input crop* with
:func:`astroswin.engine.normalize.estimate_stretch` -- the same function inference applies to
the whole image; because it keys on sky level and noise, a crop and a frame of the same sky get
the same stretch. (On bright emission they do not: a frame's black point and noise are the
sky's, a crop's the nebula's. Stretching crops with their whole canvas's statistics instead
was tried, commit 8e5ebce, and made stars on nebulae wider: see
``train/configs/sharpen_emission.toml``.) Mono scenes are replicated to 3 channels, as
:mod:`astroswin.engine.restore` does.

With ``data.emission_scale`` > 0 the pair also goes through the engine's emission step
(:mod:`astroswin.engine.emission`): the smooth emission of the degraded canvas is taken out of
input *and* target before the stretch, so the network trains on the view it gets at inference
(the residual structure finer than the window, on the black point), and learns the same
correction: the engine adds the array back afterwards.

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
from .degrade import DegradeConfig, degrade
from .scenes import make_scene


def to_three_channels(image: np.ndarray) -> np.ndarray:
    """``(1, H, W)`` -> ``(3, H, W)`` by replication; 3 channels pass through."""
    return np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image


def augment(rng: np.random.Generator, *images: np.ndarray) -> list[np.ndarray]:
    """The same random flip / 90-degree rotation applied to every image (the sky has no 'up')."""
    k, flip = int(rng.integers(4)), bool(rng.integers(2))
    out = []
    for im in images:
        im = np.rot90(im, k, axes=(-2, -1))
        out.append(np.ascontiguousarray(im[..., ::-1] if flip else im))
    return out


def stretched_pair(degraded: np.ndarray, target: np.ndarray, emission: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Stretch an (input, target) pair with the input's statistics, as inference would.

    ``emission`` (same shape, or None) is subtracted from both after the statistics are taken
    from the input as it is: inference estimates the stretch on the frame, then takes the
    emission out (:func:`astroswin.engine.restore.restore_array`).
    """
    params = estimate_stretch(degraded)
    if emission is not None:
        degraded, target = degraded - emission, target - emission
    return stretch(degraded, params).astype(np.float32), stretch(target, params).astype(np.float32)


def canvas_emission(degraded: np.ndarray, scale: int) -> np.ndarray | None:
    """The engine's smooth emission of a whole degraded canvas ``(C, H, W)``; None when off.

    Taken on the canvas, not the crop, so the crop's edges see the window whole, as tiles of a
    frame do at inference.
    """
    if not scale:
        return None
    return smooth_emission(degraded, scale, np.median(degraded, axis=(1, 2))).rows(0, degraded.shape[1])


def view_pair(rng: np.random.Generator, degraded: np.ndarray, target: np.ndarray, y0: int, x0: int, data: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """The network's ``(3, crop, crop)`` view of a degraded canvas and its target, cut at
    ``(y0, x0)``, augmented and stretched.

    With the emission step on, the emission is re-zeroed so that the crop's median after the
    subtraction is the crop's black point, as a frame's is at inference.
    """
    emission = canvas_emission(degraded, data.emission_scale)
    window = (slice(None), slice(y0, y0 + data.crop), slice(x0, x0 + data.crop))
    degraded, target = degraded[window], target[window]
    if emission is None:
        degraded, target = augment(rng, degraded, target)
    else:
        degraded, target, emission = augment(rng, degraded, target, emission[window])
        emission = emission + (np.median(degraded - emission, axis=(1, 2)) - np.median(degraded, axis=(1, 2)))[:, None, None]
        emission = to_three_channels(emission)
    return stretched_pair(to_three_channels(degraded), to_three_channels(target), emission)


def synthetic_example(seed: int, data: DataConfig, degradations: DegradeConfig) -> tuple[np.ndarray, np.ndarray]:
    """One stretched ``(input, target)`` pair of ``(3, crop, crop)`` from a synthetic scene."""
    rng = np.random.default_rng([seed, 7])
    kinds = list(data.kinds)
    weights = np.array([data.kinds[k] for k in kinds], dtype=float)
    kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
    channels = 1 if rng.uniform() < data.mono_fraction else 3
    size = data.crop + 2 * data.margin
    scene, _ = make_scene(seed, (size, size), channels=channels, kind=kind)
    scene = scene * 10 ** rng.uniform(*data.brightness_log10)  # SNR spread: faint to bright fields
    degraded, target, _ = degrade(rng, scene, degradations)
    return view_pair(rng, degraded, target, data.margin, data.margin, data)


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
        patch = np.nan_to_num(patch - np.nanmedian(patch))
        scale = np.abs(patch).max() or 1.0
        scene = patch / scale * 10 ** rng.uniform(2, 4)  # to the flux range of synthetic scenes
        h, w = scene.shape[-2:]
        y0, x0 = int(rng.integers(0, max(1, h - data.crop + 1))), int(rng.integers(0, max(1, w - data.crop + 1)))
        degraded, target, _ = degrade(rng, scene, degradations)
        return view_pair(rng, degraded, target, y0, x0, data)


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


def validation_set(count: int, size: int, degradations: DegradeConfig, kinds: Sequence[str] = ("stars", "galaxy", "nebula"), view: DataConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed validation set, disjoint from training seeds, cycling through ``kinds``.

    The trainer passes the kinds it trains on, so a run without galaxies (a machine without
    galsim) validates without them too; with the default mix the set never changes.
    """
    view = view or DataConfig()
    data = DataConfig(crop=size, margin=32, mono_fraction=0.3, emission_scale=view.emission_scale)
    xs, ys = [], []
    for i in range(count):
        data.kinds = {kinds[i % len(kinds)]: 1.0}
        x, y = synthetic_example(VALIDATION_SEED_BASE + i, data, degradations)
        xs.append(x)
        ys.append(y)
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))
