"""Overlapped tiles with reflect padding and smooth, normalised blend weights.

Pure functions on index arithmetic: the image is never padded or copied as a whole. Each axis
is covered by tiles of length ``tile`` that overlap by ``overlap`` pixels, starting ``overlap``
pixels *before* the image (those virtual pixels are read by reflection), so every real pixel,
borders included, gets full context. A tile's weight is 0 on its outermost pixels and ramps up
and down over the overlap with a raised cosine (:func:`ramp`); weights are separable, so their
sum over all tiles is the outer product of two 1-D sums and normalising costs no image-sized
buffer.

``extract``, ``accumulate`` and ``normalise`` take numpy arrays (the CPU path, which streams a
memory-mapped image) or torch tensors (the GPU path, which keeps the image on the device):
the same index arithmetic either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

Array = np.ndarray | torch.Tensor


@dataclass(frozen=True)
class Axis:
    """Tiling of one axis of length ``size``: tile ``starts`` (may be negative) and ``length``."""

    size: int
    length: int
    overlap: int
    starts: tuple[int, ...]

    def weights(self) -> np.ndarray:
        """``(length,)`` blend weight of a tile along this axis, in [0, 1]."""
        return ramp(self.length, self.overlap)

    def weight_sum(self) -> np.ndarray:
        """``(size,)`` sum of all tiles' weights at each real pixel (> 0 everywhere)."""
        total = np.zeros(self.size, dtype=np.float64)
        w = self.weights()
        for s in self.starts:
            a, b = max(s, 0), min(s + self.length, self.size)
            total[a:b] += w[a - s : b - s]
        return total


def ramp(length: int, overlap: int) -> np.ndarray:
    """Blend window of a tile: 0 on an outer margin, a raised-cosine ramp, then 1.

    The outer ``overlap // 4`` pixels of each side get weight 0: they serve only as context, so
    a model's unreliable tile-edge pixels never reach the output (a model whose receptive field
    fits in that margin is reproduced exactly). Between margin and ``overlap`` the weight rises
    as ``sin^2``; two tiles offset by ``length - overlap`` ramp over the same pixels and sum to
    exactly 1 there (``sin^2 + cos^2``).
    """
    w = np.ones(length, dtype=np.float64)
    o = min(overlap, length // 2)
    margin = o // 4
    width = o - 2 * margin
    if o > 0:
        up = np.zeros(o)
        up[margin : margin + width] = np.sin(0.5 * np.pi * (np.arange(width) + 0.5) / width) ** 2
        up[margin + width :] = 1.0
        w[:o] = np.minimum(w[:o], up)
        w[length - o :] = np.minimum(w[length - o :], up[::-1])
    return w


def plan_axis(size: int, tile: int, overlap: int) -> Axis:
    """Tile one axis of ``size`` pixels.

    Parameters
    ----------
    size : int
        Image length along the axis, >= 1.
    tile : int
        Maximum tile length (pixels), > 2 * overlap.
    overlap : int
        Overlap between neighbouring tiles, and the reflected context before/after the image.
    """
    if size < 1:
        raise ValueError(f"axis length must be >= 1, got {size}")
    if overlap < 0 or tile <= 2 * overlap:
        raise ValueError(f"need tile > 2 * overlap >= 0, got tile={tile}, overlap={overlap}")
    padded = size + 2 * overlap
    if padded <= tile:
        return Axis(size, padded, overlap, (-overlap,))
    stride = tile - overlap
    starts = list(range(-overlap, size + overlap - tile, stride))
    starts.append(size + overlap - tile)  # the last tile ends exactly `overlap` past the image
    return Axis(size, tile, overlap, tuple(dict.fromkeys(starts)))


def reflect_indices(start: int, length: int, size: int) -> np.ndarray:
    """Indices ``start .. start+length-1`` mapped into ``[0, size)`` by mirror reflection.

    The same rule as ``numpy.pad(mode="reflect")`` (edge pixel not repeated), applied as often
    as needed, so it works for tiles larger than the image and for ``size == 1``.
    """
    idx = np.arange(start, start + length)
    if size == 1:
        return np.zeros(length, dtype=np.intp)
    period = 2 * size - 2
    idx = np.abs(idx) % period
    return np.where(idx >= size, period - idx, idx).astype(np.intp)


@dataclass(frozen=True)
class TilePlan:
    """Both axes of an image's tiling; iterate :meth:`tiles` for ``(y_start, x_start)`` pairs."""

    rows: Axis
    cols: Axis

    def tiles(self) -> list[tuple[int, int]]:
        return [(y, x) for y in self.rows.starts for x in self.cols.starts]

    def __len__(self) -> int:
        return len(self.rows.starts) * len(self.cols.starts)


def plan(height: int, width: int, tile: int, overlap: int) -> TilePlan:
    """Tiling of an ``height x width`` image (see :func:`plan_axis`)."""
    return TilePlan(plan_axis(height, tile, overlap), plan_axis(width, tile, overlap))


def indices(plan_: TilePlan, y: int, x: int) -> tuple[np.ndarray, np.ndarray]:
    """The image rows and columns the tile at ``(y, x)`` covers, reflected at the edges."""
    return reflect_indices(y, plan_.rows.length, plan_.rows.size), reflect_indices(x, plan_.cols.length, plan_.cols.size)


def extract(image: Array, plan_: TilePlan, y: int, x: int) -> Array:
    """``(C, Ly, Lx)`` float32 tile at ``(y, x)`` of a ``(C, H, W)`` array, reflect-padded.

    Reads only the window of rows and columns the tile covers (a basic slice, then the
    reflection within it), so a memory-mapped image stays on disk but for that window. Always a
    new array (a tensor on ``image``'s device for a tensor), never a view of ``image``.
    """
    iy, ix = indices(plan_, y, x)
    y0, y1 = int(iy.min()), int(iy.max()) + 1
    x0, x1 = int(ix.min()), int(ix.max()) + 1
    if isinstance(image, torch.Tensor):
        window = image[:, y0:y1, x0:x1].to(torch.float32, copy=True)
    else:
        window = np.array(image[:, y0:y1, x0:x1], dtype=np.float32)
    if y1 - y0 != len(iy) or iy[0] != y0 or not (np.diff(iy) == 1).all():
        window = _take(window, iy - y0, axis=1)
    if x1 - x0 != len(ix) or ix[0] != x0 or not (np.diff(ix) == 1).all():
        window = _take(window, ix - x0, axis=2)
    return window


def _take(array: Array, indices: np.ndarray, axis: int) -> Array:
    """``array`` indexed by ``indices`` along ``axis``, for numpy arrays and torch tensors."""
    if isinstance(array, torch.Tensor):
        return array.index_select(axis, torch.from_numpy(indices).to(array.device))
    return np.take(array, indices, axis=axis)


@lru_cache(maxsize=8)
def _weight2d(rows_length: int, rows_overlap: int, cols_length: int, cols_overlap: int) -> np.ndarray:
    """``(Ly, Lx)`` float32 blend weight of a whole tile (outer product of the axis ramps)."""
    weight = ramp(rows_length, rows_overlap)[:, None] * ramp(cols_length, cols_overlap)[None, :]
    weight = weight.astype(np.float32)
    weight.flags.writeable = False
    return weight


@lru_cache(maxsize=8)
def _weight2d_on(device: torch.device, *shape: int) -> torch.Tensor:
    """:func:`_weight2d` as a tensor on ``device`` (made once per tiling and device)."""
    return torch.from_numpy(_weight2d(*shape).copy()).to(device)


def accumulate(out: Array, tile: Array, plan_: TilePlan, y: int, x: int) -> None:
    """Add ``tile * weight`` into ``out`` (``(C, H, W)`` float32) where the tile covers the image."""
    shape = (plan_.rows.length, plan_.rows.overlap, plan_.cols.length, plan_.cols.overlap)
    weight = _weight2d_on(out.device, *shape) if isinstance(out, torch.Tensor) else _weight2d(*shape)
    h, w = out.shape[-2:]
    y0, y1 = max(y, 0), min(y + plan_.rows.length, h)
    x0, x1 = max(x, 0), min(x + plan_.cols.length, w)
    out[:, y0:y1, x0:x1] += tile[:, y0 - y : y1 - y, x0 - x : x1 - x] * weight[y0 - y : y1 - y, x0 - x : x1 - x]


def normalise(out: Array, plan_: TilePlan) -> None:
    """Divide the accumulated ``out`` by the (separable) weight sum, in place."""
    rows, cols = plan_.rows.weight_sum().astype(np.float32), plan_.cols.weight_sum().astype(np.float32)
    if isinstance(out, torch.Tensor):
        rows, cols = torch.from_numpy(rows).to(out.device), torch.from_numpy(cols).to(out.device)
    out /= rows[None, :, None]
    out /= cols[None, None, :]
