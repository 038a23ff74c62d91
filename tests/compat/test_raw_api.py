"""Malformed and hostile requests over a raw unix socket: 4xx JSON, and the daemon keeps serving.

Also the websocket attach (`/containers/{id}/attach/ws`), spoken by hand (RFC 6455).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time

import pytest

from tests.compat.conftest import IMG, Docker

pytestmark = pytest.mark.vm


def raw(dockerd: Docker, data: bytes, timeout: float = 60) -> tuple[int, dict[str, str], bytes]:
    """Send bytes, read one response (Content-Length bodies), return status, headers, body."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(str(dockerd.daemon.socket))
        s.sendall(data)
        return read_response(s)


def read_response(s: socket.socket) -> tuple[int, dict[str, str], bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


def request(dockerd: Docker, method: str, path: str, body: bytes | None = None,
            content_type: str = "application/json") -> tuple[int, dict[str, str], bytes]:
    head = f"{method} {path} HTTP/1.1\r\nHost: docker\r\n"
    if body is not None:
        head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
    return raw(dockerd, head.encode() + b"\r\n" + (body or b""))


def assert_json_error(result: tuple[int, dict[str, str], bytes], status: int) -> str:
    code, headers, body = result
    assert code == status, (code, body)
    assert headers["content-type"].startswith("application/json")
    message = json.loads(body)["message"]
    assert isinstance(message, str) and message
    return message


def alive(dockerd: Docker) -> None:
    code, _, body = request(dockerd, "GET", "/_ping")
    assert (code, body) == (200, b"OK")


CREATE = "/v1.43/containers/create"


@pytest.mark.parametrize("body, status, words", [
    (b"{not json", 400, "invalid JSON"),
    (b"[1, 2]", 400, "object"),
    (b'{"Image": 5}', 400, "Image"),
    (b'{"Image": "x", "Env": "A=1"}', 400, "Env"),
    (b'{"Image": "x", "HostConfig": {"Memory": "lots"}}', 400, "Memory"),
    (b'{"Image": "x", "HostConfig": {"RestartPolicy": {"Name": "sometimes"}}}', 400, "restart"),
    (b'{"Image": "x", "HostConfig": {"AutoRemove": true, "RestartPolicy": {"Name": "always"}}}',
     400, "AutoRemove"),
    (b'{"Image": "x", "Tty": "yes"}', 400, "Tty"),
    (b'{"Image": "no/such:image"}', 404, "no/such"),
    (b"\xff\xfe\x00", 400, "invalid JSON"),
])
def test_bad_create_bodies(dockerd: Docker, body: bytes, status: int, words: str) -> None:
    message = assert_json_error(request(dockerd, "POST", CREATE, body), status)
    assert words.lower() in message.lower()
    alive(dockerd)


def test_huge_body_is_refused_unread(dockerd: Docker) -> None:
    size = 20 * 1024 * 1024
    head = (f"POST {CREATE} HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\n"
            f"Content-Length: {size}\r\n\r\n").encode()
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(30)
        s.connect(str(dockerd.daemon.socket))
        s.sendall(head + b"{" + b" " * 65536)  # the daemon answers before the rest arrives
        status, headers, body = read_response(s)
    assert status == 413 and "larger than" in json.loads(body)["message"]
    alive(dockerd)


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/containers/nope0000/json", 404),
    ("POST", "/containers/nope0000/start", 404),
    ("DELETE", "/containers/nope0000", 404),
    ("GET", "/containers/nope0000/logs?stdout=1", 404),
    ("GET", "/containers/nope0000/stats?stream=0", 404),
    ("POST", "/containers/nope0000/pause", 404),
    ("GET", "/exec/nope0000/json", 404),
    ("GET", "/images/no/such/image/json", 404),
    ("GET", "/containers/..%2F..%2Fetc%2Fpasswd/json", 404),
    ("GET", "/containers/../../etc/passwd/json", 404),
    ("GET", "/containers/json?filters=%7Bbad", 400),
    ("GET", "/containers/json?filters=%7B%22color%22%3A%5B%22red%22%5D%7D", 400),
    ("GET", "/containers/json?all=maybe", 400),
    ("GET", "/events?filters=%7B%22bogus%22%3A%5B%221%22%5D%7D", 400),
    ("GET", "/v1.12/containers/json", 400),
    ("POST", "/swarm/join", 501),
    ("GET", "/services", 503),  # before `swarm init` (tests/compat/test_services.py after)
    ("GET", "/services/nope0000", 503),
    ("GET", "/secrets", 503),  # as dockerd: swarm objects need a swarm first
    ("GET", "/plugins", 501),
    ("GET", "/no/such/endpoint", 404),
    ("PATCH", "/containers/json", 405),
])
def test_unknown_ids_bad_params_unsupported(dockerd: Docker, method: str, path: str,
                                            status: int) -> None:
    assert_json_error(request(dockerd, method, path), status)
    alive(dockerd)


@pytest.mark.parametrize("name", ["../etc", "a/b", "..", "-x", "bad name", "x\x00y"])
def test_path_tricks_in_names(dockerd: Docker, name: str) -> None:
    from urllib.parse import quote

    body = json.dumps({"Image": IMG, "Cmd": ["true"]}).encode()
    assert_json_error(request(dockerd, "POST", f"{CREATE}?name={quote(name, safe='')}", body),
                      400)
    alive(dockerd)


def test_http_garbage_and_half_requests(dockerd: Docker) -> None:
    code, _, _ = raw(dockerd, b"\x00\x01\x02 garbage\r\n\r\n")
    assert code == 400
    with socket.socket(socket.AF_UNIX) as s:  # headers that never end, then a hang-up
        s.connect(str(dockerd.daemon.socket))
        s.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 100_000)
    with socket.socket(socket.AF_UNIX) as s:  # a body shorter than announced, then a hang-up
        s.connect(str(dockerd.daemon.socket))
        s.sendall(f"POST {CREATE} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{{".encode())
    alive(dockerd)


def _ws_frame(payload: bytes, opcode: int = 0x2) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return struct.pack("!BB", 0x80 | opcode, 0x80 | len(payload)) + mask + masked


def test_websocket_attach(dockerd: Docker) -> None:
    body = json.dumps({"Image": IMG, "Cmd": ["cat"], "OpenStdin": True,
                       "AttachStdin": True}).encode()
    code, _, out = request(dockerd, "POST", CREATE, body)
    assert code == 201, out
    cid = json.loads(out)["Id"]
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(90)
            s.connect(str(dockerd.daemon.socket))
            s.sendall((f"GET /v1.43/containers/{cid}/attach/ws?stream=1&stdin=1&stdout=1"
                       f"&stderr=1 HTTP/1.1\r\nHost: d\r\nConnection: Upgrade\r\n"
                       f"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                       f"Sec-WebSocket-Key: {key}\r\n\r\n").encode())
            status, headers, _ = read_response(s)
            assert status == 101 and headers["upgrade"].lower() == "websocket"
            assert request(dockerd, "POST", f"/containers/{cid}/start")[0] == 204
            s.sendall(_ws_frame(b"over websocket\n"))
            received = b""
            deadline = time.monotonic() + 60
            while b"over websocket\n" not in received and time.monotonic() < deadline:
                head = s.recv(2)
                size = head[1] & 0x7F
                if size == 126:
                    size = struct.unpack("!H", s.recv(2))[0]
                payload = b""
                while len(payload) < size:
                    payload += s.recv(size - len(payload))
                assert head[0] & 0x0F in (0x1, 0x2)
                received += payload
            assert received == b"over websocket\n"
            s.sendall(_ws_frame(b"\x03\xe8", opcode=0x8))
    finally:
        request(dockerd, "DELETE", f"/containers/{cid}?force=1")
    alive(dockerd)
