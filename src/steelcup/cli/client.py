"""A lean, blocking Docker Engine API client over a unix socket or TLS (stdlib only).

Imported on every CLI start, so it stays small: one connection per request, HTTP/1.1 with
Content-Length or chunked bodies, streamed responses, and docker's attach hijack. A unix
connection is a plain `_socket.socket`, the type `socket.socket` extends: the `socket` module
costs ~2 ms of every start (its enums, selectors) and is imported for tcp:// only.
"""

from __future__ import annotations

import _socket
import errno
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping

from steelcup.cli.endpoint import Endpoint
from steelcup.errors import (
    Conflict,
    DaemonUnavailable,
    InvalidArgument,
    NotFound,
    SteelcupError,
    Unsupported,
)

TYPE_CHECKING = False  # the CLI does not import typing at run time (start-up cost)
if TYPE_CHECKING:
    from typing import Any, BinaryIO

API_VERSION = "1.43"
_CHUNK = 64 * 1024
_MAX_HEADER = 64 * 1024

# A daemon's standing warning for its users (e.g. a multi-tenant daemon without KVM).
WARNING_HEADER = "steelcup-warning"

# a tuple value: the key repeated, once per item (docker build's `t`)
Query = Mapping[str, str | int | bool | tuple[str, ...] | None] | None
Headers = dict[str, str]


def _status_error(status: int, message: str) -> SteelcupError:
    kinds: dict[int, type[SteelcupError]] = {
        400: InvalidArgument,
        404: NotFound,
        409: Conflict,
        501: Unsupported,
        503: DaemonUnavailable,
    }
    err = kinds.get(status, SteelcupError)(message)
    vars(err)["http_status"] = status  # marks "the daemon said so" for the CLI's wording
    return err


def _error_message(status: int, body: bytes) -> str:
    try:
        value = json.loads(body)
        if isinstance(value, dict) and isinstance(value.get("message"), str):
            return str(value["message"])
    except ValueError:
        pass
    text = body.decode("utf-8", "replace").strip()
    return text or f"HTTP {status}"


_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _quote(text: str, safe: str = "") -> str:
    """Percent-encode like urllib.parse.quote (which would import ipaddress: slow CLI start)."""
    allowed = _UNRESERVED | frozenset(safe.encode())
    return "".join(chr(b) if b in allowed else f"%{b:02X}" for b in text.encode("utf-8"))


def encode_query(query: Query) -> str:
    """Docker-style query: bools as 1/0, None values dropped."""
    if not query:
        return ""
    pairs: list[tuple[str, str]] = []
    for key, value in query.items():
        if value is None:
            continue
        if isinstance(value, bool):
            pairs.append((key, "1" if value else "0"))
        elif isinstance(value, tuple):
            pairs.extend((key, str(item)) for item in value)
        else:
            pairs.append((key, str(value)))
    return "?" + "&".join(f"{_quote(k)}={_quote(v)}" for k, v in pairs) if pairs else ""


def path_quote(segment: str) -> str:
    """Quote a path parameter (keeps '/' so image names like library/busybox stay readable)."""
    return _quote(segment, safe="/:@")


class _Reader:
    """Buffered reads from a socket; the buffer can be handed over to a hijacked stream."""

    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.eof = False

    def _fill(self) -> bool:
        if self.eof:
            return False
        data = self.sock.recv(_CHUNK)
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def readline(self) -> bytes:
        while True:
            idx = self.buf.find(b"\n")
            if idx >= 0:
                line = bytes(self.buf[: idx + 1])
                del self.buf[: idx + 1]
                return line
            if len(self.buf) > _MAX_HEADER:
                raise SteelcupError("daemon sent an over-long HTTP line")
            if not self._fill():
                line = bytes(self.buf)
                self.buf.clear()
                return line

    def read_some(self, limit: int = _CHUNK) -> bytes:
        if not self.buf and not self._fill():
            return b""
        data = bytes(self.buf[:limit])
        del self.buf[:limit]
        return data

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise SteelcupError("daemon closed the connection mid-response")
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data


class StreamedResponse:
    """A response whose body is read incrementally (chunked, sized, or until close)."""

    def __init__(self, sock: _socket.socket, reader: _Reader, status: int, headers: Headers):
        self.sock = sock
        self._reader = reader
        self.status = status
        self.headers = headers
        te = headers.get("transfer-encoding", "").lower()
        self._chunked = "chunked" in te
        length = headers.get("content-length")
        self._remaining: int | None = None
        if length is not None and not self._chunked:
            self._remaining = int(length)
        self._done = status in (204, 304)

    def iter_chunks(self) -> Iterator[bytes]:
        """The body as it arrives."""
        try:
            while not self._done:
                if self._chunked:
                    size_line = self._reader.readline()
                    if not size_line:
                        raise SteelcupError("daemon closed the connection mid-response")
                    size = int(size_line.split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self._reader.readline().strip():
                            pass  # trailers
                        self._done = True
                        break
                    remaining = size
                    while remaining:
                        data = self._reader.read_some(min(remaining, _CHUNK))
                        if not data:
                            raise SteelcupError("daemon closed the connection mid-response")
                        remaining -= len(data)
                        yield data
                    self._reader.read_exact(2)
                elif self._remaining is not None:
                    if self._remaining == 0:
                        self._done = True
                        break
                    data = self._reader.read_some(min(self._remaining, _CHUNK))
                    if not data:
                        raise SteelcupError("daemon closed the connection mid-response")
                    self._remaining -= len(data)
                    yield data
                else:
                    data = self._reader.read_some()
                    if not data:
                        self._done = True
                        break
                    yield data
        finally:
            if self._done:
                self.close()

    def read(self) -> bytes:
        return b"".join(self.iter_chunks())

    def iter_lines(self) -> Iterator[bytes]:
        """Newline-delimited records (docker's JSON streams); a last unterminated one too."""
        pending = b""
        for chunk in self.iter_chunks():
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.strip():
                    yield line
        if pending.strip():
            yield pending

    def iter_json(self) -> Iterator[Any]:
        """Decoded JSON values, one per line (events, progress, wait results)."""
        for line in self.iter_lines():
            try:
                yield json.loads(line)
            except ValueError as exc:
                raise SteelcupError(f"daemon sent invalid JSON in a stream: {exc}") from None

    def close(self) -> None:
        self._done = True
        self.sock.close()

    def __enter__(self) -> StreamedResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class HijackedSocket:
    """The raw connection after `101 UPGRADED`; bytes read past the headers come out first."""

    def __init__(self, sock: _socket.socket, pending: bytes) -> None:
        self.sock = sock
        self._pending = pending

    def recv(self, n: int = _CHUNK) -> bytes:
        if self._pending:
            data, self._pending = self._pending[:n], self._pending[n:]
            return data
        try:
            return self.sock.recv(n)
        except ConnectionResetError:
            return b""

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close_write(self) -> None:
        """Half-close: the daemon sees stdin EOF; output keeps flowing."""
        try:
            self.sock.shutdown(_socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()

    def fileno(self) -> int:
        return self.sock.fileno()


class ApiClient:
    """Speaks the Docker Engine API (prefix /v1.43) to one daemon: a unix socket path or an
    `Endpoint` (TCP with TLS, a bearer token).

    `on_unreachable` is called once when the socket is absent or refuses connections; if it
    returns True (it started a daemon) the connection is retried.
    """

    def __init__(
        self,
        address: Endpoint | str | os.PathLike[str],
        *,
        api_version: str = API_VERSION,
        timeout_s: float | None = None,
        on_unreachable: Callable[[], bool] | None = None,
    ) -> None:
        self.endpoint = address if isinstance(address, Endpoint) else Endpoint(
            unix_path=os.fspath(address))
        self.socket_path = self.endpoint.unix_path
        self.prefix = f"/v{api_version}"
        self.timeout_s = timeout_s
        self._on_unreachable = on_unreachable
        self._warned = False
        self._tls: Any = None  # ssl.SSLContext, made on the first TLS connection
        self._auth = ({"Authorization": f"Bearer {self.endpoint.token}"}
                      if self.endpoint.token and self.endpoint.tls else {})

    # ----- connection
    def _connect(self) -> _socket.socket:
        try:
            return self._connect_once()
        except DaemonUnavailable:
            hook, self._on_unreachable = self._on_unreachable, None
            if hook is None or not hook():
                raise
            return self._connect_once()

    def _connect_once(self) -> _socket.socket:
        if not self.endpoint.is_unix:
            return self._connect_tcp()
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        sock.settimeout(self.timeout_s)
        try:
            sock.connect(self.socket_path)
        except OSError as exc:
            sock.close()
            if exc.errno in (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTDIR):
                raise DaemonUnavailable(
                    f"cannot connect to the steelcup daemon at unix://{self.socket_path}: "
                    f"{exc.strerror}. Is the daemon running?"
                ) from exc
            if exc.errno == errno.EACCES:
                raise DaemonUnavailable(
                    f"permission denied connecting to unix://{self.socket_path}; run as root or "
                    "use -H with a socket you can access"
                ) from exc
            raise DaemonUnavailable(f"cannot connect to unix://{self.socket_path}: {exc}") from exc
        return sock

    def _connect_tcp(self) -> _socket.socket:
        import socket

        where = str(self.endpoint)
        try:
            sock = socket.create_connection((self.endpoint.host, self.endpoint.port),
                                            timeout=self.timeout_s or 30.0)
        except OSError as exc:
            raise DaemonUnavailable(f"cannot connect to the steelcup daemon at {where}: "
                                    f"{exc.strerror or exc}. Is the daemon running?") from exc
        sock.settimeout(self.timeout_s)
        if self.endpoint.tls is None:
            return sock
        import ssl

        from steelcup.cli.endpoint import tls_context
        from steelcup.cli.tls_socket import TlsSocket

        if self._tls is None:
            self._tls = tls_context(self.endpoint.tls)
        try:
            # duck-typed: the subset of a socket this client uses, with a TLS half-close
            return TlsSocket(sock, self._tls, self.endpoint.host)  # type: ignore[return-value]
        except (ssl.SSLError, OSError) as exc:
            sock.close()
            raise DaemonUnavailable(f"TLS with {where} failed: {exc}") from exc

    def _send_head(
        self,
        sock: _socket.socket,
        method: str,
        path: str,
        query: Query,
        headers: Mapping[str, str],
    ) -> None:
        lines = [f"{method} {self.prefix}{path}{encode_query(query)} HTTP/1.1", "Host: steelcup"]
        lines += [f"{k}: {v}" for k, v in {**self._auth, **headers}.items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    @staticmethod
    def _read_head(reader: _Reader) -> tuple[int, Headers]:
        status_line = reader.readline()
        if not status_line:
            raise SteelcupError("the daemon closed the connection without answering")
        parts = status_line.decode("latin-1").split(None, 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise SteelcupError(f"daemon sent a malformed status line: {status_line[:80]!r}")
        status = int(parts[1])
        headers: Headers = {}
        while True:
            line = reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if 100 <= status < 200 and status != 101:
            return ApiClient._read_head(reader)  # e.g. 100 Continue
        return status, headers

    def open(
        self,
        method: str,
        path: str,
        query: Query = None,
        json_body: Any = None,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        check: bool = True,
    ) -> StreamedResponse:
        """Send a request and return once the response headers arrived (body not yet read)."""
        hdrs = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body).encode()
            hdrs["Content-Type"] = "application/json"
        if body is not None or method in ("POST", "PUT"):
            hdrs["Content-Length"] = str(len(body or b""))
        sock = self._connect()
        try:
            self._send_head(sock, method, path, query, hdrs)
            if body:
                try:
                    sock.sendall(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # refused before it was all read (413): the answer says why
            reader = _Reader(sock)
            status, rheaders = self._read_head(reader)
        except BaseException:
            sock.close()
            raise
        warning = rheaders.get(WARNING_HEADER)
        if warning and not self._warned:
            self._warned = True  # once per CLI session, on stderr (stdout is the output)
            print(f"WARNING: {warning}", file=sys.stderr)
        response = StreamedResponse(sock, reader, status, rheaders)
        if check and status >= 400:
            self._raise_for(response)
        return response

    @staticmethod
    def _raise_for(response: StreamedResponse) -> None:
        try:
            data = response.read()
        finally:
            response.close()
        raise _status_error(response.status, _error_message(response.status, data))

    def request(
        self,
        method: str,
        path: str,
        query: Query = None,
        json_body: Any = None,
        **kw: Any,
    ) -> tuple[int, Headers, bytes]:
        with self.open(method, path, query, json_body, **kw) as response:
            return response.status, response.headers, response.read()

    def get(self, path: str, query: Query = None) -> tuple[int, Headers, bytes]:
        return self.request("GET", path, query)

    def post(
        self, path: str, query: Query = None, json_body: Any = None
    ) -> tuple[int, Headers, bytes]:
        return self.request("POST", path, query, json_body)

    def delete(self, path: str, query: Query = None) -> tuple[int, Headers, bytes]:
        return self.request("DELETE", path, query)

    def get_json(self, path: str, query: Query = None) -> Any:
        _, _, body = self.get(path, query)
        try:
            return json.loads(body)
        except ValueError as exc:
            raise SteelcupError(f"daemon sent invalid JSON for {path}: {exc}") from None

    def post_json(self, path: str, query: Query = None, json_body: Any = None) -> Any:
        _, _, body = self.post(path, query, json_body)
        if not body.strip():
            return None
        try:
            return json.loads(body)
        except ValueError as exc:
            raise SteelcupError(f"daemon sent invalid JSON for {path}: {exc}") from None

    def stream(
        self, method: str, path: str, query: Query = None, json_body: Any = None
    ) -> Iterator[bytes]:
        """The response body chunk by chunk (logs -f, events, ...)."""
        with self.open(method, path, query, json_body) as response:
            yield from response.iter_chunks()

    def stream_json(
        self, method: str, path: str, query: Query = None, json_body: Any = None
    ) -> Iterator[Any]:
        with self.open(method, path, query, json_body) as response:
            yield from response.iter_json()

    def upload(
        self,
        path: str,
        fileobj: BinaryIO,
        query: Query = None,
        *,
        content_type: str = "application/x-tar",
        progress: Callable[[int], None] | None = None,
    ) -> StreamedResponse:
        """POST `fileobj` with chunked transfer; `progress(bytes_sent)` after each chunk."""
        sock = self._connect()
        try:
            self._send_head(
                sock,
                "POST",
                path,
                query,
                {"Content-Type": content_type, "Transfer-Encoding": "chunked"},
            )
            sent = 0
            try:
                while True:
                    data = fileobj.read(1024 * 1024)
                    if not data:
                        break
                    sock.sendall(b"%x\r\n" % len(data) + data + b"\r\n")
                    sent += len(data)
                    if progress is not None:
                        progress(sent)
                sock.sendall(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the daemon stopped reading (an early error); its answer says why
            reader = _Reader(sock)
            status, headers = self._read_head(reader)
        except BaseException:
            sock.close()
            raise
        response = StreamedResponse(sock, reader, status, headers)
        if status >= 400:
            self._raise_for(response)
        return response

    def hijack(
        self,
        method: str,
        path: str,
        query: Query = None,
        json_body: Any = None,
    ) -> HijackedSocket:
        """Docker's attach: ask for `Upgrade: tcp`, accept 101 or 200, return the raw stream."""
        response = self.open(method, path, query, json_body,
                             headers={"Connection": "Upgrade", "Upgrade": "tcp"})
        if response.status not in (101, 200):
            response.sock.close()
            raise SteelcupError(
                f"daemon answered attach with unexpected HTTP {response.status}")
        # Bytes read past the headers already belong to the raw stream.
        return HijackedSocket(response.sock, bytes(response._reader.buf))

    def ping(self) -> bool:
        """True if a daemon answers /_ping (no auto-start)."""
        hook, self._on_unreachable = self._on_unreachable, None
        try:
            status, _, _ = self.get("/_ping")
            return status == 200
        except DaemonUnavailable:
            return False
        finally:
            self._on_unreachable = hook
