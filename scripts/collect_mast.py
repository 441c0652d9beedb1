#!/usr/bin/env python
"""Collect linear HST drizzled science images from MAST, keeping only SCI + WCS.

    python scripts/collect_mast.py --out data/raw/mast --instrument ACS/WFC --filter F814W --target M51 --limit 10
    python scripts/collect_mast.py --out data/raw/mast --backend http --instrument WFC3/UVIS --limit 10

Query: HST, ``dataproduct_type=image``, ``intentType=science``, ``calib_level=3``,
plus the chosen instruments / filters / target names. Products: ``productType ==
SCIENCE`` whose ``productSubGroupDescription`` is one of ``--product`` (default DRC, then
DRZ: the drizzled, distortion-corrected, linear images), public data only, and only the
most preferred one per observation (a visit's DRC and DRZ show the same scene).

Two query backends giving the same product list:

* ``--backend astroquery`` (default): ``astroquery.mast.Observations.query_criteria``
  / ``get_product_list`` / ``filter_products``; astroquery is imported only here, and
  if it is missing the collector says so in one line.
* ``--backend http``: the same queries made directly (standard library only) against
  MAST's JSON API at ``<base-url>/api/v0/invoke`` (POST ``request=<json>``, services
  ``Mast.Caom.Filtered`` and ``Mast.Caom.Products``); used by the offline tests.

Either way each file is downloaded from ``<base-url>/api/v0.1/Download/file?uri=<dataURI>``
(resumable, retried), then reduced to a single-HDU FITS ``<obs>_<type>_sci.fits``: the
``SCI`` image (values untouched, e.g. electrons/s) with its celestial WCS and a few
provenance keywords (instrument, filter, target, exposure time, photometric keywords,
original file name). The raw multi-extension file is deleted unless ``--keep-raw``.

Credit/licence: HST data from MAST are public; publications must acknowledge MAST
and the observing programme. The manifest records the proposal id/PI when known.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.parse
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import click

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))
import collectlib as cl  # noqa: E402

PROG = "collect_mast"
SOURCE = "mast"
DEFAULT_BASE_URL = "https://mast.stsci.edu"
INVOKE_PATH = "/api/v0/invoke"
DOWNLOAD_PATH = "/api/v0.1/Download/file"
LICENSE = "Public HST data from MAST (STScI); acknowledge MAST and the observing programme"
LICENSE_URL = "https://archive.stsci.edu/publishing/data-use"
DEFAULT_PRODUCTS = ("DRC", "DRZ")  # preference order: CTE-corrected first
OBS_BATCH = 25  # observations per Mast.Caom.Products request
MAX_POLLS = 30  # Mast.Caom.* answers "EXECUTING" for slow queries; poll this many times
POLL_DELAY = 2.0

#: keywords copied (when present) from the primary / SCI headers into the output.
PROVENANCE_KEYS = (
    "TELESCOP",
    "INSTRUME",
    "DETECTOR",
    "FILTER",
    "FILTER1",
    "FILTER2",
    "TARGNAME",
    "PROPOSID",
    "DATE-OBS",
    "EXPTIME",
    "BUNIT",
    "PHOTFLAM",
    "PHOTPLAM",
    "PHOTBW",
    "PHOTZPT",
    "PHOTMODE",
)


# --------------------------------------------------------------------------- queries


def caom_filters(instruments: Iterable[str], filters: Iterable[str], targets: Iterable[str]) -> list[dict[str, Any]]:
    """The ``filters`` list of a ``Mast.Caom.Filtered`` request."""
    out: list[dict[str, Any]] = [
        {"paramName": "obs_collection", "values": ["HST"]},
        {"paramName": "dataproduct_type", "values": ["image"]},
        {"paramName": "intentType", "values": ["science"]},
        {"paramName": "calib_level", "values": [3]},
    ]
    for name, values in (("instrument_name", instruments), ("filters", filters), ("target_name", targets)):
        values = [v for v in values if v]
        if values:
            out.append({"paramName": name, "values": values})
    return out


class MastHttp:
    """Standard-library client for MAST's ``/api/v0/invoke`` JSON API."""

    def __init__(self, collector: cl.Collector, page_size: int):
        self.c = collector
        self.url = collector.opts.base_url + INVOKE_PATH
        self.page_size = page_size

    def invoke(self, request: dict[str, Any]) -> dict[str, Any]:
        service = request["service"]
        what = f"MAST {service}"
        for _ in range(MAX_POLLS):
            answer = self.c.client.post_form_json(self.url, {"request": json.dumps(request)}, what)
            if not isinstance(answer, dict):
                raise cl.ApiChangedError(f"{what}: expected a JSON object, got {type(answer).__name__}")
            status = answer.get("status")
            if status == "EXECUTING":
                cl.sleep(POLL_DELAY)
                continue
            if status == "ERROR":
                raise cl.CollectError(f"{what} failed: {answer.get('msg') or 'no message'}")
            cl.require(answer, "data", list, what)
            return answer
        raise cl.CollectError(f"{what} still executing after {MAX_POLLS} polls; try again later")

    def observations(self, filters: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        page = 1
        while True:
            answer = self.invoke(
                {
                    "service": "Mast.Caom.Filtered",
                    "format": "json",
                    "pagesize": self.page_size,
                    "page": page,
                    "params": {"columns": "*", "filters": filters},
                }
            )
            rows = answer["data"]
            for row in rows:
                cl.require(row, "obsid", (str, int), "MAST Mast.Caom.Filtered row")
                yield row
            paging = answer.get("paging") if isinstance(answer.get("paging"), dict) else {}
            pages = paging.get("pagesFiltered")
            if not rows or len(rows) < self.page_size or (isinstance(pages, int) and page >= pages):
                return
            page += 1

    def products(self, obsids: list[str]) -> list[dict[str, Any]]:
        answer = self.invoke({"service": "Mast.Caom.Products", "format": "json", "params": {"obsid": ",".join(obsids)}})
        return answer["data"]

    def science_products(
        self, filters: list[dict[str, Any]], product_types: tuple[str, ...]
    ) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        batch: list[dict[str, Any]] = []
        for obs in self.observations(filters):
            batch.append(obs)
            if len(batch) >= OBS_BATCH:
                yield from self._batch(batch, product_types)
                batch = []
        if batch:
            yield from self._batch(batch, product_types)

    def _batch(self, batch: list[dict[str, Any]], product_types: tuple[str, ...]):
        by_id = {str(o["obsid"]): o for o in batch}
        kept = [p for p in self.products(list(by_id)) if keep_product(p, product_types)]
        for product in prefer(kept, product_types):
            yield product, by_id.get(str(product.get("obsID")), {})


def keep_product(product: Any, product_types: tuple[str, ...]) -> bool:
    """Public drizzled SCIENCE FITS of the requested kinds; API-change check on the way."""
    what = "MAST Mast.Caom.Products row"
    cl.require(product, "dataURI", str, what)
    filename = cl.require(product, "productFilename", str, what)
    ptype = cl.require(product, "productType", str, what)
    sub = product.get("productSubGroupDescription")
    if ptype.upper() != "SCIENCE" or not isinstance(sub, str) or sub.upper() not in product_types:
        return False
    if not filename.lower().endswith(".fits"):
        return False
    rights = product.get("dataRights")
    return rights is None or str(rights).upper() == "PUBLIC"


def prefer(products: list[dict[str, Any]], order: tuple[str, ...]) -> list[dict[str, Any]]:
    """One product per observation: the first kind in *order* (e.g. DRC over DRZ), since
    DRZ and DRC of one visit are the same scene and would leak across training splits."""
    best: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
    for product in products:
        key = (str(product.get("obsID")), str(product.get("obs_id") or ""))
        rank = order.index(str(product["productSubGroupDescription"]).upper())
        if key not in best or rank < best[key][0]:
            best[key] = (rank, product)
    return [product for _, product in best.values()]


def _py(value: Any) -> Any:
    """astropy Table cell -> plain Python (masked -> None)."""
    import numpy as np

    if np.ma.is_masked(value):
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        return value.item()
    return value


def _rows(table: Any) -> list[dict[str, Any]]:
    names = list(table.colnames)
    return [{n: _py(row[n]) for n in names} for row in table]


def require_astroquery() -> None:
    """One clear line (exit 2) when astroquery is missing; imported only for this backend."""
    try:
        import astroquery.mast  # noqa: F401
    except ImportError:
        raise cl.ConfigError(
            "astroquery is not installed (pip install astroquery), or use --backend http for the built-in client"
        ) from None


def astroquery_products(
    instruments: tuple[str, ...], filters: tuple[str, ...], targets: tuple[str, ...], product_types: tuple[str, ...]
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Same selection as :class:`MastHttp` through astroquery (imported lazily)."""
    require_astroquery()
    from astroquery.mast import Observations

    criteria: dict[str, Any] = {
        "obs_collection": "HST",
        "dataproduct_type": "image",
        "intentType": "science",
        "calib_level": 3,
    }
    if instruments:
        criteria["instrument_name"] = list(instruments)
    if filters:
        criteria["filters"] = list(filters)
    if targets:
        criteria["target_name"] = list(targets)
    try:
        obs = Observations.query_criteria(**criteria)
        for start in range(0, len(obs), OBS_BATCH):
            chunk = obs[start : start + OBS_BATCH]
            by_id = {str(o["obsid"]): o for o in _rows(chunk)}
            products = Observations.get_product_list(chunk)
            if len(products) == 0:
                continue
            products = Observations.filter_products(
                products, productType="SCIENCE", productSubGroupDescription=list(product_types)
            )
            kept = [p for p in _rows(products) if keep_product(p, product_types)]
            for product in prefer(kept, product_types):
                yield product, by_id.get(str(product.get("obsID")), {})
    except cl.CollectError:
        raise
    except OSError as e:  # requests' exceptions derive from OSError
        raise cl.NetworkError(f"cannot reach MAST through astroquery: {type(e).__name__}: {e}") from None
    except Exception as e:  # noqa: BLE001 - third-party boundary: one line instead of a traceback
        raise cl.CollectError(f"astroquery MAST query failed: {type(e).__name__}: {e}") from None


# --------------------------------------------------------------------------- SCI extraction


def extract_sci(raw: Path, out: Path, provenance: dict[str, Any]) -> None:
    """Write ``out``: primary HDU = the SCI image + its celestial WCS + provenance."""
    import numpy as np
    from astropy.io import fits
    from astropy.wcs import WCS, FITSFixedWarning

    tmp = out.with_name(out.name + ".tmp")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            with fits.open(raw, memmap=False) as hdul:
                sci = None
                if "SCI" in hdul:
                    sci = hdul["SCI"]
                else:
                    sci = next((h for h in hdul if h.is_image and h.data is not None and h.data.ndim == 2), None)
                if sci is None or sci.data is None or sci.data.ndim != 2:
                    raise cl.RejectedDownload(f"{raw.name} has no 2-D SCI image")
                try:
                    wcs = WCS(sci.header, fobj=hdul)
                except Exception as e:  # noqa: BLE001 - astropy.wcs raises many kinds of errors
                    raise cl.RejectedDownload(f"{raw.name}: unreadable WCS ({type(e).__name__}: {e})") from None
                if not wcs.has_celestial:
                    raise cl.RejectedDownload(f"{raw.name}: SCI extension has no celestial WCS")
                header = wcs.celestial.to_header(relax=True)
                primary = hdul[0].header
                for key in PROVENANCE_KEYS:
                    for src in (sci.header, primary):
                        if key in src and key not in header:
                            header[key] = (src[key], src.comments[key])
                            break
                header["EXTNAME"] = ("SCI", "science image only; other extensions dropped")
                header["ORIGFILE"] = str(provenance.get("filename") or raw.name)[:68]
                header["ORIGEXT"] = (f"{sci.name},{sci.ver}", "extension taken from ORIGFILE")
                uri = str(provenance.get("uri", ""))
                if uri and len(uri) <= 68:
                    header["ORIGURI"] = (uri, "MAST data URI")
                header.add_history("Reduced by AstroSWIN collect_mast.py: SCI + WCS kept, data values unchanged")
                data = np.array(sci.data)  # copy out of the file
        fits.PrimaryHDU(data=data, header=header).writeto(tmp, overwrite=True)
        os.replace(tmp, out)
    except OSError as e:
        raise cl.RejectedDownload(f"{raw.name} is not a readable FITS file ({e})") from None
    finally:
        tmp.unlink(missing_ok=True)


def _postprocess(keep_raw: bool):
    def run(part: Path, out_dir: Path, item: cl.Item) -> Path:
        raw_name = cl.safe_name(item.meta.get("filename") or f"{item.stem}.fits")
        raw = out_dir / "raw" / raw_name
        raw.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, raw)
        item.meta["raw_size"] = raw.stat().st_size
        item.meta["raw_sha256"] = cl.sha256_file(raw)
        final = out_dir / f"{item.stem}_sci.fits"
        try:
            extract_sci(raw, final, {"filename": raw_name, "uri": item.id})
        finally:
            if not keep_raw:
                raw.unlink(missing_ok=True)
        if not keep_raw:
            try:
                raw.parent.rmdir()
            except OSError:
                pass
        return final

    return run


# --------------------------------------------------------------------------- items


def make_item(base: str, product: dict[str, Any], obs: dict[str, Any], keep_raw: bool) -> cl.Item:
    uri = product["dataURI"]
    filename = os.path.basename(product["productFilename"])
    stem = cl.safe_name(filename[: -len(".fits")] if filename.lower().endswith(".fits") else filename)
    proposal = obs.get("proposal_id") or product.get("proposal_id")
    pi = obs.get("proposal_pi")
    credit = "NASA/ESA Hubble Space Telescope; data from MAST at STScI"
    if proposal:
        credit += f"; programme {proposal}" + (f" (PI {pi})" if pi else "")
    return cl.Item(
        id=uri,
        stem=stem,
        url=f"{base}{DOWNLOAD_PATH}?{urllib.parse.urlencode({'uri': uri})}",
        page_url=None,  # MAST has no stable per-product web page; the data URI is the id
        title=obs.get("obs_title") if isinstance(obs.get("obs_title"), str) else None,
        credit=credit,
        license=LICENSE,
        license_url=LICENSE_URL,
        meta={
            "filename": filename,
            "obs_id": product.get("obs_id") or obs.get("obs_id"),
            "obsid": str(product.get("obsID") or obs.get("obsid") or ""),
            "product": product.get("productSubGroupDescription"),
            "instrument": obs.get("instrument_name"),
            "filters": obs.get("filters"),
            "target": obs.get("target_name"),
            "proposal_id": proposal,
            "proposal_pi": pi,
            "exptime": obs.get("t_exptime"),
            "mast_size": product.get("size"),
            "kept": "SCI extension + celestial WCS",
        },
        accept=(".fits",),
        postprocess=_postprocess(keep_raw),
    )


def _read_targets(path: Path | None) -> list[str]:
    if path is None:
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line)
    return out


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@cl.common_options(DEFAULT_BASE_URL, default_rate=2.0, default_limit=20)
@click.option(
    "--instrument", "instruments", multiple=True, help="instrument_name, e.g. ACS/WFC, WFC3/UVIS (repeatable)."
)
@click.option("--filter", "filters", multiple=True, help="Filter name, e.g. F814W (repeatable).")
@click.option("--target", "targets", multiple=True, help="MAST target_name (repeatable).")
@click.option(
    "--targets-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="File with one target name per line (# comments allowed).",
)
@click.option(
    "--product",
    "products",
    multiple=True,
    help="productSubGroupDescription to keep, in order of preference; one file per observation "
    "(repeatable; default DRC then DRZ).",
)
@click.option(
    "--backend",
    type=click.Choice(["astroquery", "http"]),
    default="astroquery",
    show_default=True,
    help="Query through astroquery, or through the built-in urllib client of MAST's JSON API.",
)
@click.option(
    "--page-size", type=click.IntRange(1, 50000), default=500, show_default=True, help="Rows per query page (http)."
)
@click.option("--keep-raw", is_flag=True, help="Also keep the original multi-extension file under OUT/raw/.")
@cl.guard(PROG)
def main(
    run_options: cl.RunOptions,
    instruments: tuple[str, ...],
    filters: tuple[str, ...],
    targets: tuple[str, ...],
    targets_file: Path | None,
    products: tuple[str, ...],
    backend: str,
    page_size: int,
    keep_raw: bool,
) -> int:
    """Download public HST drizzled SCI images (+WCS) from MAST."""
    all_targets = tuple(dict.fromkeys([*targets, *_read_targets(targets_file)]))
    product_types = tuple(dict.fromkeys(p.upper() for p in (products or DEFAULT_PRODUCTS)))
    if backend == "astroquery":
        require_astroquery()
    collector = cl.Collector(PROG, SOURCE, run_options)
    if backend == "http":
        rows = MastHttp(collector, page_size).science_products(
            caom_filters(instruments, filters, all_targets), product_types
        )
    else:
        rows = astroquery_products(instruments, filters, all_targets, product_types)
    base = run_options.base_url
    return collector.run(make_item(base, p, o, keep_raw) for p, o in rows)


if __name__ == "__main__":
    main()
