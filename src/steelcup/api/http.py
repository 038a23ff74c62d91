"""A small HTTP/1.1 server on asyncio streams (h11 parsing) that can hijack connections.

Serves the Docker Engine API: routing with `{name}` / `{name:path}` params, an optional
`/vX.YZ` prefix, JSON/streamed/raw responses and docker's attach hijack (`101 UPGRADED`).
The mapping from the exception tree to HTTP status codes lives here and nowhere else.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import h11

from steelcup.errors import (
    Conflict,
    DaemonUnavailable,
    ImageError,
    InvalidArgument,
    NotFound,
    SteelcupError,
    Unsupported,
)

log = logging.getLogger(__name__)

JSON_BODY_MAX = 16 * 1024 * 1024
READ_CHUNK = 64 * 1024
MAX_HEADER_BYTES = 64 * 1024
WS_FRAME_MAX = 16 * 1024 * 1024
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
RAW_STREAM = "application/vnd.docker.raw-stream"
# The Engine API versions served: the docker 28 CLI negotiates down to API_VERSION; docker-py 7
# and compose 1.29 (API 1.25-1.41) fall inside. A prefix below MIN_API_VERSION is a 400 (as with
# dockerd); a newer one is served as API_VERSION (dockerd would refuse it, but clients pinned by
# DOCKER_API_VERSION keep working and every response says which version answered).
API_VERSION = "1.43"
MIN_API_VERSION = "1.24"
DEFAULT_HEADERS: tuple[tuple[str, str], ...] = (
    ("Api-Version", API_VERSION),
    ("Docker-Experimental", "false"),
    ("Ostype", "linux"),
    ("Server", "steelcup"),
)
_VERSION_PREFIX = re.compile(r"^/v(\d+(?:\.\d+)?)(?=/)")
_TRUE = {"1", "true", "True", "TRUE", "yes"}
_FALSE = {"", "0", "false", "False", "FALSE", "no"}


class BodyTooLarge(InvalidArgument):
    """A request body over the endpoint's limit (answered without reading it)."""


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def check_api_version(version: str | None) -> None:
    """Reject a `/vX.Y` prefix older than the server speaks (dockerd's wording)."""
    if version is None:
        return
    if _version_tuple(version) < _version_tuple(MIN_API_VERSION):
        raise InvalidArgument(f"client version {version} is too old. Minimum supported API "
                              f"version is {MIN_API_VERSION}, please upgrade your client to a "
                              "newer version")


def error_status(exc: BaseException) -> int:
    """The one place where an exception becomes an HTTP status code."""
    if isinstance(exc, BodyTooLarge):
        return 413
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, Conflict):
        return 409
    if isinstance(exc, InvalidArgument | ImageError):
        return 400
    if isinstance(exc, Unsupported):
        return 501
    if isinstance(exc, DaemonUnavailable):
        return 503
    return 500


# --------------------------------------------------------------------------- requests


class _Closed(Exception):
    """The peer closed the connection (or broke the protocol) mid-request."""


class Request:
    """One parsed request. The body is read on demand: `await json()` or `stream()`."""

    def __init__(
        self,
        conn: _Connection,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
    ) -> None:
        self._conn = conn
        self.method = method
        split = urlsplit(target)
        self.raw_path = split.path
        prefix = _VERSION_PREFIX.match(split.path)
        self.api_version: str | None = prefix.group(1) if prefix else None
        self.path = _VERSION_PREFIX.sub("", split.path, count=1) or "/"
        self.query: dict[str, list[str]] = parse_qs(split.query, keep_blank_values=True)
        self.headers: dict[str, str] = {}
        for name, value in headers:
            key = name.lower()
            self.headers[key] = f"{self.headers[key]}, {value}" if key in self.headers else value
        self.params: dict[str, str] = {}
        self._body_started = False

    # ----- query helpers
    def q(self, name: str, default: str = "") -> str:
        """The last value of query parameter `name` (docker reads the last one too)."""
        values = self.query.get(name)
        return values[-1] if values else default

    def q_all(self, name: str) -> list[str]:
        return list(self.query.get(name, []))

    def q_bool(self, name: str, default: bool = False) -> bool:
        """Docker's boolean form: 1/true/True are true, 0/false/empty are false."""
        if name not in self.query:
            return default
        value = self.q(name)
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise InvalidArgument(f"invalid boolean value for query parameter {name!r}: {value!r}")

    def q_int(self, name: str, default: int | None = None) -> int | None:
        value = self.q(name)
        if value == "":
            return default
        try:
            return int(value)
        except ValueError:
            raise InvalidArgument(
                f"invalid integer for query parameter {name!r}: {value!r}"
            ) from None

    @property
    def wants_upgrade(self) -> bool:
        conn = self.headers.get("connection", "").lower()
        upgrade = self.headers.get("upgrade", "").lower()
        return "upgrade" in conn and "tcp" in upgrade

    # ----- body
    async def stream(self) -> AsyncIterator[bytes]:
        """The body in chunks as they arrive (Content-Length or chunked), never buffered whole."""
        if self._body_started:
            raise RuntimeError("request body already consumed")
        self._body_started = True
        async for chunk in self._conn.body_chunks():
            yield chunk

    @property
    def wants_websocket(self) -> bool:
        conn = self.headers.get("connection", "").lower()
        upgrade = self.headers.get("upgrade", "").lower()
        return "upgrade" in conn and upgrade == "websocket"

    async def body(self, limit: int = JSON_BODY_MAX) -> bytes:
        declared = self.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            self._conn.abandon_body = True
            raise BodyTooLarge(f"request body larger than {limit} bytes")
        parts: list[bytes] = []
        size = 0
        async for chunk in self.stream():
            size += len(chunk)
            if size > limit:
                self._conn.abandon_body = True
                raise BodyTooLarge(f"request body larger than {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)

    async def json(self, expect: type = dict, *, allow_empty: bool = False) -> Any:
        """The body decoded as JSON; `expect` is the required top-level type (dict or list)."""
        raw = await self.body()
        if not raw.strip():
            if allow_empty:
                return expect()
            raise InvalidArgument("request body is empty; expected JSON")
        try:
            value = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidArgument(f"invalid JSON in request body: {exc}") from None
        if not isinstance(value, expect):
            raise InvalidArgument(
                f"invalid JSON in request body: expected {_json_kind(expect)} "
                f"at top level, got {_json_kind(type(value))}"
            )
        return value


def _json_kind(kind: type) -> str:
    names: dict[type, str] = {dict: "object", list: "array", str: "string", int: "number"}
    return names.get(kind, kind.__name__)


# --------------------------------------------------------------------------- responses


class Response:
    """Base of all responses: a status and extra headers."""

    def __init__(self, status: int = 200, headers: Iterable[tuple[str, str]] = ()) -> None:
        self.status = status
        self.headers = list(headers)


class RawResponse(Response):
    def __init__(
        self,
        body: bytes,
        content_type: str = "application/octet-stream",
        status: int = 200,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        super().__init__(status, headers)
        self.body = body
        self.content_type = content_type


class JsonResponse(RawResponse):
    def __init__(
        self, obj: Any, status: int = 200, headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        super().__init__(
            json.dumps(obj, separators=(",", ":")).encode() + b"\n",
            "application/json",
            status,
            headers,
        )
        self.obj = obj


class EmptyResponse(Response):
    def __init__(self, status: int = 204, headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(status, headers)


class StreamResponse(Response):
    """A chunked body produced by `chunks`; headers go out at once (docker's wait needs that)."""

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        content_type: str = "application/json",
        status: int = 200,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        super().__init__(status, headers)
        self.chunks = chunks
        self.content_type = content_type


class HijackedStream:
    """The raw connection after the HTTP exchange; bytes the parser had buffered come first."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pending: bytes
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._pending = pending
        self._closed = False

    async def read(self, n: int = READ_CHUNK) -> bytes:
        """Up to `n` bytes; b'' once the client closed or half-closed its side."""
        if self._pending:
            data, self._pending = self._pending[:n], self._pending[n:]
            return data
        try:
            return await self._reader.read(n)
        except (ConnectionError, OSError):
            return b""

    async def write(self, data: bytes) -> None:
        """Send `data`; raises ConnectionError if the client went away."""
        if self._closed:
            raise ConnectionResetError("hijacked stream is closed")
        self._writer.write(data)
        await self._writer.drain()

    async def close_write(self) -> None:
        """Half-close: the client sees EOF but may keep sending."""
        if self._closed:
            return
        with contextlib.suppress(OSError, RuntimeError):
            await self._writer.drain()
            if self._writer.can_write_eof():
                self._writer.write_eof()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await self._writer.wait_closed()


class HijackResponse(Response):
    """Hand the connection to `handler` after `101 UPGRADED` (or `200 OK`, docker's old way)."""

    def __init__(
        self,
        handler: Callable[[HijackedStream], Awaitable[None]],
        content_type: str = RAW_STREAM,
        *,
        websocket: bool = False,
    ) -> None:
        super().__init__(200)
        self.handler = handler
        self.content_type = content_type
        self.websocket = websocket  # RFC 6455 handshake and framing instead of a raw stream


class WebSocketStream(HijackedStream):
    """A hijacked connection speaking RFC 6455: `read`/`write` carry message payloads."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pending: bytes,
        *, binary: bool = True,
    ) -> None:
        super().__init__(reader, writer, pending)
        self._buffer = b""
        self._opcode = 0x2 if binary else 0x1
        self._sent_close = False
        self._peer_closed = False

    async def _exact(self, n: int) -> bytes:
        while len(self._buffer) < n:
            data = await super().read(max(READ_CHUNK, n - len(self._buffer)))
            if not data:
                raise ConnectionResetError("websocket closed mid-frame")
            self._buffer += data
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out

    async def read(self, n: int = READ_CHUNK) -> bytes:
        """The next data frame's payload; b'' when the peer closes (or breaks the protocol)."""
        if self._peer_closed:
            return b""
        try:
            while True:
                head = await self._exact(2)
                opcode, masked, size = head[0] & 0x0F, head[1] & 0x80, head[1] & 0x7F
                if size == 126:
                    size = struct.unpack("!H", await self._exact(2))[0]
                elif size == 127:
                    size = struct.unpack("!Q", await self._exact(8))[0]
                if size > WS_FRAME_MAX:
                    raise ConnectionResetError("websocket frame too large")
                mask = await self._exact(4) if masked else b""
                payload = await self._exact(size)
                if mask:
                    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                if opcode == 0x8:
                    self._peer_closed = True
                    return b""
                if opcode == 0x9:
                    await self._frame(0xA, payload)
                    continue
                if opcode in (0x0, 0x1, 0x2) and payload:
                    return payload
        except (ConnectionError, OSError):
            self._peer_closed = True
            return b""

    async def _frame(self, opcode: int, payload: bytes) -> None:
        size = len(payload)
        if size < 126:
            head = struct.pack("!BB", 0x80 | opcode, size)
        elif size < 1 << 16:
            head = struct.pack("!BBH", 0x80 | opcode, 126, size)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 127, size)
        await super().write(head + payload)

    async def write(self, data: bytes) -> None:
        if data:
            await self._frame(self._opcode, data)

    async def close_write(self) -> None:
        if not self._sent_close:
            self._sent_close = True
            with contextlib.suppress(ConnectionError, OSError):
                await self._frame(0x8, struct.pack("!H", 1000))

    async def close(self) -> None:
        await self.close_write()
        await super().close()


def websocket_accept(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


Handler = Callable[[Request], Awaitable[Response]]


# --------------------------------------------------------------------------- routing


class Router:
    """Method + path pattern -> handler. `{name}` is one segment, `{name:path}` one or more."""

    _PARAM = re.compile(r"\{(\w+)(?::(path))?\}")

    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        if not pattern.startswith("/"):
            raise ValueError(f"route pattern must start with '/': {pattern!r}")
        regex = ""
        pos = 0
        for match in self._PARAM.finditer(pattern):
            regex += re.escape(pattern[pos : match.start()])
            body = ".+" if match.group(2) else "[^/]+"
            regex += f"(?P<{match.group(1)}>{body})"
            pos = match.end()
        regex += re.escape(pattern[pos:])
        self._routes.append((method.upper(), re.compile(regex + r"/?\Z"), handler))

    def resolve(self, method: str, path: str) -> tuple[Handler, dict[str, str]] | None:
        """The handler and decoded params; None if no path matches; NotAllowed on wrong method."""
        path_matched = False
        fallback: tuple[Handler, dict[str, str]] | None = None
        for route_method, regex, handler in self._routes:
            match = regex.match(path)
            if match is None:
                continue
            path_matched = True
            params = {k: unquote(v) for k, v in match.groupdict().items()}
            if route_method == method:
                return handler, params
            if method == "HEAD" and route_method == "GET" and fallback is None:
                fallback = (handler, params)
        if fallback is not None:
            return fallback
        if path_matched:
            raise MethodNotAllowed(method)
        return None


class MethodNotAllowed(Exception):
    pass


# --------------------------------------------------------------------------- server


class _Connection:
    """One client connection: h11 state, the streams, and the request/response cycle."""

    def __init__(
        self,
        server: HttpServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        self.method = "GET"
        self.abandon_body = False  # the body was refused unread: answer, then close
        self._eof_task: asyncio.Task[None] | None = None

    async def _read_more(self) -> None:
        try:
            data = await self.reader.read(READ_CHUNK)
        except (ConnectionError, OSError):
            data = b""
        self.h11.receive_data(data)

    async def next_event(self) -> Any:
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                if self.h11.they_are_waiting_for_100_continue:
                    await self._send(h11.InformationalResponse(status_code=100, headers=[]))
                await self._read_more()
                continue
            return event

    async def body_chunks(self) -> AsyncIterator[bytes]:
        while self.h11.their_state is h11.SEND_BODY:
            event = await self.next_event()
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return
            elif isinstance(event, h11.ConnectionClosed):
                raise _Closed("client closed the connection mid-body")

    async def drain_body(self) -> None:
        async for _ in self.body_chunks():
            pass

    async def _send(self, event: Any) -> None:
        data = self.h11.send(event)
        if data:
            self.writer.write(data)
            await self.writer.drain()

    def _headers(self, response: Response, extra: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return [*self.server.default_headers, *extra, *response.headers]

    async def serve(self) -> None:
        try:
            while True:
                try:
                    event = await self.next_event()
                except h11.RemoteProtocolError as exc:
                    await self._send_malformed(exc)
                    return
                if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                    return
                if not isinstance(event, h11.Request):
                    return
                keep_going = await self._handle(event)
                if not keep_going:
                    return
                if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
                    self.h11.start_next_cycle()
                else:
                    return
        except (_Closed, ConnectionError, h11.RemoteProtocolError):
            pass
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("HTTP connection failed")
        finally:
            if self._eof_task is not None:
                self._eof_task.cancel()
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()

    async def _send_malformed(self, exc: h11.RemoteProtocolError) -> None:
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = json.dumps({"message": f"malformed HTTP request: {exc}"}).encode()
        status = exc.error_status_hint if 400 <= exc.error_status_hint < 500 else 400
        self.writer.write(
            f"HTTP/1.1 {status} {_reason(status)}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.drain()

    async def _handle(self, event: h11.Request) -> bool:
        """Run one request; False if the connection must not be reused."""
        method = event.method.decode("ascii", "replace").upper()
        target = event.target.decode("latin-1")
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers]
        self.method = method
        request = Request(self, method, target, headers)
        try:
            response = await self._dispatch(request)
        except _Closed:
            return False
        if isinstance(response, HijackResponse):
            await self._hijack(request, response)
            return False
        if self.abandon_body:
            with contextlib.suppress(ConnectionError, OSError, h11.LocalProtocolError):
                await self._send_simple(response, close=True)
            return False
        try:
            if self.h11.their_state is h11.ERROR:
                raise h11.RemoteProtocolError("malformed request body", 400)
            await self.drain_body()
        except h11.RemoteProtocolError as exc:
            aclose = getattr(response, "chunks", None)
            if aclose is not None and hasattr(aclose, "aclose"):
                with contextlib.suppress(Exception):
                    await aclose.aclose()
            await self._send_malformed(exc)
            return False
        if isinstance(response, StreamResponse):
            return await self._send_stream(response)
        await self._send_simple(response)
        return True

    async def _dispatch(self, request: Request) -> Response:
        try:
            resolved = self.server.router.resolve(request.method, request.path)
        except MethodNotAllowed:
            return _error_response(405, f"method {request.method} not allowed")
        if resolved is None:
            return _error_response(404, "page not found")
        handler, request.params = resolved
        try:
            check_api_version(request.api_version)
            return await handler(request)
        except (_Closed, asyncio.CancelledError):
            raise
        except h11.RemoteProtocolError:
            return _error_response(400, "malformed request body")
        except SteelcupError as exc:
            status = error_status(exc)
            if status >= 500:
                log.warning("%s %s failed: %s", request.method, request.path, exc)
            return _error_response(status, str(exc))
        except Exception:
            log.exception("unhandled error in %s %s", request.method, request.path)
            return _error_response(500, "internal server error (see the daemon log)")

    async def _send_simple(self, response: Response, *, close: bool = False) -> None:
        body = b""
        extra: list[tuple[str, str]] = []
        if isinstance(response, RawResponse):
            body = response.body
            extra.append(("Content-Type", response.content_type))
        if response.status not in (204, 304):
            extra.append(("Content-Length", str(len(body))))
        if close:
            extra.append(("Connection", "close"))
        await self._send(
            h11.Response(
                status_code=response.status,
                headers=self._headers(response, extra),
                reason=_reason(response.status),
            )
        )
        if body and self.method != "HEAD" and response.status not in (204, 304):
            await self._send(h11.Data(data=body))
        await self._send(h11.EndOfMessage())

    async def _watch_eof(self) -> None:
        """Completes when the client closes while we stream (the request body is done)."""
        while True:
            try:
                data = await self.reader.read(READ_CHUNK)
            except (ConnectionError, OSError):
                return
            if not data:
                self.h11.receive_data(b"")
                return
            # A pipelined next request: keep it for the next cycle.
            self.h11.receive_data(data)

    async def _send_stream(self, response: StreamResponse) -> bool:
        chunks = response.chunks
        extra = [("Content-Type", response.content_type)]
        self._eof_task = asyncio.ensure_future(self._watch_eof())
        ok = False
        try:
            await self._send(
                h11.Response(
                    status_code=response.status,
                    headers=self._headers(response, extra),
                    reason=_reason(response.status),
                )
            )
            iterator = chunks.__aiter__()
            while True:
                step = asyncio.ensure_future(iterator.__anext__())
                done, _ = await asyncio.wait(
                    {step, self._eof_task}, return_when=asyncio.FIRST_COMPLETED
                )
                if step not in done:
                    step.cancel()
                    with contextlib.suppress(BaseException):
                        await step
                    return False  # client went away
                try:
                    chunk = step.result()
                except StopAsyncIteration:
                    break
                if chunk and self.method != "HEAD":
                    await self._send(h11.Data(data=chunk))
            await self._send(h11.EndOfMessage())
            ok = True
        except (ConnectionError, OSError):
            return False
        except Exception:
            log.exception("stream response failed after headers were sent")
            return False
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(BaseException):
                    await aclose()
            if self._eof_task is not None:
                eof_task, self._eof_task = self._eof_task, None
                if eof_task.done():
                    ok = False  # the client closed: no next request will come
                else:
                    eof_task.cancel()
                    with contextlib.suppress(BaseException):
                        await eof_task
        return ok

    async def _hijack(self, request: Request, response: HijackResponse) -> None:
        try:
            await self.drain_body()
        except (_Closed, h11.RemoteProtocolError):
            return
        extra = [f"Content-Type: {response.content_type}"]
        ws_key = request.headers.get("sec-websocket-key", "")
        if response.websocket:
            if not (request.wants_websocket and ws_key):
                await self._send_simple(_error_response(
                    400, "this endpoint needs a websocket upgrade (Connection: Upgrade, "
                    "Upgrade: websocket, Sec-WebSocket-Key)"), close=True)
                return
            head = "HTTP/1.1 101 Switching Protocols\r\n"
            extra = ["Upgrade: websocket", "Connection: Upgrade",
                     f"Sec-WebSocket-Accept: {websocket_accept(ws_key)}"]
        elif request.wants_upgrade:
            head = "HTTP/1.1 101 UPGRADED\r\n"
            extra += ["Connection: Upgrade", "Upgrade: tcp"]
        else:
            head = "HTTP/1.1 200 OK\r\n"
        lines = [f"{k}: {v}" for k, v in self.server.default_headers] + extra
        self.writer.write((head + "".join(line + "\r\n" for line in lines) + "\r\n").encode())
        try:
            await self.writer.drain()
        except (ConnectionError, OSError):
            return
        pending, _closed = self.h11.trailing_data
        stream = (WebSocketStream(self.reader, self.writer, pending) if response.websocket
                  else HijackedStream(self.reader, self.writer, pending))
        try:
            await response.handler(stream)
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("hijacked stream handler failed for %s", request.path)
        finally:
            await stream.close()


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _error_response(status: int, message: str) -> JsonResponse:
    return JsonResponse({"message": message}, status=status)


def server_tls_context(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    """dockerd's `--tlsverify`: our certificate, and clients must present one signed by `ca`."""
    try:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise InvalidArgument(f"cannot set up TLS from {ca}, {cert}, {key}: {exc}") from exc
    return context


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


class HttpServer:
    """Serves a `Router` on a unix socket (mode 0660) and optionally a TCP address.

    TCP needs `tls` (client certificates verified) unless it is bound to loopback.
    """

    def __init__(
        self,
        router: Router,
        *,
        unix_path: Path | None = None,
        tcp: tuple[str, int] | None = None,
        tls: ssl.SSLContext | None = None,
        default_headers: Iterable[tuple[str, str]] = DEFAULT_HEADERS,
    ) -> None:
        if unix_path is None and tcp is None:
            raise ValueError("HttpServer needs a unix socket path or a TCP address")
        if tcp is not None and tls is None and not _is_loopback(tcp[0]):
            raise InvalidArgument(f"refusing plain TCP on {tcp[0]}: without TLS client "
                                  "verification the API is only served on loopback")
        self.router = router
        self.unix_path = unix_path
        self.tcp = tcp
        self.tls = tls
        self.default_headers = list(default_headers)
        self._servers: list[asyncio.Server] = []
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        if self.unix_path is not None:
            self.unix_path.parent.mkdir(parents=True, exist_ok=True)
            _remove_stale_socket(self.unix_path)
            server = await asyncio.start_unix_server(self._accept, path=str(self.unix_path))
            os.chmod(self.unix_path, 0o660)
            self._servers.append(server)
        if self.tcp is not None:
            host, port = self.tcp
            if self.tls is not None:
                server = await asyncio.start_server(
                    self._accept, host, port, ssl=self.tls, ssl_handshake_timeout=10.0)
            else:
                server = await asyncio.start_server(self._accept, host, port)
            self._servers.append(server)

    @property
    def tcp_port(self) -> int | None:
        for server in self._servers:
            for sock in server.sockets:
                if sock.family in (socket.AF_INET, socket.AF_INET6):
                    return int(sock.getsockname()[1])
        return None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await _Connection(self, reader, writer).serve()
        except asyncio.CancelledError:
            pass  # close() ends connections; asyncio's stream callback dislikes cancelled tasks
        finally:
            self._connections.discard(task)

    async def close(self) -> None:
        """Stop listening, end open connections (hijacked ones too), remove the socket file."""
        for server in self._servers:
            server.close()
        for task in list(self._connections):
            task.cancel()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers.clear()
        if self.unix_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.unix_path.unlink()

    async def __aenter__(self) -> HttpServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _remove_stale_socket(path: Path) -> None:
    """Remove a socket file nobody listens on; refuse to steal a live one."""
    if not path.exists() and not path.is_symlink():
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
    except OSError:
        path.unlink()
        return
    finally:
        probe.close()
    raise DaemonUnavailable(f"another daemon is already listening on {path}")
