"""Display-only previews: an asinh stretch to 8-bit PNG, side by side. Never used on data."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .normalize import estimate_stretch, stretch


def display(image: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """``(H, W)`` / ``(C, H, W)`` linear -> ``(H, W, 3)`` uint8, stretched like ``reference``.

    Using one reference (usually the input) for every panel keeps brightness comparable.
    """
    data = image[None] if image.ndim == 2 else image
    ref = reference if reference is not None else image
    params = estimate_stretch(ref[None] if ref.ndim == 2 else ref)
    if params.background.size != data.shape[0]:
        params = type(params)(np.full(data.shape[0], float(np.median(params.background))), params.noise)
    s = stretch(np.nan_to_num(data.astype(np.float64)), params)
    lo, hi = np.percentile(s, 0.5), max(np.percentile(s, 99.95), np.percentile(s, 0.5) + 1e-6)
    s = np.clip((s - lo) / (hi - lo), 0, 1)
    rgb = np.repeat(s, 3, axis=0) if s.shape[0] == 1 else s
    return (np.moveaxis(rgb, 0, -1) * 255 + 0.5).astype(np.uint8)


def side_by_side(panels: list[np.ndarray], path: str | Path, reference: np.ndarray | None = None, gap: int = 4) -> Path:
    """Write panels (same size) left to right into one PNG, stretched alike."""
    from PIL import Image

    ref = reference if reference is not None else panels[0]
    tiles = [display(p, ref) for p in panels]
    h = max(t.shape[0] for t in tiles)
    canvas = np.full((h, sum(t.shape[1] for t in tiles) + gap * (len(tiles) - 1), 3), 255, np.uint8)
    x = 0
    for t in tiles:
        canvas[: t.shape[0], x : x + t.shape[1]] = t
        x += t.shape[1] + gap
    Image.fromarray(canvas).save(path)
    return Path(path)
