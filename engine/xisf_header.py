"""XISF Image elements the xisf package neither reads nor writes, carried from input to output.

An XISF image may hold a ``Resolution`` (pixels per inch or cm), a ``DisplayFunction`` (the
screen stretch PixInsight opens it with: without it a linear image opens black) and an
``ICCProfile`` (its colour space). The xisf package writes ``FITSKeyword`` and ``Property``
elements only, so these were lost on every XISF output. :func:`carried_elements` copies them
from an input's header as XML text; :func:`add_image_elements` puts them into the first image
of a file the package has written, moving the data blocks when the header outgrows its room.

Layout of a monolithic XISF file (XISF 1.0, section 9): the signature ``XISF0100``, the XML
header's length (uint32, little-endian), 4 reserved bytes, the header, then the attached data
blocks at the byte positions the header's ``location="attachment:position:size"`` give.
"""

from __future__ import annotations

import base64
import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

NAMESPACE = "http://www.pixinsight.com/xisf"
#: The Image children carried to the output. A Thumbnail would show the unrestored image, and a
#: ColorFilterArray is read as the mosaic it names (``engine.cfa``), so neither is carried.
CARRIED = ("Resolution", "DisplayFunction", "ICCProfile")
_PREAMBLE = 16  # signature, header length, reserved
_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>'
_DEFAULT_ALIGNMENT = 4096
# Written back as the default namespace, as XISF headers are, not as "ns0:" prefixes. (The
# ``default_namespace`` argument of ElementTree.tostring refuses unprefixed attributes.)
ET.register_namespace("", NAMESPACE)


def _attachment(location: str | None) -> tuple[int, int] | None:
    """``(position, size)`` of an ``attachment:position:size`` location, else None."""
    parts = (location or "").split(":")
    if len(parts) != 3 or parts[0] != "attachment":
        return None
    try:
        return int(parts[1]), int(parts[2])
    except ValueError:
        return None


def carried_elements(path: Path, image_element: ET.Element) -> tuple[str, ...]:
    """XML text of ``image_element``'s :data:`CARRIED` children, as the output will hold them.

    An attached block (an ICC profile is usually one) is read from ``path`` and put inline as
    base64, its ``compression`` and ``checksum`` attributes kept: they describe the same bytes.
    An element whose block cannot be read is left out rather than carried broken.
    """
    carried = []
    for name in CARRIED:
        for element in image_element.findall(f"{{{NAMESPACE}}}{name}"):
            element = _copy(element)
            where = _attachment(element.get("location"))
            if where is not None:
                position, size = where
                try:
                    with open(path, "rb") as fh:
                        fh.seek(position)
                        block = fh.read(size)
                except OSError:
                    continue
                if len(block) != size:
                    continue
                element.set("location", "inline:base64")
                element.text = base64.b64encode(block).decode("ascii")
            carried.append(ET.tostring(element, encoding="unicode"))
    return tuple(carried)


def _copy(element: ET.Element) -> ET.Element:
    return ET.fromstring(ET.tostring(element))


def add_image_elements(path: Path, elements: tuple[str, ...]) -> None:
    """Append ``elements`` (XML text, XISF namespace) to the first Image of the XISF file at
    ``path``, in place.

    When the longer header still ends before the first data block, only the header's bytes
    are rewritten. Otherwise every attached block moves by the same whole number of alignment
    units (the file's ``XISF:BlockAlignmentSize``, else 4096), so each stays aligned and in
    its order, and the file is rewritten once through a temporary beside it.
    """
    if not elements:
        return
    with open(path, "rb") as fh:
        preamble = fh.read(_PREAMBLE)
        root = ET.fromstring(fh.read(int.from_bytes(preamble[8:12], "little")))
    image = root.find(f"{{{NAMESPACE}}}Image")
    if image is None:
        raise ValueError(f"{path.name}: no Image element in the XISF header")
    image.extend(ET.fromstring(text) for text in elements)
    blocks = [(element, *where) for element in root.iter() if (where := _attachment(element.get("location"))) is not None]
    first = min((position for _, position, _ in blocks), default=os.path.getsize(path))
    alignment = _alignment(root)
    shift = 0
    while True:
        for element, position, size in blocks:
            element.set("location", f"attachment:{position + shift}:{size}")
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
        return
    moved = path.with_name(path.name + ".moving")
    try:
        with open(path, "rb") as source, open(moved, "wb") as target:
            target.write(head)
            source.seek(first)
            shutil.copyfileobj(source, target, 1 << 22)
        os.replace(moved, path)
    finally:
        moved.unlink(missing_ok=True)


def _alignment(root: ET.Element) -> int:
    for prop in root.iter(f"{{{NAMESPACE}}}Property"):
        if prop.get("id") == "XISF:BlockAlignmentSize":
            try:
                return max(1, int(prop.get("value") or prop.text or ""))
            except ValueError:
                break
    return _DEFAULT_ALIGNMENT
