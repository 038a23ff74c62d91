"""The API's HTTP/1.1 server on asyncio streams (h11 parsing): unix/TCP listeners, one task per
connection, dispatch through a `Router`, response writing and docker's attach hijack.

The mapping from the exception tree to HTTP status codes lives here and nowhere else. The
request/response types and the router are re-exported for the route modules.

Only waiting for a request head has deadlines (a complete head within `head_timeout_s`, the
first byte of the next one within `idle_timeout_s` on a kept-alive connection); once a request
is being served, its body, streamed response or hijacked stream may run as long as it needs.
Connections beyond `max_connections` are answered 503 and closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from http import HTTPStatus
from pathlib import Path
from typing import Any

import h11

from steelcup.api import tls_stream
from steelcup.api.hijack import READ_CHUNK, HijackedStream, WebSocketStream, websocket_accept
from steelcup.api.http_types import (
    BodyTooLarge,
    EmptyResponse,
    HijackResponse,
    JsonResponse,
    Principal,
    RawResponse,
    Request,
    Response,
    StreamResponse,
)
from steelcup.api.router import MethodNotAllowed, Router, operator_only
from steelcup.api.tls import is_loopback_host, server_tls_context
from steelcup.api.versions import API_VERSION, DEFAULT_HEADERS, MIN_API_VERSION, check_api_version
from steelcup.errors import (
    Conflict,
    DaemonUnavailable,
    Forbidden,
    ImageError,
    InvalidArgument,
    NotFound,
    SteelcupError,
    TooBusy,
    Unauthorized,
    Unavailable,
    Unsupported,
)

__all__ = [  # the server, and what route modules import from here
    "API_VERSION",
    "MIN_API_VERSION",
    "EmptyResponse",
    "HijackResponse",
    "HijackedStream",
    "HttpServer",
    "Identify",
    "JsonResponse",
    "Principal",
    "RawResponse",
    "Request",
    "Response",
    "Router",
    "StreamResponse",
    "error_status",
    "operator_only",
    "server_tls_context",
]
# The TCP listener's authentication: (the verified client certificate in DER form, the bearer
# token of the Authorization header) -> who the request speaks for, None to refuse it (401).
Identify = Callable[[bytes | None, str | None], Principal | None]
Handler = Callable[[Request], Awaitable[Response]]
# Told each answer: method, route pattern, status, seconds (steelcup.metrics).
Observe = Callable[[str, str, int, float], None]


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None

log = logging.getLogger(__name__)
MAX_HEADER_BYTES = 64 * 1024
HEAD_TIMEOUT_S = 30.0  # from the connection (or the next request's first byte) to a full head
IDLE_TIMEOUT_S = 120.0  # a kept-alive connection with no next request is closed after this
MAX_CONNECTIONS = 1024  # open connections, streaming and hijacked ones included
# After an answer to a request whose body was refused unread (413, the func gateway's 404):
# what the client still sends is read and dropped for this long, at most this much, before
# the connection closes. Closing with unread data would reset the connection, and a client
# still sending its body would lose the answer with it (a lingering close, as nginx does).
LINGER_S = 2.0
LINGER_BYTES = 8 << 20


def error_status(exc: BaseException) -> int:
    """The one place where an exception becomes an HTTP status code."""
    if isinstance(exc, BodyTooLarge):
        return 413
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, Unauthorized):
        return 401
    if isinstance(exc, Forbidden):
        return 403
    if isinstance(exc, Conflict):
        return 409
    if isinstance(exc, InvalidArgument | ImageError):
        return 400
    if isinstance(exc, TooBusy):
        return 429
    if isinstance(exc, Unsupported):
        return 501
    if isinstance(exc, DaemonUnavailable | Unavailable):
        return 503
    return 500


class _Closed(Exception):
    """The peer closed the connection (or broke the protocol) mid-request."""


class _HeadTimeout(Exception):
    """No complete request head arrived within the server's head deadline."""


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
        # Unix-socket peers are the operator; TCP peers are whoever `server.identify` says.
        self.tcp = not isinstance(writer.get_extra_info("sockname"), str | bytes)
        ssl_object = writer.get_extra_info("ssl_object")
        self.peer_cert: bytes | None = (ssl_object.getpeercert(binary_form=True)
                                        if ssl_object is not None else None)
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

    async def _next_request_head(self, *, first: bool) -> Any:
        """The next h11 event of a new request cycle, within the server's deadlines.

        None when a kept-alive connection stays idle too long; `_HeadTimeout` when bytes of
        a head arrived but not the whole head in time (slow-loris)."""
        pending, closed = self.h11.trailing_data
        if not first and not pending and not closed:
            try:
                async with asyncio.timeout(self.server.idle_timeout_s):
                    await self._read_more()
            except TimeoutError:
                return None
        try:
            async with asyncio.timeout(self.server.head_timeout_s):
                return await self.next_event()
        except TimeoutError:
            raise _HeadTimeout from None

    async def serve(self) -> None:
        first = True
        try:
            while True:
                try:
                    event = await self._next_request_head(first=first)
                except h11.RemoteProtocolError as exc:
                    await self._send_malformed(exc)
                    return
                except _HeadTimeout:
                    await self._send_head_timeout()
                    return
                first = False
                if event is None:
                    return  # idle keep-alive connection: close it quietly
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
        status = exc.error_status_hint if 400 <= exc.error_status_hint < 500 else 400
        await _send_and_close(self.writer, status, f"malformed HTTP request: {exc}")

    async def _send_head_timeout(self) -> None:
        log.info("closing a connection that sent no complete request head within %gs",
                 self.server.head_timeout_s)
        await _send_and_close(
            self.writer, 408,
            f"no complete request head within {self.server.head_timeout_s:g} seconds")

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
                await self._linger()
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

    async def _linger(self) -> None:
        """Our side is done: say so (half-close), then drop what the client still sends, for
        LINGER_S or LINGER_BYTES at most, so the answer reaches it before the close."""
        if self.writer.can_write_eof():
            self.writer.write_eof()
        dropped = 0
        with contextlib.suppress(TimeoutError, ConnectionError, OSError):
            async with asyncio.timeout(LINGER_S):
                while dropped < LINGER_BYTES:
                    data = await self.reader.read(READ_CHUNK)
                    if not data:
                        break
                    dropped += len(data)

    async def _dispatch(self, request: Request) -> Response:
        """The route's answer; the server's `observe` is told the method, the route's pattern
        ("other" for a path no route matches), the status and the seconds it took."""
        began = time.monotonic()
        route = "other"
        response: Response
        try:
            resolved = self.server.router.resolve(request.method, request.path)
        except MethodNotAllowed:
            response = _error_response(405, f"method {request.method} not allowed")
        else:
            if resolved is None:
                response = _error_response(404, "page not found")
            else:
                handler, request.params, route = resolved
                response = await self._call(handler, request)
        if self.server.observe is not None:
            self.server.observe(request.method, route, response.status,
                                time.monotonic() - began)
        return response

    async def _call(self, handler: Handler, request: Request) -> Response:
        try:
            if self.tcp and self.server.identify is not None:
                principal = self.server.identify(self.peer_cert, _bearer(request))
                if principal is None:
                    raise Unauthorized("authentication required: present a client certificate "
                                       "or a bearer token of a tenant key")
                request.principal = principal
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
        lines = ([f"{k}: {v}" for k, v in self.server.default_headers] + extra
                 + [f"{k}: {v}" for k, v in response.headers])
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


async def _send_and_close(writer: asyncio.StreamWriter, status: int, message: str) -> None:
    """A complete error response written outside h11 (the request was never parsed)."""
    body = json.dumps({"message": message}).encode()
    writer.write(
        f"HTTP/1.1 {status} {_reason(status)}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    with contextlib.suppress(ConnectionError, OSError):
        await writer.drain()


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _error_response(status: int, message: str) -> JsonResponse:
    return JsonResponse({"message": message}, status=status)


class HttpServer:
    """Serves a `Router` on a unix socket (mode 0660) and optionally a TCP address.

    TCP needs `tls` (client certificates verified) unless it is bound to loopback. The
    deadlines and the connection cap are described in the module docstring.
    """

    def __init__(
        self,
        router: Router,
        *,
        unix_path: Path | None = None,
        tcp: tuple[str, int] | None = None,
        tls: ssl.SSLContext | None = None,
        default_headers: Iterable[tuple[str, str]] = DEFAULT_HEADERS,
        head_timeout_s: float = HEAD_TIMEOUT_S,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        max_connections: int = MAX_CONNECTIONS,
        identify: Identify | None = None,
        observe: Observe | None = None,
        plain_tcp_anywhere: bool = False,
    ) -> None:
        if unix_path is None and tcp is None:
            raise ValueError("HttpServer needs a unix socket path or a TCP address")
        # `plain_tcp_anywhere`: a router that authenticates each request itself (the func
        # gateway) or serves only what its operator chose to publish (--metrics-listen).
        if (tcp is not None and tls is None and not is_loopback_host(tcp[0])
                and not plain_tcp_anywhere):
            raise InvalidArgument(f"refusing plain TCP on {tcp[0]}: without TLS client "
                                  "verification the API is only served on loopback")
        self.router = router
        self.unix_path = unix_path
        self.tcp = tcp
        self.tls = tls
        self.default_headers = list(default_headers)
        self.head_timeout_s = head_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.max_connections = max_connections
        # None: every TCP peer TLS let in is the operator (dockerd's --tlsverify)
        self.identify = identify
        self.observe = observe  # told every answer (steelcup.metrics)
        self._servers: list[asyncio.Server] = []
        self._connections: set[asyncio.Task[None]] = set()
        self._refusing = False  # over the cap: logged once per episode, not per connection

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
                # TLS of our own over the TCP stream: asyncio's ends the whole connection on
                # a client's close_notify, and docker's attach half-closes (tls_stream.py).
                server = await asyncio.start_server(self._accept_tls, host, port)
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
        if len(self._connections) >= self.max_connections:
            await self._refuse(writer)
            return
        if self._refusing:
            self._refusing = False
            log.info("accepting connections again (%d open)", len(self._connections))
        self._connections.add(task)
        try:
            await _Connection(self, reader, writer).serve()
        except asyncio.CancelledError:
            pass  # close() ends connections; asyncio's stream callback dislikes cancelled tasks
        finally:
            self._connections.discard(task)

    async def _accept_tls(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        assert self.tls is not None
        try:
            reader, writer = await tls_stream.accept(reader, writer, self.tls)
        except (ssl.SSLError, ConnectionError, OSError, TimeoutError) as exc:
            log.debug("TLS handshake with %s failed: %s", writer.get_extra_info("peername"),
                      exc)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            return
        await self._accept(reader, writer)

    async def _refuse(self, writer: asyncio.StreamWriter) -> None:
        if not self._refusing:
            self._refusing = True
            log.warning("refusing connections: %d open, the limit is %d",
                        len(self._connections), self.max_connections)
        try:
            await _send_and_close(
                writer, 503, f"too many open connections (limit {self.max_connections})")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

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
