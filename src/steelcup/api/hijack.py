"""Hijacked connections: the raw stream after docker's attach upgrade (`101 UPGRADED`), and
the same connection speaking RFC 6455 websocket frames.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import hashlib
import socket
import struct
import termios
import time

READ_CHUNK = 64 * 1024
# How long the first write waits for the client to read the response head (see `_head_read`).
HEAD_READ_TIMEOUT_S = 2.0
WS_FRAME_MAX = 16 * 1024 * 1024
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class HijackedStream:
    """The raw connection after the HTTP exchange; bytes the parser had buffered come first.

    The first write waits until the client has read the response head: docker-py parses the
    head through a buffered reader and then reads the raw socket, so stream bytes that arrive
    before it read the head land in that buffer and are lost (a quick exec's whole output, when
    the client was descheduled for a moment)."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pending: bytes
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._pending = pending
        self._closed = False
        self._head_read = False

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
        if not self._head_read:
            self._head_read = True
            await self._wait_head_read(HEAD_READ_TIMEOUT_S)
        self._writer.write(data)
        await self._writer.drain()

    async def _wait_head_read(self, timeout_s: float) -> None:
        """Until the peer has read everything sent so far (the response head), or `timeout_s`.

        On a unix socket the kernel counts the bytes the peer has not read yet (SIOCOUTQ): that
        is the signal. Over TCP it counts only unacknowledged bytes, which says nothing about
        the client's reads, so there is nothing to wait for."""
        sock = self._writer.get_extra_info("socket")
        if sock is None or sock.family != socket.AF_UNIX:
            return
        deadline = time.monotonic() + timeout_s
        pause_s = 0.0005
        while time.monotonic() < deadline:
            try:
                unread = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
            except OSError:
                return
            if (int.from_bytes(unread, "little") == 0
                    and self._writer.transport.get_write_buffer_size() == 0):
                return
            await asyncio.sleep(pause_s)
            pause_s = min(pause_s * 2, 0.02)

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
