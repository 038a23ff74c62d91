"""The API's own TLS (api/tls_stream.py) on a real TCP listener: a client's close_notify is a
half-close, as docker's CloseWrite needs, and everything else works as on plain streams."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from steelcup.api.http import HijackedStream, HijackResponse, HttpServer, Request, Response, Router
from steelcup.api.tls import server_tls_context
from steelcup.cli.client import ApiClient
from steelcup.cli.endpoint import Endpoint, TlsFiles
from steelcup.tenancy.credentials import Authority


def echo_router() -> Router:
    """`attach`: says hello, reads to EOF, answers the upper-cased input (and its size)."""
    router = Router()

    async def attach(req: Request) -> Response:
        async def run(stream: HijackedStream) -> None:
            await stream.write(b"hello\n")
            received = bytearray()
            while data := await stream.read():
                received += data
            await stream.write(bytes(received).upper() + b"|%d" % len(received))
            await stream.close_write()
        return HijackResponse(run)

    async def ping(req: Request) -> Response:
        from steelcup.api.http import JsonResponse
        return JsonResponse({"ok": True})

    router.add("POST", "/containers/{id}/attach", attach)
    router.add("GET", "/ping", ping)
    return router


@dataclass
class Tls:
    port: int
    files: TlsFiles

    def client(self) -> ApiClient:
        return ApiClient(Endpoint(host="127.0.0.1", port=self.port, tls=self.files),
                         timeout_s=20)


@pytest.fixture
def tls(tmp_path: Path) -> Iterator[Tls]:
    authority = Authority(tmp_path / "ca")
    cert, key = authority.server_files(["127.0.0.1"])
    issued = authority.issue_client("op", "k1")
    (tmp_path / "cert.pem").write_bytes(issued.cert_pem)
    (tmp_path / "key.pem").write_bytes(issued.key_pem)
    context = server_tls_context(authority.ca_pem_path, cert, key)
    ready = threading.Event()
    box: list[object] = []

    async def run() -> None:
        server = HttpServer(echo_router(), tcp=("127.0.0.1", 0), tls=context)
        await server.start()
        stop = asyncio.Event()
        box.extend([asyncio.get_running_loop(), stop, server.tcp_port])
        ready.set()
        await stop.wait()
        await server.close()

    thread = threading.Thread(target=asyncio.run, args=(run(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    loop, stop, port = box
    yield Tls(int(port),  # type: ignore[call-overload]
              TlsFiles(str(authority.ca_pem_path), str(tmp_path / "cert.pem"),
                       str(tmp_path / "key.pem"), True))
    loop.call_soon_threadsafe(stop.set)  # type: ignore[attr-defined]
    thread.join(10)


def read_all(conn: object) -> bytes:
    out = b""
    while data := conn.recv(65536):  # type: ignore[attr-defined]
        out += data
    return out


def test_a_close_notify_is_a_half_close_and_output_keeps_coming(tls: Tls) -> None:
    conn = tls.client().hijack("POST", "/containers/c1/attach", {"stream": 1})
    conn.sendall(b"stdin over tls")
    conn.close_write()
    assert read_all(conn) == b"hello\nSTDIN OVER TLS|14"
    conn.close()


def test_large_streams_both_ways_while_another_thread_writes(tls: Tls) -> None:
    """Stdin pumped from a thread while the main thread reads (the CLI's attach)."""
    payload = bytes(range(97, 123)) * 80_000  # ~2 MB, past every buffer
    conn = tls.client().hijack("POST", "/containers/c1/attach", {"stream": 1})

    def pump() -> None:
        for i in range(0, len(payload), 50_000):
            conn.sendall(payload[i:i + 50_000])
        conn.close_write()

    writer = threading.Thread(target=pump)
    writer.start()
    got = read_all(conn)
    writer.join(20)
    assert got == b"hello\n" + payload.upper() + b"|%d" % len(payload)
    conn.close()


def test_a_failed_handshake_leaves_the_listener_serving(tls: Tls) -> None:
    with socket.create_connection(("127.0.0.1", tls.port), timeout=10) as plain:
        plain.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        plain.recv(1024)  # whatever comes back (a TLS alert), then the end
    for _ in range(3):
        assert tls.client().get_json("/ping") == {"ok": True}


def test_a_client_stalling_in_the_handshake_or_sending_garbage_blocks_nobody(tls: Tls) -> None:
    """Attacks on the listener before authentication: a connection that never finishes its
    TLS handshake, one that sends random bytes, one that closes mid-handshake."""
    stalled = socket.create_connection(("127.0.0.1", tls.port), timeout=10)
    garbage = socket.create_connection(("127.0.0.1", tls.port), timeout=10)
    garbage.sendall(bytes(range(256)) * 64)
    half = socket.create_connection(("127.0.0.1", tls.port), timeout=10)
    half.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello's start
    half.close()
    try:
        for _ in range(3):  # served while the others hang or fail
            assert tls.client().get_json("/ping") == {"ok": True}
        garbage.settimeout(10)
        with contextlib.suppress(ConnectionResetError):
            while garbage.recv(4096):  # an alert, then the end: the server closed it
                pass
    finally:
        stalled.close()
        garbage.close()
