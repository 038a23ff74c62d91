"""A log file of bounded size for output a guest controls (its serial console, QEMU's stderr):
the first `head_bytes` and the last `tail_bytes` written, with a marker saying how much was
dropped in between. The start shows how a boot went, the end what happened last."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

READ_CHUNK = 65536


class CappedLog:
    """Written through its own fd, so a reader may rename the file meanwhile."""

    def __init__(self, path: Path, head_bytes: int, tail_bytes: int) -> None:
        self.path = path
        self.head_bytes = head_bytes
        self.tail_bytes = tail_bytes
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        self._size = 0
        self._tail: bytearray | None = None  # once over the cap: the last tail_bytes
        self.dropped = 0

    def write(self, data: bytes) -> None:
        if self._fd < 0:
            return
        if self._tail is None:
            if self._size + len(data) <= self.head_bytes + self.tail_bytes:
                os.write(self._fd, data)
                self._size += len(data)
                return
            if self._size < self.head_bytes:  # complete the head first
                room = self.head_bytes - self._size
                os.write(self._fd, data[:room])
                self._size, data = self.head_bytes, data[room:]
            # Over the cap: what is past the head becomes the start of the kept tail.
            self._tail = bytearray(os.pread(self._fd, self._size - self.head_bytes,
                                            self.head_bytes))
        self._tail += data
        excess = len(self._tail) - self.tail_bytes
        if excess > 0:
            del self._tail[:excess]
            self.dropped += excess
        marker = f"\n--- steelcup: {self.dropped} bytes dropped here ---\n".encode()
        os.pwrite(self._fd, marker + bytes(self._tail), self.head_bytes)
        os.ftruncate(self._fd, self.head_bytes + len(marker) + len(self._tail))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


async def drain(stream: asyncio.StreamReader, log: CappedLog) -> None:
    """Copy `stream` into `log` until EOF; the log is closed at the end."""
    try:
        while chunk := await stream.read(READ_CHUNK):
            log.write(chunk)
    finally:
        log.close()
