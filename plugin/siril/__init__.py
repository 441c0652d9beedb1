"""Siril bridge: restore the image loaded in Siril, in place and undoably.

``plugin/siril/AstroSWIN.py`` is the single-file script Siril runs; it only checks the sirilpy
version, makes sure this package is installed, and calls :func:`main`. All the logic is here,
importable and unit-tested without Siril (the tests use a ``sirilpy`` test double).

Flow of :func:`run`:

1. parse the script arguments (``-strength=0.8 -model=small -device=cpu -tile=256``; no
   arguments: the defaults headless, a small dialog with the remembered settings in the GUI);
2. refuse clearly, writing nothing, when no image is loaded;
3. read the pixels (float32 in 0..1 or uint16 in 0..65535; mono ``(H, W)`` or RGB
   ``(3, H, W)``) and restore them **outside** the image lock, reporting progress;
4. convert back to the dtype and layout Siril gave (float32 clipped to 0..1, uint16 rounded
   and clipped), then ``with siril.image_lock():`` save an undo state (GUI only: headless Siril
   keeps no undo history) and write the pixels, once;
5. ``reset_progress()`` on every path.

Every failure is one red log line (and an error box in the GUI) and a non-zero exit status;
the image in Siril stays untouched unless the final write succeeded.

Exit status: 0 done (or cancelled, or ``-help``), 1 failure (no image, engine error, Siril
busy), 2 bad arguments, 3 no connection to Siril.

``sirilpy`` exists only inside Siril's Python environment: it is imported lazily, in
:func:`main` / :func:`run`, never at import time. So is the engine (it imports torch).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "PluginSettings",
    "UsageError",
    "USAGE",
    "parse_args",
    "settings_from_fields",
    "default_config_path",
    "load_remembered",
    "save_remembered",
    "undo_text",
    "to_siril_pixels",
    "ask_settings_tk",
    "run",
    "main",
]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_NO_CONNECTION = 0, 1, 2, 3

#: Devices and precisions the engine accepts (kept in step with ``astroswin.engine.device``).
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: Tile sizes offered by the dialog (any size >= 16 works).
TILE_CHOICES = ("auto", "128", "192", "256", "384", "512", "768")
#: Siril's limits: a log line / message box (UTF-8 bytes, before Siril's newline) and an undo text.
LOG_LIMIT = 1000
UNDO_LIMIT = 70
PREFIX = "AstroSWIN: "


class UsageError(ValueError):
    """A bad script argument or dialog value; the message is one line for the user."""


@dataclass(frozen=True)
class PluginSettings:
    """What the user chooses. ``model`` is a bundled name, a local folder or a hub id."""

    strength: float = 1.0
    model: str = "small"
    device: str = "auto"
    tile: int | None = None  # None: the engine's measured default for the device
    overlap: int | None = None  # None: the engine's default (tile / 8 with a tile given)
    batch_size: int = 4
    precision: str = "auto"
    threads: int | None = None

    def engine_settings(self):
        """The engine's :class:`~astroswin.engine.RestoreSettings` for these choices."""
        from astroswin.engine import RestoreSettings

        return RestoreSettings(strength=self.strength, tile=self.tile, overlap=self.overlap,
                               batch_size=self.batch_size, device=self.device,
                               precision=self.precision, threads=self.threads)

    def summary(self) -> str:
        return (f"strength={self.strength:.2f} model={self.model} device={self.device} "
                f"tile={self.tile or 'auto'} overlap={'auto' if self.overlap is None else self.overlap}")


#: Remembered between GUI runs (the dialog's fields).
REMEMBERED_FIELDS = ("strength", "model", "device", "tile")

USAGE = ("usage: pyscript AstroSWIN.py [-strength=0..1] [-model=small|FOLDER|owner/name] "
         "[-device=auto|cpu|cuda|mps] [-tile=N>=16] [-overlap=N] [-batch=N] "
         "[-precision=auto|fp32|bf16|fp16] [-threads=N]; no argument = defaults "
         f"(strength={PluginSettings.strength}, model={PluginSettings.model}, "
         f"device={PluginSettings.device}, tile=auto: 128 on the CPU, 256-512 on a GPU)")


# --------------------------------------------------------------------------- arguments
def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1]
    return text


def _parse_float(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"bad value for -{name}: '{text}' is not a number") from None
    if not math.isfinite(value):
        raise UsageError(f"bad value for -{name}: '{text}' is not a finite number")
    return value


def _parse_int(name: str, text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise UsageError(f"bad value for -{name}: '{text}' is not a whole number") from None


def _parse_tile(text: str) -> int | None:
    """A tile size, or None for ``auto`` (also an empty field, or ``None`` from a saved file)."""
    return None if text.strip().lower() in ("auto", "", "none") else _parse_int("tile", text)


def _check(settings: PluginSettings, overlap_given: bool = True) -> PluginSettings:
    """Validate every field (the engine's rules, checked up front so nothing runs for nothing)."""
    s = settings
    if not 0.0 <= s.strength <= 1.0:
        raise UsageError(f"bad value for -strength: {s.strength:g} is outside 0..1")
    if not s.model.strip():
        raise UsageError("bad value for -model: empty; give a bundled name (small), a folder or a hub id")
    if s.device not in DEVICES:
        raise UsageError(f"bad value for -device: '{s.device}'; choose one of {', '.join(DEVICES)}")
    if s.precision not in PRECISIONS:
        raise UsageError(f"bad value for -precision: '{s.precision}'; choose one of {', '.join(PRECISIONS)}")
    if s.tile is not None and not 16 <= s.tile <= 8192:
        raise UsageError(f"bad value for -tile: {s.tile}; use 16..8192 pixels or auto (the default)")
    if not overlap_given:
        s = dataclasses.replace(s, overlap=None)  # the engine's default for the tile
    tile = s.tile or 128  # the smallest default tile
    if s.overlap is not None and (s.overlap < 0 or tile <= 2 * s.overlap):
        raise UsageError(f"bad value for -overlap: {s.overlap}; need 0 <= overlap < tile/2 (tile={s.tile or 'auto'})")
    if not 1 <= s.batch_size <= 256:
        raise UsageError(f"bad value for -batch: {s.batch_size}; use 1..256")
    if s.threads is not None and not 1 <= s.threads <= 1024:
        raise UsageError(f"bad value for -threads: {s.threads}; use 1..1024")
    return s


_ALIASES = {"batch": "batch_size", "batch_size": "batch_size", "batch-size": "batch_size"}
_FIELDS = {"strength", "model", "device", "tile", "overlap", "batch_size", "precision", "threads"}


def parse_args(argv: Sequence[str], base: PluginSettings | None = None) -> PluginSettings | None:
    """Parse Siril-style script arguments (``-name=value``) into validated settings.

    Returns None for ``-help`` / ``-h``. Raises :class:`UsageError` (one line) on an unknown
    argument, a missing ``=value``, a repeated option or a bad value.
    """
    settings = base or PluginSettings()
    seen: dict[str, str] = {}
    for raw in argv:
        arg = str(raw).strip()
        if not arg:
            continue
        if arg.lower() in ("-h", "-help", "--help", "-?"):
            return None
        if not arg.startswith("-"):
            raise UsageError(f"unexpected argument '{arg}': options look like -strength=0.8")
        key, sep, value = arg.lstrip("-").partition("=")
        key = key.strip().lower()
        field = _ALIASES.get(key, key)
        if field not in _FIELDS:
            raise UsageError(f"unknown argument '{arg}'")
        if not sep:
            raise UsageError(f"argument '{arg}' needs a value: -{key}=VALUE")
        if field in seen:
            raise UsageError(f"-{key} is given twice")
        seen[field] = _unquote(value)
    updates: dict = {}
    for field, value in seen.items():
        if field == "strength":
            updates[field] = _parse_float("strength", value)
        elif field == "tile":
            updates[field] = _parse_tile(value)
        elif field in ("overlap", "batch_size", "threads"):
            updates[field] = _parse_int("batch" if field == "batch_size" else field, value)
        elif field in ("device", "precision"):
            updates[field] = value.strip().lower()
        else:
            updates[field] = value.strip()
    settings = dataclasses.replace(settings, **updates)
    return _check(settings, overlap_given="overlap" in seen)


def settings_from_fields(strength, model, device, tile, base: PluginSettings | None = None) -> PluginSettings:
    """Validated settings from the dialog's fields (strings or numbers); UsageError if bad."""
    base = base or PluginSettings()
    s = dataclasses.replace(
        base,
        strength=_parse_float("strength", str(strength)),
        model=_unquote(str(model)),
        device=str(device).strip().lower(),
        tile=_parse_tile(str(tile)),
    )
    return _check(s, overlap_given=False)


# --------------------------------------------------------------------------- remembered settings
def default_config_path() -> Path:
    """``<config dir>/astroswin/siril.json``: %APPDATA% on Windows, else $XDG_CONFIG_HOME or ~/.config.

    ``ASTROSWIN_SIRIL_CONFIG`` names the file explicitly.
    """
    explicit = os.environ.get("ASTROSWIN_SIRIL_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    if sys.platform.startswith("win") and os.environ.get("APPDATA"):
        root = Path(os.environ["APPDATA"])
    elif os.environ.get("XDG_CONFIG_HOME"):
        root = Path(os.environ["XDG_CONFIG_HOME"])
    else:
        root = Path.home() / ".config"
    return root / "astroswin" / "siril.json"


def load_remembered(path: Path | str | None = None) -> PluginSettings:
    """The settings saved by the last GUI run; defaults for anything missing or invalid."""
    path = Path(path) if path is not None else default_config_path()
    settings = PluginSettings()
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return settings
    if not isinstance(doc, dict):
        return settings
    for field in REMEMBERED_FIELDS:
        if field not in doc:
            continue
        try:
            values = {f: getattr(settings, f) for f in REMEMBERED_FIELDS}
            values[field] = doc[field]
            settings = settings_from_fields(**values, base=settings)
        except (UsageError, TypeError, ValueError):
            continue
    return settings


def save_remembered(settings: PluginSettings, path: Path | str | None = None) -> Path:
    """Write the dialog's fields to the JSON file (atomically); returns the path."""
    path = Path(path) if path is not None else default_config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {field: getattr(settings, field) for field in REMEMBERED_FIELDS}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- pixels and text
def _fit_bytes(text: str, limit: int) -> str:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode("utf-8", errors="ignore") + "..."


def one_line(text: str, limit: int = LOG_LIMIT) -> str:
    """A single line of at most ``limit`` UTF-8 bytes."""
    return _fit_bytes(" ".join(str(text).split()), limit)


def undo_text(settings: PluginSettings) -> str:
    """``AstroSWIN strength=0.80 model=small``, at most 70 bytes (FITS HISTORY)."""
    model = settings.model.rstrip("/\\")
    if "/" in model or "\\" in model:
        if Path(model).expanduser().exists():
            model = Path(model).name
    return _fit_bytes(f"AstroSWIN strength={settings.strength:.2f} model={model}", UNDO_LIMIT)


def to_siril_pixels(restored: np.ndarray, dtype, inplace: bool = False) -> tuple[np.ndarray, int]:
    """Convert the engine's float32 result (0..1 scale) to Siril's ``dtype``; count clipped pixels.

    float32: clipped to [0, 1] (Siril's float range), NaN left as it is (the engine keeps the
    input's NaN). uint16: scaled by 65535, rounded, clipped to 0..65535 (a non-finite value
    becomes 0 and counts as clipped). ``inplace`` lets the float32 path reuse ``restored``.
    """
    dtype = np.dtype(dtype)
    r = np.asarray(restored, dtype=np.float32)
    if dtype == np.float32:
        clipped = int(np.count_nonzero((r < 0.0) | (r > 1.0)))
        out = np.clip(r, 0.0, 1.0, out=r if (inplace or r is not restored) else None)
        return out, clipped
    if dtype == np.uint16:
        scaled = r * np.float32(65535.0)
        np.rint(scaled, out=scaled)
        bad = ~np.isfinite(scaled)
        clipped = int(np.count_nonzero((scaled < 0.0) | (scaled > 65535.0) | bad))
        if bad.any():
            scaled[bad] = 0.0
        np.clip(scaled, 0.0, 65535.0, out=scaled)
        return scaled.astype(np.uint16), clipped
    raise ValueError(f"Siril pixel data must be float32 or uint16, not {dtype}")


def _check_pixels(pixels) -> np.ndarray:
    if not isinstance(pixels, np.ndarray):
        raise _Failure(f"Siril returned no pixel array ({type(pixels).__name__})")
    if pixels.dtype not in (np.float32, np.uint16):
        raise _Failure(f"unsupported pixel type {pixels.dtype} from Siril (expected float32 or uint16)")
    if not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[0] in (1, 3))):
        raise _Failure(f"unsupported image layout {pixels.shape} from Siril (expected (H, W) or (3, H, W))")
    return pixels


def _header(siril, s) -> str | None:
    """The loaded image's FITS header text: with its shape, what tells that the image in Siril is
    still the one read. None where Siril gives none."""
    try:
        return siril.get_image_fits_header()
    except s.SirilError:
        return None


def _siril_shape(pixels: np.ndarray) -> tuple[int, int, int]:
    return (1,) + pixels.shape if pixels.ndim == 2 else tuple(pixels.shape)


# --------------------------------------------------------------------------- dialog
def ask_settings_tk(initial: PluginSettings) -> PluginSettings | None:
    """A small tkinter dialog (strength, model, device, tile size); None when cancelled."""
    import tkinter as tk
    from tkinter import messagebox, ttk

    try:
        from astroswin.engine import bundled_models

        models = list(bundled_models())
    except Exception:  # noqa: BLE001 - the dialog still works with a free-text model
        models = []
    if initial.model not in models:
        models.insert(0, initial.model)

    root = tk.Tk()
    root.title("AstroSWIN - deconvolution and denoise")
    root.resizable(False, False)
    frame = ttk.Frame(root, padding=12)
    frame.grid(sticky="nsew")

    strength = tk.DoubleVar(value=initial.strength)
    model = tk.StringVar(value=initial.model)
    device = tk.StringVar(value=initial.device)
    tile = tk.StringVar(value=str(initial.tile or "auto"))
    shown = tk.StringVar(value=f"{initial.strength:.2f}")
    strength.trace_add("write", lambda *_: shown.set(f"{strength.get():.2f}"))

    ttk.Label(frame, text="Strength").grid(row=0, column=0, sticky="w", pady=3)
    ttk.Scale(frame, from_=0.0, to=1.0, variable=strength, length=200).grid(row=0, column=1, sticky="ew")
    ttk.Label(frame, textvariable=shown, width=5).grid(row=0, column=2, sticky="e")
    ttk.Label(frame, text="Model").grid(row=1, column=0, sticky="w", pady=3)
    ttk.Combobox(frame, textvariable=model, values=models).grid(row=1, column=1, columnspan=2, sticky="ew")
    ttk.Label(frame, text="Device").grid(row=2, column=0, sticky="w", pady=3)
    ttk.Combobox(frame, textvariable=device, values=DEVICES, state="readonly").grid(row=2, column=1, columnspan=2, sticky="ew")
    ttk.Label(frame, text="Tile size (px)").grid(row=3, column=0, sticky="w", pady=3)
    ttk.Combobox(frame, textvariable=tile, values=TILE_CHOICES).grid(row=3, column=1, columnspan=2, sticky="ew")

    result: dict = {}

    def ok(*_):
        try:
            result["settings"] = settings_from_fields(round(strength.get(), 2), model.get(), device.get(),
                                                      tile.get(), base=initial)
        except UsageError as exc:
            messagebox.showerror("AstroSWIN", str(exc), parent=root)
            return
        root.destroy()

    def cancel(*_):
        root.destroy()

    buttons = ttk.Frame(frame)
    buttons.grid(row=4, column=0, columnspan=3, sticky="e", pady=(10, 0))
    ttk.Button(buttons, text="Cancel", command=cancel).grid(row=0, column=0, padx=4)
    ttk.Button(buttons, text="Restore", command=ok).grid(row=0, column=1)
    root.bind("<Return>", ok)
    root.bind("<Escape>", cancel)
    root.protocol("WM_DELETE_WINDOW", cancel)
    root.mainloop()
    return result.get("settings")


# --------------------------------------------------------------------------- running
class _Failure(Exception):
    """A failure already explained in one line; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_FAILURE):
        super().__init__(message)
        self.code = code


def _import_sirilpy():
    import sirilpy

    return sirilpy


def _sirilpy_class(s, name: str):
    cls = getattr(s, name, None)
    return cls if isinstance(cls, type) and issubclass(cls, BaseException) else type(f"_No{name}", (Exception,), {})


class _Session:
    """Logging, progress and error boxes for one run, all within Siril's limits."""

    def __init__(self, siril, s):
        self.siril = siril
        self.s = s
        self.gui = False
        self.last_fraction = -1.0
        self.last_time = 0.0

    def _color(self, name: str):
        colors = getattr(self.s, "LogColor", None)
        return getattr(colors, name, None) if colors is not None else None

    def log(self, text: str, color: str = "DEFAULT") -> None:
        line = one_line(PREFIX + text if not text.startswith(PREFIX) else text)
        c = self._color(color)
        try:
            if c is None:
                self.siril.log(line)
            else:
                self.siril.log(line, c)
        except Exception:  # noqa: BLE001 - the log itself failed: stderr is all that is left
            print(line, file=sys.stderr)

    def error(self, text: str) -> None:
        """One red log line, and an error box in the GUI."""
        self.log(text, "RED")
        if self.gui:
            try:
                self.siril.error_messagebox(one_line(PREFIX + text))
            except Exception:  # noqa: BLE001
                pass

    def progress(self, message: str, fraction: float, force: bool = False) -> None:
        f = fraction if math.isfinite(fraction) else 0.0
        f = min(1.0, max(0.0, float(f)))
        now = time.monotonic()
        if not force and f - self.last_fraction < 0.005 and now - self.last_time < 0.5:
            return
        self.last_fraction, self.last_time = f, now
        self.siril.update_progress(one_line(PREFIX + message, 200), f)

    def tile_progress(self, done: int, total: int) -> None:
        if total and total > 0:
            self.progress(f"restoring, tile {min(done, total)}/{total}", done / total, force=done >= total)

    def reset_progress(self) -> None:
        try:
            self.siril.reset_progress()
        except Exception:  # noqa: BLE001 - never mask the real outcome
            pass


def run(
    siril,
    argv: Sequence[str] = (),
    *,
    model_loader: Callable | None = None,
    restore: Callable | None = None,
    ask_settings: Callable[[PluginSettings], PluginSettings | None] | None = None,
    config_path: Path | str | None = None,
) -> int:
    """Restore the image loaded in a connected Siril; returns the exit status.

    Parameters
    ----------
    siril : sirilpy.SirilInterface
        Connected interface.
    argv : sequence of str
        Script arguments (``sys.argv[1:]``).
    model_loader : callable, optional
        ``name -> model``; default :func:`astroswin.engine.load_model`.
    restore : callable, optional
        ``(data, model, RestoreSettings, progress=) -> array``; default
        :func:`astroswin.engine.restore_array`.
    ask_settings : callable, optional
        ``initial settings -> settings or None (cancelled)``, used in the GUI when there are
        no arguments; default :func:`ask_settings_tk`.
    config_path : path, optional
        Where the GUI settings are remembered; default :func:`default_config_path`.
    """
    s = _import_sirilpy()
    session = _Session(siril, s)
    try:
        return _run(session, list(argv), model_loader, restore, ask_settings, config_path)
    except _Failure as failure:
        session.error(str(failure))
        return failure.code
    except KeyboardInterrupt:
        session.error("interrupted; the image in Siril was not changed")
        return EXIT_FAILURE
    except Exception as exc:  # noqa: BLE001 - one clear line, the traceback on stderr for bug reports
        session.error(_explain(s, exc))
        if not isinstance(exc, s.SirilError):
            traceback.print_exc(file=sys.stderr)
        return EXIT_NO_CONNECTION if isinstance(exc, s.SirilConnectionError) else EXIT_FAILURE
    finally:
        session.reset_progress()


def _explain(s, exc: BaseException) -> str:
    text = one_line(str(exc) or type(exc).__name__, 600)
    if isinstance(exc, _sirilpy_class(s, "ProcessingThreadBusyError")):
        return (f"Siril's processing thread is busy ({text}); the image was not changed. "
                "Wait for the running task to finish and run AstroSWIN again.")
    if isinstance(exc, _sirilpy_class(s, "ImageDialogOpenError")):
        return (f"an image processing dialog is open in Siril ({text}); the image was not changed. "
                "Close the dialog and run AstroSWIN again.")
    if isinstance(exc, s.SirilConnectionError):
        return f"lost the connection to Siril ({text}); the image was not changed."
    if isinstance(exc, _sirilpy_class(s, "NoImageError")):
        return "no image is loaded in Siril: open an image first. Nothing was changed."
    if isinstance(exc, s.SirilError):
        return f"Siril refused the operation ({text}); the image was not changed."
    if isinstance(exc, MemoryError):
        return "out of memory; try a smaller -tile or -batch. The image was not changed."
    return f"unexpected error ({type(exc).__name__}: {text}); the image was not changed."


def _run(session: _Session, argv, model_loader, restore, ask_settings, config_path) -> int:
    siril, s = session.siril, session.s
    session.gui = not siril.is_cli()

    try:
        settings = parse_args(argv)
    except UsageError as exc:
        raise _Failure(f"{exc}. Nothing was changed. {USAGE}", EXIT_USAGE) from None
    if settings is None:
        session.log(USAGE)
        return EXIT_OK

    if not siril.is_image_loaded():
        raise _Failure("no image is loaded in Siril: open an image first. Nothing was changed.")

    if session.gui and not argv:
        settings = _ask(session, ask_settings, config_path)
        if settings is None:
            session.log("cancelled; the image was not changed.")
            return EXIT_OK

    try:
        from astroswin.engine import EngineError
        from astroswin.engine import load_model as default_loader
        from astroswin.engine import restore_array as default_restore
        from astroswin.engine.cfa import pattern_in_header
    except ImportError as exc:
        raise _Failure(f"AstroSWIN's engine cannot be imported ({one_line(str(exc), 300)}); reinstall astroswin "
                       "(and PyTorch) in Siril's Python environment. Nothing was changed.") from None
    loader = model_loader or default_loader
    restore_fn = restore or default_restore

    # -- read (a copy) and restore, outside the lock: Siril stays usable meanwhile
    try:
        pixels = _check_pixels(siril.get_image_pixeldata())
    except _sirilpy_class(s, "NoImageError"):
        raise _Failure("no image is loaded in Siril: open an image first. Nothing was changed.") from None
    shape, dtype = pixels.shape, pixels.dtype
    header = _header(siril, s)
    cfa = pattern_in_header(header or "")
    if cfa:  # Siril clears the pattern when it debayers: here the keyword is proof
        raise _Failure(f"this is a raw CFA mosaic ({cfa[1]} {cfa[0]}): debayer it first (Image Processing > Demosaicing, "
                       "or open raw files debayered), since restoring a mosaic would blend its colours. Nothing was changed.")
    layout = "x".join(str(n) for n in _siril_shape(pixels))
    session.log(f"restoring {layout} {dtype} image ({settings.summary()})")
    start = time.monotonic()
    try:
        session.progress(f"loading model '{settings.model}'", 0.0, force=True)
        model = loader(settings.model)
        if dtype == np.float32:
            data = pixels
        else:
            data = pixels.astype(np.float32)
            data *= np.float32(1.0 / 65535.0)
        del pixels
        session.progress("restoring", 0.0, force=True)
        restored = restore_fn(data, model, settings.engine_settings(), progress=session.tile_progress)
    except EngineError as exc:
        raise _Failure(f"{one_line(str(exc), 700)}. Nothing was changed.") from None
    del data
    restored = np.asarray(restored)
    if restored.shape != shape:
        raise _Failure(f"the engine returned shape {restored.shape} for an image of shape {shape}; nothing was changed")
    session.progress("writing the result to Siril", 1.0, force=True)
    result, clipped = to_siril_pixels(restored, dtype, inplace=True)
    del restored

    # -- write: only undo + set inside the lock
    claimed = False
    try:
        with siril.image_lock():
            claimed = True
            current = siril.get_image_shape()
            if current is not None and tuple(current) != _siril_shape(result):
                raise _Failure(f"the image in Siril changed during the restoration ({layout} -> "
                               f"{'x'.join(str(n) for n in current)}); nothing was written")
            if _header(siril, s) != header:  # another image of the same size
                raise _Failure("the image in Siril changed during the restoration (its FITS header "
                               "is not the one read); nothing was written")
            # Older sirilpy reports some failures by returning False, not by raising.
            if session.gui and siril.undo_save_state(undo_text(settings)) is False:
                raise _Failure("Siril could not save an undo state, so the image was not changed")
            if siril.set_image_pixeldata(result) is False:
                # The undo state above is already in Siril's history: say so, or Undo surprises.
                step = " (Siril's history holds an undo step for it that changes nothing)" if session.gui else ""
                raise _Failure(f"Siril did not accept the restored pixels; the image was not changed{step}")
    except s.SirilError as exc:
        specific = tuple(_sirilpy_class(s, n) for n in ("ProcessingThreadBusyError", "ImageDialogOpenError"))
        if claimed or isinstance(exc, specific + (s.SirilConnectionError,)):
            raise
        # older sirilpy: a plain SirilError when the thread cannot be claimed
        raise _Failure(f"could not claim Siril's processing thread ({one_line(str(exc), 300)}): a task is running "
                       "or an image processing dialog is open; the image was not changed. Run AstroSWIN again "
                       "when Siril is idle.") from None

    if clipped:
        rng = "0..1" if dtype == np.float32 else "0..65535"
        session.log(f"{clipped} pixel(s) ({100.0 * clipped / result.size:.3g}%) clipped to Siril's {rng} range", "SALMON")
    session.log(f"done in {time.monotonic() - start:.1f} s ({layout} {dtype}, {settings.summary()})", "GREEN")
    return EXIT_OK


def _ask(session: _Session, ask_settings, config_path) -> PluginSettings | None:
    remembered = load_remembered(config_path)
    ask = ask_settings or ask_settings_tk
    try:
        chosen = ask(remembered)
    except ImportError as exc:  # no tkinter in this Python: run with the remembered settings
        session.log(f"cannot open the settings dialog ({one_line(str(exc), 200)}); using {remembered.summary()}", "SALMON")
        return remembered
    except Exception as exc:  # noqa: BLE001 - e.g. TclError: no display
        if type(exc).__name__ != "TclError":
            raise
        session.log(f"cannot open the settings dialog ({one_line(str(exc), 200)}); using {remembered.summary()}", "SALMON")
        return remembered
    if chosen is None:
        return None
    try:
        save_remembered(chosen, config_path)
    except OSError as exc:
        session.log(f"could not remember the settings ({one_line(str(exc), 200)})", "SALMON")
    return chosen


def main(argv: Sequence[str] | None = None, *, interface_factory: Callable | None = None, **run_kwargs) -> int:
    """Entry point of the Siril script: connect, :func:`run`, disconnect; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        s = _import_sirilpy()
    except ImportError:
        print("AstroSWIN: sirilpy is not importable: run this script from Siril (Scripts menu, "
              "or `pyscript AstroSWIN.py` in Siril's command line).", file=sys.stderr)
        return EXIT_NO_CONNECTION
    try:
        siril = (interface_factory or s.SirilInterface)()
        if siril.connect() is False:
            raise s.SirilConnectionError("connect() returned False")
    except s.SirilError as exc:
        print(f"AstroSWIN: cannot connect to Siril ({one_line(str(exc), 300)}). Run this script from Siril "
              "(Scripts menu, or `pyscript AstroSWIN.py` in Siril's command line).", file=sys.stderr)
        return EXIT_NO_CONNECTION
    try:
        return run(siril, argv, **run_kwargs)
    finally:
        disconnect = getattr(siril, "disconnect", None)
        if callable(disconnect):
            try:
                disconnect()
            except Exception:  # noqa: BLE001
                pass
