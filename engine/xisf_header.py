"""XISF Image elements the xisf package neither reads nor writes, carried from input to output.

An XISF image may hold a ``Resolution`` (pixels per inch or cm), a ``DisplayFunction`` (the
screen stretch PixInsight opens it with: without it a linear image opens black), an
``ICCProfile`` and an ``RGBWorkingSpace`` (its colour space). The xisf package writes
``FITSKeyword`` and ``Property`` elements only, so these were lost on every XISF output.
:func:`carried_elements` copies them from an input's header; :func:`add_image_elements` puts
them into the first image of a file the package has written.

Layout of a monolithic XISF file (XISF 1.0, section 9): the signature ``XISF0100``, the XML
header's length (uint32, little-endian), 4 reserved bytes, the header, then the attached data
blocks at the byte positions the header's ``location="attachment:position:size"`` give.
"""

from __future__ import annotations

import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

NAMESPACE = "http://www.pixinsight.com/xisf"
#: ElementTree's prefix for that namespace's tags: ``TAG + "Image"``.
TAG = f"{{{NAMESPACE}}}"
#: The Image children carried to the output. A Thumbnail would show the unrestored image, and a
#: ColorFilterArray is read as the mosaic it names (``engine.cfa``), so neither is carried.
CARRIED = ("Resolution", "DisplayFunction", "ICCProfile", "RGBWorkingSpace")
_PREAMBLE = 16  # signature, header length, reserved
_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>'
_DEFAULT_ALIGNMENT = 4096
# Written back as the default namespace, as XISF headers are, not as "ns0:" prefixes. (The
# ``default_namespace`` argument of ElementTree.tostring refuses unprefixed attributes.) This
# is process-wide: no other XML this package writes uses that namespace.
ET.register_namespace("", NAMESPACE)


def read_header(path: Path) -> tuple[bytes, ET.Element]:
    """The file's 16-byte preamble and its parsed XML header (OSError, ET.ParseError)."""
    with open(path, "rb") as fh:
        preamble = fh.read(_PREAMBLE)
        return preamble, ET.fromstring(fh.read(int.from_bytes(preamble[8:12], "little")))


def _attachment(location: str | None) -> tuple[int, int] | None:
    """``(position, size)`` of an ``attachment:position:size`` location, else None."""
    parts = [part.strip() for part in (location or "").split(":")]
    if len(parts) != 3 or parts[0] != "attachment":
        return None
    try:
        return int(parts[1]), int(parts[2])
    except ValueError:
        return None


#: An element as carried: its XML text and, for an attached data block, the block's bytes.
Carried = tuple[str, bytes | None]


def carried_elements(path: Path, image_element: ET.Element) -> tuple[Carried, ...]:
    """``image_element``'s :data:`CARRIED` children, each as ``(xml, block)``.

    ``block`` holds the bytes of an attached data block (an ICC profile usually is one), read
    from ``path``; :func:`add_image_elements` attaches them again, so its ``compression`` and
    ``checksum`` attributes still describe them. Inline and embedded data stay in the XML. An
    element whose data is in another file (``path:``, ``url:``) or cannot be read is left out
    rather than carried broken.
    """
    carried = []
    for name in CARRIED:
        for element in image_element.findall(TAG + name):
            location = (element.get("location") or "").strip()
            block = None
            if location.startswith(("path", "url")):
                continue
            if location.startswith("attachment"):
                where = _attachment(location)
                if where is None:
                    continue
                try:
                    with open(path, "rb") as fh:
                        fh.seek(where[0])
                        block = fh.read(where[1])
                except OSError:
                    continue
                if len(block) != where[1]:
                    continue
            carried.append((ET.tostring(element, encoding="unicode"), block))
    return tuple(carried)


def without(elements: tuple[Carried, ...], name: str) -> tuple[Carried, ...]:
    """``elements`` less those named ``name`` (e.g. ``"DisplayFunction"``)."""
    return tuple(item for item in elements if ET.fromstring(item[0]).tag != TAG + name)


def add_image_elements(path: Path, elements: tuple[Carried, ...]) -> None:
    """Append ``elements`` (from :func:`carried_elements`) to the first Image of the XISF file
    at ``path``, in place.

    Their data blocks go after the file's last block, aligned (the file's
    ``XISF:BlockAlignmentSize``, else 4096). When the longer header still ends before the first
    data block, only the header's bytes are rewritten; otherwise every block moves by the same
    whole number of alignment units, so each stays aligned and in its order, and the file is
    rewritten once through a temporary beside it.
    """
    if not elements:
        return
    preamble, root = read_header(path)
    image = root.find(TAG + "Image")
    if image is None:
        raise ValueError(f"{path.name}: no Image element in the XISF header")
    alignment = _alignment(root)
    size = os.path.getsize(path)
    appended = b""
    for text, block in elements:
        element = ET.fromstring(text)
        if block is not None:
            position = -(-(size + len(appended)) // alignment) * alignment
            appended += bytes(position - size - len(appended)) + block
            element.set("location", f"attachment:{position}:{len(block)}")
        image.append(element)
    blocks = [(element, *where) for element in root.iter() if (where := _attachment(element.get("location"))) is not None]
    first = min((position for _, position, _ in blocks), default=size)
    shift = 0
    while True:
        for element, position, length in blocks:
            element.set("location", f"attachment:{position + shift}:{length}")
        header = _DECLARATION + ET.tostring(root, encoding="utf-8", xml_declaration=False)
        end = _PREAMBLE + len(header)
        if end <= first + shift:
            break
        shift += -(-(end - first - shift) // alignment) * alignment
    head = preamble[:8] + len(header).to_bytes(4, "little") + preamble[12:16] + header
    head += bytes(first + shift - len(head))
    if shift == 0:
        with open(path, "r+b") as fh:
            fh.write(head)
            fh.seek(size)
            fh.write(appended)
        return
    moved = path.with_name(f"{path.name}.moving.astroswin-tmp")
    try:
        with open(path, "rb") as source, open(moved, "wb") as target:
            target.write(head)
            source.seek(first)
            shutil.copyfileobj(source, target, 1 << 22)
            target.write(appended)
        os.replace(moved, path)
    finally:
        moved.unlink(missing_ok=True)


def _alignment(root: ET.Element) -> int:
    for prop in root.iter(TAG + "Property"):
        if prop.get("id") == "XISF:BlockAlignmentSize":
            try:
                return max(1, int(prop.get("value") or prop.text or ""))
            except ValueError:
                break
    return _DEFAULT_ALIGNMENT
