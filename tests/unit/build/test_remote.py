"""POST /build's `remote`: which URLs are refused (git, BuildKit sessions, non-URLs), how the
answer is told apart (a tar, plain or compressed, or the Dockerfile itself), and the fetch from
a local server with ADD's rules (a tenant may not reach loopback)."""

from __future__ import annotations

import bz2
import gzip
import http.server
import lzma
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from steelcup.build.fetch import FetchError, FetchLimits
from steelcup.build.remote import content_kind, fetch_context, is_git, remote_url
from steelcup.errors import InvalidArgument, SteelcupError, Unsupported
from tests.unit.image.tarutil import make_tar

TAR = make_tar([("file", "Dockerfile", b"FROM scratch\nCOPY a /a\n"),
                ("file", "sub/Other.dockerfile", b"FROM scratch\n"),
                ("file", "a", b"from the tar")])
DOCKERFILE_TEXT = b"FROM scratch\nCMD [\"x\"]\n"

# path -> (Content-Type or None, body)
SERVED: dict[str, tuple[str | None, bytes]] = {
    "/ctx.tar": ("application/x-tar", TAR),
    "/ctx.tar.gz": ("application/gzip", gzip.compress(TAR)),
    "/ctx.tar.bz2": ("application/x-bzip2", bz2.compress(TAR)),
    "/ctx.tar.xz": ("application/x-xz", lzma.compress(TAR)),
    "/mislabelled.tar.gz": ("text/plain", gzip.compress(TAR)),
    "/Dockerfile": ("application/octet-stream", DOCKERFILE_TEXT),
    "/Dockerfile.txt": ("text/plain; charset=utf-8", DOCKERFILE_TEXT),
    "/untyped": (None, DOCKERFILE_TEXT),
    "/empty": ("application/octet-stream", b""),
    "/junk": ("application/octet-stream", bytes(range(256)) * 4),
    "/huge.txt": ("text/plain", b"# comment\n" * 110_000),
}


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path not in SERVED:
            self.send_error(404)
            return
        content_type, body = SERVED[self.path]
        self.send_response(200)
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


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


@pytest.mark.parametrize("remote", [
    "git://example.com/repo", "git@github.com:owner/repo", "github.com/owner/repo",
    "https://example.com/owner/repo.git", "https://example.com/owner/repo.git#main:dir",
])
def test_git_contexts_are_refused_by_name(remote: str) -> None:
    assert is_git(remote)
    with pytest.raises(Unsupported, match="git build contexts are not supported"):
        remote_url(remote)


@pytest.mark.parametrize(("remote", "match"), [
    ("client-session", "BuildKit sessions are not supported"),
    ("ftp://example.com/ctx.tar", "could not be recognized as URL"),
    ("ctx.tar.gz", "could not be recognized as URL"),
    ("http://:80/ctx.tar", "with a host"),
])
def test_other_remotes_are_refused(remote: str, match: str) -> None:
    with pytest.raises(SteelcupError, match=match):
        remote_url(remote)


def test_http_urls_are_accepted() -> None:
    assert remote_url("https://example.com/ctx.tar.gz") == "https://example.com/ctx.tar.gz"
    assert not is_git("https://example.com/git/ctx.tar")


@pytest.mark.parametrize(("content_type", "head", "kind"), [
    ("application/x-tar", TAR[:512], "archive"),
    ("", TAR[:512], "archive"),  # ustar at 257
    ("text/plain", gzip.compress(b"x"), "archive"),  # magic first, whatever the label
    ("", bz2.compress(b"x"), "archive"),
    ("", lzma.compress(b"x"), "archive"),
    ("text/plain", DOCKERFILE_TEXT, "dockerfile"),
    ("Text/Plain; charset=utf-8", DOCKERFILE_TEXT, "dockerfile"),
    ("application/octet-stream", DOCKERFILE_TEXT, "dockerfile"),
    ("", "FROM scratch\nLABEL note=\"déjà\"\n".encode(), "dockerfile"),
    ("application/octet-stream", b"FROM\x00scratch", "archive"),  # binary: not text
    ("application/zip", DOCKERFILE_TEXT, "archive"),  # a declared non-text type
])
def test_content_kind(content_type: str, head: bytes, kind: str) -> None:
    assert content_kind(content_type, head) == kind


@pytest.mark.parametrize("path", ["/ctx.tar", "/ctx.tar.gz", "/ctx.tar.bz2", "/ctx.tar.xz",
                                  "/mislabelled.tar.gz"])
def test_a_tar_is_the_context(base: str, path: str, tmp_path: Path) -> None:
    ctx = fetch_context(base + path, tmp_path, "", private_ok=True)
    try:
        assert ctx.dockerfile == "FROM scratch\nCOPY a /a\n"
        assert (ctx.root / "a").read_bytes() == b"from the tar"
    finally:
        ctx.close()
    other = fetch_context(base + path, tmp_path, "sub/Other.dockerfile", private_ok=True)
    try:
        assert other.dockerfile == "FROM scratch\n"
    finally:
        other.close()
    assert os.listdir(tmp_path) == []  # the spool and the context directories are gone


@pytest.mark.parametrize("path", ["/Dockerfile", "/Dockerfile.txt", "/untyped"])
def test_text_is_the_dockerfile_and_nothing_else(base: str, path: str, tmp_path: Path) -> None:
    ctx = fetch_context(base + path, tmp_path, "ignored", private_ok=True)
    try:
        assert ctx.dockerfile == DOCKERFILE_TEXT.decode()
        assert os.listdir(ctx.root) == []  # nothing to COPY, as with dockerd
    finally:
        ctx.close()


@pytest.mark.parametrize(("path", "match"), [
    ("/empty", "the remote build context is empty"),
    ("/junk", "invalid build context"),
    ("/huge.txt", "too large to be a Dockerfile"),
    ("/missing", "cannot download the remote build context: .* GET answered 404"),
])
def test_bad_answers_are_clear_errors(base: str, path: str, match: str,
                                      tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=match):
        fetch_context(base + path, tmp_path, "", private_ok=True)
    assert os.listdir(tmp_path) == []


def test_a_tenants_remote_may_not_reach_loopback(base: str, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="which a tenant's build may not reach"):
        fetch_context(base + "/ctx.tar", tmp_path, "", private_ok=False)


def test_the_fetch_cap_applies(base: str, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="more than the 100"):
        fetch_context(base + "/ctx.tar", tmp_path, "", private_ok=True,
                      limits=FetchLimits(max_bytes=100))
