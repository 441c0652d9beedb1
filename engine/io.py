"""Reading and writing FITS, XISF and TIFF: the engine's one I/O module.

Data is returned channels-first, ``(H, W)`` or ``(C, H, W)``, in the file's own linear units
(ADU for integer data, the file's range for floats), and written back the same way. Metadata is
treated as data that must survive: FITS headers (WCS included), XISF ``FITSKeywords`` and
``XISFProperties``, TIFF alpha channels. The format is recognised by the file's first bytes,
not by its extension. Writes are atomic: a temporary file in the target folder, renamed over
the target only once complete, so a failure or Ctrl-C never leaves a partial output.
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from . import xisf_header
from .errors import EngineError

FORMATS = {"fits": (".fits", ".fit", ".fts"), "xisf": (".xisf",), "tiff": (".tif", ".tiff")}
#: FITS keywords that describe the data layout: rebuilt by astropy, never copied.
#: Keywords that describe the input's values, which the restoration changes: dropped, not copied
#: (a kept DATAMAX of 21025 over a restored peak of 110067 clips the display of viewers that use it).
_STALE = ("DATAMIN", "DATAMAX")
_STRUCTURAL = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "EXTEND", "BZERO", "BSCALE", "XTENSION", "PCOUNT", "GCOUNT", "CHECKSUM", "DATASUM", "BLANK", *_STALE}
_COMPRESSION = ("ZIMAGE", "ZBITPIX", "ZNAXIS", "ZTILE", "ZCMPTYPE", "ZNAME", "ZVAL", "ZQUANTIZ", "ZDITHER", "ZSIMPLE", "ZEXTEND", "ZBLANK", "ZTENSION", "ZPCOUNT", "ZGCOUNT", "ZHECKSUM", "ZDATASUM")
#: The largest magnitude float16 holds: a float16 TIFF output is clipped to it, never inf.
_FLOAT16_MAX = float(np.finfo(np.float16).max)
#: Keywords of a FITS world coordinate system (WCS, SIP distortion included).
_WCS = re.compile(r"(WCSAXES|CTYPE|CRVAL|CRPIX|CDELT|CUNIT|CROTA|CD\d+_\d|PC\d+_\d|PV\d+_\d|A_|B_|AP_|BP_|RADESYS|EQUINOX|LONPOLE|LATPOLE)")


@dataclass
class Image:
    """An image and everything needed to write it back faithfully.

    Attributes
    ----------
    data : numpy.ndarray
        ``(H, W)`` or ``(C, H, W)``, C in {1, 3}, the file's units; may be memory-mapped
        (FITS data is returned read-only).
    format : str
        ``fits``, ``xisf`` or ``tiff`` (from the file's content).
    dtype : numpy.dtype
        Sample type of the values, native byte order: a FITS 16-bit camera frame (``BITPIX =
        16``, ``BZERO = 32768``) is ``uint16``; other scaled FITS data is float.
    header : astropy.io.fits.Header or None
        FITS header of the image HDU (structural keywords included; dropped on write).
    xisf_metadata : dict
        XISF image metadata (``FITSKeywords``, ``XISFProperties``).
    xisf_elements : tuple
        The XISF image's ``Resolution``, ``DisplayFunction``, ``ICCProfile`` and
        ``RGBWorkingSpace``, which the xisf package does not write, as
        :func:`astroswin.engine.xisf_header.carried_elements` returns them.
    alpha : numpy.ndarray or None
        ``(A, H, W)`` TIFF extra samples (alpha), passed through untouched.
    other_images : int
        Images in the file after the one read (FITS image HDUs, XISF images, TIFF series):
        they are not restored and not written, and the CLI says so.
    cfa_element : str or None
        The ``pattern`` of an XISF image's ``ColorFilterArray`` element (a raw mosaic); see
        :attr:`cfa`.
    tiff_tags : dict
        A TIFF's orientation, ICC profile and resolution, as tifffile writer arguments.
    """

    data: np.ndarray
    format: str
    dtype: np.dtype
    header: object = None
    xisf_metadata: dict = field(default_factory=dict)
    xisf_elements: tuple = ()
    alpha: np.ndarray | None = None
    tiff_extrasamples: tuple = ()
    other_images: int = 0
    cfa_element: str | None = None
    tiff_tags: dict = field(default_factory=dict)

    @property
    def cfa(self) -> tuple[str, str] | None:
        """``(pattern, where it is named)`` if the metadata calls this a raw CFA mosaic (an XISF
        ``ColorFilterArray`` element, or a ``BAYERPAT`` / ``COLORTYP`` keyword naming a
        pattern), else None. Not proof: :func:`astroswin.engine.cfa.check_not_mosaic` asks
        the pixels too."""
        from .cfa import pattern_in, pattern_of

        element = pattern_of(self.cfa_element)
        if element:
            return element, "ColorFilterArray"
        if self.header is not None:
            return pattern_in(self.header.get)
        keywords = self.xisf_metadata.get("FITSKeywords", {})
        return pattern_in(lambda name: next((entry.get("value") for entry in keywords.get(name, [])), None))

    @cached_property
    def peak(self) -> float:
        """The input's largest value (0 without a finite pixel), integer inputs too: whether
        it was within [0, 1] decides how outputs are scaled. Computed once: it reads the
        whole image, and the writers and the CLI's clip check all ask."""
        return _largest(self.data, 0.0)

    @cached_property
    def low(self) -> float:
        """The input's smallest finite value (0 without a finite pixel): whether an output
        type's floor (:func:`clip_floor`) cuts the input's own values."""
        return _finite_extreme(self.data, np.min, 0.0)


def _largest(data: np.ndarray, default: float) -> float:
    """The largest finite value of ``data``; ``default`` where no pixel is finite. NaN and inf
    are left out: one +inf pixel made the XISF writer's scale inf (every pixel stored as 0) and
    hid a [0, 1] input from the integer scaling."""
    return _finite_extreme(data, np.max, default)


def _finite_extreme(data: np.ndarray, reduce, default: float) -> float:
    """``reduce`` (``np.max`` or ``np.min``) over the finite values of ``data``; ``default``
    where no pixel is finite."""
    if data.size and np.dtype(data.dtype).kind in "biu":
        return float(reduce(data))  # every integer is finite
    finite = np.isfinite(data)
    start = -np.inf if reduce is np.max else np.inf
    return float(reduce(data, where=finite, initial=start)) if finite.any() else default


def sniff_format(path: Path) -> str:
    """``fits``, ``xisf`` or ``tiff`` from the first bytes; EngineError for anything else."""
    if path.exists() and not path.is_file() and not path.is_dir():
        raise EngineError("not a regular file (a device, pipe or socket)")  # a FIFO would block
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except IsADirectoryError:
        raise EngineError("is a folder, not an image file") from None
    except FileNotFoundError:
        raise EngineError("no such file") from None
    except OSError as exc:
        raise EngineError(f"cannot read ({exc.strerror or exc})") from None
    if not head:
        raise EngineError("empty file")
    if head.startswith(b"SIMPLE  ="):
        return "fits"
    if head.startswith(b"\x1f\x8b"):  # gzip: astropy reads a gzipped FITS file as it is
        if _gunzipped_head(path).startswith(b"SIMPLE  ="):
            return "fits"
        raise EngineError("gzip-compressed, and not a FITS file inside; decompress it first")
    if head.startswith(b"XISF0100"):
        return "xisf"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    raise EngineError("not a FITS, XISF or TIFF file (unrecognised content)")


def _gunzipped_head(path: Path) -> bytes:
    import gzip

    try:
        with gzip.open(path, "rb") as fh:
            return fh.read(16)
    except (OSError, EOFError) as exc:
        raise EngineError(f"not a readable gzip file ({_first_line(exc)})") from None


def format_for_suffix(path: Path) -> str | None:
    """The format a file name asks for by its extension, or None."""
    suffix = path.suffix.lower()
    return next((name for name, exts in FORMATS.items() if suffix in exts), None)


def check_image_shape(data: np.ndarray, what: str = "image") -> np.ndarray:
    """Accept ``(H, W)`` and ``(C, H, W)`` with C in {1, 3}; leading axes of length 1 (a FITS
    ``NAXIS3 = 1``, radio-style Stokes/frequency axes) are dropped, a view, never a copy."""
    while data.ndim > 2 and data.shape[0] == 1:
        data = data[0]
    if data.ndim == 2 or (data.ndim == 3 and data.shape[0] == 3):
        if min(data.shape[-2:]) < 1:
            raise EngineError(f"{what} is empty (shape {data.shape})")
        return data
    if data.ndim == 3:
        raise EngineError(f"{what} has {data.shape[0]} planes (shape {data.shape}); only mono (1) and RGB (3) are supported")
    raise EngineError(f"{what} is {data.ndim}-D (shape {data.shape}); only 2-D mono and 3-D RGB images are supported")


# -- reading ---------------------------------------------------------------------------------------
def read_fits(path: Path) -> Image:
    """Primary HDU if it holds an image, else the first image extension (compressed ones too).

    Unscaled data is memory-mapped (tiles are read as needed, big-endian converted per tile);
    scaled data (BZERO/BSCALE, e.g. unsigned 16-bit) cannot be, and is read into memory.
    """
    try:
        return _read_fits(path, memmap=True)
    except _NeedsLoading:
        return _read_fits(path, memmap=False)


class _NeedsLoading(Exception):
    pass


def _is_fits_image(hdu) -> bool:
    """Whether an HDU holds an image (primary, extension or tile-compressed, NAXIS > 0)."""
    from astropy.io import fits

    return isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)) and hdu.header.get("NAXIS", 0) > 0


def _read_fits(path: Path, memmap: bool) -> Image:
    from astropy.io import fits

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hdul = fits.open(path, memmap=memmap, mode="readonly")
            for index, hdu in enumerate(hdul):
                if not _is_fits_image(hdu):
                    continue
                if memmap and any(k in hdu.header for k in ("BZERO", "BSCALE", "BLANK")):
                    raise _NeedsLoading  # astropy cannot memory-map scaled data, compressed or not
                header = hdu.header.copy()  # before the data: scaling it takes BZERO and BLANK out of hdu.header
                data = hdu.data
                if data is None:
                    continue
                if hdu is not hdul[0] and header.get("INHERIT", False):
                    header = _inherit(hdul[0].header, header)
                # Big-endian as stored: tiles are converted as they are read, no full copy.
                # Read-only: the input is never modified, and the engine may drop the pages
                # of a memory map it has read (see restore.release_pages).
                dtype = data.dtype.newbyteorder("=")
                data = check_image_shape(_blank_to_nan(data, header)).view()
                data.flags.writeable = False
                others = sum(map(_is_fits_image, hdul[index + 1:]))
                return Image(data=data, format="fits", dtype=dtype, header=header, other_images=others)
    except (EngineError, _NeedsLoading):
        raise
    except Exception as exc:  # astropy raises many types on truncated/corrupt files
        raise EngineError(f"not a readable FITS file ({_first_line(exc)})") from None
    raise EngineError("the FITS file holds no image (only tables or empty HDUs)")


def _blank_to_nan(data: np.ndarray, header) -> np.ndarray:
    """Integer data with its FITS ``BLANK`` (undefined) pixels as NaN, in float32: restored
    as missing, never as real zeros (a 0 in a sky of 1000 rings like a black hole)."""
    blank = header.get("BLANK", header.get("ZBLANK"))
    if blank is None or data.dtype.kind not in "ui":
        return data
    value = blank * header.get("BSCALE", 1.0) + header.get("BZERO", 0.0)  # as astropy scaled the data
    missing = data == value
    if not missing.any():
        return data
    out = data.astype(np.float32)
    out[missing] = np.nan
    return out


def _inherit(primary, extension):
    """The extension's header with the primary's keywords it lacks (FITS ``INHERIT = T``: an
    observatory's OBJECT, EXPTIME, INSTRUME... live in the primary header)."""
    header, present = extension.copy(), set(extension.keys())
    for card in primary.cards:
        key = card.keyword
        if key and key not in _STRUCTURAL and key not in present and not key.startswith("NAXIS"):
            header.append(card, end=True)
    return header


def read_xisf(path: Path) -> Image:
    """First image of an XISF file, with its FITSKeywords, XISFProperties and the elements
    :mod:`astroswin.engine.xisf_header` carries."""
    from xisf import XISF

    try:
        xf = XISF(str(path))
        meta = xf.get_images_metadata()
        if not meta:
            raise EngineError("the XISF file holds no image")
        where = meta[0].get("location", ("attachment",))
        if where[0] != "attachment":  # the xisf package reads attached blocks only
            raise EngineError(f"its pixels are stored in the XML header (location {':'.join(map(str, where))}), which is not supported; save it again with attached data (PixInsight's default)")
        planar = np.asarray(xf.read_image(0, data_format="channels_first"))
    except EngineError:
        raise
    except Exception as exc:
        raise EngineError(f"not a readable XISF file ({_first_line(exc)})") from None
    data = check_image_shape(_as_stored(planar, meta[0]))
    keep = {k: meta[0][k] for k in ("FITSKeywords", "XISFProperties") if k in meta[0]}
    element = _first_image_element(path)
    cfa, carried = None, ()
    if element is not None:
        keep["FITSKeywords"] = _raw_fits_keywords(element)
        cfa = element.find(xisf_header.TAG + "ColorFilterArray")
        carried = xisf_header.carried_elements(path, element)
    return Image(data=data, format="xisf", dtype=np.dtype(meta[0]["dtype"]), xisf_metadata=keep, xisf_elements=carried, other_images=len(meta) - 1,
                 cfa_element=None if cfa is None else cfa.get("pattern"))


def _as_stored(planar: np.ndarray, meta: dict) -> np.ndarray:
    """``(C, H, W)`` pixels of an XISF image as its ``pixelStorage`` and ``byteOrder`` say.
    The xisf package reads every block as planar little-endian samples: an interleaved
    (``Normal``) RGB image came in scrambled, a big-endian one as numbers like 2e35."""
    if meta.get("byteOrder", "little") == "big":
        planar = planar.view(planar.dtype.newbyteorder(">")).astype(planar.dtype.newbyteorder("="))
    if meta.get("pixelStorage", "Planar") == "Normal":  # the same samples, (H, W, C)
        c, h, w = planar.shape
        planar = np.moveaxis(planar.reshape(h, w, c), -1, 0)
    return planar


def _first_image_element(path: Path):
    """The XML ``Image`` element of an XISF file's first image, or None if unreadable. Read from
    the header (:func:`~astroswin.engine.xisf_header.read_header`): the xisf package strips
    keyword quotes and skips elements such as ``ColorFilterArray``."""
    try:
        _, root = xisf_header.read_header(path)
    except (OSError, ET.ParseError):
        return None
    return root.find(xisf_header.TAG + "Image")


def _raw_fits_keywords(image_element) -> dict:
    """The image's ``FITSKeyword`` values as the file holds them, quotes kept: the xisf package
    strips them, and with them whether ``'0012'`` was a string."""
    keywords: dict[str, list] = {}
    for element in image_element.findall(xisf_header.TAG + "FITSKeyword"):
        keywords.setdefault(element.get("name", ""), []).append({"value": element.get("value", ""), "comment": element.get("comment", "")})
    return keywords


#: TIFF photometric interpretations read as they are: grey with black at 0, and RGB. Inverted
#: grey (MINISWHITE) was restored upside down, palette indices and CMYK as if they were light.
_TIFF_PHOTOMETRIC = ("MINISBLACK", "RGB")


def read_tiff(path: Path) -> Image:
    """First series of a TIFF: mono, RGB, or either with extra (alpha) samples."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            others = len(tif.series) - 1
            data = series.asarray()
            axes = series.axes
            extras = tuple(tif.pages[0].extrasamples) if hasattr(tif.pages[0], "extrasamples") else ()
            photometric = tifffile.PHOTOMETRIC(tif.pages[0].photometric).name
            tags = _kept_tiff_tags(tif.pages[0])
    except Exception as exc:
        raise EngineError(f"not a readable TIFF file ({_first_line(exc)})") from None
    if photometric not in _TIFF_PHOTOMETRIC:
        raise EngineError(f"a TIFF of {photometric.lower()} pixels (not grey or RGB values, which are all that is restored); convert it to grey or RGB first")
    if axes.endswith("S"):  # interleaved samples: (H, W, S) -> (S, H, W)
        data = np.moveaxis(data, -1, 0)
    elif axes == "SYX" or (axes == "CYX" and data.shape[0] == 3):  # planar samples; an ImageJ colour composite
        pass
    elif data.ndim == 3 and axes.endswith("YX"):  # pages of one grey sample each (T, Z, Q, I, C...): frames
        raise EngineError(f"a TIFF of {data.shape[0]} grey pages (axes {axes}: a stack of frames?): one image per file is restored; save the frames as separate files")
    elif data.ndim != 2:
        raise EngineError(f"unsupported TIFF layout (axes {axes}, shape {data.shape})")
    alpha = None
    if data.ndim == 3 and data.shape[0] in (2, 4):  # grey+alpha, RGB+alpha
        colour = 1 if data.shape[0] == 2 else 3
        data, alpha = data[:colour], np.array(data[colour:])
    data = check_image_shape(data)
    if data.dtype.kind not in "uif":
        raise EngineError(f"unsupported TIFF sample type {data.dtype}")
    return Image(data=data, format="tiff", dtype=data.dtype, alpha=alpha, tiff_extrasamples=extras, other_images=others, tiff_tags=tags)


def _kept_tiff_tags(page) -> dict:
    """What a TIFF output keeps of the input's page: its orientation (dropped, a viewer showed
    the restored image turned or mirrored against the input), ICC profile and resolution, as
    tifffile's writer arguments."""
    tags = {}
    orientation = page.tags.get("Orientation")
    if orientation is not None and orientation.value not in (None, 1):
        tags["extratags"] = [(274, "H", 1, int(orientation.value), True)]
    if page.iccprofile:
        tags["iccprofile"] = bytes(page.iccprofile)
    if page.tags.get("XResolution") is not None:
        tags["resolution"], tags["resolutionunit"] = tuple(page.resolution), int(page.resolutionunit)
    return tags


def read_image(path: str | Path) -> Image:
    """Read a FITS, XISF or TIFF image (format from content). EngineError on any problem."""
    path = Path(path)
    fmt = sniff_format(path)
    image = {"fits": read_fits, "xisf": read_xisf, "tiff": read_tiff}[fmt](path)
    if image.data.size == 0:
        raise EngineError("the image is empty")
    return image


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# -- writing ---------------------------------------------------------------------------------------
def to_storage(data: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Convert float32 results to the stored sample type: integers rounded and clipped; float16
    clipped to its +-65504 (NaN kept), as a restored star beyond it would be stored as inf."""
    dtype = np.dtype(dtype)
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        out = np.empty(data.shape, dtype=dtype)
        np.clip(np.rint(np.nan_to_num(data, nan=0.0)), info.min, info.max, out=out, casting="unsafe")
        return out
    if dtype == np.float16:
        out = np.empty(data.shape, dtype=dtype)  # clipped straight into it: no float32 copy
        np.clip(data, -_FLOAT16_MAX, _FLOAT16_MAX, out=out, casting="unsafe")
        return out
    return data.astype(dtype, copy=False)


def fits_header(source, history: list[str]):
    """A copy of the source header without layout keywords, plus HISTORY lines."""
    from astropy.io import fits

    header = fits.Header()
    if source is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # HIERARCH cards: astropy warns, and keeps them
            _copy_cards(source, header)
    for line in history:
        header.add_history(line)
    return header


def _is_layout(key: str) -> bool:
    """Whether a FITS keyword describes the data's layout or compression (rebuilt, never
    copied), or is no keyword at all (blank cards, END)."""
    return key in _STRUCTURAL or key.startswith(_COMPRESSION) or key.startswith("NAXIS") or key in ("", "END")


def _copy_cards(source, header) -> None:
    """Append ``source``'s cards to ``header``, layout and compression keywords left out."""
    from astropy.io import fits

    for card in source.cards:
        key = card.keyword
        if _is_layout(key):
            continue
        try:
            header.append(card.copy() if hasattr(card, "copy") else (card.keyword, card.value, card.comment), end=True)
        except (ValueError, fits.VerifyError):
            continue  # a card astropy cannot re-serialise (e.g. non-ASCII): skip it, keep the rest


def write_fits(tmp: Path, data: np.ndarray, image: Image | None, dtype: np.dtype, history: list[str]) -> None:
    from astropy.io import fits

    header = fits_header(image.header if image is not None and image.format == "fits" else None, [])
    if image is not None and image.format == "xisf":
        _fitskeywords_into_header(header, image.xisf_metadata)
    for line in history:  # after the input's own HISTORY: chronological, as from a FITS input
        header.add_history(line)
    hdu = fits.PrimaryHDU(data=to_storage(data, dtype), header=header)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hdu.writeto(tmp, output_verify="silentfix")


#: Keywords whose value is free text, not FITS value syntax.
_COMMENTARY = ("HISTORY", "COMMENT", "")


def _keyword_text(name: str, value) -> str:
    """A FITS keyword's value as an XISF ``FITSKeyword`` holds it: FITS value syntax, as
    PixInsight writes it (strings quoted, logicals T/F, numbers bare)."""
    if name in _COMMENTARY:
        return str(value)
    if value is None or type(value).__name__ == "Undefined":  # a keyword without a value
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "T" if value else "F"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return str(value)


def _fits_value(name: str, text):
    """The typed value of an XISF ``FITSKeyword``'s text: a number stays a number, so a WCS
    (CRVAL, CD...) still reads as one once written to FITS; quotes are taken off strings
    (:func:`_raw_fits_keywords` keeps them). Values already typed pass through."""
    if not isinstance(text, str):
        return text
    text = text.strip()
    if name in _COMMENTARY:
        return text
    if len(text) >= 2 and text[0] == "'" and text[-1] == "'":
        return text[1:-1].replace("''", "'").rstrip()
    if text in ("T", "F"):
        return text == "T"
    if "_" not in text:  # int() and float() read 1_000
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
    return text


def _fitskeywords_into_header(header, xisf_metadata: dict) -> None:
    """Append an XISF image's ``FITSKeywords`` to ``header``, typed (:func:`_fits_value`).
    PixInsight keeps HISTORY and COMMENT text in the comment; it becomes the card's text."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # long names become HIERARCH cards, with a warning
        for name, values in xisf_metadata.get("FITSKeywords", {}).items():
            if name in _STRUCTURAL or name.startswith("NAXIS"):
                continue
            for entry in values:
                value, comment = entry.get("value", ""), entry.get("comment", "")
                if name in _COMMENTARY and not str(value).strip():
                    value, comment = comment, ""
                try:
                    header.append((name, _fits_value(name, value), comment), end=True)
                except ValueError:
                    continue


def write_xisf(tmp: Path, data: np.ndarray, image: Image | None, dtype: np.dtype, history: list[str]) -> None:
    """Float output is kept within [0, 1] (what XISF readers assume): clipped when the input
    was in [0, 1], else scaled down with the factor recorded (``AstroSWIN:Scale`` property and
    ``ASWSCALE`` keyword: original = stored * scale). An XISF input's Resolution, colour
    space and screen stretch are carried (:mod:`astroswin.engine.xisf_header`); the stretch
    not when the values were scaled, since it would no longer fit them."""
    from xisf import XISF

    metadata = {"FITSKeywords": {}, "XISFProperties": {}}
    if image is not None and image.format == "xisf":
        metadata = {k: dict(v) for k, v in image.xisf_metadata.items()}
        metadata.setdefault("FITSKeywords", {})
        # FITS value syntax (strings quoted, numbers bare), so PixInsight and FITS writers read
        # the types back; a keyword set in code may come unquoted.
        metadata["FITSKeywords"] = {name: [{**entry, "value": _keyword_text(name, _fits_value(name, entry.get("value", "")))} for entry in entries] for name, entries in metadata["FITSKeywords"].items() if name not in _STALE}
    elif image is not None and image.header is not None:
        for card in fits_header(image.header, []).cards:
            metadata["FITSKeywords"].setdefault(card.keyword, []).append({"value": _keyword_text(card.keyword, card.value), "comment": card.comment})
    dtype = np.dtype(dtype)
    stored = data
    carried = image.xisf_elements if image is not None else ()
    if dtype.kind == "f":
        dtype = np.dtype(np.float32) if dtype.itemsize < 8 else dtype
        peak = _largest(data, 1.0)
        if peak > 1.0 and image is not None and image.peak > 1.0:
            scale = peak
            stored = data / scale
            metadata.setdefault("XISFProperties", {})["AstroSWIN:Scale"] = {"id": "AstroSWIN:Scale", "type": "Float64", "value": scale}
            metadata["FITSKeywords"]["ASWSCALE"] = [{"value": repr(scale), "comment": "AstroSWIN: original = stored * ASWSCALE"}]
            carried = xisf_header.without(carried, "DisplayFunction")
        stored = np.clip(stored, 0.0, 1.0)
    keywords = metadata["FITSKeywords"]
    keywords["HISTORY"] = list(keywords.get("HISTORY", [])) + [{"value": line, "comment": ""} for line in history]
    hwc = np.moveaxis(to_storage(stored if stored.ndim == 3 else stored[None], dtype), 0, -1)
    XISF.write(str(tmp), np.ascontiguousarray(hwc), creator_app=_creator(), image_metadata=metadata, codec=None)
    _declare_utf8(tmp)
    xisf_header.add_image_elements(tmp, carried)


#: The XML declaration the xisf package writes, and the same 38 bytes as XISF asks for it.
_XISF_DECLARATION = (b"<?xml version='1.0' encoding='utf8'?>\n", b'<?xml version="1.0" encoding="UTF-8"?>')


def _declare_utf8(path: Path) -> None:
    """Name the header's encoding UTF-8, in place. The xisf package declares it as ``utf8``, a
    name expat does not know: the header is then decoded byte by byte, and one non-ASCII
    character (a keyword comment in "°C", an object called "Cœur") made the file unreadable to
    that package and to this engine, after an exit status of 0."""
    written, wanted = _XISF_DECLARATION
    with open(path, "r+b") as fh:
        fh.seek(16)  # signature, header length, reserved
        if fh.read(len(written)) == written:
            fh.seek(16)
            fh.write(wanted)


def write_tiff(tmp: Path, data: np.ndarray, image: Image | None, dtype: np.dtype, history: list[str]) -> None:
    import tifffile

    planes = to_storage(data if data.ndim == 3 else data[None], dtype)
    extrasamples = ()
    if image is not None and image.alpha is not None:
        planes = np.concatenate([planes, image.alpha.astype(planes.dtype, copy=False)])
        extrasamples = image.tiff_extrasamples or (2,) * image.alpha.shape[0]
    colour = data.shape[0] if data.ndim == 3 else 1
    photometric = "rgb" if colour == 3 else "minisblack"
    hwc = np.moveaxis(planes, 0, -1) if planes.shape[0] > 1 else planes[0]
    kept = image.tiff_tags if image is not None else {}
    tifffile.imwrite(tmp, hwc, photometric=photometric, planarconfig="contig" if planes.shape[0] > 1 else None, extrasamples=extrasamples or None, software=_creator(), description="\n".join(history), metadata=None, **kept)


def _creator() -> str:
    from astroswin import __version__

    return f"AstroSWIN {__version__}"


WRITERS = {"fits": write_fits, "xisf": write_xisf, "tiff": write_tiff}


def default_dtype(fmt: str, image: Image | None) -> np.dtype:
    """FITS: float32; XISF and TIFF: the input's sample type (float64 becomes float32; signed
    integers become float32 in XISF, which stores only unsigned ones). A float16 TIFF stays
    float16: whoever made it reads it, and twice its size was not asked for; what float16
    cannot hold is clipped and reported (:func:`clip_ceiling`)."""
    if fmt == "fits" or image is None:
        return np.dtype(np.float32)
    dtype = np.dtype(image.dtype)
    if fmt == "tiff" and dtype == np.float16:
        return dtype
    return np.dtype(np.float32) if dtype.kind == "f" or (fmt == "xisf" and dtype.kind == "i") else dtype


def integer_scale(dtype: np.dtype, source: Image | None) -> float:
    """What float data is multiplied by to be stored as integers: the type's maximum when the
    input was float within [0, 1] (PixInsight's and Siril's normalised range; a 0.3 stored as
    uint16 would be 0), else 1 (data already in ADU)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "ui" and source is not None and np.dtype(source.dtype).kind == "f" and source.peak <= 1.0:
        return float(np.iinfo(dtype).max)
    return 1.0


def output_format(path: Path, source: Image | None, fmt: str | None = None, dtype=None) -> tuple[str, np.dtype]:
    """The format and sample type :func:`write_image` stores ``path`` in: ``fmt`` or the
    extension's (else the source's, else FITS); ``dtype`` or :func:`default_dtype`."""
    fmt = fmt or format_for_suffix(Path(path)) or (source.format if source else "fits")
    return fmt, np.dtype(dtype) if dtype is not None else default_dtype(fmt, source)


def clip_ceiling(fmt: str, dtype: np.dtype, source: Image | None) -> float | None:
    """The largest value such an output holds, or None where nothing is clipped: an integer
    type's maximum, 1.0 for XISF floats from an input within [0, 1] (:func:`write_xisf`), or
    float16's 65504 in TIFF. A restoration concentrates stars' light, so their peaks can pass
    what the input held."""
    dtype = np.dtype(dtype)
    if dtype.kind in "ui":
        return float(np.iinfo(dtype).max) / integer_scale(dtype, source)
    if fmt == "xisf" and not (source is not None and source.peak > 1.0):
        return 1.0
    if fmt == "tiff" and dtype == np.float16:
        return _FLOAT16_MAX
    return None


def clip_floor(fmt: str, dtype: np.dtype, source: Image | None) -> float | None:
    """The smallest value such an output holds, or None where nothing is clipped: an integer
    type's minimum (0 unsigned), 0 for XISF floats (stored within [0, 1], :func:`write_xisf`),
    or float16's -65504 in TIFF."""
    dtype = np.dtype(dtype)
    if dtype.kind in "ui":
        return float(np.iinfo(dtype).min) / integer_scale(dtype, source)
    if fmt == "xisf":
        return 0.0
    if fmt == "tiff" and dtype == np.float16:
        return -_FLOAT16_MAX
    return None


def unkept_keywords(fmt: str, source: Image) -> list[str]:
    """The names of ``source``'s FITS keywords an output in ``fmt`` does not keep, in order.

    FITS and XISF keep them all; TIFF has no place for them (its description holds only
    AstroSWIN's HISTORY), so a plate-solved FITS written as TIFF loses its WCS: the CLI says so
    rather than dropping them without a word.
    """
    if fmt != "tiff":
        return []
    if source.header is not None:
        names = [card.keyword for card in source.header.cards]
    else:
        names = list(source.xisf_metadata.get("FITSKeywords", {}))
    return list(dict.fromkeys(name for name in names if not _is_layout(name)))


def is_wcs_keyword(name: str) -> bool:
    """Whether ``name`` is part of a FITS world coordinate system (the plate solution)."""
    return _WCS.match(name) is not None


def _check_target(path: Path, folder: Path, overwrite: bool) -> None:
    """The checks every output gets: not a folder or special file, folder exists, no clobber."""
    if path.is_dir():
        raise EngineError(f"output {path} is a folder")
    if path.exists() and not path.is_file():
        raise EngineError(f"output {path} is not a regular file (a device, pipe or socket); choose a file name")
    if not folder.is_dir():
        raise EngineError(f"output folder {folder} does not exist")
    if path.exists() and not overwrite:
        raise EngineError(f"output {path} exists (use --overwrite to replace it)")


def check_output(path: str | Path, overwrite: bool = False) -> Path:
    """Check that ``path`` can receive an output, before any work is done; EngineError if not.

    The target must not be a folder or a special file (a device, pipe or socket: never
    replaced by a regular file, even with ``overwrite``), its folder must exist and accept a
    new file (tried, not guessed from permission bits: root ignores them), and an existing
    target needs ``overwrite``.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    _check_target(path, folder, overwrite)
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".astroswin-tmp", dir=folder)
    except OSError as exc:
        raise EngineError(f"cannot write in {folder} ({exc.strerror or exc})") from None
    try:
        os.close(fd)
    finally:
        os.unlink(probe)
    return path


def write_image(path: str | Path, data: np.ndarray, source: Image | None = None, *, fmt: str | None = None, dtype: np.dtype | str | None = None, history: list[str] | None = None, overwrite: bool = False) -> Path:
    """Write ``data`` atomically, keeping ``source``'s metadata.

    Parameters
    ----------
    path : str or Path
        Target file. Its extension picks the format unless ``fmt`` is given; an unknown
        extension falls back to the source's format.
    data : numpy.ndarray
        ``(H, W)`` or ``(C, H, W)`` float32 results in the source's units.
    source : Image, optional
        The image the data came from (metadata, sample type, alpha).
    dtype : optional
        Sample type to store; default :func:`default_dtype`.
    history : list of str
        HISTORY lines to add (FITS / XISF keywords, TIFF description).
    overwrite : bool
        Replace an existing file. Without it an existing target is an error -- checked at the
        final, atomic step too, so two runs racing for one name cannot clobber each other.
        A folder or a special file (device, pipe, socket) is never replaced.
    """
    path = Path(path)
    fmt, dtype = output_format(path, source, fmt, dtype)
    folder = path.parent if str(path.parent) else Path(".")
    _check_target(path, folder, overwrite)
    tmp = None
    try:
        try:
            fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".astroswin-tmp", dir=folder)
        except OSError as exc:
            raise EngineError(f"cannot write in {folder} ({exc.strerror or exc})") from None
        tmp = Path(tmp_name)
        os.close(fd)
        tmp.unlink()  # writers create the file themselves (astropy refuses to overwrite)
        scale = integer_scale(dtype, source)
        if scale != 1.0:
            data = data * np.float32(scale)
            history = [*(history or []), f"AstroSWIN: float [0, 1] input stored as {dtype} x {scale:g}"]
        WRITERS[fmt](tmp, data, source, dtype, history or [])
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if the name appeared meanwhile: never clobber
            except FileExistsError:
                raise EngineError(f"output {path} exists (use --overwrite to replace it)") from None
            except OSError:
                if path.exists():
                    raise EngineError(f"output {path} exists (use --overwrite to replace it)") from None
                os.replace(tmp, path)  # file systems without hard links
    except EngineError:
        raise
    except OSError as exc:
        raise EngineError(f"cannot write {path} ({exc.strerror or _first_line(exc)})") from None
    except Exception as exc:  # a writer refusing the data: one line, and no partial file
        raise EngineError(f"cannot write {path} as {fmt.upper()} ({_first_line(exc)})") from None
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()
    return path
