#!/usr/bin/env python
"""Collect AstroBin Image-of-the-Day (IOTD) images through AstroBin's public API v1.

    python scripts/collect_astrobin.py --out data/raw/astrobin --since 2023-01-01 --limit 50

Flow: ``GET /api/v1/imageoftheday/?limit=N&offset=K&api_key=..&api_secret=..&format=json``
(Tastypie pagination: ``{"meta": {"next": ..., "total_count": ...}, "objects": [{"date":
"YYYY-MM-DD", "image": "/api/v1/image/<id>/", ...}]}``, newest first), then for each
IOTD ``GET /api/v1/image/<id>/`` for the title, owner, licence and the ``url_<size>``
of the chosen size, then download that URL (AstroBin redirects it to its CDN).

Credentials come from ``--api-key``/``--api-secret`` or the ``ASTROBIN_API_KEY`` /
``ASTROBIN_API_SECRET`` environment variables (request them from AstroBin). They are
never written to the manifest or printed. AstroBin's API terms forbid bulk scraping:
keep ``--limit`` modest and ``--rate`` at its polite default.

Licensing: most AstroBin images are "All rights reserved" by their authors. The
manifest records owner, licence and page URL for every file; such images may be
used for private training only with the authors' permission and must never be
redistributed. ``--license`` restricts collection to given licences.
"""

from __future__ import annotations

import datetime as dt
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

PROG = "collect_astrobin"
SOURCE = "astrobin"
DEFAULT_BASE_URL = "https://www.astrobin.com"
IOTD_PATH = "/api/v1/imageoftheday/"
SIZES = ("real", "hd", "regular")

#: Licence codes of the v1 API (integers in older answers, enum names in newer ones).
LICENSES: dict[str, tuple[str, str | None]] = {
    "0": ("All rights reserved", None),
    "1": ("CC BY-NC-SA", "https://creativecommons.org/licenses/by-nc-sa/4.0/"),
    "2": ("CC BY-NC", "https://creativecommons.org/licenses/by-nc/4.0/"),
    "3": ("CC BY-NC-ND", "https://creativecommons.org/licenses/by-nc-nd/4.0/"),
    "4": ("CC BY", "https://creativecommons.org/licenses/by/4.0/"),
    "5": ("CC BY-SA", "https://creativecommons.org/licenses/by-sa/4.0/"),
    "6": ("CC BY-ND", "https://creativecommons.org/licenses/by-nd/4.0/"),
    "ALL_RIGHTS_RESERVED": ("All rights reserved", None),
    "ATTRIBUTION_NON_COMMERCIAL_SHARE_ALIKE": ("CC BY-NC-SA", "https://creativecommons.org/licenses/by-nc-sa/4.0/"),
    "ATTRIBUTION_NON_COMMERCIAL": ("CC BY-NC", "https://creativecommons.org/licenses/by-nc/4.0/"),
    "ATTRIBUTION_NON_COMMERCIAL_NO_DERIVS": ("CC BY-NC-ND", "https://creativecommons.org/licenses/by-nc-nd/4.0/"),
    "ATTRIBUTION": ("CC BY", "https://creativecommons.org/licenses/by/4.0/"),
    "ATTRIBUTION_SHARE_ALIKE": ("CC BY-SA", "https://creativecommons.org/licenses/by-sa/4.0/"),
    "ATTRIBUTION_NO_DERIVS": ("CC BY-ND", "https://creativecommons.org/licenses/by-nd/4.0/"),
}
LICENSE_CHOICES = sorted({name for name, _ in LICENSES.values()})

_IMAGE_URI = re.compile(r"/api/v1/image/([^/?#]+)/?$")


def parse_date(value: str, what: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value[:10])
    except ValueError:
        raise cl.ApiChangedError(f"{what}: date {value!r} is not YYYY-MM-DD") from None


def license_of(image: dict) -> tuple[str, str | None]:
    raw = image.get("license")
    name = image.get("license_name")
    if raw is not None and str(raw) in LICENSES:
        return LICENSES[str(raw)]
    if isinstance(name, str) and name.strip():
        return name.strip(), None
    return ("unknown (check the AstroBin page; treat as all rights reserved)", None)


class AstroBin:
    def __init__(self, collector: cl.Collector, api_key: str, api_secret: str, size: str, licenses: tuple[str, ...]):
        self.c = collector
        self.base = collector.opts.base_url
        self.auth = {"api_key": api_key, "api_secret": api_secret, "format": "json"}
        self.size = size
        self.licenses = set(licenses)

    def api_url(self, path: str, **params: object) -> str:
        query = urllib.parse.urlencode({**{k: str(v) for k, v in params.items()}, **self.auth})
        return f"{self.base}{path}?{query}"

    def get(self, url: str, what: str) -> object:
        try:
            return self.c.client.get_json(url, what)
        except cl.HTTPStatusError as e:
            if e.status in (401, 403):
                raise cl.ConfigError(
                    f"AstroBin rejected the API key/secret (HTTP {e.status}); check ASTROBIN_API_KEY/ASTROBIN_API_SECRET"
                ) from None
            raise

    def iotd(self, since: dt.date | None, until: dt.date | None, page_size: int) -> Iterator[tuple[dt.date, str]]:
        """(date, image id) of each IOTD in [since, until], newest first."""
        url: str | None = self.api_url(IOTD_PATH, limit=page_size, offset=0)
        previous: dt.date | None = None
        descending = True
        while url:
            what = "AstroBin imageoftheday list"
            page = self.get(url, what)
            objects = cl.require(page, "objects", list, what)
            meta = cl.require(page, "meta", dict, what)
            for obj in objects:
                image_uri = cl.require(obj, "image", str, f"{what} entry")
                day = parse_date(cl.require(obj, "date", str, f"{what} entry"), f"{what} entry")
                m = _IMAGE_URI.search(urllib.parse.urlsplit(image_uri).path)
                if not m:
                    raise cl.ApiChangedError(f"{what} entry: image {image_uri!r} is not /api/v1/image/<id>/")
                if previous is not None and day > previous:
                    descending = False
                previous = day
                if until and day > until:
                    continue
                if since and day < since:
                    if descending:
                        return  # newest first: everything after this is older
                    continue
                yield day, m.group(1)
            nxt = meta.get("next")
            if nxt is not None and not isinstance(nxt, str):
                raise cl.ApiChangedError(f"{what}: meta.next is {type(nxt).__name__}, expected a URL or null")
            if not nxt or not objects:
                break
            url = self._next_url(nxt)

    def _next_url(self, link: str) -> str:
        """Follow Tastypie's ``meta.next`` on our own host, with our credentials."""
        url = cl.same_origin_url(self.base, link)
        parts = urllib.parse.urlsplit(url)
        query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
        query.update(self.auth)
        return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))

    def items(self, since: dt.date | None, until: dt.date | None, page_size: int) -> Iterator[cl.Item]:
        for day, image_id in self.iotd(since, until, page_size):
            yield cl.Item(
                id=image_id,
                variant=self.size,
                stem=cl.safe_name(f"{day.isoformat()}_{image_id}_{self.size}"),
                page_url=f"{self.base}/{urllib.parse.quote(image_id)}/",
                license="",
                meta={"iotd_date": day.isoformat()},
                resolve=self.resolve,
            )

    def resolve(self, item: cl.Item) -> None:
        what = f"AstroBin image {item.id}"
        image = self.get(self.api_url(f"/api/v1/image/{urllib.parse.quote(item.id)}/"), what)
        url = cl.require(image, f"url_{self.size}", str, what)
        user = cl.require(image, "user", str, what)
        if not url.strip():
            raise cl.ApiChangedError(f"{what}: empty url_{self.size}")
        name, license_url = license_of(image)
        if self.licenses and name not in self.licenses:
            raise cl.SkipItem(f"licence {name!r} not selected (--license)")
        title = image.get("title") if isinstance(image.get("title"), str) else None
        item.url = urllib.parse.urljoin(self.base + "/", url)
        item.title = title
        item.credit = f"{user} / AstroBin"
        item.license = name
        item.license_url = license_url
        item.meta.update(
            {
                "user": user,
                "astrobin_id": image.get("id", item.id),
                "hash": image.get("hash"),
                "license_code": image.get("license"),
                "width": image.get("w"),
                "height": image.get("h"),
                "link_to_fits": image.get("link_to_fits"),
            }
        )


def _date(ctx: click.Context, param: click.Parameter, value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter("expected YYYY-MM-DD") from None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@cl.common_options(DEFAULT_BASE_URL, default_rate=1.0, default_limit=50)
@click.option("--api-key", envvar="ASTROBIN_API_KEY", default=None, help="AstroBin API key [env ASTROBIN_API_KEY].")
@click.option(
    "--api-secret", envvar="ASTROBIN_API_SECRET", default=None, help="AstroBin API secret [env ASTROBIN_API_SECRET]."
)
@click.option(
    "--size", type=click.Choice(SIZES), default="real", show_default=True, help="Image size to download (url_<size>)."
)
@click.option("--since", callback=_date, default=None, help="First IOTD date to include (YYYY-MM-DD).")
@click.option("--until", callback=_date, default=None, help="Last IOTD date to include (YYYY-MM-DD).")
@click.option(
    "--license",
    "licenses",
    multiple=True,
    type=click.Choice(LICENSE_CHOICES),
    help="Only collect images under this licence (repeatable).",
)
@click.option(
    "--page-size", type=click.IntRange(1, 100), default=20, show_default=True, help="IOTD entries per API page."
)
@cl.guard(PROG)
def main(
    run_options: cl.RunOptions,
    api_key: str | None,
    api_secret: str | None,
    size: str,
    since: dt.date | None,
    until: dt.date | None,
    licenses: tuple[str, ...],
    page_size: int,
) -> int:
    """Download AstroBin Images of the Day (with credit/licence manifest)."""
    if not api_key or not api_secret:
        raise cl.ConfigError(
            "missing AstroBin API credentials: set ASTROBIN_API_KEY and ASTROBIN_API_SECRET or pass --api-key/--api-secret"
        )
    if since and until and since > until:
        raise cl.ConfigError(f"--since {since} is after --until {until}")
    collector = cl.Collector(PROG, SOURCE, run_options)
    astrobin = AstroBin(collector, api_key, api_secret, size, licenses)
    return collector.run(astrobin.items(since, until, page_size))


if __name__ == "__main__":
    main()
