"""kubectl's side of the CRI streaming server: an Exec or Attach URL that containerd's CRI
plugin hands out, spoken over a websocket (RFC 6455) with the `v4.channel.k8s.io`
subprotocol, as `kubectl exec` does. Every binary message starts with its channel: 0 stdin,
1 stdout, 2 stderr, 3 the command's status (JSON, a metav1.Status), 4 terminal resizes.
The server listens in the test's network namespace: the socket is made in a thread that
entered it."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from steelcup.namespaces import enter_netns

PROTOCOL = "v4.channel.k8s.io"
STDOUT, STDERR, ERROR = 1, 2, 3
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_OP_CONT, _OP_BINARY, _OP_CLOSE, _OP_PING = 0x0, 0x2, 0x8, 0x9


@dataclass
class StreamResult:
    stdout: bytes = b""
    stderr: bytes = b""
    status: dict[str, Any] | None = None  # channel 3's; None if the stream ended without one
    frames: list[tuple[int, bytes]] = field(default_factory=list)

    @property
    def exit_code(self) -> int | None:
        """0 for Success, the ExitCode cause of a NonZeroExitCode failure, else None."""
        if self.status is None:
            return None
        if self.status.get("status") == "Success":
            return 0
        for cause in self.status.get("details", {}).get("causes", []):
            if cause.get("reason") == "ExitCode":
                return int(cause["message"])
        return None


def _connect_in(netns: str, host: str, port: int, timeout_s: float) -> socket.socket:
    made: list[socket.socket | BaseException] = []

    def connect() -> None:
        try:
            enter_netns(netns)  # this thread only
            made.append(socket.create_connection((host, port), timeout=timeout_s))
        except BaseException as exc:  # handed to the caller
            made.append(exc)

    thread = threading.Thread(target=connect)
    thread.start()
    thread.join()
    (got,) = made
    if isinstance(got, BaseException):
        raise got
    return got


class WebSocket:
    """One client websocket: the handshake, masked frames out, a server's frames in."""

    def __init__(self, url: str, netns: str, timeout_s: float = 60.0) -> None:
        parts = urlsplit(url)
        assert parts.scheme == "http" and parts.hostname and parts.port, url
        self.sock = _connect_in(netns, parts.hostname, parts.port, timeout_s)
        self._buf = b""
        key = base64.b64encode(os.urandom(16))
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
            f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {PROTOCOL}\r\n\r\n".encode())
        head = self._read_until(b"\r\n\r\n").decode("latin-1")
        status, *lines = head.split("\r\n")
        if " 101 " not in f"{status} ":
            raise ConnectionError(f"no websocket upgrade: {head!r} {self._buf[:500]!r}")
        headers = {k.strip().lower(): v.strip()
                   for k, _, v in (line.partition(":") for line in lines if line)}
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest()).decode()
        if headers.get("sec-websocket-accept") != accept:
            raise ConnectionError(f"bad Sec-WebSocket-Accept in {head!r}")
        self.protocol = headers.get("sec-websocket-protocol", "")

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self._buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"connection closed before {marker!r}")
            self._buf += chunk
        head, _, self._buf = self._buf.partition(marker)
        return head

    def _read(self, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed mid-frame")
            self._buf += chunk
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def _frame(self) -> tuple[bool, int, bytes]:
        b0, b1 = self._read(2)
        length = b1 & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._read(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._read(8))
        mask = self._read(4) if b1 & 0x80 else b""
        data = self._read(length)
        if mask:
            data = bytes(c ^ mask[i % 4] for i, c in enumerate(data))
        return bool(b0 & 0x80), b0 & 0x0F, data

    def recv(self) -> tuple[int, bytes] | None:
        """The next message (opcode, payload); None once the server closed."""
        fin, opcode, data = self._frame()
        while not fin:
            fin, cont, more = self._frame()
            assert cont == _OP_CONT, cont
            data += more
        if opcode == _OP_PING:
            self.send(data, _OP_PING + 1)
            return self.recv()
        if opcode == _OP_CLOSE:
            return None
        return opcode, data

    def send(self, data: bytes, opcode: int = _OP_BINARY) -> None:
        mask = os.urandom(4)
        n = len(data)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 1 << 16:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        self.sock.sendall(head + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(data)))

    def close(self) -> None:
        try:
            self.send(struct.pack("!H", 1000), _OP_CLOSE)
        except OSError:
            pass
        self.sock.close()


def run(url: str, netns: str, *, until: Callable[[bytes], bool] | None = None,
        timeout_s: float = 60.0) -> StreamResult:
    """Read an exec or attach stream's channels until the server ends it (or, with `until`,
    until the stdout so far satisfies it: an attach never ends by itself)."""
    ws = WebSocket(url, netns, timeout_s)
    result = StreamResult()
    deadline = time.monotonic() + timeout_s
    try:
        if ws.protocol != PROTOCOL:
            raise ConnectionError(f"the server chose subprotocol {ws.protocol!r}")
        while time.monotonic() < deadline:
            message = ws.recv()
            if message is None:
                break
            opcode, data = message
            if opcode != _OP_BINARY or not data:
                continue
            channel, payload = data[0], data[1:]
            result.frames.append((channel, payload))
            if channel == STDOUT:
                result.stdout += payload
            elif channel == STDERR:
                result.stderr += payload
            elif channel == ERROR and payload:
                result.status = json.loads(payload)
            if until is not None and until(result.stdout):
                break
        else:
            raise TimeoutError(f"{url}: no end in {timeout_s} s: {result}")
    finally:
        ws.close()
    return result
