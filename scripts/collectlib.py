"""Shared plumbing for the AstroSWIN data collectors (``scripts/collect_*.py``).

Everything here uses the standard library for HTTP (``urllib.request``) so the
collectors need no dependency beyond what AstroSWIN already installs (click,
tqdm; astropy/numpy for the MAST collector).

What it provides:

* :class:`HttpClient` - a polite HTTP client: a User-Agent naming the project,
  a request-rate limit, bounded retries with exponential backoff on 429 and 5xx
  responses (honouring ``Retry-After``) and on dropped connections/truncated
  bodies, JSON helpers that turn malformed answers into :class:`ApiChangedError`,
  and :meth:`HttpClient.fetch_to_part`, a download into a ``.part`` file that
  resumes a partial ``.part`` with an HTTP ``Range`` request.
* :class:`Manifest` - ``<out>/manifest.jsonl``, one JSON object per collected file,
  used both as the licence/credit record and as the resume index: an item whose
  entry points at a file of the recorded size (and, with ``--verify-checksum``,
  SHA-256) is skipped without a request. Fields (see :func:`manifest_entry`)::

      {"source": "esahubble", "id": "heic0506a", "variant": "large",
       "file": "heic0506a_large.jpg", "url": "<download URL, credentials redacted>",
       "page_url": "...", "title": "...", "credit": "ESA/Hubble & NASA",
       "license": "CC BY 4.0", "license_url": "https://creativecommons.org/licenses/by/4.0/",
       "sha256": "<hex>", "size": 123456, "content_type": "image/jpeg",
       "retrieved_utc": "2025-01-01T00:00:00Z", "meta": {<source-specific>}}

  ``file`` is relative to the manifest's directory; (source, id, variant) is the key
  and the last line for a key wins.
* :class:`Collector` - the per-run loop shared by all collectors: skip what is
  complete, resolve metadata, download, verify, post-process, rename atomically,
  append to the manifest, show a progress bar, print a summary.
* :func:`common_options` and :func:`guard` - the shared click options and the
  error policy: an expected failure is reported as ONE line on stderr
  (``<prog>: <message>``) with a non-zero exit status, never a traceback.

Exit statuses (all collectors):

====  ==========================================================================
0     everything requested is present (downloaded now or earlier)
1     some files failed (each reported on its own line), or an HTTP error
2     configuration problem: missing API key, rejected key, missing dependency
3     network unreachable (connection refused, DNS failure, timeouts after retries)
4     "API changed?": malformed JSON/HTML or missing fields in a service answer
130   interrupted (Ctrl-C); rerun the same command to resume
====  ==========================================================================

Tests make backoff instantaneous by monkeypatching :data:`_sleep` (or by
passing ``--backoff 0``); every sleep in this module goes through it.
"""

from __future__ import annotations

import datetime as _dt
import email.utils
import functools
import hashlib
import http.client
import json
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

USER_AGENT = "AstroSWIN-data-collector/1.0 (AstroSWIN open learned deconvolution engine; Python urllib)"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_NETWORK = 3
EXIT_API = 4
EXIT_INTERRUPTED = 130

#: HTTP statuses worth retrying (with backoff).
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
#: Longest ``Retry-After`` we are willing to honour before giving up, seconds.
MAX_RETRY_AFTER = 600.0
#: Cap for the exponential backoff, seconds.
MAX_BACKOFF = 120.0
CHUNK = 1 << 20

_SECRET_PARAMS = ("api_key", "api_secret", "apikey", "key", "secret", "token", "password")

# Indirection so tests can make waiting instantaneous and observable.
_sleep: Callable[[float], None] = time.sleep
_clock: Callable[[], float] = time.monotonic


def sleep(seconds: float) -> None:
    if seconds > 0:
        _sleep(seconds)


# --------------------------------------------------------------------------- errors


class CollectError(Exception):
    """An expected failure: reported as one line, exit with :attr:`exit_code`."""

    exit_code = EXIT_FAILED


class ConfigError(CollectError):
    exit_code = EXIT_CONFIG


class NetworkError(CollectError):
    exit_code = EXIT_NETWORK


class ApiChangedError(CollectError):
    """The service answered, but not in the format this collector understands."""

    exit_code = EXIT_API

    def __init__(self, message: str):
        super().__init__(f"API changed?: {message}")


class HTTPStatusError(CollectError):
    def __init__(self, status: int, url: str, reason: str = ""):
        self.status = status
        self.url = url
        extra = f" {reason}" if reason else ""
        super().__init__(f"HTTP {status}{extra} from {redact(url)}")


class TransferError(CollectError):
    """A download kept arriving truncated/interrupted after all retries (per file)."""


class RejectedDownload(CollectError):
    """The server sent something that is not what we asked for (per file)."""


class SkipItem(CollectError):
    """The item is deliberately not collected (e.g. licence not selected); not a failure."""


# --------------------------------------------------------------------------- helpers


def redact(url: str) -> str:
    """Return *url* with credentials in the query string replaced by ``***``."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return url
    if not parts.query:
        return url
    q = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    q = [(k, "***" if k.lower() in _SECRET_PARAMS and v else v) for k, v in q]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(q, safe="*")))


def host_of(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc or url


def safe_name(text: str, max_len: int = 120) -> str:
    """A file-name-safe version of *text* (letters, digits, ``._-``)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    if not name:
        name = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    return name[:max_len]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    return max(0.0, (when - _dt.datetime.now(_dt.timezone.utc)).total_seconds())


#: Leading bytes -> (extension, kind). Used to name files and to refuse HTML error pages.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", ".jpg"),
    (b"\x89PNG\r\n\x1a\n", ".png"),
    (b"II*\x00", ".tif"),
    (b"MM\x00*", ".tif"),
    (b"II+\x00", ".tif"),
    (b"MM\x00+", ".tif"),
    (b"SIMPLE  =", ".fits"),
    (b"XISF0100", ".xisf"),
)


def sniff_extension(path: Path) -> str | None:
    """File extension implied by the first bytes of *path*, or None if unknown."""
    with open(path, "rb") as f:
        head = f.read(16)
    for magic, ext in _MAGIC:
        if head.startswith(magic):
            return ext
    return None


def describe_head(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(64)
    text = head.decode("ascii", "replace").strip()
    if text.lower().startswith(("<!doctype", "<html", "<?xml", "{", "[")):
        return "an HTML/text page"
    return "an unrecognised file type"


# --------------------------------------------------------------------------- HTTP


class RateLimiter:
    """At most *rate* requests per second (0 or None: unlimited)."""

    def __init__(self, rate: float | None):
        self.interval = 1.0 / rate if rate and rate > 0 else 0.0
        self._next: float | None = None

    def wait(self) -> None:
        if self.interval <= 0:
            return
        now = _clock()
        if self._next is not None and now < self._next:
            sleep(self._next - now)
            now = self._next
        self._next = now + self.interval


@dataclass
class Response:
    status: int
    headers: Any
    body: bytes
    url: str


@dataclass
class PartResult:
    size: int
    content_type: str
    url: str


class _Retry(Exception):
    def __init__(self, reason: str, retry_after: float | None = None, network: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.network = network


_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError, socket.timeout, TimeoutError)


class HttpClient:
    """Polite urllib-based client with rate limiting and bounded retries.

    ``retries`` is the number of *extra* attempts after the first one; waits are
    ``backoff * 2**attempt`` seconds (capped), or the server's ``Retry-After``.
    """

    def __init__(
        self,
        *,
        rate: float | None = 1.0,
        retries: int = 5,
        backoff: float = 1.0,
        timeout: float = 60.0,
        user_agent: str = USER_AGENT,
        log: Callable[[str], None] | None = None,
    ):
        self.limiter = RateLimiter(rate)
        self.retries = max(0, int(retries))
        self.backoff = max(0.0, float(backoff))
        self.timeout = timeout
        self.user_agent = user_agent
        self.log = log or (lambda msg: None)
        self.requests = 0
        self._opener = urllib.request.build_opener()

    # -- internals ---------------------------------------------------------

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after
        return min(MAX_BACKOFF, self.backoff * (2**attempt))

    def _open(self, url: str, data: bytes | None = None, headers: dict[str, str] | None = None):
        hdrs = {"User-Agent": self.user_agent, "Accept-Encoding": "identity"}
        if headers:
            hdrs.update(headers)
        req = urllib.request.Request(url, data=data, headers=hdrs, method="POST" if data is not None else "GET")
        self.limiter.wait()
        self.requests += 1
        return self._opener.open(req, timeout=self.timeout)

    def _attempts(self, url: str, once: Callable[[], Any]) -> Any:
        """Call *once* until it returns; it raises :class:`_Retry` for retryable trouble."""
        last: _Retry | None = None
        for attempt in range(self.retries + 1):
            try:
                return once()
            except _Retry as r:
                last = r
                if r.retry_after is not None and r.retry_after > MAX_RETRY_AFTER:
                    raise CollectError(
                        f"{host_of(url)} asks us to wait {r.retry_after:.0f}s (Retry-After); try again later"
                    ) from None
                if attempt == self.retries:
                    break
                delay = self._delay(attempt, r.retry_after)
                self.log(f"{r.reason} from {host_of(url)}; retry {attempt + 1}/{self.retries} in {delay:.1f}s")
                sleep(delay)
        assert last is not None
        if last.network:
            raise NetworkError(f"cannot reach {host_of(url)}: {last.reason} (after {self.retries + 1} attempts)")
        raise TransferError(f"{last.reason} from {redact(url)} (after {self.retries + 1} attempts)")

    @staticmethod
    def _http_error(e: urllib.error.HTTPError, url: str) -> Exception:
        try:
            e.read()
        except Exception:  # noqa: BLE001 - draining an error body is best effort
            pass
        finally:
            e.close()
        if e.code in RETRY_STATUSES:
            return _Retry(f"HTTP {e.code}", parse_retry_after(e.headers.get("Retry-After") if e.headers else None))
        return HTTPStatusError(e.code, url, str(e.reason or ""))

    # -- public API --------------------------------------------------------

    def request(self, url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> Response:
        """GET (or POST when *data* is given) *url*, reading the whole body."""

        def once() -> Response:
            try:
                resp = self._open(url, data, headers)
            except urllib.error.HTTPError as e:
                raise self._http_error(e, url) from None
            except _NETWORK_ERRORS as e:
                raise _Retry(_reason(e), network=True) from None
            try:
                with resp:
                    body = resp.read()
                    return Response(resp.status, resp.headers, body, resp.geturl())
            except _NETWORK_ERRORS as e:
                raise _Retry(f"interrupted response ({_reason(e)})") from None

        return self._attempts(url, once)

    def get_json(self, url: str, what: str) -> Any:
        return parse_json(self.request(url, headers={"Accept": "application/json"}).body, what, url)

    def post_form_json(self, url: str, fields: dict[str, str], what: str) -> Any:
        body = urllib.parse.urlencode(fields).encode("ascii")
        resp = self.request(
            url,
            data=body,
            headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
        )
        return parse_json(resp.body, what, url)

    def get_text(self, url: str) -> str:
        resp = self.request(url)
        charset = resp.headers.get_content_charset() if hasattr(resp.headers, "get_content_charset") else None
        return resp.body.decode(charset or "utf-8", "replace")

    def fetch_to_part(
        self,
        url: str,
        part: Path,
        progress: Callable[[int], None] | None = None,
    ) -> PartResult:
        """Download *url* into *part*, resuming an existing partial *part* with ``Range``.

        Retries (with backoff) on 429/5xx, dropped connections and bodies shorter
        than their ``Content-Length``; what arrived stays in *part*, so the next
        attempt (or the next run) continues from there.
        """
        part.parent.mkdir(parents=True, exist_ok=True)

        def once() -> PartResult:
            offset = part.stat().st_size if part.exists() else 0
            headers = {"Range": f"bytes={offset}-"} if offset else None
            try:
                resp = self._open(url, headers=headers)
            except urllib.error.HTTPError as e:
                if e.code == 416 and offset:
                    e.close()
                    part.unlink()
                    raise _Retry("HTTP 416 for a partial file (restarting it)", retry_after=0.0) from None
                raise self._http_error(e, url) from None
            except _NETWORK_ERRORS as e:
                raise _Retry(_reason(e), network=True) from None
            with resp:
                mode = "wb"
                start = 0
                if resp.status == 206 and offset:
                    m = re.match(r"bytes\s+(\d+)-", resp.headers.get("Content-Range", ""))
                    if not m or int(m.group(1)) != offset:
                        part.unlink()
                        raise _Retry("unexpected Content-Range (restarting file)", retry_after=0.0)
                    mode, start = "ab", offset
                length = resp.headers.get("Content-Length")
                expected = start + int(length) if length and length.isdigit() else None
                ctype = resp.headers.get_content_type() if resp.headers else "application/octet-stream"
                if progress and start:
                    progress(start)
                try:
                    with open(part, mode) as f:
                        while True:
                            chunk = resp.read(CHUNK)
                            if not chunk:
                                break
                            f.write(chunk)
                            if progress:
                                progress(len(chunk))
                except _NETWORK_ERRORS as e:
                    raise _Retry(f"download interrupted ({_reason(e)})") from None
                size = part.stat().st_size
                if expected is not None and size != expected:
                    raise _Retry(f"truncated download ({size} of {expected} bytes)")
                return PartResult(size, ctype, resp.geturl())

        return self._attempts(url, once)


def _reason(e: BaseException) -> str:
    if isinstance(e, urllib.error.URLError) and not isinstance(e, urllib.error.HTTPError):
        r = e.reason
        return str(r.strerror if isinstance(r, OSError) and r.strerror else r)
    if isinstance(e, http.client.IncompleteRead):
        return f"incomplete read ({len(e.partial)} bytes)"
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def parse_json(body: bytes, what: str, url: str) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        snippet = body[:60].decode("utf-8", "replace").replace("\n", " ")
        raise ApiChangedError(
            f"{what}: {redact(url)} did not return valid JSON ({e.__class__.__name__}; starts {snippet!r})"
        ) from None


def require(obj: Any, key: str, kind: type | tuple[type, ...], what: str) -> Any:
    """``obj[key]`` if *obj* is a dict holding a *kind* there, else :class:`ApiChangedError`."""
    if not isinstance(obj, dict):
        raise ApiChangedError(f"{what}: expected a JSON object, got {type(obj).__name__}")
    if key not in obj:
        raise ApiChangedError(f"{what}: missing field {key!r}")
    value = obj[key]
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ApiChangedError(f"{what}: field {key!r} is {type(value).__name__}, expected {names}")
    return value


# --------------------------------------------------------------------------- manifest


def manifest_entry(
    *,
    source: str,
    id: str,
    variant: str | None,
    file: str,
    url: str,
    sha256: str,
    size: int,
    credit: str,
    license: str,
    license_url: str | None = None,
    page_url: str | None = None,
    title: str | None = None,
    content_type: str | None = None,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One manifest line. Field order is fixed so manifests diff cleanly."""
    return {
        "source": source,
        "id": id,
        "variant": variant or None,
        "file": file,
        "url": redact(url),
        "page_url": page_url,
        "title": title,
        "credit": credit,
        "license": license,
        "license_url": license_url,
        "sha256": sha256,
        "size": int(size),
        "content_type": content_type,
        "retrieved_utc": utc_now(),
        "meta": meta or {},
    }


def _key(source: str, id: str, variant: str | None) -> tuple[str, str, str]:
    return (str(source), str(id), str(variant or ""))


class Manifest:
    """``<out>/manifest.jsonl``: append-only, last entry per (source, id, variant) wins."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.bad_lines = 0
        if path.exists():
            with open(path, encoding="utf-8") as f:
                for line in f:
                    line = line.strip()
                    if not line:
                        continue
                    try:
                        entry = json.loads(line)
                        key = _key(entry["source"], entry["id"], entry.get("variant"))
                    except (ValueError, KeyError, TypeError):
                        self.bad_lines += 1
                        continue
                    self.entries[key] = entry

    def get(self, source: str, id: str, variant: str | None = None) -> dict[str, Any] | None:
        return self.entries.get(_key(source, id, variant))

    def is_complete(
        self, source: str, id: str, root: Path, verify_checksum: bool = False, variant: str | None = None
    ) -> bool:
        entry = self.get(source, id, variant)
        if not entry:
            return False
        try:
            path = root / entry["file"]
            if not path.is_file() or path.stat().st_size != int(entry["size"]):
                return False
            return not verify_checksum or sha256_file(path) == entry["sha256"]
        except (KeyError, TypeError, ValueError, OSError):
            return False

    def append(self, entry: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.entries[_key(entry["source"], entry["id"], entry.get("variant"))] = entry


# --------------------------------------------------------------------------- the run loop


@dataclass
class Item:
    """One file to collect. ``resolve`` (if any) fills ``url`` etc. lazily - it is
    only called for items that are not already complete, so a resumed run makes
    no per-item metadata requests."""

    id: str
    stem: str
    #: which rendition of the item (e.g. "large", "real"); part of the resume key
    variant: str = ""
    url: str | None = None
    page_url: str | None = None
    title: str | None = None
    credit: str = ""
    license: str = ""
    license_url: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    resolve: Callable[[Item], None] | None = None
    #: allowed file extensions for the downloaded bytes (sniffed from content)
    accept: tuple[str, ...] = (".jpg", ".png", ".tif")
    #: optional post-processing: (downloaded file, output dir, item) -> final path
    postprocess: Callable[[Path, Path, Item], Path] | None = None


@dataclass
class RunOptions:
    out_dir: Path
    base_url: str
    limit: int | None
    dry_run: bool
    rate: float
    retries: int
    backoff: float
    timeout: float
    verify_checksum: bool
    verbose: bool


class Collector:
    """Runs items through skip/resolve/download/verify/manifest with a progress bar."""

    def __init__(self, prog: str, source: str, opts: RunOptions):
        self.prog = prog
        self.source = source
        self.opts = opts
        self.out_dir = opts.out_dir
        self.client = HttpClient(
            rate=opts.rate,
            retries=opts.retries,
            backoff=opts.backoff,
            timeout=opts.timeout,
            log=self.note if opts.verbose else None,
        )
        self.manifest = Manifest(self.out_dir / "manifest.jsonl")
        self.downloaded = 0
        self.skipped = 0
        self.planned = 0
        self.excluded = 0
        self.failed: list[str] = []
        if self.manifest.bad_lines:
            self.note(f"ignoring {self.manifest.bad_lines} malformed line(s) in {self.manifest.path}")

    # -- output ------------------------------------------------------------

    def note(self, msg: str) -> None:
        tqdm.write(f"{self.prog}: {msg}", file=sys.stderr)

    def say(self, msg: str) -> None:
        """Plain stdout output (dry-run listings)."""
        tqdm.write(msg, file=sys.stdout)

    # -- main loop ---------------------------------------------------------

    def run(self, items: Iterable[Item]) -> int:
        if not self.opts.dry_run:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        limit = self.opts.limit
        seen: set[tuple[str, str]] = set()
        counted = 0
        with tqdm(total=limit, desc=self.source, unit="file", file=sys.stderr, disable=None, dynamic_ncols=True) as bar:
            for item in items:
                if limit is not None and counted >= limit:
                    break
                if (item.id, item.variant) in seen:
                    continue
                seen.add((item.id, item.variant))
                if self._one(item):
                    counted += 1
                    bar.update(1)
        return self._summary()

    def _one(self, item: Item) -> bool:
        """Process one item; False if it was deliberately excluded (does not count toward --limit)."""
        if self.manifest.is_complete(self.source, item.id, self.out_dir, self.opts.verify_checksum, item.variant):
            self.skipped += 1
            return True
        try:
            if item.resolve is not None:
                item.resolve(item)
            if not item.url:
                raise ApiChangedError(f"no download URL for {self.source} item {item.id}")
            if self.opts.dry_run:
                self.planned += 1
                self.say(f"would download {redact(item.url)} -> {self.out_dir / item.stem}.*")
                return True
            self._download(item)
        except (NetworkError, ApiChangedError, ConfigError):
            raise  # the whole run is pointless: stop with one line
        except SkipItem as e:
            self.excluded += 1
            if self.opts.verbose:
                self.note(f"skipped {item.id}: {e}")
            return False
        except CollectError as e:
            # this file only (404, 5xx after retries, truncated, not an image, ...)
            self.failed.append(item.id)
            self.note(f"failed {item.id}: {e}")
        return True

    def _download(self, item: Item) -> None:
        assert item.url
        part = self.out_dir / f"{item.stem}.part"
        with tqdm(
            desc=item.stem[:30],
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            leave=False,
            file=sys.stderr,
            disable=None,
        ) as bbar:
            got = self.client.fetch_to_part(item.url, part, progress=bbar.update)
        ext = sniff_extension(part)
        if ext is None or ext not in item.accept:
            what = describe_head(part) if ext is None else f"a {ext} file"
            part.unlink(missing_ok=True)
            raise RejectedDownload(
                f"{redact(got.url)} sent {what} (Content-Type {got.content_type}), expected {'/'.join(item.accept)}"
            )
        if item.postprocess is not None:
            final = item.postprocess(part, self.out_dir, item)
        else:
            final = self.out_dir / f"{item.stem}{ext}"
            os.replace(part, final)
        size = final.stat().st_size
        if got.url != item.url:
            item.meta["resolved_url"] = redact(got.url)  # after redirects (e.g. to a CDN)
        entry = manifest_entry(
            source=self.source,
            id=item.id,
            variant=item.variant,
            file=final.relative_to(self.out_dir).as_posix(),
            url=item.url,
            sha256=sha256_file(final),
            size=size,
            credit=item.credit,
            license=item.license,
            license_url=item.license_url,
            page_url=item.page_url,
            title=item.title,
            content_type=got.content_type,
            meta=item.meta,
        )
        self.manifest.append(entry)
        self.downloaded += 1

    def _summary(self) -> int:
        if self.opts.dry_run:
            self.note(
                f"dry run: {self.planned} file(s) would be downloaded, {self.skipped} already complete; nothing written"
            )
            return EXIT_OK
        msg = f"{self.downloaded} downloaded, {self.skipped} already complete, {len(self.failed)} failed"
        if self.excluded:
            msg += f", {self.excluded} excluded"
        self.note(f"{msg}; manifest: {self.manifest.path}")
        return EXIT_FAILED if self.failed else EXIT_OK


def interleave(iterables: Iterable[Iterator[Any]]) -> Iterator[Any]:
    """Round-robin over several iterators (lazy), e.g. one per category."""
    active = [iter(it) for it in iterables]
    while active:
        still = []
        for it in active:
            try:
                yield next(it)
            except StopIteration:
                continue
            still.append(it)
        active = still


def same_origin_url(base_url: str, link: str) -> str:
    """Resolve a pagination *link* against *base_url*, never leaving base's host
    (API keys in the query must not be sent anywhere else)."""
    parts = urllib.parse.urlsplit(link)
    path_query = urllib.parse.urlunsplit(("", "", parts.path, parts.query, ""))
    return urllib.parse.urljoin(base_url.rstrip("/") + "/", path_query)


# --------------------------------------------------------------------------- CLI glue


def common_options(default_base_url: str, default_rate: float = 1.0, default_limit: int | None = 100):
    """The options every collector takes; the command receives ``run_options: RunOptions``."""

    def deco(f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        def wrapper(*args: Any, **kw: Any) -> Any:
            kw["run_options"] = RunOptions(
                out_dir=kw.pop("out_dir"),
                base_url=kw.pop("base_url").rstrip("/"),
                limit=kw.pop("limit"),
                dry_run=kw.pop("dry_run"),
                rate=kw.pop("rate"),
                retries=kw.pop("retries"),
                backoff=kw.pop("backoff"),
                timeout=kw.pop("timeout"),
                verify_checksum=kw.pop("verify_checksum"),
                verbose=kw.pop("verbose"),
            )
            return f(*args, **kw)

        opts = [
            click.option(
                "--out",
                "out_dir",
                required=True,
                type=click.Path(file_okay=False, path_type=Path),
                help="Output directory (files + manifest.jsonl).",
            ),
            click.option("--base-url", default=default_base_url, show_default=True, help="Service root URL."),
            click.option(
                "--limit",
                type=click.IntRange(min=1),
                default=default_limit,
                show_default=True,
                help="Maximum number of files to collect (already-complete ones count).",
            ),
            click.option("--dry-run", is_flag=True, help="Query the service and list what would be downloaded."),
            click.option(
                "--rate",
                type=click.FloatRange(min=0),
                default=default_rate,
                show_default=True,
                help="Maximum requests per second (0 = unlimited).",
            ),
            click.option(
                "--retries",
                type=click.IntRange(0, 20),
                default=5,
                show_default=True,
                help="Retries on 429/5xx/dropped connections.",
            ),
            click.option(
                "--backoff",
                type=click.FloatRange(min=0),
                default=2.0,
                show_default=True,
                help="First retry delay in seconds (doubles each retry; Retry-After wins).",
            ),
            click.option(
                "--timeout", type=click.FloatRange(min=1), default=60.0, show_default=True, help="Socket timeout, s."
            ),
            click.option(
                "--verify-checksum",
                is_flag=True,
                help="On resume, re-hash existing files against the manifest SHA-256 (default: size check).",
            ),
            click.option("-v", "--verbose", is_flag=True, help="Report retries and other notes."),
        ]
        for opt in reversed(opts):
            wrapper = opt(wrapper)
        return wrapper

    return deco


def guard(prog: str):
    """Decorator for a click command body: expected failures -> one line + exit status."""

    def deco(f: Callable[..., int | None]) -> Callable[..., None]:
        @functools.wraps(f)
        def wrapper(*args: Any, **kw: Any) -> None:
            try:
                code = f(*args, **kw) or EXIT_OK
            except CollectError as e:
                click.echo(f"{prog}: {e}", err=True)
                code = e.exit_code
            except KeyboardInterrupt:
                click.echo(f"{prog}: interrupted; partial data kept, rerun the same command to resume", err=True)
                code = EXIT_INTERRUPTED
            sys.exit(code)

        return wrapper

    return deco
