"""ADD of a URL: the builder fetches the file on the host, with a size cap and deadlines,
into a spool; the builder then treats it like a file of the context (its checksum is in the
cache key). Who may reach what is a policy: the operator's builds reach what the host
reaches, as dockerd's; a tenant's reach only global addresses (never the host's loopback,
the cloud's private networks or a metadata service), checked on every address a name
resolves to and on every redirect, and the connection goes to the address that was checked.
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import posixpath
import socket
import ssl
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import IO
from urllib.parse import SplitResult, unquote, urljoin, urlsplit

from steelcup.errors import InvalidArgument

MAX_REDIRECTS = 5
_CHUNK = 1 << 16


class FetchError(InvalidArgument):
    """The URL could not be fetched; the message says why in the user's terms."""


@dataclass(frozen=True)
class FetchLimits:
    max_bytes: int = 1 << 30
    connect_timeout_s: float = 30.0  # also the longest wait for any one read
    total_timeout_s: float = 600.0


@dataclass(frozen=True)
class Fetched:
    name: str  # the file name the URL gives ("" when its path ends in /)
    size: int
    digest: str  # sha256:...
    mtime: float | None  # from Last-Modified
    content_type: str = ""  # the server's Content-Type ("" if none)


def is_url(src: str) -> bool:
    return src.startswith(("http://", "https://"))


def is_git(src: str) -> bool:
    return src.startswith("git@") or (is_url(src) and urlsplit(src).path.endswith(".git"))


def check_url(url: str) -> SplitResult:
    """The URL split, if it is one the builder fetches (http or https with a host)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError(f"{url}: only http and https URLs with a host can be fetched")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise FetchError(f"{url}: {exc}") from None
    return parts


def file_name(url: str) -> str:
    """The name ADD gives a fetched file: the last component of the URL's path."""
    return posixpath.basename(unquote(urlsplit(url).path))


def address_allowed(address: str, private_ok: bool) -> bool:
    """Whether a build may connect to `address`: any for the operator, only global unicast
    addresses for a tenant (an IPv4-mapped IPv6 address counts as the IPv4 one)."""
    if private_ok:
        return True
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _addresses(host: str, port: int, private_ok: bool, url: str) -> list[tuple[int, str]]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchError(f"{url}: cannot resolve {host}: {exc.strerror}") from None
    found = [(int(family), str(addr[0])) for family, _, _, _, addr in infos]
    refused = [a for _, a in found if not address_allowed(a, private_ok)]
    if refused:
        raise FetchError(f"{url}: {host} resolves to {refused[0]}, which a tenant's build may "
                         "not reach (only public addresses can be fetched)")
    return found


def _connect(parts: SplitResult, private_ok: bool, limits: FetchLimits,
             url: str) -> http.client.HTTPConnection:
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    last: OSError | None = None
    for family, address in _addresses(host, port, private_ok, url):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(limits.connect_timeout_s)
        try:
            sock.connect((address, port))
        except OSError as exc:
            sock.close()
            last = exc
            continue
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            ctx = ssl.create_default_context()
            try:
                tls = ctx.wrap_socket(sock, server_hostname=host)
            except (OSError, ssl.SSLError) as exc:
                sock.close()
                raise FetchError(f"{url}: TLS with {host} failed: {exc}") from None
            conn = http.client.HTTPSConnection(host, port, timeout=limits.connect_timeout_s)
            conn.sock = tls
        else:
            conn = http.client.HTTPConnection(host, port, timeout=limits.connect_timeout_s)
            conn.sock = sock  # the checked address, not a second lookup
        return conn
    reason = last.strerror if last is not None and last.strerror else str(last)
    raise FetchError(f"{url}: cannot connect to {host}:{port}: {reason}")


def fetch(url: str, out: IO[bytes], limits: FetchLimits, private_ok: bool) -> Fetched:
    """GET `url` (following up to MAX_REDIRECTS redirects) into `out`."""
    deadline = time.monotonic() + limits.total_timeout_s
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        parts = check_url(current)
        conn = _connect(parts, private_ok, limits, url)
        try:
            target = parts.path or "/"
            if parts.query:
                target += "?" + parts.query
            headers = {"Host": parts.netloc.rpartition("@")[2], "User-Agent": "steelcup-build",
                       "Accept-Encoding": "identity"}
            try:
                conn.request("GET", target, headers=headers)
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                raise FetchError(f"{url}: GET failed: {exc}") from None
            if resp.status in (301, 302, 303, 307, 308):
                location = resp.getheader("Location")
                if not location:
                    raise FetchError(f"{url}: redirect {resp.status} without a Location")
                current = urljoin(current, location)
                continue
            if resp.status != 200:
                raise FetchError(f"{url}: GET answered {resp.status} {resp.reason}")
            return _body(resp, out, limits, deadline, url)
        finally:
            conn.close()
    raise FetchError(f"{url}: more than {MAX_REDIRECTS} redirects")


def _body(resp: http.client.HTTPResponse, out: IO[bytes], limits: FetchLimits,
          deadline: float, url: str) -> Fetched:
    declared = resp.getheader("Content-Length")
    if declared and declared.isdigit() and int(declared) > limits.max_bytes:
        raise FetchError(f"{url}: {declared} bytes is more than the {limits.max_bytes} a "
                         "build may fetch")
    h = hashlib.sha256()
    size = 0
    while True:
        if time.monotonic() > deadline:
            raise FetchError(f"{url}: not fetched in {limits.total_timeout_s:g}s")
        try:
            chunk = resp.read1(_CHUNK)  # what arrived: the deadline is checked between
        except (OSError, http.client.HTTPException) as exc:
            raise FetchError(f"{url}: reading the body failed: {exc}") from None
        if not chunk:
            break
        size += len(chunk)
        if size > limits.max_bytes:
            raise FetchError(f"{url}: more than the {limits.max_bytes} bytes a build may fetch")
        h.update(chunk)
        out.write(chunk)
    out.flush()
    return Fetched(file_name(url), size, "sha256:" + h.hexdigest(),
                   _mtime(resp.getheader("Last-Modified")), resp.getheader("Content-Type") or "")


def _mtime(header: str | None) -> float | None:
    if not header:
        return None
    try:
        return parsedate_to_datetime(header).timestamp()
    except (TypeError, ValueError):
        return None
