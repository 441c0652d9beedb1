"""Restore a linear image array: normalise, tile, infer, blend, un-normalise, put satellite
trails' light back, anchor the flux.
Arrays in, arrays out.

The pipeline never holds more than the input (which may be memory-mapped), one float32 output
buffer of the input's size, a batch of tiles and the smooth emission's bins (1/16 of the
image; :class:`~astroswin.engine.emission.EmissionMap`): tiles are read, cleaned (NaN/inf filled),
stretched and replicated to three channels on the fly. Non-finite pixels come back exactly as
they were (a NaN border stays NaN); clipped (saturated) stars are given back as the input has them.

Speed: on large images the model runs through ``torch.compile`` (about 2-3x faster on a CPU,
measured by ``scripts/bench.py``), whose compiled graph is cached on disk, so only the first
run on a machine pays the full compilation. Where compiling is unavailable or fails (no C++
compiler, an unsupported platform) the model silently runs eagerly. ``RestoreSettings.compile``
or the environment variable ``ASTROSWIN_COMPILE`` (``0`` / ``1`` / ``auto``) choose.
"""

from __future__ import annotations

import logging
import mmap
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import tiling
from .anchor import MARGIN, scale_band
from .device import autocast, resolve_device, resolve_precision
from .emission import BAND_VALUES, EMISSION_SCALE, EmissionMap, smooth_emission
from .errors import EngineError
from .normalize import Stretch, estimate_stretch, no_data, stretch, unstretch
from .saturated import CONTEXT, clipped_star_weight
from .trails import put_back_trails

ProgressCallback = Callable[[int, int], None]

log = logging.getLogger("astroswin")

#: Environment variable that sets the compile policy when ``RestoreSettings.compile`` is "auto".
COMPILE_ENV = "ASTROSWIN_COMPILE"
#: In "auto" mode, compile only when the tiles hold at least this many pixels: a first (cold)
#: compilation costs as much as about 2 MP of eager inference on a CPU; later runs load the
#: cached graph in a few seconds.
COMPILE_MIN_PIXELS = 2_000_000
#: Default ``(tile, overlap)`` on the CPU, the fastest measured with no quality loss: on a
#: 2-core CPU 128/16 runs 9 MP RGB at 0.157 MP/s against 0.121 for 256/32 (the synthetic
#: benchmark's scores agree within 0.03 dB) (``scripts/bench.py``).
CPU_TILING = (128, 16)
#: On GPUs with at least :data:`LARGE_GPU_BYTES` of memory: 512/32, 10% faster than 256/32 on
#: an H200 at batch 16 (``scripts/gpu_checks.py``); a batch of 4 such tiles takes about 4 GB.
#: Smaller GPUs and Apple's MPS (not measured) get 256/32 (about 1 GB).
LARGE_GPU_TILING, GPU_TILING = (512, 32), (256, 32)
LARGE_GPU_BYTES = 12 * 1024**3
#: Values per band of :func:`_finish` (16 MB of float32), unless that holds fewer than
#: 2 * MARGIN rows (the context rows would then cost more than the band). The anchor's
#: temporaries peak at 7.5x (RGB, one channel at a time) to 17x (mono) the band's size:
#: 126-284 MB on a 9 MP frame, the same on 1, 2 or 4 threads (tracemalloc).
ANCHOR_BAND_VALUES = 1 << 22
#: Largest pixel magnitude restored. The engine computes in float32 (largest 3.4e38): a sky of
#: 1e38 overflowed in its sums and came out as inf and NaN, 1e300 (float64) in the cast; 1e36
#: leaves a margin of 300 (a sky of 1e37 was restored like one of 1000).
MAX_MAGNITUDE = 1e36
#: On the CPU, run one tile per forward pass whatever the batch size (see RestoreSettings).
_CPU_ONE_TILE_PER_PASS = True


@dataclass(frozen=True)
class RestoreSettings:
    """How to run a restoration.

    Attributes
    ----------
    strength : float
        0..1; the output is ``strength * restored + (1 - strength) * input`` in linear space.
    tile, overlap : int or None
        Tile size and overlap in pixels. None: by device (:func:`default_tiling`, measured);
        an overlap of None with a tile given is ``tile // 8``.
    batch_size : int
        Tiles per forward pass on GPUs, and per progress report. On the CPU tiles always run
        one per forward pass: their activations then stay in cache, measured 1.13x faster
        than batches of 4 (``scripts/bench.py sweep``).
    device : str
        ``auto`` | ``cpu`` | ``cuda`` | ``mps``.
    precision : str
        ``auto`` | ``fp32`` | ``bf16`` | ``fp16``.
    threads : int or None
        CPU threads for torch (None: torch's default).
    emission_scale : int
        Window in pixels of the running median that takes the smooth emission out before the
        network and puts it back after (:mod:`astroswin.engine.emission`); 0 turns it off.
    compile : str
        ``auto`` | ``on`` | ``off``: run the model through ``torch.compile`` (falls back to
        eager execution where that fails). ``auto`` follows ``$ASTROSWIN_COMPILE`` if set, else
        compiles on the CPU when the image is large enough to repay the compilation
        (:data:`COMPILE_MIN_PIXELS`; measured 2-3x there). On GPUs compiling is opt-in
        (``on``): its gain there has not been measured yet.
    """

    strength: float = 1.0
    tile: int | None = None
    overlap: int | None = None
    batch_size: int = 4
    device: str = "auto"
    precision: str = "auto"
    threads: int | None = None
    emission_scale: int = EMISSION_SCALE
    compile: str = "auto"

    def check(self) -> None:
        for name in ("tile", "overlap", "threads", "batch_size", "emission_scale"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
                raise EngineError(f"{name.replace('_', ' ')} must be a whole number, got {value!r}")
        if isinstance(self.strength, bool) or not isinstance(self.strength, (int, float, np.floating, np.integer)):
            raise EngineError(f"strength must be a number within 0..1, got {self.strength!r}")
        if self.threads is not None and self.threads < 1:
            raise EngineError(f"threads must be >= 1, got {self.threads}")
        if not 0.0 <= self.strength <= 1.0:
            raise EngineError(f"strength must be within 0..1, got {self.strength}")
        device = resolve_device(self.device)
        self.tiling(device)
        resolve_precision(self.precision, device)  # fp16 on the CPU: refused once, before any file is read
        if self.batch_size < 1:
            raise EngineError(f"batch size must be >= 1, got {self.batch_size}")
        if self.emission_scale != 0 and self.emission_scale < 3:
            raise EngineError(f"emission scale must be 0 (off) or >= 3 px, got {self.emission_scale}")
        if self.compile not in ("auto", "on", "off"):
            raise EngineError(f"compile must be auto, on or off, got {self.compile!r}")

    def tiling(self, device: torch.device) -> tuple[int, int]:
        """``(tile, overlap)`` in pixels for ``device``, defaults filled in; checked."""
        default_tile, default_overlap = default_tiling(device)
        tile, overlap = (default_tile, default_overlap) if self.tile is None else (self.tile, self.tile // 8)
        if self.overlap is not None:
            overlap = self.overlap
        if overlap < 0 or tile <= 2 * overlap or tile < 16:
            raise EngineError(f"need tile >= 16 and tile > 2 * overlap >= 0, got tile={tile}, overlap={overlap}")
        return tile, overlap


def default_tiling(device: torch.device) -> tuple[int, int]:
    """The measured default ``(tile, overlap)`` for a device (see :data:`CPU_TILING`)."""
    if device.type == "cpu":
        return CPU_TILING
    if device.type == "cuda" and torch.cuda.get_device_properties(_cuda_index(device)).total_memory >= LARGE_GPU_BYTES:
        return LARGE_GPU_TILING
    return GPU_TILING


def _cuda_index(device: torch.device) -> int:
    """The CUDA device's index (``cuda`` alone means the current device; torch < 2.5 needs it)."""
    return device.index if device.index is not None else torch.cuda.current_device()


def as_channels_first(data: np.ndarray) -> np.ndarray:
    """View ``(H, W)`` as ``(1, H, W)``; accept ``(C, H, W)`` with C in {1, 3}; else raise."""
    if data.ndim == 2:
        return data[None]
    if data.ndim == 3 and data.shape[0] in (1, 3):
        return data
    raise EngineError(f"unsupported image shape {data.shape}: expected (H, W) mono or (C, H, W) with 1 or 3 channels")


#: ``numpy.memmap`` modes whose pages hold no private changes (read-only or shared).
SHARED_MODES = ("r", "r+", "readonly", "readwrite")


def _mapping(array: np.ndarray) -> mmap.mmap | None:
    """The ``mmap`` behind a memory-mapped array whose pages may be dropped, else None.

    Only mappings that cannot hold private modifications qualify: a read-only array (the I/O
    module returns memory-mapped FITS data read-only) or a shared ``numpy.memmap`` (modes
    ``r`` / ``r+``, whose writes live in the page cache).
    """
    shared = isinstance(array, np.memmap) and getattr(array, "mode", None) in SHARED_MODES
    if array.flags.writeable and not shared:
        return None
    base = array
    for _ in range(32):
        if isinstance(base, np.memmap) and getattr(base, "mode", None) not in SHARED_MODES:
            return None  # copy-on-write ("c"): dropping its pages would drop the caller's changes
        if isinstance(base, mmap.mmap):
            return base
        base = getattr(base, "base", None)
        if base is None:
            return None
    return None


def release_pages(image: np.ndarray) -> None:
    """Drop a memory-mapped input's resident pages from this process (``MADV_DONTNEED``).

    They stay in the page cache, and a later read faults them back in, but they stop counting
    against the process's memory: reading a 720 MB FITS file pass after pass then costs a few
    MB of resident memory instead of 720. A no-op for ordinary arrays and where ``madvise`` is
    unavailable.
    """
    mapped = _mapping(image)
    if mapped is None or not hasattr(mapped, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
        return
    try:
        mapped.madvise(mmap.MADV_DONTNEED)
    except (OSError, ValueError):
        pass


def _row_blocks(height: int, width: int, channels: int, budget: int = 1 << 24, release: np.ndarray | None = None):
    """Row ranges whose ``C x rows x W`` slices stay under ``budget`` elements; with ``release``,
    that memory-mapped array's pages are dropped after each block (:func:`release_pages`)."""
    rows = max(1, budget // max(1, channels * width))
    for y in range(0, height, rows):
        yield y, min(height, y + rows)
        if release is not None:
            release_pages(release)


def finite_extremes(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(C,)`` smallest and largest finite value of each channel (+inf / -inf for a channel
    with none), read in bounded-memory row blocks."""
    c, h, w = image.shape
    lows, peaks = np.full(c, np.inf), np.full(c, -np.inf)
    for a, b in _row_blocks(h, w, c, release=image):
        for channel in range(c):
            block = image[channel, a:b]
            finite = block[np.isfinite(block)]
            if finite.size:
                lows[channel] = min(lows[channel], float(finite.min()))
                peaks[channel] = max(peaks[channel], float(finite.max()))
    return lows, peaks


def saturation_level(image: np.ndarray, params: Stretch, peaks: np.ndarray | None = None) -> np.ndarray | None:
    """``(C,)`` clip level of each channel (+inf where a channel has none), or None if no
    channel has a saturated plateau.

    A plateau is at least 3 pixels sharing a channel's maximum value, far (>50 sigma) above its
    background: a clipped star core or a sensor's full well, which no restoration can recover.
    Each channel is looked at on its own: white-balanced colour data clips each at its own
    level, and a single level (the brightest channel's) once let the other channels' clipped
    cores through the network, 3-4x brighter and falsely coloured. ``peaks``: the channels'
    largest finite values, if known (:func:`finite_extremes`).
    """
    c, h, w = image.shape
    peaks = finite_extremes(image)[1] if peaks is None else peaks
    levels = np.full(c, np.inf)
    for channel in range(c):
        peak = peaks[channel]
        if not np.isfinite(peak) or peak < float(params.background[channel]) + 50 * params.noise:
            continue
        count = sum(int((image[channel, a:b] == peak).sum()) for a, b in _row_blocks(h, w, c, release=image))
        if count >= 3:
            levels[channel] = peak
    return levels if np.isfinite(levels).any() else None


def _clean_tile(tile: np.ndarray, params: Stretch, bad: np.ndarray) -> np.ndarray:
    """Replace the pixels ``bad`` (:func:`~astroswin.engine.normalize.no_data` of the tile as
    read) by their channel's background: the network sees sky there, and :func:`_finish` puts
    the input's values back (a mosaic's empty corner would otherwise be a cliff it rings on)."""
    if bad.any():
        tile = np.where(bad, params.background.astype(np.float32)[:, None, None], tile)
    return tile


def _stack(tiles: list[tiling.Array], size: int) -> tiling.Array:
    """``(size, C, Ly, Lx)`` batch of ``tiles``, padded with copies of the last one."""
    if isinstance(tiles[0], torch.Tensor):
        batch = torch.stack(tiles)
        return torch.cat([batch, batch[-1:].expand(size - len(tiles), -1, -1, -1)]) if size > len(tiles) else batch
    batch = np.stack(tiles)
    return np.concatenate([batch, np.repeat(batch[-1:], size - len(tiles), axis=0)]) if size > len(tiles) else batch


def _fits_on_device(shape: tuple[int, int, int], device: torch.device) -> bool:
    """Whether to keep the image on the GPU: input and output buffers (float32) together within
    a third of its free memory (torch's cached blocks count as free), the rest left to the
    model's activations.

    On the GPU the per-tile work around the model (cutting, cleaning, blending) costs more than
    the model itself when done on the CPU: measured 5.0 MP/s for 16.7 MP RGB on an H200 with
    every precision and tile size alike (``scripts/gpu_checks.py``).
    """
    if device.type != "cuda":
        return False
    index = _cuda_index(device)
    free, _ = torch.cuda.mem_get_info(index)
    free += torch.cuda.memory_reserved(index) - torch.cuda.memory_allocated(index)  # torch's cache
    return 2 * 4 * int(np.prod(shape)) < free / 3


def _upload(image: np.ndarray, params: Stretch, device: torch.device, emission: EmissionMap | None) -> torch.Tensor:
    """``image - emission`` as float32 on ``device``, non-finite pixels replaced by their
    channel's background (:func:`_clean_tile` once for all), copied in row blocks of bounded
    host memory."""
    c, h, w = image.shape
    dst = torch.empty((c, h, w), dtype=torch.float32, device=device)
    background = torch.as_tensor(np.asarray(params.background, dtype=np.float32), device=device).reshape(c, 1, 1)
    for a, b in _row_blocks(h, w, c, release=image):
        block = np.array(image[:, a:b], dtype=np.float32)  # a writable copy
        bad = torch.from_numpy(no_data(block, params.blank)).to(device)
        if emission is not None:
            block -= emission.rows(a, b)
        block = torch.from_numpy(block).to(device)
        dst[:, a:b] = torch.where(bad, background, block)
    return dst


def _compile_wanted(settings: RestoreSettings, device: torch.device, tile_pixels: int) -> bool:
    """Whether to run the model through ``torch.compile`` (see :class:`RestoreSettings`)."""
    mode = settings.compile
    if mode == "auto":
        env = os.environ.get(COMPILE_ENV, "auto").strip().lower()
        mode = {"0": "off", "off": "off", "false": "off", "no": "off", "1": "on", "on": "on", "true": "on", "yes": "on"}.get(env, "auto")
    if mode != "auto":
        return mode == "on"
    return device.type == "cpu" and tile_pixels >= COMPILE_MIN_PIXELS and hasattr(torch, "compile")


def _use_persistent_cache() -> None:
    """Keep torch.compile's graph cache in the user's cache folder, which survives reboots,
    rather than torch's default ``/tmp/torchinductor_<user>`` -- unless the user chose one.

    (Importing ``transformers`` already fills ``$TORCHINDUCTOR_CACHE_DIR`` with torch's
    default, so that value counts as unset.)
    """
    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir

        default = os.path.abspath(default_cache_dir())
    except Exception:  # private API moved: leave torch's choice alone
        return
    if current is None or os.path.abspath(current) == default:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(base / "astroswin" / "torchinductor")


def _cache_attention_masks(model: torch.nn.Module) -> None:
    """Memoise the shifted-window attention masks of the model's Swin layers (once per model).

    A Swin layer rebuilds its ``(windows, 64, 64)`` mask from ``arange`` on every call. Under
    ``torch.compile`` that construction is fused into the attention softmax and recomputed for
    every score with scalar index arithmetic -- about a third of the CPU time. The mask depends
    only on the padded tile size, dtype and device, so it is built once per key, eagerly, and
    reused: identical values, 1.35-1.8x faster compiled inference on a CPU (``scripts/bench.py``).
    With gradients enabled (training) the layers' own method is used.
    """
    for module in model.modules():
        original = getattr(module, "get_attn_mask", None)
        if not callable(original) or getattr(original, "_astroswin_cached", False):
            continue
        cache: dict = {}

        def cached(*args, _original=original, _cache=cache, **kwargs):
            if torch.is_grad_enabled():
                return _original(*args, **kwargs)
            key = tuple(str(a) for a in args) + tuple(f"{k}={v}" for k, v in sorted(kwargs.items()))
            if key not in _cache:
                _cache[key] = _original(*args, **kwargs)
            return _cache[key]

        cached._astroswin_cached = True
        object.__setattr__(module, "get_attn_mask", cached)  # an instance attribute, not a submodule


def _autocast_state(device_type: str):
    """The active autocast dtype for ``device_type`` (None when off or not reported)."""
    try:
        return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
    except (AttributeError, TypeError):  # torch < 2.4
        return None


class _Runner:
    """Calls the model, through ``torch.compile`` when asked; any failure of the compiled path
    (no compiler, unsupported platform or operator) switches to eager execution for good.

    The compiled module is kept on the model object, so restoring several files in one process
    compiles once; shapes are static (a partial last batch is padded to the full batch size).
    The first batch of each shape runs eagerly, which fills the attention-mask cache (see
    :func:`_cache_attention_masks`) before the graph is traced; compilation starts on the
    second batch.
    """

    def __init__(self, model: torch.nn.Module, compile_: bool):
        self.model = model
        self.compiled = None
        _cache_attention_masks(model)
        if compile_ and getattr(model, "_astroswin_compiled", None) is not False:
            self.compiled = getattr(model, "_astroswin_compiled", None)
            if self.compiled is None:
                try:
                    _use_persistent_cache()
                    self.compiled = torch.compile(model, dynamic=False)
                except Exception as exc:  # torch.compile itself unavailable
                    self._give_up(exc)
                else:
                    object.__setattr__(model, "_astroswin_compiled", self.compiled)  # not a submodule
                    object.__setattr__(model, "_astroswin_shapes", set())

    def _give_up(self, exc: BaseException) -> None:
        log.info("torch.compile unavailable, running eagerly: %s", exc)
        object.__setattr__(self.model, "_astroswin_compiled", False)
        self.compiled = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.compiled is not None:
            seen = self.model._astroswin_shapes
            key = (tuple(x.shape), x.dtype, x.device.type, _autocast_state(x.device.type))
            if key not in seen:
                seen.add(key)
                return self.model(x)
            try:
                return self.compiled(x)
            except Exception as exc:  # compilation failed: same result, eagerly
                self._give_up(exc)
        return self.model(x)


@torch.inference_mode()
def _infer(model: Callable[[torch.Tensor], torch.Tensor], batch: tiling.Array, params: Stretch, device: torch.device, precision: str, model_channels: int | None = None) -> tiling.Array:
    """Stretch, run the model (mono replicated to 3 channels and averaged back), unstretch.
    A numpy batch comes back as numpy, a tensor batch as a tensor on ``device``."""
    x = torch.as_tensor(batch, device=device)
    s = stretch(x, params)
    channels = s.shape[1]
    if model_channels is None:
        model_channels = getattr(getattr(model, "config", None), "num_channels", channels)
    if channels == 1 and model_channels == 3:
        s = s.expand(-1, 3, -1, -1)
    with autocast(device, precision):
        out = model(s.contiguous())
    out = out.float()
    if channels == 1 and out.shape[1] == 3:
        out = out.mean(dim=1, keepdim=True)
    out = unstretch(out, params)
    return out if isinstance(batch, torch.Tensor) else out.cpu().numpy()


def restore_array(data: np.ndarray, model: torch.nn.Module, settings: RestoreSettings = RestoreSettings(), progress: ProgressCallback | None = None) -> np.ndarray:
    """Deconvolve and denoise a linear image.

    Parameters
    ----------
    data : numpy.ndarray
        ``(H, W)`` mono or ``(C, H, W)`` with C in {1, 3}, channels first; any real dtype; any
        linear units (ADU, electrons, 0..1). Never modified; may be memory-mapped.
    model : torch.nn.Module
        A model from :func:`astroswin.engine.load_model` (``(B, 3, H, W)`` stretched in and out).
    settings : RestoreSettings
    progress : callable, optional
        Called as ``progress(done_tiles, total_tiles)`` after each ``batch_size`` tiles.

    Returns
    -------
    numpy.ndarray
        float32, the shape of ``data``, the same linear units; not clipped. Non-finite input
        pixels are returned unchanged.

    Raises
    ------
    EngineError
        Unsupported shape, no finite pixel, a magnitude beyond :data:`MAX_MAGNITUDE`, bad
        settings or unavailable device.
    MemoryError
        Out of host or GPU memory (a smaller tile or batch may fit).
    """
    threads = torch.get_num_threads()
    try:
        return _restore(data, model, settings, progress)
    except torch.cuda.OutOfMemoryError as exc:  # one clear message, as for host memory
        raise MemoryError(f"the GPU ran out of memory ({str(exc).splitlines()[0]})") from exc
    finally:  # settings.threads is this call's, not the host process's (Siril runs the engine in-process)
        torch.set_num_threads(threads)


def _restore(data: np.ndarray, model: torch.nn.Module, settings: RestoreSettings, progress: ProgressCallback | None) -> np.ndarray:
    """:func:`restore_array` without its GPU out-of-memory translation."""
    settings.check()
    image = as_channels_first(np.asarray(data) if not isinstance(data, np.memmap) else data)
    if not np.issubdtype(image.dtype, np.number) or np.issubdtype(image.dtype, np.complexfloating):
        raise EngineError(f"unsupported pixel type {image.dtype}")
    c, h, w = image.shape
    lows, peaks = finite_extremes(image)
    if not np.isfinite(lows).any():
        raise EngineError("the image has no finite pixel (all NaN or inf)")
    extremes = np.abs(np.concatenate([lows, peaks]))
    largest = float(extremes[np.isfinite(extremes)].max())
    if largest > MAX_MAGNITUDE:
        raise EngineError(f"pixel values reach {largest:.3g}; the engine computes in float32 and restores magnitudes up to {MAX_MAGNITUDE:.0e}: scale the image down first")
    if np.all((lows == peaks) | ~np.isfinite(lows)):  # constant: nothing to restore (the stretch has no noise to key on)
        out = np.array(image, dtype=np.float32)
        return out[0] if data.ndim == 2 else out
    device = resolve_device(settings.device)
    precision = resolve_precision(settings.precision, device)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    model = model.to(device).eval()

    params = estimate_stretch(image)
    release_pages(image)
    workers = torch.get_num_threads()  # settings.threads, set above, or torch's default
    emission = smooth_emission(image, settings.emission_scale, params.background, params.blank, workers) if settings.emission_scale else None
    release_pages(image)  # smooth_emission read every page of a memory-mapped input
    layout = tiling.plan(h, w, *settings.tiling(device))
    resident = _fits_on_device(image.shape, device)
    source = _upload(image, params, device, emission) if resident else image
    out = torch.zeros((c, h, w), dtype=torch.float32, device=device) if resident else np.zeros((c, h, w), dtype=np.float32)
    tiles = layout.tiles()
    batch_size = min(settings.batch_size, len(tiles))
    per_pass = 1 if device.type == "cpu" and _CPU_ONE_TILE_PER_PASS else batch_size
    runner = _Runner(model, _compile_wanted(settings, device, len(tiles) * layout.rows.length * layout.cols.length))
    model_channels = getattr(getattr(model, "config", None), "num_channels", c)
    row = None
    for first in range(0, len(tiles), batch_size):
        chunk = tiles[first : first + batch_size]
        for start in range(0, len(chunk), per_pass):
            part = chunk[start : start + per_pass]
            if part[0][0] != row:  # a new row of tiles: the input rows above are done with
                row = part[0][0]
                release_pages(image)
            cut = [tiling.extract(source, layout, y, x) for y, x in part]
            if not resident:  # the uploaded image was cleaned, emission out, once, whole (_upload)
                bad = [no_data(tile, params.blank) for tile in cut]
                if emission is not None:
                    cut = [tile - emission.at(*tiling.indices(layout, y, x)) for tile, (y, x) in zip(cut, part)]
                cut = [_clean_tile(tile, params, mask) for tile, mask in zip(cut, bad)]
            batch = _stack(cut, per_pass if runner.compiled is not None else len(cut))  # compiled: fixed shape
            restored = _infer(runner, batch, params, device, precision, model_channels)
            for (y, x), tile in zip(part, restored):
                tiling.accumulate(out, tile, layout, y, x)
        if progress is not None:
            progress(min(first + batch_size, len(tiles)), len(tiles))
    tiling.normalise(out, layout)
    if resident:
        del source
        out = out.cpu().numpy()
    if emission is not None:
        for a, b in _row_blocks(h, w, c, budget=BAND_VALUES):  # ~4 MB of emission at a time
            out[:, a:b] += emission.rows(a, b)
    put_back_trails(out, image, params.background, params.noise, params.blank)
    release_pages(image)
    _finish(out, image, settings.strength, saturation_level(image, params, peaks), params, workers)
    return out[0] if data.ndim == 2 else out


def _finish(out: np.ndarray, image: np.ndarray, strength: float, saturation: np.ndarray | None, params: Stretch, workers: int = 1) -> None:
    """Flux anchor (:mod:`astroswin.engine.anchor`, on ``workers`` threads), strength blend,
    then put back the input's pixels without data (``no_data``) and its clipped stars (their
    plateaus and shoulders, soft-edged: :mod:`astroswin.engine.saturated`); in row bands.

    A band's anchor needs :data:`~astroswin.engine.anchor.MARGIN` rows of the network's output
    above and below it; the rows above were anchored with the previous band, so their output
    as it was is kept aside (``above``). The clipped stars are left out of the anchor's sums:
    counted as the same light in and out, one 30 px from an unclipped star swamped the wide
    box's ratio there, and that star kept 0.85 of its flux.
    """
    c, h, w = out.shape
    background = params.background.astype(np.float32).reshape(c, 1, 1)
    above = out[:, :0].copy()  # the network's output of the MARGIN rows above the band
    for a, b in _row_blocks(h, w, c, budget=max(ANCHOR_BAND_VALUES, 2 * MARGIN * c * w), release=image):
        lo, hi = a - above.shape[1], min(h, b + MARGIN)
        src = np.asarray(image[:, lo:hi], dtype=np.float32)
        restored = np.concatenate([above, out[:, a:hi]], axis=1)
        above = restored[:, max(0, b - lo - MARGIN) : b - lo].copy()
        bad = no_data(src, params.blank)
        clipped = _clipped_stars(image, lo, hi, saturation, params) if saturation is not None else None
        if clipped is not None:  # clipped stars are the input's, with a soft edge (engine/saturated.py)
            restored += clipped * (np.nan_to_num(src) - restored)
        restored[bad] = src[bad]
        dst = out[:, a:b]
        dst -= background
        counted = ~bad if clipped is None else ~bad & (clipped < 1)  # a clipped star in a box swamped its ratio
        scale_band(dst, src, restored, params.background, params.noise, counted, a - lo, workers)
        dst += background
        src, bad = src[:, a - lo : b - lo], bad[:, a - lo : b - lo]
        if strength < 1.0:
            dst *= strength
            dst += (1.0 - strength) * np.nan_to_num(src, nan=0.0, posinf=0.0, neginf=0.0)
        if clipped is not None:
            clipped = clipped[:, a - lo : b - lo]
            dst += clipped * (np.nan_to_num(src) - dst)
        if bad.any():
            dst[bad] = src[bad]


def _clipped_stars(image: np.ndarray, lo: int, hi: int, saturation: np.ndarray, params: Stretch) -> np.ndarray | None:
    """:func:`~astroswin.engine.saturated.clipped_star_weight` of rows ``lo:hi``, from those rows
    and :data:`~astroswin.engine.saturated.CONTEXT` more on each side (a band's weights match
    the whole image's): ``(1, hi - lo, W)``, or None."""
    first, last = max(0, lo - CONTEXT), min(image.shape[1], hi + CONTEXT)
    weight = clipped_star_weight(np.asarray(image[:, first:last], dtype=np.float32), saturation, params.background, params.noise)
    return None if weight is None else weight[None, lo - first : hi - first]


def count_tiles(height: int, width: int, settings: RestoreSettings) -> int:
    """Number of tiles :func:`restore_array` will run (for progress reports)."""
    return len(tiling.plan(height, width, *settings.tiling(resolve_device(settings.device))))
