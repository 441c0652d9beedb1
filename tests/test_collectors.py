"""Offline tests of scripts/collect_*.py against a local HTTP fixture server.

Nothing here touches the internet: a ``ThreadingHTTPServer`` on 127.0.0.1 (port 0)
serves the recorded-format responses in ``tests/fixtures_http/`` plus images and
FITS files generated on the fly, including scripted failures (429 then 200, 500
then 200, truncated bodies, malformed JSON). All waiting is made instantaneous by
replacing ``collectlib._sleep`` with a recorder.
"""

from __future__ import annotations

import hashlib
import io
import json
import socket
import sys
import threading
import types
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures_http"
sys.path.insert(0, str(ROOT / "scripts"))

import collect_astrobin  # noqa: E402
import collect_esahubble  # noqa: E402
import collect_mast  # noqa: E402
import collectlib  # noqa: E402

# --------------------------------------------------------------------------- fixture server


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    truncate_to: int | None = None  # announce len(body) but send only this many bytes
    ranges: bool = False  # honour "Range: bytes=N-"


@dataclass
class Route:
    method: str
    path: str
    match: dict[str, str]
    replies: list[Reply]
    served: int = 0

    def next_reply(self) -> Reply:
        reply = self.replies[min(self.served, len(self.replies) - 1)]
        self.served += 1
        return reply


class FixtureServer:
    """Routes by method + path (+ required parameter values); replies are scripted in
    order and the last one repeats. Every request is logged."""

    def __init__(self) -> None:
        self.routes: list[Route] = []
        self.log: list[dict] = []
        fixture = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def do_GET(self) -> None:
                fixture._handle(self, "GET")

            def do_POST(self) -> None:
                fixture._handle(self, "POST")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def route(self, path: str, *replies: Reply, method: str = "GET", **match: str) -> Route:
        r = Route(method, path, match, list(replies))
        self.routes.insert(0, r)  # later registrations win over earlier ones
        return r

    def requests(self, path: str | None = None, **match: str) -> list[dict]:
        return [
            e
            for e in self.log
            if (path is None or e["path"] == path) and all(e["params"].get(k) == v for k, v in match.items())
        ]

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        split = urllib.parse.urlsplit(h.path)
        params = dict(urllib.parse.parse_qsl(split.query, keep_blank_values=True))
        body = b""
        if method == "POST":
            body = h.rfile.read(int(h.headers.get("Content-Length") or 0))
            form = dict(urllib.parse.parse_qsl(body.decode("ascii"), keep_blank_values=True))
            params.update(form)
            if "request" in form:  # MAST: route on the service named in the JSON request
                try:
                    req = json.loads(form["request"])
                    params["service"] = str(req.get("service"))
                    params["page"] = str(req.get("page", ""))
                except ValueError:
                    pass
        self.log.append({"method": method, "path": split.path, "params": params, "headers": dict(h.headers)})
        candidates = [
            r
            for r in self.routes
            if r.method == method and r.path == split.path and all(params.get(k) == v for k, v in r.match.items())
        ]
        if not candidates:
            return self._send(h, Reply(404, b"<html><body>Not Found</body></html>", {"Content-Type": "text/html"}))
        route = max(candidates, key=lambda r: len(r.match))
        self._send(h, route.next_reply())

    def _send(self, h: BaseHTTPRequestHandler, reply: Reply) -> None:
        body = reply.body.replace(b"{{BASE}}", self.url.encode())
        status = reply.status
        headers = dict(reply.headers)
        rng = h.headers.get("Range")
        if reply.ranges and rng and status == 200 and rng.startswith("bytes="):
            start = int(rng[len("bytes=") :].split("-")[0])
            if start >= len(body):
                status, body = 416, b""
            else:
                headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
                body, status = body[start:], 206
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body if reply.truncate_to is None else body[: reply.truncate_to])
        h.wfile.flush()
        h.close_connection = True


def fx(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def json_reply(name: str) -> Reply:
    return Reply(200, fx(name), {"Content-Type": "application/json"})


def html_reply(name: str) -> Reply:
    return Reply(200, fx(name), {"Content-Type": "text/html; charset=utf-8"})


def jpeg_bytes(seed: int, size: tuple[int, int] = (64, 48)) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def image_reply(data: bytes, ctype: str = "image/jpeg", **kw) -> Reply:
    return Reply(200, data, {"Content-Type": ctype}, **kw)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest(out: Path) -> list[dict]:
    path = out / "manifest.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def assert_one_line_error(result, code: int, *needles: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    lines = error_lines(result)
    assert len(lines) == 1, lines
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture
def server():
    s = FixtureServer()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def offline_env(monkeypatch):
    """No real waiting, no proxies, no credentials leaking in from the environment."""
    sleeps: list[float] = []
    monkeypatch.setattr(collectlib, "_sleep", sleeps.append)
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ASTROBIN_API_KEY", "ASTROBIN_API_SECRET"):
        monkeypatch.delenv(var, raising=False)
    return sleeps


def invoke(module, *args: str):
    return CliRunner().invoke(module.main, list(args), catch_exceptions=False)


# --------------------------------------------------------------------------- AstroBin

IMAGES = {"abc111": jpeg_bytes(1), "def222": jpeg_bytes(2), "ghi333": jpeg_bytes(3)}
CDN = "/cdn/images/{}.jpg"


def astrobin_routes(server: FixtureServer) -> None:
    server.route("/api/v1/imageoftheday/", json_reply("astrobin/iotd_page1.json"), offset="0")
    server.route("/api/v1/imageoftheday/", json_reply("astrobin/iotd_page2.json"), offset="2")
    for image_id, data in IMAGES.items():
        server.route(f"/api/v1/image/{image_id}/", json_reply(f"astrobin/image_{image_id}.json"))
        server.route(
            f"/{image_id}/0/rawthumb/real/", Reply(302, b"", {"Location": f"{server.url}{CDN.format(image_id)}"})
        )
        server.route(CDN.format(image_id), image_reply(data))


def astrobin(server: FixtureServer, out: Path, *extra: str):
    return invoke(
        collect_astrobin,
        "--base-url",
        server.url,
        "--out",
        str(out),
        "--rate",
        "0",
        "--api-key",
        "KEY",
        "--api-secret",
        "SECRET",
        "--page-size",
        "2",
        *extra,
    )


def test_astrobin_end_to_end(server, tmp_path):
    astrobin_routes(server)
    result = astrobin(server, tmp_path)
    assert result.exit_code == 0, result.output
    entries = manifest(tmp_path)
    assert [e["id"] for e in entries] == ["abc111", "def222", "ghi333"]
    for e in entries:
        path = tmp_path / e["file"]
        data = IMAGES[e["id"]]
        assert path.read_bytes() == data
        assert e["sha256"] == sha(data) and e["size"] == len(data)
        assert e["source"] == "astrobin" and e["url"].endswith(f"/{e['id']}/0/rawthumb/real/")
        assert e["meta"]["resolved_url"] == server.url + CDN.format(e["id"])  # redirect followed
        assert e["content_type"] == "image/jpeg"
    first = entries[0]
    assert first["file"] == "2024-03-03_abc111_real.jpg"
    assert first["credit"] == "alice / AstroBin" and first["license"] == "CC BY"
    assert first["license_url"].startswith("https://creativecommons.org/licenses/by/")
    assert first["title"] == "M 31 in HOO" and first["meta"]["iotd_date"] == "2024-03-03"
    assert entries[1]["license"] == "All rights reserved"
    # credentials are sent to the API but never written anywhere
    text = (tmp_path / "manifest.jsonl").read_text()
    assert "SECRET" not in text and "KEY" not in text and "SECRET" not in result.output
    page2 = server.requests("/api/v1/imageoftheday/", offset="2")
    assert page2 and page2[0]["params"]["api_key"] == "KEY" and page2[0]["params"]["format"] == "json"
    assert all("AstroSWIN" in e["headers"]["User-Agent"] for e in server.log)
    assert not list(tmp_path.glob("*.part"))
    assert "3 downloaded, 0 already complete, 0 failed" in result.stderr


def test_astrobin_resume_skips_complete_files(server, tmp_path):
    astrobin_routes(server)
    assert astrobin(server, tmp_path).exit_code == 0
    server.log.clear()
    result = astrobin(server, tmp_path)
    assert result.exit_code == 0
    assert "0 downloaded, 3 already complete" in result.stderr
    paths = {e["path"] for e in server.log}
    assert paths == {"/api/v1/imageoftheday/"}  # no image metadata, no downloads
    assert len(manifest(tmp_path)) == 3
    # a damaged file is noticed by the size check and fetched again
    (tmp_path / "2024-03-02_def222_real.jpg").write_bytes(b"garbage")
    server.log.clear()
    result = astrobin(server, tmp_path)
    assert "1 downloaded, 2 already complete" in result.stderr
    assert len(server.requests(CDN.format("def222"))) == 1
    assert (tmp_path / "2024-03-02_def222_real.jpg").read_bytes() == IMAGES["def222"]


def test_astrobin_resume_after_interruption(server, tmp_path):
    astrobin_routes(server)
    server.route(CDN.format("def222"), Reply(500, b"oops"))
    result = astrobin(server, tmp_path, "--retries", "1")
    assert result.exit_code == 1
    assert [line for line in error_lines(result) if "failed def222" in line and "HTTP 500" in line]
    assert [e["id"] for e in manifest(tmp_path)] == ["abc111", "ghi333"]
    server.route(CDN.format("def222"), image_reply(IMAGES["def222"]))  # the service recovers
    server.log.clear()
    result = astrobin(server, tmp_path)
    assert result.exit_code == 0
    assert not server.requests(CDN.format("abc111")) and not server.requests("/api/v1/image/abc111/")
    assert len(server.requests(CDN.format("def222"))) == 1
    assert sorted(e["id"] for e in manifest(tmp_path)) == ["abc111", "def222", "ghi333"]


def test_astrobin_missing_key(server, tmp_path):
    result = invoke(collect_astrobin, "--base-url", server.url, "--out", str(tmp_path))
    assert_one_line_error(result, 2, "collect_astrobin:", "ASTROBIN_API_KEY")
    assert not server.log


def test_astrobin_key_from_environment_and_rejected(server, tmp_path, monkeypatch):
    monkeypatch.setenv("ASTROBIN_API_KEY", "envkey")
    monkeypatch.setenv("ASTROBIN_API_SECRET", "envsecret")
    server.route("/api/v1/imageoftheday/", Reply(401, b"Unauthorized"))
    result = invoke(collect_astrobin, "--base-url", server.url, "--out", str(tmp_path), "--rate", "0")
    assert_one_line_error(result, 2, "rejected the API key")
    assert server.log[0]["params"]["api_key"] == "envkey"
    assert "envsecret" not in result.output


def test_astrobin_malformed_json(server, tmp_path):
    server.route("/api/v1/imageoftheday/", json_reply("astrobin/iotd_malformed.json"))
    result = astrobin(server, tmp_path)
    assert_one_line_error(result, 4, "collect_astrobin: API changed?:", "not return valid JSON")
    assert "SECRET" not in result.output  # the URL in the message is redacted


@pytest.mark.parametrize(
    "route, match, reply, needle",
    [
        ("/api/v1/imageoftheday/", {"offset": "0"}, "astrobin/iotd_no_objects.json", "missing field 'objects'"),
        ("/api/v1/image/abc111/", {}, "astrobin/image_missing_url.json", "missing field 'url_real'"),
    ],
)
def test_astrobin_missing_fields(server, tmp_path, route, match, reply, needle):
    astrobin_routes(server)
    server.route(route, json_reply(reply), **match)
    result = astrobin(server, tmp_path)
    assert_one_line_error(result, 4, "API changed?:", needle)


def test_astrobin_dry_run_downloads_nothing(server, tmp_path):
    astrobin_routes(server)
    out = tmp_path / "out"
    result = astrobin(server, out, "--dry-run")
    assert result.exit_code == 0
    assert result.stdout.count("would download") == 3
    assert not out.exists()
    assert not [e for e in server.log if e["path"].startswith(("/cdn/", "/abc111", "/def222", "/ghi333"))]


def test_astrobin_date_range_license_and_limit(server, tmp_path):
    astrobin_routes(server)
    result = astrobin(server, tmp_path / "a", "--since", "2024-03-02", "--until", "2024-03-02")
    assert result.exit_code == 0
    assert [e["id"] for e in manifest(tmp_path / "a")] == ["def222"]
    server.log.clear()
    result = astrobin(server, tmp_path / "s", "--since", "2024-03-03")
    assert [e["id"] for e in manifest(tmp_path / "s")] == ["abc111"]
    assert not server.requests("/api/v1/imageoftheday/", offset="2")  # newest first: stopped early
    result = astrobin(server, tmp_path / "b", "--license", "CC BY", "--license", "CC BY-SA", "--limit", "1")
    assert result.exit_code == 0
    assert [e["id"] for e in manifest(tmp_path / "b")] == ["abc111"]
    result = astrobin(server, tmp_path / "c", "--license", "CC BY-SA")
    assert [e["id"] for e in manifest(tmp_path / "c")] == ["ghi333"]
    assert "2 excluded" in result.stderr


def test_retry_429_honours_retry_after(server, tmp_path, offline_env):
    astrobin_routes(server)
    server.route(
        "/api/v1/imageoftheday/",
        Reply(429, b"slow down", {"Retry-After": "7"}),
        json_reply("astrobin/iotd_page1.json"),
        offset="0",
    )
    result = astrobin(server, tmp_path, "--limit", "1")
    assert result.exit_code == 0, result.output
    assert len(server.requests("/api/v1/imageoftheday/", offset="0")) == 2
    assert 7.0 in offline_env


def test_retry_500_then_200_with_backoff(server, tmp_path, offline_env):
    astrobin_routes(server)
    server.route(CDN.format("abc111"), Reply(500, b"boom"), Reply(503, b"boom"), image_reply(IMAGES["abc111"]))
    result = astrobin(server, tmp_path, "--limit", "1", "--backoff", "0.5")
    assert result.exit_code == 0, result.output
    assert len(server.requests(CDN.format("abc111"))) == 3
    assert offline_env[:2] == [0.5, 1.0]  # exponential backoff
    assert (tmp_path / "2024-03-03_abc111_real.jpg").read_bytes() == IMAGES["abc111"]


def test_retries_are_bounded(server, tmp_path):
    server.route("/api/v1/imageoftheday/", Reply(503, b"down"))
    result = astrobin(server, tmp_path, "--retries", "2")
    assert_one_line_error(result, 1, "HTTP 503", "after 3 attempts")
    assert len(server.log) == 3


def test_truncated_download_resumes_with_range(server, tmp_path):
    astrobin_routes(server)
    data = IMAGES["abc111"]
    server.route(CDN.format("abc111"), image_reply(data, truncate_to=100), image_reply(data, ranges=True))
    result = astrobin(server, tmp_path, "--limit", "1")
    assert result.exit_code == 0, result.output
    hits = server.requests(CDN.format("abc111"))
    assert len(hits) == 2 and hits[1]["headers"].get("Range") == "bytes=100-"
    entry = manifest(tmp_path)[0]
    assert entry["sha256"] == sha(data) and (tmp_path / entry["file"]).read_bytes() == data


def test_truncated_every_time_fails_then_resumes_next_run(server, tmp_path):
    astrobin_routes(server)
    data = IMAGES["abc111"]
    server.route(CDN.format("abc111"), image_reply(data, truncate_to=0))
    result = astrobin(server, tmp_path, "--limit", "1", "--retries", "1")
    assert result.exit_code == 1
    assert [line for line in error_lines(result) if "truncated download" in line]
    assert not manifest(tmp_path)
    server.route(CDN.format("abc111"), image_reply(data, truncate_to=500))
    astrobin(server, tmp_path, "--limit", "1", "--retries", "0")  # leaves 500 bytes in the .part
    assert (tmp_path / "2024-03-03_abc111_real.part").stat().st_size == 500
    server.route(CDN.format("abc111"), image_reply(data, ranges=True))
    server.log.clear()
    result = astrobin(server, tmp_path, "--limit", "1")
    assert result.exit_code == 0
    assert server.requests(CDN.format("abc111"))[0]["headers"].get("Range") == "bytes=500-"
    assert (tmp_path / "2024-03-03_abc111_real.jpg").read_bytes() == data


def test_html_instead_of_image_is_rejected(server, tmp_path):
    astrobin_routes(server)
    server.route(CDN.format("abc111"), Reply(200, b"<!DOCTYPE html><html>login</html>", {"Content-Type": "text/html"}))
    result = astrobin(server, tmp_path, "--limit", "1")
    assert result.exit_code == 1
    assert "HTML/text page" in result.stderr
    assert not list(tmp_path.glob("2024-03-03_abc111*"))


def test_scripts_run_as_programs(tmp_path):
    """The files run as scripts from any directory (they find collectlib themselves)."""
    import subprocess

    for script, code, needle in [
        ("collect_astrobin.py", 2, "collect_astrobin: missing AstroBin API credentials"),
        ("collect_mast.py", 0, "Usage:"),
    ]:
        args = [sys.executable, str(ROOT / "scripts" / script), "--out", str(tmp_path / "o")]
        if code == 0:
            args.append("--help")
        proc = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, timeout=60)
        assert proc.returncode == code, proc.stderr
        assert needle in (proc.stderr if code else proc.stdout)
        if code:
            assert len(proc.stderr.strip().splitlines()) == 1


def test_unreachable_network(tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    result = invoke(
        collect_astrobin,
        "--base-url",
        f"http://127.0.0.1:{port}",
        "--out",
        str(tmp_path),
        "--api-key",
        "k",
        "--api-secret",
        "s",
        "--retries",
        "1",
    )
    assert_one_line_error(result, 3, "cannot reach", f"127.0.0.1:{port}")


# --------------------------------------------------------------------------- ESA/Hubble

ESA_IDS = ["heic0001a", "potw0002a", "heic0003a", "heic0004a"]
ESA_IMAGES = {i: jpeg_bytes(10 + n) for n, i in enumerate(ESA_IDS)}


def esa_routes(server: FixtureServer) -> None:
    cat = "/images/archive/category/{}/page/{}/"
    server.route(cat.format("galaxies", 1), html_reply("esahubble/category_galaxies_page1.html"))
    server.route(cat.format("galaxies", 2), html_reply("esahubble/category_galaxies_page2.html"))
    server.route(cat.format("nebulae", 1), html_reply("esahubble/category_nebulae_page1.html"))
    server.route(cat.format("starclusters", 1), Reply(200, b"<script>var images = [\n    ];</script>"))
    for image_id in ("heic0001a", "heic0003a", "heic0004a"):  # potw0002a: no JSON view (404)
        server.route(f"/images/{image_id}/api/json/", json_reply(f"esahubble/image_{image_id}.json"))
    for image_id, data in ESA_IMAGES.items():
        server.route(f"/media/archives/images/large/{image_id}.jpg", image_reply(data))


def esa(server: FixtureServer, out: Path, *extra: str):
    return invoke(collect_esahubble, "--base-url", server.url, "--out", str(out), "--rate", "0", *extra)


def test_esahubble_end_to_end(server, tmp_path):
    esa_routes(server)
    result = esa(server, tmp_path, "--category", "galaxies", "--category", "nebulae")
    assert result.exit_code == 0, result.output
    entries = manifest(tmp_path)
    # categories interleaved round-robin; heic0001a (in both) collected once
    assert [e["id"] for e in entries] == ["heic0001a", "heic0004a", "potw0002a", "heic0003a"]
    by_id = {e["id"]: e for e in entries}
    for image_id, data in ESA_IMAGES.items():
        e = by_id[image_id]
        assert (
            (tmp_path / e["file"]).read_bytes() == data
            and e["file"] == f"{image_id}_large.jpg"
            and e["variant"] == "large"
        )
        assert e["sha256"] == sha(data) and e["size"] == len(data)
        assert e["license"] == "CC BY 4.0" and e["license_url"] == "https://creativecommons.org/licenses/by/4.0/"
        assert e["url"] == f"{server.url}/media/archives/images/large/{image_id}.jpg"
    assert by_id["heic0001a"]["credit"] == "ESA/Hubble & NASA, J. Doe"  # HTML stripped, entities decoded
    assert by_id["heic0001a"]["title"] == "Spiral galaxy One and friends"
    assert by_id["heic0001a"]["meta"]["category"] == "galaxies"
    assert by_id["potw0002a"]["credit"] == "ESA/Hubble" and by_id["potw0002a"]["title"] == "A lonely dwarf"
    assert by_id["heic0004a"]["meta"]["category"] == "nebulae"
    assert server.requests("/images/archive/category/galaxies/page/3/")  # 404 ends the category


def test_esahubble_resume_and_dry_run(server, tmp_path):
    esa_routes(server)
    result = esa(server, tmp_path / "dry", "--dry-run", "--no-metadata")
    assert result.exit_code == 0 and result.stdout.count("would download") == 4
    assert not (tmp_path / "dry").exists()
    assert not [e for e in server.log if e["path"].startswith(("/media/", "/images/heic", "/images/potw"))]
    assert esa(server, tmp_path / "out").exit_code == 0
    assert len(manifest(tmp_path / "out")) == 4
    server.log.clear()
    result = esa(server, tmp_path / "out")
    assert result.exit_code == 0 and "4 already complete" in result.stderr
    assert all(e["path"].startswith("/images/archive/category/") for e in server.log)


def test_esahubble_tiff_format_and_missing_rendition(server, tmp_path):
    import tifffile

    esa_routes(server)
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.arange(48 * 64 * 3, dtype=np.uint16).reshape(48, 64, 3))
    server.route("/media/archives/images/publicationtiff10k/heic0001a.tif", image_reply(buf.getvalue(), "image/tiff"))
    result = esa(server, tmp_path, "--category", "galaxies", "--format", "tiff10k", "--limit", "2")
    assert result.exit_code == 1  # potw0002a has no 10k TIFF (404): reported, run continues
    assert "failed potw0002a: HTTP 404" in result.stderr
    assert [e["file"] for e in manifest(tmp_path)] == ["heic0001a_tiff10k.tif"]
    # another rendition of the same image is a different file, not "already complete"
    result = esa(server, tmp_path, "--category", "galaxies", "--limit", "2")
    assert result.exit_code == 0 and "2 downloaded, 0 already complete" in result.stderr
    assert [e["file"] for e in manifest(tmp_path)][1:] == ["heic0001a_large.jpg", "potw0002a_large.jpg"]


def test_esahubble_listing_changed(server, tmp_path):
    server.route("/images/archive/category/galaxies/page/1/", html_reply("esahubble/category_changed.html"))
    result = esa(server, tmp_path, "--category", "galaxies")
    assert_one_line_error(result, 4, "collect_esahubble: API changed?:", "var images")


@pytest.mark.parametrize(
    "fixture, needle", [("image_malformed.json", "valid JSON"), ("image_no_credit.json", "missing field 'Credit'")]
)
def test_esahubble_metadata_changed(server, tmp_path, fixture, needle):
    esa_routes(server)
    server.route("/images/heic0001a/api/json/", json_reply(f"esahubble/{fixture}"))
    result = esa(server, tmp_path, "--category", "galaxies")
    assert_one_line_error(result, 4, "API changed?:", needle)


def test_esahubble_listing_parser_unit():
    page = fx("esahubble/category_galaxies_page1.html").decode()
    assert collect_esahubble.parse_listing(page, "u") == [
        ("heic0001a", 'Spiral galaxy "One" & friends'),
        ("potw0002a", "A lonely dwarf"),
    ]
    assert collect_esahubble.parse_listing("<script>var images = [\n];</script>", "u") == []


# --------------------------------------------------------------------------- MAST


def drizzled_fits(seed: int) -> tuple[bytes, np.ndarray]:
    """A small DRZ-like multi-extension file: empty primary, SCI (+WCS), WHT, CTX."""
    from astropy.io import fits

    rng = np.random.default_rng(seed)
    sci = rng.normal(0.1, 0.01, (40, 50)).astype(np.float32)
    primary = fits.PrimaryHDU()
    primary.header["TELESCOP"] = "HST"
    primary.header["INSTRUME"] = "ACS"
    primary.header["FILTER2"] = "F814W"
    primary.header["TARGNAME"] = "NGC-1300"
    primary.header["EXPTIME"] = 1680.0
    h = fits.Header()
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CRVAL1"], h["CRVAL2"] = 49.92, -19.41
    h["CRPIX1"], h["CRPIX2"] = 25.0, 20.0
    h["CD1_1"], h["CD1_2"], h["CD2_1"], h["CD2_2"] = -1.4e-5, 0.0, 0.0, 1.4e-5
    h["BUNIT"] = "ELECTRONS/S"
    h["PHOTFLAM"] = 7.0e-20
    hdul = fits.HDUList(
        [
            primary,
            fits.ImageHDU(sci, h, name="SCI"),
            fits.ImageHDU(np.ones_like(sci), name="WHT"),
            fits.ImageHDU(np.ones((40, 50), np.int32), name="CTX"),
        ]
    )
    buf = io.BytesIO()
    hdul.writeto(buf)
    return buf.getvalue(), sci


MAST_FILES = {
    "mast:HST/product/j9fx01010_drc.fits": drizzled_fits(1),
    "mast:HST/product/j9fx01010_drz.fits": drizzled_fits(2),
    "mast:HST/product/jb7q02020_drz.fits": drizzled_fits(3),
}
DOWNLOAD = "/api/v0.1/Download/file"


def mast_routes(server: FixtureServer) -> None:
    server.route("/api/v0/invoke", json_reply("mast/caom_filtered.json"), method="POST", service="Mast.Caom.Filtered")
    server.route("/api/v0/invoke", json_reply("mast/caom_products.json"), method="POST", service="Mast.Caom.Products")
    for uri, (data, _) in MAST_FILES.items():
        server.route(DOWNLOAD, Reply(200, data, {"Content-Type": "application/octet-stream"}), uri=uri)


def mast(server: FixtureServer, out: Path, *extra: str):
    return invoke(
        collect_mast,
        "--base-url",
        server.url,
        "--out",
        str(out),
        "--rate",
        "0",
        "--backend",
        "http",
        "--instrument",
        "ACS/WFC",
        "--filter",
        "F814W",
        *extra,
    )


def test_mast_http_end_to_end_keeps_sci_and_wcs(server, tmp_path):
    from astropy.io import fits
    from astropy.wcs import WCS

    mast_routes(server)
    result = mast(server, tmp_path, "--target", "NGC-1300", "--target", "M-51")
    assert result.exit_code == 0, result.output
    entries = manifest(tmp_path)
    # one product per observation (DRC preferred over DRZ); FLC/ASN/TRL and proprietary files skipped
    assert [e["id"] for e in entries] == ["mast:HST/product/j9fx01010_drc.fits", "mast:HST/product/jb7q02020_drz.fits"]
    assert [e["params"]["uri"] for e in server.requests(DOWNLOAD)] == [e["id"] for e in entries]
    for e in entries:
        path = tmp_path / e["file"]
        assert e["file"].endswith("_sci.fits") and e["sha256"] == collectlib.sha256_file(path)
        assert e["size"] == path.stat().st_size
        raw, sci = MAST_FILES[e["id"]]
        assert e["meta"]["raw_sha256"] == sha(raw) and e["meta"]["raw_size"] == len(raw)
        with fits.open(path) as hdul:
            assert len(hdul) == 1  # only the science image
            np.testing.assert_array_equal(hdul[0].data, sci)
            hdr = hdul[0].header
            assert hdr["CTYPE1"] == "RA---TAN" and hdr["INSTRUME"] == "ACS" and hdr["BUNIT"] == "ELECTRONS/S"
            assert WCS(hdr).has_celestial
            assert hdr["ORIGFILE"] == e["id"].rsplit("/", 1)[1]
    assert entries[0]["credit"].endswith("programme 10342 (PI Doe, Jane)")
    assert entries[0]["meta"]["target"] == "NGC-1300" and entries[0]["meta"]["product"] == "DRC"
    assert not (tmp_path / "raw").exists()  # raw multi-extension files removed
    query = json.loads(server.requests("/api/v0/invoke", service="Mast.Caom.Filtered")[0]["params"]["request"])
    filters = {f["paramName"]: f["values"] for f in query["params"]["filters"]}
    assert filters["obs_collection"] == ["HST"] and filters["instrument_name"] == ["ACS/WFC"]
    assert filters["filters"] == ["F814W"] and filters["target_name"] == ["NGC-1300", "M-51"]
    assert filters["calib_level"] == [3] and query["format"] == "json"
    products = json.loads(server.requests("/api/v0/invoke", service="Mast.Caom.Products")[0]["params"]["request"])
    assert products["params"]["obsid"] == "2003520001,2003520002"
    # resume: nothing downloaded again
    server.log.clear()
    result = mast(server, tmp_path)
    assert result.exit_code == 0 and "2 already complete" in result.stderr
    assert not server.requests(DOWNLOAD)


def test_mast_keep_raw_and_polling(server, tmp_path):
    mast_routes(server)
    server.route(
        "/api/v0/invoke",
        json_reply("mast/executing.json"),
        json_reply("mast/caom_filtered.json"),
        method="POST",
        service="Mast.Caom.Filtered",
    )
    result = mast(server, tmp_path, "--keep-raw", "--product", "DRZ", "--limit", "1")
    assert result.exit_code == 0, result.output
    assert len(server.requests("/api/v0/invoke", service="Mast.Caom.Filtered")) == 2
    assert (tmp_path / "raw" / "j9fx01010_drz.fits").read_bytes() == MAST_FILES["mast:HST/product/j9fx01010_drz.fits"][
        0
    ]
    assert [e["file"] for e in manifest(tmp_path)] == ["j9fx01010_drz_sci.fits"]


@pytest.mark.parametrize(
    "fixture, code, needle",
    [
        ("mast/malformed.json", 4, "API changed?: MAST Mast.Caom.Filtered"),
        ("mast/no_data.json", 4, "missing field 'data'"),
        ("mast/error.json", 1, "Unrecognized filter column"),
    ],
)
def test_mast_query_errors(server, tmp_path, fixture, code, needle):
    server.route("/api/v0/invoke", json_reply(fixture), method="POST")
    result = mast(server, tmp_path)
    assert_one_line_error(result, code, "collect_mast:", needle)


def test_mast_download_not_fits(server, tmp_path):
    mast_routes(server)
    server.route(DOWNLOAD, Reply(200, b"<html>error</html>", {"Content-Type": "text/html"}), uri=next(iter(MAST_FILES)))
    result = mast(server, tmp_path)
    assert result.exit_code == 1
    assert "failed mast:HST/product/j9fx01010_drc.fits" in result.stderr
    assert [e["id"] for e in manifest(tmp_path)] == ["mast:HST/product/jb7q02020_drz.fits"]


def test_mast_missing_astroquery(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "astroquery", None)  # import fails even if installed
    monkeypatch.setitem(sys.modules, "astroquery.mast", None)
    result = invoke(collect_mast, "--out", str(tmp_path / "o"), "--instrument", "ACS/WFC")
    assert_one_line_error(result, 2, "astroquery is not installed", "--backend http")
    assert not (tmp_path / "o").exists()


def test_mast_astroquery_backend_with_fake_module(server, tmp_path, monkeypatch):
    from astropy.table import Table

    filtered = json.loads(fx("mast/caom_filtered.json"))["data"]
    products = json.loads(fx("mast/caom_products.json"))["data"]
    calls = {}

    class Observations:
        @staticmethod
        def query_criteria(**criteria):
            calls["criteria"] = criteria
            return Table(rows=[[r[k] for k in filtered[0]] for r in filtered], names=list(filtered[0]))

        @staticmethod
        def get_product_list(obs):
            ids = {str(o) for o in obs["obsid"]}
            rows = [p for p in products if p["obsID"] in ids]
            return Table(rows=[[r[k] for k in products[0]] for r in rows], names=list(products[0]))

        @staticmethod
        def filter_products(table, productType, productSubGroupDescription):
            keep = [
                (r["productType"] == productType and r["productSubGroupDescription"] in productSubGroupDescription)
                for r in table
            ]
            return table[np.array(keep)]

    fake = types.ModuleType("astroquery")
    fake_mast = types.ModuleType("astroquery.mast")
    fake_mast.Observations = Observations
    fake.mast = fake_mast
    monkeypatch.setitem(sys.modules, "astroquery", fake)
    monkeypatch.setitem(sys.modules, "astroquery.mast", fake_mast)
    result = invoke(
        collect_mast, "--base-url", server.url, "--out", str(tmp_path), "--dry-run", "--instrument", "ACS/WFC"
    )
    assert result.exit_code == 0, result.output
    assert calls["criteria"]["instrument_name"] == ["ACS/WFC"] and calls["criteria"]["calib_level"] == 3
    lines = [line for line in result.stdout.splitlines() if line.startswith("would download")]
    assert len(lines) == 2
    assert f"{server.url}{DOWNLOAD}?uri=mast%3AHST%2Fproduct%2Fj9fx01010_drc.fits" in lines[0]
    assert not server.log


# --------------------------------------------------------------------------- collectlib units


def test_redact_and_same_origin():
    url = "https://x.org/api/?api_key=abc&api_secret=def&format=json"
    assert "abc" not in collectlib.redact(url) and "def" not in collectlib.redact(url)
    assert "format=json" in collectlib.redact(url)
    assert collectlib.same_origin_url("http://127.0.0.1:9", "https://evil.example/api/v1/x/?offset=2") == (
        "http://127.0.0.1:9/api/v1/x/?offset=2"
    )


def test_parse_retry_after():
    assert collectlib.parse_retry_after("12") == 12.0
    assert collectlib.parse_retry_after(None) is None
    assert collectlib.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert collectlib.parse_retry_after("soon") is None


def test_rate_limiter(monkeypatch, offline_env):
    now = [100.0]
    monkeypatch.setattr(collectlib, "_clock", lambda: now[0])
    limiter = collectlib.RateLimiter(4.0)
    limiter.wait()
    limiter.wait()
    now[0] += 0.1
    limiter.wait()
    assert offline_env == [0.25, pytest.approx(0.4)]


def test_manifest_last_entry_wins_and_bad_lines_ignored(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"12345")
    path = tmp_path / "manifest.jsonl"
    good = {"source": "s", "id": "a", "file": "a.jpg", "size": 4, "sha256": "x"}
    path.write_text(json.dumps(good) + "\n{broken\n" + json.dumps({**good, "size": 5, "sha256": sha(b"12345")}) + "\n")
    m = collectlib.Manifest(path)
    assert m.bad_lines == 1
    assert m.is_complete("s", "a", tmp_path) and m.is_complete("s", "a", tmp_path, verify_checksum=True)
    (tmp_path / "a.jpg").write_bytes(b"54321")
    assert m.is_complete("s", "a", tmp_path) and not m.is_complete("s", "a", tmp_path, verify_checksum=True)
