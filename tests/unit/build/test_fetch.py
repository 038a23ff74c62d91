"""ADD's URL fetch against a local HTTP server: the body and its checksum, the size cap,
deadlines, redirects (each hop checked), and which addresses a tenant's build may reach."""

from __future__ import annotations

import http.server
import io
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from steelcup.build.fetch import (
    FetchError,
    FetchLimits,
    address_allowed,
    check_url,
    fetch,
    file_name,
    is_git,
    is_url,
)

BODY = b"payload " * 1000


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path == "/file.bin":
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.send_header("Last-Modified", "Wed, 21 Oct 2015 07:28:00 GMT")
            self.end_headers()
            self.wfile.write(BODY)
        elif self.path == "/unsized":  # no Content-Length: the cap counts what arrives
            self.send_response(200)
            self.end_headers()
            self.wfile.write(BODY)
            self.close_connection = True
        elif self.path.startswith("/to/"):
            self.send_response(302)
            self.send_header("Location", self.path.removeprefix("/to"))
            self.end_headers()
        elif self.path == "/loop":
            self.send_response(301)
            self.send_header("Location", "/loop")
            self.end_headers()
        elif self.path == "/stall":
            self.send_response(200)
            self.send_header("Content-Length", "10")
            self.end_headers()
            self.wfile.write(b"x")
            self.wfile.flush()
            time.sleep(3)
        else:
            self.send_error(404)


@pytest.fixture
def base() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_fetch_writes_the_body_with_its_checksum_name_and_time(base: str) -> None:
    out = io.BytesIO()
    got = fetch(f"{base}/file.bin", out, FetchLimits(), private_ok=True)
    assert out.getvalue() == BODY and got.size == len(BODY) and got.name == "file.bin"
    assert got.digest.startswith("sha256:") and len(got.digest) == 71
    assert got.mtime == 1445412480.0
    followed = fetch(f"{base}/to/file.bin", io.BytesIO(), FetchLimits(), private_ok=True)
    assert followed.digest == got.digest and followed.name == "file.bin"


def test_the_size_cap_whether_declared_or_counted(base: str) -> None:
    small = FetchLimits(max_bytes=100)
    with pytest.raises(FetchError, match="more than the 100"):
        fetch(f"{base}/file.bin", io.BytesIO(), small, private_ok=True)
    out = io.BytesIO()
    with pytest.raises(FetchError, match="more than the 100 bytes"):
        fetch(f"{base}/unsized", out, small, private_ok=True)
    assert len(out.getvalue()) <= 100 + (1 << 16)


def test_errors_say_what_happened(base: str) -> None:
    with pytest.raises(FetchError, match="GET answered 404"):
        fetch(f"{base}/missing", io.BytesIO(), FetchLimits(), private_ok=True)
    with pytest.raises(FetchError, match="more than 5 redirects"):
        fetch(f"{base}/loop", io.BytesIO(), FetchLimits(), private_ok=True)
    with pytest.raises(FetchError, match="reading the body failed"):
        fetch(f"{base}/stall", io.BytesIO(), FetchLimits(connect_timeout_s=0.5),
              private_ok=True)
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(FetchError, match="cannot connect to 127.0.0.1"):
        fetch(f"http://127.0.0.1:{port}/x", io.BytesIO(), FetchLimits(), private_ok=True)
    with pytest.raises(FetchError, match="only http and https"):
        check_url("ftp://example.com/x")


def test_a_tenant_reaches_only_public_addresses(base: str) -> None:
    with pytest.raises(FetchError, match="resolves to 127.0.0.1, which a tenant"):
        fetch(f"{base}/file.bin", io.BytesIO(), FetchLimits(), private_ok=False)
    with pytest.raises(FetchError, match="localhost resolves to"):
        fetch(f"http://localhost:{base.rsplit(':', 1)[1]}/file.bin", io.BytesIO(),
              FetchLimits(), private_ok=False)
    for address in ("127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254",
                    "100.64.0.1", "::1", "fe80::1%eth0", "fd00::1", "::ffff:127.0.0.1",
                    "0.0.0.0", "224.0.0.1", "ff02::1"):
        assert not address_allowed(address, private_ok=False), address
        assert address_allowed(address, private_ok=True)
    for address in ("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "::ffff:8.8.8.8"):
        assert address_allowed(address, private_ok=False), address


def test_names_and_kinds_of_sources() -> None:
    assert file_name("http://h/a/b%20c.txt?x=1") == "b c.txt"
    assert file_name("http://h/dir/") == ""
    assert is_url("https://h/x") and not is_url("file.txt")
    assert is_git("git@github.com:o/r.git") and is_git("https://h/o/r.git")
    assert not is_git("https://h/o/r.tar")
