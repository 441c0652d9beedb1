#!/usr/bin/env python
"""Collect images from the ESA/Hubble image archive (esahubble.org) by category.

    python scripts/collect_esahubble.py --out data/raw/esahubble --category galaxies --category nebulae --limit 40

ESA/Hubble has no search API; the archive is a Djangoplicity site:

* category listing pages ``/images/archive/category/<slug>/page/<n>/`` embed the page's
  images as a JavaScript literal ``var images = [ {id: 'heic0506a', title: "...",
  url: '/images/heic0506a/', ...}, ... ];`` (a page past the end answers 404);
* per-image metadata (title, credit) comes from the Djangoplicity JSON view
  ``/images/<id>/api/json/`` (``{"Title": ..., "Credit": ..., ...}``); if it is absent
  (404) the credit falls back to "ESA/Hubble";
* the files themselves live at ``/media/archives/images/<format>/<id>.<ext>``
  (e.g. ``large/heic0506a.jpg``, ``publicationtiff10k/heic0506a.tif``), redirected to
  the CDN. Not every image exists in every format: a 404 there is reported for that
  image and the run continues.

Licence: ESA/Hubble images are CC BY 4.0 ("ESA/Hubble" plus the per-image credit);
the manifest records both. The images are stretched, colour-composited display
images (sRGB JPEG/TIFF), not linear data.
"""

from __future__ import annotations

import html
import re
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import click

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))
import collectlib as cl  # noqa: E402

PROG = "collect_esahubble"
SOURCE = "esahubble"
DEFAULT_BASE_URL = "https://esahubble.org"
LICENSE = "CC BY 4.0"
LICENSE_URL = "https://creativecommons.org/licenses/by/4.0/"
DEFAULT_CREDIT = "ESA/Hubble"

#: CLI category -> archive slug.
CATEGORIES = {
    "galaxies": "galaxies",
    "nebulae": "nebulae",
    "clusters": "starclusters",
    "stars": "stars",
    "solarsystem": "solarsystem",
    "cosmology": "cosmology",
}
#: CLI format -> (archive folder, extension, accepted sniffed extensions).
FORMATS = {
    "screen": ("screen", ".jpg", (".jpg",)),
    "large": ("large", ".jpg", (".jpg",)),
    "publicationjpg": ("publicationjpg", ".jpg", (".jpg",)),
    "tiff10k": ("publicationtiff10k", ".tif", (".tif",)),
    "tiff40k": ("publicationtiff40k", ".tif", (".tif",)),
    "original": ("original", ".tif", (".tif",)),
}

_IMAGES_BLOCK = re.compile(r"var\s+images\s*=\s*\[(.*?)\]\s*;", re.S)
_OBJECT = re.compile(r"\{(.*?)\}", re.S)
_ID = re.compile(r"""\bid\s*:\s*(['"])(.*?)\1""")
_TITLE = re.compile(r"""\btitle\s*:\s*(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)')""")
_VALID_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_TAG = re.compile(r"<[^>]+>")


def parse_listing(page: str, url: str) -> list[tuple[str, str | None]]:
    """(id, title) pairs from a category page; [] for an empty page."""
    m = _IMAGES_BLOCK.search(page)
    if not m:
        raise cl.ApiChangedError(f"ESA/Hubble listing {url} has no 'var images = [...]' list")
    out = []
    for obj in _OBJECT.findall(m.group(1)):
        idm = _ID.search(obj)
        if not idm:
            raise cl.ApiChangedError(f"ESA/Hubble listing {url}: an image entry has no id")
        image_id = idm.group(2)
        if not _VALID_ID.match(image_id):
            raise cl.ApiChangedError(f"ESA/Hubble listing {url}: unexpected image id {image_id!r}")
        tm = _TITLE.search(obj)
        title = None
        if tm:
            raw = tm.group(1) if tm.group(1) is not None else tm.group(2)
            title = html.unescape(re.sub(r"\\(.)", r"\1", raw)).strip() or None
        out.append((image_id, title))
    return out


def clean_credit(text: str) -> str:
    return re.sub(r"\s+", " ", html.unescape(_TAG.sub(" ", text))).strip()


class EsaHubble:
    def __init__(self, collector: cl.Collector, fmt: str, metadata: bool):
        self.c = collector
        self.base = collector.opts.base_url
        self.folder, self.ext, self.accept = FORMATS[fmt]
        self.fmt = fmt
        self.metadata = metadata

    def listing(self, category: str) -> Iterator[tuple[str, str | None, str]]:
        slug = CATEGORIES[category]
        page_no = 1
        while True:
            url = f"{self.base}/images/archive/category/{slug}/page/{page_no}/"
            try:
                text = self.c.client.get_text(url)
            except cl.HTTPStatusError as e:
                if e.status == 404 and page_no > 1:
                    return  # past the last page
                if e.status == 404:
                    raise cl.ApiChangedError(f"ESA/Hubble category page {url} not found (HTTP 404)") from None
                raise
            entries = parse_listing(text, url)
            if not entries:
                return
            for image_id, title in entries:
                yield image_id, title, category
            page_no += 1

    def items(self, categories: tuple[str, ...]) -> Iterator[cl.Item]:
        for image_id, title, category in cl.interleave(self.listing(cat) for cat in categories):
            yield cl.Item(
                id=image_id,
                variant=self.fmt,
                stem=cl.safe_name(f"{image_id}_{self.fmt}"),
                url=f"{self.base}/media/archives/images/{self.folder}/{urllib.parse.quote(image_id)}{self.ext}",
                page_url=f"{self.base}/images/{urllib.parse.quote(image_id)}/",
                title=title,
                credit=DEFAULT_CREDIT,
                license=LICENSE,
                license_url=LICENSE_URL,
                meta={"category": category},
                resolve=self.resolve if self.metadata else None,
                accept=self.accept,
            )

    def resolve(self, item: cl.Item) -> None:
        url = f"{self.base}/images/{urllib.parse.quote(item.id)}/api/json/"
        what = f"ESA/Hubble metadata for {item.id}"
        try:
            info = self.c.client.get_json(url, what)
        except cl.HTTPStatusError as e:
            if e.status == 404:
                item.meta["credit_source"] = "default"
                return
            raise
        credit = cl.require(info, "Credit", str, what)
        title = info.get("Title")
        item.credit = clean_credit(credit) or DEFAULT_CREDIT
        if isinstance(title, str) and title.strip():
            item.title = title.strip()
        if isinstance(info.get("ReferenceURL"), str):
            item.page_url = info["ReferenceURL"]
        item.meta["credit_source"] = "api/json"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@cl.common_options(DEFAULT_BASE_URL, default_rate=1.0, default_limit=100)
@click.option(
    "--category",
    "categories",
    multiple=True,
    type=click.Choice(sorted(CATEGORIES)),
    help="Archive category (repeatable; default: galaxies, nebulae, clusters). Categories are interleaved.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(list(FORMATS)),
    default="large",
    show_default=True,
    help="Which archive rendition to download (JPEG or TIFF).",
)
@click.option(
    "--metadata/--no-metadata",
    default=True,
    show_default=True,
    help="Fetch each image's credit/title from its JSON view (one extra request per image).",
)
@cl.guard(PROG)
def main(run_options: cl.RunOptions, categories: tuple[str, ...], fmt: str, metadata: bool) -> int:
    """Download ESA/Hubble archive images by category (CC BY 4.0, credit recorded)."""
    cats = categories or ("galaxies", "nebulae", "clusters")
    collector = cl.Collector(PROG, SOURCE, run_options)
    return collector.run(EsaHubble(collector, fmt, metadata).items(tuple(dict.fromkeys(cats))))


if __name__ == "__main__":
    main()
