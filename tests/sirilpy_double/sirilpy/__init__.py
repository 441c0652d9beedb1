"""A test double of ``sirilpy`` (Siril's Python module) for AstroSWIN's tests.

It behaves like the real module on every rule the plugin depends on (see
``/work/shared/notes/hosts.md`` and the public sirilpy API reference) and it refuses whatever
the real Siril refuses, so a script that passes against the double does not rely on anything
the host would reject:

* ``SirilInterface()`` raises :class:`SirilConnectionError` unless ``MY_SOCKET`` or ``MY_PIPE``
  is set; every method except ``connect()`` needs a connection first.
* ``get_image_pixeldata()`` returns a *copy*, float32 (0..1) or uint16 (0..65535), mono
  ``(H, W)`` or RGB ``(3, H, W)``; it raises :class:`NoImageError` when no image is loaded.
  Siril holds channels, not array shapes: a mono image reads back as ``(H, W)`` however it was
  written or configured (a ``(1, H, W)`` array included), and ``get_image_shape()`` is
  ``(channels, H, W)`` (``(1, H, W)`` for mono), as sirilpy reshapes it.
* ``set_image_pixeldata()`` needs the processing thread, i.e. ``with siril.image_lock():``
  (else :class:`SirilError`); it takes a 2-D or 3-D numpy array, float32 or uint16, with at
  most 3 channels (else ``ValueError``), and refuses data larger than half the free RAM.
  ``undo_save_state()`` does not need the lock: Siril's UNDO_SAVE_STATE handler checks only
  that an image is loaded and that Siril is not headless (only SET_PIXELDATA checks the claim).
* ``image_lock()`` can be set to raise :class:`ProcessingThreadBusyError` or
  :class:`ImageDialogOpenError` (or a plain :class:`SirilError`, as sirilpy did before those
  existed) on entry; a nested claim fails as busy.
* ``get_image_fits_header()`` gives the loaded image's header text (``header``; a test that
  "loads another image" sets both ``image`` and ``header``), or a dict with ``return_as="dict"``.
* ``undo_save_state()`` returns None when headless (``is_cli()``); the text must fit in the
  70 bytes of a FITS HISTORY card.
* ``soft_failures`` makes ``set_image_pixeldata()`` or ``undo_save_state()`` fail as older
  sirilpy did: the error printed, ``False`` returned, nothing done.
* ``update_progress(message, fraction)``: fraction in [0, 1], or -1 (pulse) / -2 (text only),
  else ``ValueError``. ``log()`` and the message boxes: at most 1 KB (1021 bytes of UTF-8 plus
  the newline Siril appends), else ``ValueError``; ``color`` must be a :class:`LogColor`.

Every call is recorded on the interface (``calls``: name, arguments summary, whether it ran
inside the image lock), writes are kept in ``writes`` and the "image in Siril" in ``image``,
so a test can assert "written exactly once, inside the lock, same dtype and layout" or "the
image is untouched".

Configuration, for an in-process test: :func:`configure` (or set attributes on the instance).
For a script run as a subprocess, the environment:

``SIRILPY_DOUBLE_IMAGE``    path of a ``.npy`` file: the image "loaded in Siril" (none if unset)
``SIRILPY_DOUBLE_CLI``      ``1``/``0``: headless or GUI (default: ``SIRIL_PYTHON_CLI`` is set)
``SIRILPY_DOUBLE_LOCK``     ``busy``, ``dialog`` or ``error`` (a plain SirilError, as older
                            sirilpy raised): make ``image_lock()`` fail on entry
``SIRILPY_DOUBLE_CONNECT``  ``fail``: make ``connect()`` raise
``SIRILPY_DOUBLE_VERSION``  the module version reported (default ``1.0.8``)
``SIRILPY_DOUBLE_ENSURE``   ``ok`` (default: report success, install nothing) or ``fail``
``SIRILPY_DOUBLE_DUMP``     a folder: at exit, ``calls.json`` (the call log of every interface
                            and of the module-level functions) and ``write_<n>.npy`` per write
"""

from __future__ import annotations

import atexit
import enum
import json
import os
import re
import sys
import threading
from pathlib import Path

import numpy as np

__version__ = os.environ.get("SIRILPY_DOUBLE_VERSION", "1.0.8")
__all__ = [
    "SirilInterface",
    "LogColor",
    "SirilError",
    "SirilConnectionError",
    "SharedMemoryError",
    "CommandError",
    "DataError",
    "NoImageError",
    "NoSequenceError",
    "ProcessingThreadBusyError",
    "ImageDialogOpenError",
    "ensure_installed",
    "check_module_version",
    "TorchHelper",
    "configure",
    "reset",
]

#: Byte limit of one log line / message box text (Siril truncates at 1021 bytes + newline).
LOG_LIMIT_BYTES = 1021
#: Byte limit of an undo (FITS HISTORY) text.
UNDO_LIMIT_BYTES = 70
#: Version of Siril itself, for ``cmd("requires", ...)``.
SIRIL_VERSION = "1.4.0"


# --------------------------------------------------------------------------- exceptions
class SirilError(Exception):
    """Base class of every sirilpy error."""

    def __init__(self, message: str = "An error occurred"):
        self.message = message
        super().__init__(message)


class SirilConnectionError(SirilError):
    """No connection to Siril (missing MY_SOCKET / MY_PIPE, or the socket failed)."""

    def __init__(self, message: str = "Failed to connect to Siril"):
        super().__init__(message)


class SharedMemoryError(SirilError):
    def __init__(self, message: str = "Siril shared memory error"):
        super().__init__(message)


class CommandError(SirilError):
    def __init__(self, message: str = "Command execution failed", status_code: int = 1):
        super().__init__(message)
        self.status_code = status_code


class DataError(SirilError):
    def __init__(self, message: str = "Error handling data"):
        super().__init__(message)


class NoImageError(SirilError):
    def __init__(self, message: str = "No Siril image loaded"):
        super().__init__(message)


class NoSequenceError(SirilError):
    def __init__(self, message: str = "No Siril sequence loaded"):
        super().__init__(message)


class ProcessingThreadBusyError(SirilError):
    def __init__(self, message: str = "Siril's processing thread is busy"):
        super().__init__(message)


class ImageDialogOpenError(SirilError):
    def __init__(self, message: str = "An image processing dialog is open in Siril"):
        super().__init__(message)


class LogColor(enum.IntEnum):
    DEFAULT = 0
    RED = 1
    SALMON = 2
    GREEN = 3
    BLUE = 4
    BOLD = 5


# --------------------------------------------------------------------------- configuration
def _env_config() -> dict:
    cfg: dict = {}
    image_path = os.environ.get("SIRILPY_DOUBLE_IMAGE")
    if image_path:
        cfg["image"] = np.load(image_path)
    cli = os.environ.get("SIRILPY_DOUBLE_CLI")
    if cli is not None:
        cfg["cli"] = cli.strip().lower() in ("1", "true", "yes")
    lock = os.environ.get("SIRILPY_DOUBLE_LOCK", "").strip().lower()
    if lock:
        cfg["lock_error"] = lock
    if os.environ.get("SIRILPY_DOUBLE_CONNECT", "").strip().lower() == "fail":
        cfg["connect_fails"] = True
    return cfg


_DEFAULTS = dict(
    image=None,  # numpy array: the image loaded in Siril, or None
    header="SIMPLE  =                    T",  # its FITS header, as get_image_fits_header() gives it
    cli=None,  # None: follow SIRIL_PYTHON_CLI
    lock_error=None,  # None, "busy", "dialog" or "error"
    connect_fails=False,
    free_ram_bytes=16 << 30,
    # Calls that fail the way sirilpy 0.x failed: the error printed and False returned
    # instead of raised ("set_image_pixeldata", "undo_save_state").
    soft_failures=(),
)
_config: dict = {}
#: Calls of the module-level functions (ensure_installed, check_module_version, TorchHelper).
MODULE_CALLS: list[dict] = []
#: Every SirilInterface created, in order.
INSTANCES: list[SirilInterface] = []
_ensure_mode = os.environ.get("SIRILPY_DOUBLE_ENSURE", "ok").strip().lower()


def configure(**kwargs) -> None:
    """Set the scenario for the next :class:`SirilInterface` (keys of ``_DEFAULTS``)."""
    unknown = set(kwargs) - set(_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown double settings: {sorted(unknown)}")
    _config.update(kwargs)


def reset() -> None:
    """Forget the scenario, the instances and the module call log (between tests)."""
    global _ensure_mode
    _config.clear()
    MODULE_CALLS.clear()
    INSTANCES.clear()
    _ensure_mode = os.environ.get("SIRILPY_DOUBLE_ENSURE", "ok").strip().lower()


def set_ensure_mode(mode: str) -> None:
    """``ok`` or ``fail``: what :func:`ensure_installed` does."""
    global _ensure_mode
    if mode not in ("ok", "fail"):
        raise ValueError(mode)
    _ensure_mode = mode


def _check_text(text, limit: int, what: str) -> str:
    if not isinstance(text, str):
        raise TypeError(f"{what}: expected str, got {type(text).__name__}")
    n = len(text.encode("utf-8"))
    if n > limit:
        raise ValueError(f"{what}: {n} bytes is over Siril's {limit}-byte limit")
    return text


# --------------------------------------------------------------------------- module functions
def _parse_version(v: str) -> tuple:
    parts = []
    for p in v.split("."):
        m = re.match(r"\d+", p)
        parts.append(int(m.group()) if m else 0)
    return tuple(parts)


def check_module_version(requires=None) -> bool:
    """True when this module's version satisfies ``requires`` (pip specifier); ValueError if invalid."""
    MODULE_CALLS.append({"name": "check_module_version", "requires": requires})
    if requires is None:
        return True
    try:
        from packaging.specifiers import InvalidSpecifier, SpecifierSet
        from packaging.version import Version
    except ImportError:  # pragma: no cover - packaging ships with pip
        SpecifierSet = None
    if SpecifierSet is not None:
        try:
            return Version(__version__) in SpecifierSet(requires)
        except InvalidSpecifier as exc:
            raise ValueError(f"Invalid version specifier: {requires}") from exc
    ops = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, "==": lambda a, b: a == b,
           ">": lambda a, b: a > b, "<": lambda a, b: a < b, "!=": lambda a, b: a != b}
    ok = True
    for spec in requires.split(","):
        m = re.fullmatch(r"\s*(>=|<=|==|!=|>|<)\s*([0-9][0-9.]*)\s*", spec)
        if not m:
            raise ValueError(f"Invalid version specifier: {requires}")
        ok = ok and ops[m.group(1)](_parse_version(__version__), _parse_version(m.group(2)))
    return ok


def ensure_installed(*packages, version_constraints=None, reinstall=False) -> bool:
    """Record the request; install nothing. ``fail`` mode raises SirilError like a failed pip."""
    if packages and isinstance(packages[0], list):
        packages = tuple(packages[0])
    if not packages:
        raise ValueError("ensure_installed() needs at least one package")
    if version_constraints is not None and not isinstance(version_constraints, str):
        if len(version_constraints) != len(packages):
            raise ValueError("Number of packages must match number of version constraints")
    MODULE_CALLS.append({
        "name": "ensure_installed",
        "packages": list(packages),
        "version_constraints": version_constraints,
        "reinstall": bool(reinstall),
    })
    if _ensure_mode == "fail":
        raise SirilError(f"Failed to install or verify package {packages[0]}")
    return True


class TorchHelper:
    """Stand-in for ``sirilpy.TorchHelper``: records the install request."""

    def __init__(self, *args, **kwargs):
        MODULE_CALLS.append({"name": "TorchHelper"})

    def is_torch_installed(self) -> bool:
        try:
            import importlib.util

            return importlib.util.find_spec("torch") is not None
        except Exception:  # pragma: no cover
            return False

    def install_torch(self, *args, **kwargs) -> bool:
        MODULE_CALLS.append({"name": "install_torch"})
        if _ensure_mode == "fail":
            raise SirilError("Failed to install torch")
        return True


# --------------------------------------------------------------------------- the interface
def _as_siril_holds(arr: np.ndarray) -> np.ndarray:
    """The array as Siril holds (and sirilpy gives back) the image: one channel is (H, W).

    sirilpy's ``get_image_pixeldata()`` reshapes to ``(channels, H, W)`` when ``channels > 1``
    and to ``(H, W)`` otherwise, so a mono image written as ``(1, H, W)`` reads back 2-D.
    """
    return arr[0] if arr.ndim == 3 and arr.shape[0] == 1 else arr


class FFit:
    """The bits of ``sirilpy.FFit`` that ``get_image()`` fills."""

    def __init__(self, data: np.ndarray, header: str = ""):
        self.data = data
        self.header = header
        self.bitpix = 16 if data.dtype == np.uint16 else -32
        self.channels = 1 if data.ndim == 2 else data.shape[0]
        self.height, self.width = data.shape[-2:]
        self.history: list[str] = []


class SirilInterface:
    """Records every call; refuses what real Siril refuses (see the module docstring)."""

    def __init__(self):
        if not (os.environ.get("MY_SOCKET") or os.environ.get("MY_PIPE")):
            raise SirilConnectionError(
                "Environment variable MY_SOCKET / MY_PIPE not set: is this script run by Siril?")
        cfg = {**_DEFAULTS, **_env_config(), **_config}
        image = cfg["image"]
        if image is not None:
            image = self._validate_pixels(np.asarray(image), "image")
            image = _as_siril_holds(image).copy()
        self.image: np.ndarray | None = image
        self.header: str = cfg["header"]  # a test that loads another image sets both
        self.original_image = None if image is None else image.copy()
        self._cli = cfg["cli"]
        self.lock_error = cfg["lock_error"]
        self.connect_fails = cfg["connect_fails"]
        self.free_ram_bytes = int(cfg["free_ram_bytes"])
        self.soft_failures = set(cfg["soft_failures"])
        self.connected = False
        self.in_lock = False
        self.lock_entries = 0
        self.calls: list[dict] = []
        self.writes: list[dict] = []
        self.logs: list[dict] = []
        self.progress: list[dict] = []
        self.undo_states: list[dict] = []
        self.messageboxes: list[dict] = []
        self.commands: list[tuple] = []
        self._lock = threading.Lock()
        INSTANCES.append(self)

    # -- helpers
    def _record(self, name: str, **info) -> dict:
        entry = {"seq": len(self.calls), "name": name, "in_lock": self.in_lock, **info}
        with self._lock:
            self.calls.append(entry)
        return entry

    def _need_connection(self, name: str) -> None:
        if not self.connected:
            self._record(name, refused="not connected")
            raise SirilConnectionError(f"{name}(): not connected to Siril (call connect() first)")

    @staticmethod
    def _validate_pixels(arr, what: str) -> np.ndarray:
        if not isinstance(arr, np.ndarray):
            raise ValueError(f"{what}: expected a numpy array, got {type(arr).__name__}")
        if arr.ndim not in (2, 3):
            raise ValueError(f"{what}: array must be 2-D or 3-D, got {arr.ndim}-D")
        if arr.dtype not in (np.float32, np.uint16):
            raise ValueError(f"{what}: dtype must be float32 or uint16, got {arr.dtype}")
        if arr.ndim == 3 and not 1 <= arr.shape[0] <= 3:
            raise ValueError(f"{what}: at most 3 channels (channels first), got shape {arr.shape}")
        if arr.size == 0:
            raise ValueError(f"{what}: empty array")
        return arr

    # -- connection
    def connect(self) -> bool:
        self._record("connect")
        if self.connect_fails:
            raise SirilConnectionError("Failed to connect to Siril")
        self.connected = True
        return True

    def disconnect(self) -> None:
        self._record("disconnect")
        self.connected = False

    # -- state
    def is_cli(self) -> bool:
        self._need_connection("is_cli")
        self._record("is_cli")
        if self._cli is None:
            return bool(os.environ.get("SIRIL_PYTHON_CLI"))
        return bool(self._cli)

    def is_image_loaded(self) -> bool:
        self._need_connection("is_image_loaded")
        self._record("is_image_loaded")
        return self.image is not None

    def get_image_shape(self):
        self._need_connection("get_image_shape")
        self._record("get_image_shape")
        if self.image is None:
            return None
        if self.image.ndim == 2:
            return (1,) + tuple(self.image.shape)
        return tuple(self.image.shape)

    def get_image_pixeldata(self, shape=None, preview: bool = False) -> np.ndarray:
        self._need_connection("get_image_pixeldata")
        self._record("get_image_pixeldata", shape=shape, preview=preview)
        if self.image is None:
            raise NoImageError("No image loaded in Siril")
        if preview:
            raise NotImplementedError("the double does not make previews")
        data = _as_siril_holds(self.image)
        if shape is not None:
            x, y, w, h = shape
            data = data[..., y:y + h, x:x + w]
        return np.array(data, copy=True)

    def get_image(self, with_pixels: bool = True, preview: bool = False):
        self._need_connection("get_image")
        self._record("get_image", with_pixels=with_pixels)
        if self.image is None:
            raise NoImageError("No image loaded in Siril")
        return FFit(np.array(_as_siril_holds(self.image), copy=True), header=self.header)

    def get_image_fits_header(self, return_as: str = "str"):
        self._need_connection("get_image_fits_header")
        self._record("get_image_fits_header")
        if self.image is None:
            raise NoImageError("No image loaded in Siril")
        if return_as == "dict":
            return {card[:8].strip(): card[10:].split("/")[0].strip() for card in self.header.splitlines() if card[8:10] == "= "}
        return self.header

    # -- writing
    def image_lock(self):
        self._need_connection("image_lock")
        return _ImageLock(self)

    def set_image_pixeldata(self, image_data) -> bool:
        self._need_connection("set_image_pixeldata")
        entry = self._record("set_image_pixeldata",
                             dtype=str(getattr(image_data, "dtype", type(image_data).__name__)),
                             shape=list(getattr(image_data, "shape", ())))
        if not self.in_lock:
            entry["refused"] = "outside image_lock"
            raise SirilError("set_image_pixeldata(): the processing thread is not claimed "
                             "(use `with siril.image_lock():`)")
        try:
            self._validate_pixels(image_data, "set_image_pixeldata()")
        except ValueError as exc:
            entry["refused"] = str(exc)
            raise
        if image_data.nbytes > self.free_ram_bytes // 2:
            entry["refused"] = "too large"
            raise SirilError("set_image_pixeldata(): data larger than half the free RAM")
        if self.image is None:
            entry["refused"] = "no image"
            raise NoImageError("No image loaded in Siril")
        if "set_image_pixeldata" in self.soft_failures:
            entry["refused"] = "soft failure"
            print("Error in set_image_pixeldata(): simulated", file=sys.stderr)
            return False
        data = np.array(image_data, copy=True)
        self.writes.append({"data": data, "in_lock": True, "seq": entry["seq"]})  # as the script sent it
        self.image = _as_siril_holds(data)  # as Siril holds it: a (1, H, W) write is a mono image
        return True

    def undo_save_state(self, my_string: str):
        self._need_connection("undo_save_state")
        entry = self._record("undo_save_state", text=my_string)
        _check_text(my_string, UNDO_LIMIT_BYTES, "undo_save_state()")
        if self.image is None:
            raise NoImageError("No image loaded in Siril")
        if self.is_cli_quiet():
            entry["result"] = None
            return None
        if "undo_save_state" in self.soft_failures:
            entry["result"] = False
            print("Error saving undo state: simulated", file=sys.stderr)
            return False
        self.undo_states.append({"text": my_string, "in_lock": self.in_lock, "seq": entry["seq"]})
        entry["result"] = True
        return True

    def is_cli_quiet(self) -> bool:
        """is_cli() without recording a call (internal)."""
        if self._cli is None:
            return bool(os.environ.get("SIRIL_PYTHON_CLI"))
        return bool(self._cli)

    # -- feedback
    def update_progress(self, message: str, progress: float) -> None:
        self._need_connection("update_progress")
        entry = self._record("update_progress", message=message, fraction=progress)
        if not isinstance(message, str):
            raise TypeError("update_progress(): message must be str")
        if isinstance(progress, bool) or not isinstance(progress, (int, float, np.floating, np.integer)):
            raise TypeError("update_progress(): progress must be a number")
        p = float(progress)
        if not (0.0 <= p <= 1.0 or p in (-1.0, -2.0)):
            entry["refused"] = "out of range"
            raise ValueError("Progress value must be between 0.0 and 1.0 (or -1 / -2)")
        self.progress.append({"message": message, "fraction": p})

    def reset_progress(self) -> None:
        self._need_connection("reset_progress")
        self._record("reset_progress")
        self.progress.append({"message": "", "fraction": 0.0, "reset": True})

    def log(self, my_string: str, color: LogColor = LogColor.DEFAULT) -> bool:
        self._need_connection("log")
        self._record("log", text=my_string if isinstance(my_string, str) else repr(my_string),
                             color=getattr(color, "name", repr(color)))
        if not isinstance(color, LogColor):
            raise ValueError("log(): color must be a sirilpy.LogColor")
        _check_text(my_string, LOG_LIMIT_BYTES, "log()")
        self.logs.append({"text": my_string, "color": color.name})
        print(my_string, flush=True)
        return True

    def _messagebox(self, kind: str, my_string: str, modal: bool) -> bool:
        self._need_connection(f"{kind}_messagebox")
        self._record(f"{kind}_messagebox", text=my_string, modal=modal)
        _check_text(my_string, LOG_LIMIT_BYTES, f"{kind}_messagebox()")
        self.messageboxes.append({"kind": kind, "text": my_string, "modal": modal})
        return True

    def error_messagebox(self, my_string: str, modal: bool = False) -> bool:
        return self._messagebox("error", my_string, modal)

    def info_messagebox(self, my_string: str, modal: bool = False) -> bool:
        return self._messagebox("info", my_string, modal)

    def warning_messagebox(self, my_string: str, modal: bool = False) -> bool:
        return self._messagebox("warning", my_string, modal)

    def cmd(self, *args: str) -> None:
        self._need_connection("cmd")
        self._record("cmd", args=[str(a) for a in args])
        if not args:
            raise CommandError("cmd(): no command given")
        self.commands.append(tuple(str(a) for a in args))
        if args[0] == "requires":
            if len(args) < 2:
                raise CommandError("requires: missing version")
            if _parse_version(SIRIL_VERSION) < _parse_version(str(args[1])):
                raise CommandError(f"Command 'requires' failed: Siril {SIRIL_VERSION} < {args[1]}")

    # -- dump for subprocess tests
    def _dump_dict(self, index: int, folder: Path) -> dict:
        writes = []
        for k, w in enumerate(self.writes):
            name = f"write_{index}_{k}.npy"
            np.save(folder / name, w["data"])
            writes.append({"file": name, "dtype": str(w["data"].dtype), "shape": list(w["data"].shape),
                           "in_lock": w["in_lock"], "seq": w["seq"]})
        calls = []
        for c in self.calls:
            calls.append({k: (v if isinstance(v, (str, int, float, bool, list, type(None))) else repr(v))
                          for k, v in c.items()})
        return {"calls": calls, "writes": writes, "logs": self.logs, "progress": self.progress,
                "undo_states": self.undo_states, "messageboxes": self.messageboxes,
                "lock_entries": self.lock_entries}


class _ImageLock:
    """``with siril.image_lock():`` claims Siril's processing thread."""

    def __init__(self, siril: SirilInterface):
        self.siril = siril
        self.claimed = False

    def __enter__(self):
        s = self.siril
        entry = s._record("image_lock.enter")
        if s.lock_error == "busy" or s.in_lock:
            entry["refused"] = "busy"
            raise ProcessingThreadBusyError("Siril's processing thread is busy with another task")
        if s.lock_error == "dialog":
            entry["refused"] = "dialog"
            raise ImageDialogOpenError("An image processing dialog is open in Siril")
        if s.lock_error == "error":  # what sirilpy before ProcessingThreadBusyError raised
            entry["refused"] = "error"
            raise SirilError("Error in image_lock(). Thread may be in use or an image processing dialog is open.")
        s.in_lock = True
        s.lock_entries += 1
        self.claimed = True
        return s

    def __exit__(self, exc_type, exc, tb):
        if self.claimed:
            self.siril.in_lock = False
            self.claimed = False
            self.siril._record("image_lock.exit", exception=None if exc_type is None else exc_type.__name__)
        return False


def _dump_at_exit() -> None:
    folder = os.environ.get("SIRILPY_DOUBLE_DUMP")
    if not folder:
        return
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"module_calls": MODULE_CALLS,
           "interfaces": [s._dump_dict(i, out) for i, s in enumerate(INSTANCES)]}
    (out / "calls.json").write_text(json.dumps(doc, indent=1, default=repr))


atexit.register(_dump_at_exit)
