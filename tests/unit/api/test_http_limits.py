"""The HTTP server's deadlines and connection cap, attacked over real sockets: slow and idle
clients are closed, a flood of connections is refused, long-lived streams are left alone."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from steelcup.api.http import (
    HijackedStream,
    HijackResponse,
    RawResponse,
    Request,
    Response,
    Router,
    StreamResponse,
)

Serve = Callable[..., Path]
PING = b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n"


def router() -> Router:
    r = Router()

    async def ping(req: Request) -> Response:
        return RawResponse(b"OK", "text/plain")

    async def slow_stream(req: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            for word in (b"one\n", b"two\n"):
                await asyncio.sleep(0.6)  # longer than either deadline in these tests
                yield word

        return StreamResponse(chunks(), "text/plain")

    async def attach(req: Request) -> Response:
        async def run(stream: HijackedStream) -> None:
            data = await stream.read(100)  # sent by the client after the deadlines passed
            await stream.write(data.upper())
            await stream.close_write()

        return HijackResponse(run)

    async def small(req: Request) -> Response:
        return RawResponse(await req.body(limit=1024), "text/plain")

    r.add("GET", "/_ping", ping)
    r.add("POST", "/small", small)
    r.add("GET", "/slow", slow_stream)
    r.add("POST", "/attach", attach)
    return r


def connect(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(str(path))
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    out = b""
    while data := sock.recv(65536):
        out += data
    return out


def read_one_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    while len(rest) < length:
        rest += sock.recv(65536)
    return head + b"\r\n\r\n" + rest


def test_incomplete_head_is_cut_at_the_deadline_even_when_trickled(serve: Serve) -> None:
    path = serve(router(), head_timeout_s=0.5, idle_timeout_s=60)
    sock = connect(path)
    t0 = time.monotonic()
    closed_after = None
    try:
        for byte in b"GET /_ping HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
            sock.sendall(bytes([byte]))  # slow-loris: each byte well within any read timeout
            time.sleep(0.05)
    except (BrokenPipeError, ConnectionResetError):
        closed_after = time.monotonic() - t0
    data = read_until_closed(sock)
    elapsed = closed_after if closed_after is not None else time.monotonic() - t0
    assert elapsed < 3
    if data:
        assert data.startswith(b"HTTP/1.1 408 ")
        assert b"no complete request head within 0.5 seconds" in data


def test_silent_new_connection_is_closed(serve: Serve) -> None:
    path = serve(router(), head_timeout_s=0.3, idle_timeout_s=60)
    sock = connect(path)
    t0 = time.monotonic()
    assert read_until_closed(sock).startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - t0 < 3


def test_idle_keepalive_connection_is_closed_but_a_busy_one_is_not(serve: Serve) -> None:
    path = serve(router(), head_timeout_s=60, idle_timeout_s=1.0)
    sock = connect(path)
    for _ in range(4):  # requests 0.2 s apart: well within the idle timeout on a busy host
        sock.sendall(PING)
        assert read_one_response(sock).endswith(b"OK")
        time.sleep(0.2)
    t0 = time.monotonic()
    assert read_until_closed(sock) == b""  # closed quietly, nothing half-sent
    assert time.monotonic() - t0 < 3


def test_streams_and_hijacked_connections_outlive_the_deadlines(serve: Serve) -> None:
    path = serve(router(), head_timeout_s=0.3, idle_timeout_s=0.3)
    sock = connect(path)
    sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    body = b""
    while b"0\r\n\r\n" not in body:
        data = sock.recv(65536)
        assert data, "the stream was cut"
        body += data
    assert b"one\n" in body and b"two\n" in body
    sock.close()

    sock = connect(path)
    sock.sendall(b"POST /attach HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n"
                 b"Content-Length: 0\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 101 ")
    time.sleep(1.0)  # a quiet attach session, longer than both deadlines
    sock.sendall(b"still here")
    assert read_until_closed(sock) == b"STILL HERE"


def test_connections_over_the_cap_are_refused_with_503(serve: Serve) -> None:
    path = serve(router(), max_connections=2)
    held = [connect(path), connect(path)]
    for sock in held:  # both accepted and served
        sock.sendall(PING)
        assert read_one_response(sock).endswith(b"OK")
    extra = connect(path)
    refused = read_until_closed(extra)
    assert refused.startswith(b"HTTP/1.1 503 ")
    message: Any = json.loads(refused.partition(b"\r\n\r\n")[2])["message"]
    assert message == "too many open connections (limit 2)"
    held.pop().close()
    deadline = time.monotonic() + 5
    while True:  # the server notices the close asynchronously
        again = connect(path)
        again.sendall(PING)
        reply = again.recv(65536)
        if reply.startswith(b"HTTP/1.1 200 "):
            break
        assert time.monotonic() < deadline, reply
        again.close()
        time.sleep(0.05)
    again.close()
    held[0].close()


def test_a_refused_body_still_gets_its_answer_while_the_client_sends_it(serve: Serve) -> None:
    """413 before the body is read: the server drops what the client still sends (a lingering
    close) instead of resetting the connection under it, so the client reads the 413."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    serve(router(), tcp=("127.0.0.1", port))  # TCP: a close with unread data resets it
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    body = b"x" * (4 << 20)
    sock.sendall(b"POST /small HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
    sent = 0
    try:
        while sent < len(body):
            sent += sock.send(body[sent:sent + 65536])
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server may stop reading after a while: the answer is what matters
    answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"larger than 1024 bytes" in answer
