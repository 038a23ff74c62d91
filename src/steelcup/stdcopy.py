"""Docker's multiplexed stdio framing ("stdcopy"): an 8-byte header per frame.

Header: stream byte (0 stdin, 1 stdout, 2 stderr, 3 system error), three zero bytes, payload
length as big-endian u32. Used on attach/exec/logs streams of containers without a TTY.
"""

from __future__ import annotations

import struct

from steelcup.errors import InvalidArgument

STDIN = 0
STDOUT = 1
STDERR = 2
SYSERR = 3  # docker's "system error" stream: a message from the daemon, not the process

HEADER_LEN = 8
MAX_FRAME_LEN = 0xFFFFFFFF
_HEADER = struct.Struct(">BxxxI")


def frame(stream: int, data: bytes) -> bytes:
    """One frame carrying `data` on `stream`; split larger payloads yourself (u32 length)."""
    if stream not in (STDIN, STDOUT, STDERR, SYSERR):
        raise InvalidArgument(f"invalid stdcopy stream {stream}")
    if len(data) > MAX_FRAME_LEN:
        raise InvalidArgument("stdcopy frame payload longer than 4 GiB")
    return _HEADER.pack(stream, len(data)) + data


class Demuxer:
    """Incremental decoder: `feed()` bytes as they arrive, get `(stream, payload)` pieces back.

    A frame's payload may come back in several pieces (memory stays bounded by what was fed);
    pieces of one frame are returned in order and never merged across frames.
    """

    def __init__(self) -> None:
        self._header = bytearray()
        self._stream = 0
        self._remaining = 0  # payload bytes still to come for the current frame

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        view = memoryview(data)
        pos = 0
        while pos < len(view):
            if self._remaining == 0 and len(self._header) < HEADER_LEN:
                take = min(HEADER_LEN - len(self._header), len(view) - pos)
                self._header += view[pos : pos + take]
                pos += take
                if len(self._header) < HEADER_LEN:
                    break
                stream, length = _HEADER.unpack(bytes(self._header))
                if stream not in (STDIN, STDOUT, STDERR, SYSERR) or self._header[1:4] != b"\0\0\0":
                    raise InvalidArgument(
                        f"not a stdcopy stream: bad frame header {bytes(self._header).hex()}"
                    )
                self._stream = stream
                self._remaining = length
                self._header.clear()
                continue
            take = min(self._remaining, len(view) - pos)
            out.append((self._stream, bytes(view[pos : pos + take])))
            pos += take
            self._remaining -= take
        return out

    @property
    def at_boundary(self) -> bool:
        """True when no partial header or payload is pending (a clean place for EOF)."""
        return self._remaining == 0 and not self._header
