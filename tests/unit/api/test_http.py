"""The HTTP server over a real unix socket: routing, errors, streaming, uploads, hijack."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from steelcup.api.filters import parse_filters
from steelcup.api.http import (
    EmptyResponse,
    HijackedStream,
    HijackResponse,
    JsonResponse,
    RawResponse,
    Request,
    Response,
    Router,
    StreamResponse,
)
from steelcup.cli.client import ApiClient
from steelcup.errors import Conflict, InvalidArgument, NotFound, Unsupported

Serve = Callable[[Router], Path]


def connect(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(str(path))
    return sock


def read_response(sock: socket.socket, head: bool = False) -> tuple[int, dict[str, str], bytes]:
    """Read one Content-Length response (enough for these tests)."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        if not more:
            break
        data += more
    top, _, rest = data.partition(b"\r\n\r\n")
    lines = top.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    length = 0 if head else int(headers.get("content-length", "0"))
    while len(rest) < length:
        more = sock.recv(65536)
        if not more:
            break
        rest += more
    return status, headers, rest[:length]


def basic_router() -> Router:
    router = Router()

    async def container(req: Request) -> Response:
        return JsonResponse({"id": req.params["id"], "all": req.q_bool("all"), "n": req.q("n")})

    async def image(req: Request) -> Response:
        return JsonResponse({"name": req.params["name"]})

    async def ping(req: Request) -> Response:
        return RawResponse(b"OK", "text/plain")

    async def delete(req: Request) -> Response:
        return EmptyResponse()

    async def echo_json(req: Request) -> Response:
        return JsonResponse(await req.json(), status=201)

    async def fail(req: Request) -> Response:
        kind = req.params["kind"]
        errors: dict[str, Exception] = {
            "notfound": NotFound("No such container: x"),
            "conflict": Conflict("name in use"),
            "invalid": InvalidArgument("bad"),
            "unsupported": Unsupported("nope"),
            "boom": RuntimeError("secret internal detail"),
        }
        raise errors[kind]

    router.add("GET", "/containers/{id}/json", container)
    router.add("DELETE", "/containers/{id}", delete)
    router.add("GET", "/images/{name:path}/json", image)
    router.add("GET", "/_ping", ping)
    router.add("POST", "/echo", echo_json)
    router.add("GET", "/fail/{kind}", fail)
    return router


def test_routing_params_and_version_prefix(serve: Serve) -> None:
    path = serve(basic_router())
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    client = ApiClient(path)
    assert client.get_json("/containers/abc/json", {"all": "True", "n": 3}) == {
        "id": "abc",
        "all": True,
        "n": "3",
    }
    client.prefix = ""  # no version prefix at all
    assert client.get_json("/images/library/busybox:1.36/json") == {"name": "library/busybox:1.36"}
    client.prefix = "/v1.47"
    assert client.get_json("/images/localhost:5000/a/b/json") == {"name": "localhost:5000/a/b"}
    status, headers, body = client.get("/_ping")
    assert (status, body, headers["api-version"]) == (200, b"OK", "1.43")
    status, _, body = client.delete("/containers/abc")
    assert (status, body) == (204, b"")


def test_unknown_route_and_wrong_method(serve: Serve) -> None:
    path = serve(basic_router())
    sock = connect(path)
    sock.sendall(b"GET /v1.43/nothing HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = read_response(sock)
    assert (status, json.loads(body)) == (404, {"message": "page not found"})
    # keep-alive: the same connection serves the next request
    sock.sendall(
        b"POST /v1.43/containers/abc/json HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    )
    status, _, _ = read_response(sock)
    assert status == 405
    sock.sendall(b"HEAD /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, _ = read_response(sock, head=True)
    assert status == 200 and headers["content-type"] == "text/plain"
    sock.close()


@pytest.mark.parametrize(
    ("kind", "status", "message"),
    [
        ("notfound", 404, "No such container: x"),
        ("conflict", 409, "name in use"),
        ("invalid", 400, "bad"),
        ("unsupported", 501, "nope"),
        ("boom", 500, "internal server error (see the daemon log)"),
    ],
)
def test_error_mapping(serve: Serve, kind: str, status: int, message: str) -> None:
    path = serve(basic_router())
    sock = connect(path)
    sock.sendall(f"GET /fail/{kind} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    got_status, headers, body = read_response(sock)
    assert got_status == status
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {"message": message}
    assert b"secret" not in body


def test_client_maps_errors(serve: Serve) -> None:
    client = ApiClient(serve(basic_router()))
    with pytest.raises(NotFound, match="No such container: x"):
        client.get("/fail/notfound")
    with pytest.raises(Conflict):
        client.get("/fail/conflict")


def test_json_body_errors(serve: Serve) -> None:
    client = ApiClient(serve(basic_router()))
    assert client.post_json("/echo", json_body={"Image": "busybox"}) == {"Image": "busybox"}
    with pytest.raises(InvalidArgument, match="expected object at top level, got array"):
        client.post("/echo", json_body=[1, 2])
    with pytest.raises(InvalidArgument, match="invalid JSON"):
        client.request("POST", "/echo", body=b"{not json")
    with pytest.raises(InvalidArgument, match="empty"):
        client.request("POST", "/echo", body=b"")


def test_deeply_nested_json_is_a_400_not_a_recursion_error(serve: Serve) -> None:
    router = basic_router()

    async def listing(req: Request) -> Response:
        return JsonResponse(parse_filters(req.q("filters")))

    router.add("GET", "/list", listing)
    path = serve(router)
    sock = connect(path)
    body = b"[" * 100_000
    sock.sendall(b"POST /v1.43/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(body) + body)
    status, _, reply = read_response(sock)
    assert status == 400
    assert json.loads(reply)["message"] == (
        "invalid JSON in request body: nested deeper than 100 levels")
    deep = quote('{"a":' * 3000 + "1" + "}" * 3000)  # fits the 64 KiB head limit
    sock.sendall(f"GET /v1.43/list?filters={deep} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    status, _, reply = read_response(sock)
    assert status == 400 and "nested deeper" in json.loads(reply)["message"]
    sock.close()


def test_stream_response_and_client_going_away(serve: Serve) -> None:
    finished = threading.Event()
    router = Router()

    async def finite(req: Request) -> Response:
        async def gen() -> AsyncIterator[bytes]:
            for i in range(5):
                yield json.dumps({"n": i}).encode() + b"\n"

        return StreamResponse(gen())

    async def endless(req: Request) -> Response:
        async def gen() -> AsyncIterator[bytes]:
            try:
                yield b'{"first":true}\n'
                while True:
                    await asyncio.sleep(3600)  # idle: only the client's EOF can end this
                    yield b"x"
            finally:
                finished.set()

        return StreamResponse(gen())

    router.add("GET", "/finite", finite)
    router.add("GET", "/endless", endless)
    client = ApiClient(serve(router))
    assert [m["n"] for m in client.stream_json("GET", "/finite")] == [0, 1, 2, 3, 4]

    response = client.open("GET", "/endless")
    assert response.headers["transfer-encoding"] == "chunked"
    assert next(response.iter_json()) == {"first": True}
    response.close()
    assert finished.wait(5), "server kept streaming to a client that went away"


def test_chunked_upload_100mb_bounded_memory(serve: Serve) -> None:
    router = Router()
    seen: dict[str, int] = {}

    async def upload(req: Request) -> Response:
        total = 0
        biggest = 0
        async for chunk in req.stream():
            total += len(chunk)
            biggest = max(biggest, len(chunk))
        seen["biggest"] = biggest
        return JsonResponse({"bytes": total})

    router.add("POST", "/images/load", upload)
    client = ApiClient(serve(router))
    block = b"\xab" * (1024 * 1024)

    class Source:
        """100 MiB without holding 100 MiB."""

        def __init__(self) -> None:
            self.left = 100

        def read(self, n: int = -1) -> bytes:
            if self.left == 0:
                return b""
            self.left -= 1
            return block

    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        response = client.upload("/images/load", Source())  # type: ignore[arg-type]
        result = json.loads(response.read())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result == {"bytes": 100 * 1024 * 1024}
    assert peak < 16 * 1024 * 1024, f"peak traced memory {peak} bytes"
    assert seen["biggest"] <= 1024 * 1024

    # Content-Length framed upload over a raw socket, sent in pieces
    sock = connect(client.socket_path and Path(client.socket_path))
    size = 5 * 1024 * 1024 + 3
    sock.sendall(b"POST /images/load HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
    sent = 0
    while sent < size:
        piece = block[: min(len(block), size - sent)]
        sock.sendall(piece)
        sent += len(piece)
    status, _, body = read_response(sock)
    assert (status, json.loads(body)) == (200, {"bytes": size})


def hijack_router(log: list[str]) -> Router:
    router = Router()

    async def attach(req: Request) -> Response:
        opts = await req.json(allow_empty=True)

        async def run(stream: HijackedStream) -> None:
            await stream.write(b"hello " + opts.get("who", "you").encode() + b"\n")
            received = b""
            while True:
                data = await stream.read(7)
                if not data:
                    break
                received += data
            log.append("eof")
            await stream.write(received.upper())
            await stream.close_write()

        return HijackResponse(run)

    router.add("POST", "/containers/{id}/attach", attach)
    return router


def read_all(sock: Any) -> bytes:
    out = b""
    while True:
        data = sock.recv(65536)
        if not data:
            return out
        out += data


def test_hijack_upgrade_with_half_close(serve: Serve) -> None:
    log: list[str] = []
    client = ApiClient(serve(hijack_router(log)))
    conn = client.hijack("POST", "/containers/c1/attach", {"stream": 1}, {"who": "bob"})
    conn.sendall(b"some stdin ")
    conn.sendall(b"data")
    conn.close_write()
    assert read_all(conn) == b"hello bob\nSOME STDIN DATA"
    assert log == ["eof"]
    conn.close()


def test_hijack_hands_over_buffered_bytes_and_plain_200(serve: Serve) -> None:
    log: list[str] = []
    path = serve(hijack_router(log))
    sock = connect(path)
    # Request, body and the first stream bytes in one write: h11 buffers the stream bytes.
    body = b'{"who":"al"}'
    sock.sendall(
        b"POST /v1.43/containers/c1/attach?stdin=1 HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%sbuffered-bytes"
        % (len(body), body)
    )
    sock.shutdown(socket.SHUT_WR)
    data = read_all(sock)
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Type: application/vnd.docker.raw-stream" in head
    assert b"Content-Length" not in head and b"chunked" not in head
    assert rest == b"hello al\nBUFFERED-BYTES"

    sock = connect(path)
    sock.sendall(
        b"POST /containers/c1/attach HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
        b"Upgrade: tcp\r\n\r\nearly"
    )
    sock.shutdown(socket.SHUT_WR)
    data = read_all(sock)
    assert data.startswith(b"HTTP/1.1 101 UPGRADED\r\n")
    assert b"Upgrade: tcp" in data and b"Connection: Upgrade" in data
    assert data.endswith(b"\r\n\r\nhello you\nEARLY")


def test_hijacked_stream_bytes_never_share_a_read_with_the_response_head(serve: Serve) -> None:
    """docker-py reads the head through a buffered reader and then the raw socket: stream bytes
    that arrived with the head were lost (a quick exec's output, when the client was slow)."""
    sock = connect(serve(hijack_router([])))
    sock.sendall(b"POST /containers/c1/attach HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                 b"Upgrade: tcp\r\n\r\n")
    time.sleep(0.3)  # a descheduled client: the server has long written its first bytes
    head = sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 101 UPGRADED\r\n") and head.endswith(b"\r\n\r\n"), head
    assert sock.recv(65536) == b"hello you\n"
    sock.close()


@pytest.mark.parametrize(
    "garbage",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost x\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n",
        b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\n\r\n",
    ],
)
def test_malformed_requests_get_400_and_server_keeps_serving(serve: Serve, garbage: bytes) -> None:
    path = serve(basic_router())
    sock = connect(path)
    try:
        sock.sendall(garbage)
    except BrokenPipeError:
        pass
    data = read_all(sock)
    assert data.startswith(b"HTTP/1.1 4"), data[:100]
    assert b"Connection: close" in data or b"connection: close" in data
    client = ApiClient(path)
    assert client.get("/_ping")[2] == b"OK"


def test_stale_socket_is_replaced(serve: Serve, tmp_path: Path) -> None:
    stale = tmp_path / "run" / "api.sock"
    stale.parent.mkdir(parents=True)
    left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left.bind(str(stale))  # bound but never listening: a crashed daemon's leftover
    left.close()
    path = serve(basic_router())
    assert path == stale
    t0 = time.monotonic()
    assert ApiClient(path).get("/_ping")[2] == b"OK"
    assert time.monotonic() - t0 < 5
