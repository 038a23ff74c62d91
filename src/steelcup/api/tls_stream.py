"""Server-side TLS over an asyncio TCP stream, with half-close.

docker's attach half-closes: once stdin ends (or at once, with no stdin) the docker CLI calls
CloseWrite, which over TLS sends a close_notify alert, and then reads the container's output
until the daemon closes. asyncio's own TLS (`start_server(ssl=...)`) takes a peer's
close_notify as the end of the whole connection, so every attached `docker run` over TLS lost
its output. Here TLS runs over memory BIOs (`ssl.SSLObject`): a peer's close_notify is EOF on
the reading side only, exactly like a TCP half-close, and our own `write_eof` sends close_notify
while reading goes on.

`accept` does the handshake and returns a StreamReader/StreamWriter pair that the HTTP server
uses as it uses plain streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any

from steelcup.tls_bio import read_available

HANDSHAKE_TIMEOUT_S = 10.0
READ_CHUNK = 64 * 1024
STREAM_LIMIT = 2 ** 16  # asyncio's default StreamReader limit


async def accept(raw_reader: asyncio.StreamReader, raw_writer: asyncio.StreamWriter,
                 context: ssl.SSLContext) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """The server side of a TLS handshake on a new connection, then the plaintext streams.
    Raises ssl.SSLError, ConnectionError or TimeoutError if the handshake fails."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_side=True)

    async def handshake() -> None:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                _send(raw_writer, outgoing)
                await raw_writer.drain()
                data = await raw_reader.read(READ_CHUNK)
                if not data:
                    raise ConnectionResetError("the client closed during the TLS handshake") \
                        from None
                incoming.write(data)
        _send(raw_writer, outgoing)
        await raw_writer.drain()

    await asyncio.wait_for(handshake(), HANDSHAKE_TIMEOUT_S)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=STREAM_LIMIT, loop=loop)
    transport = _TlsTransport(raw_writer, tls, outgoing)
    reader.set_transport(transport)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    writer = _TlsWriter(transport, protocol, reader, loop, raw_writer)
    transport.pump = loop.create_task(_pump(raw_reader, incoming, transport, reader),
                                      name="tls-pump")
    return reader, writer


def _send(raw_writer: asyncio.StreamWriter, outgoing: ssl.MemoryBIO) -> None:
    data = outgoing.read()
    if data and not raw_writer.is_closing():
        raw_writer.write(data)


async def _pump(raw_reader: asyncio.StreamReader, incoming: ssl.MemoryBIO,
                transport: _TlsTransport, reader: asyncio.StreamReader) -> None:
    """Decrypt what the client sends into `reader`; its close_notify (or the TCP stream's
    end) is EOF on `reader` and nothing else."""
    try:
        while True:
            # first what the handshake's last read brought along, then each new read
            if _decrypt(transport, reader):
                return
            await transport.reading.wait()
            data = await raw_reader.read(READ_CHUNK)
            if not data:
                return
            incoming.write(data)
    except (ConnectionError, OSError, ssl.SSLError):
        return
    finally:
        reader.feed_eof()


def _decrypt(transport: _TlsTransport, reader: asyncio.StreamReader) -> bool:
    """Feed `reader` what has arrived; True once the client's close_notify came."""
    data, closed = read_available(transport.tls, READ_CHUNK)
    if data:
        reader.feed_data(data)
    transport.flush()  # what reading produced (TLS 1.3 tickets, key updates)
    return closed


class _TlsTransport(asyncio.Transport):
    """Encrypts writes onto the raw connection; everything else is the raw connection's."""

    def __init__(self, raw_writer: asyncio.StreamWriter, tls: ssl.SSLObject,
                 outgoing: ssl.MemoryBIO) -> None:
        super().__init__()
        self.raw = raw_writer
        self.tls = tls
        self.outgoing = outgoing
        self.reading = asyncio.Event()
        self.reading.set()
        self.pump: asyncio.Task[None] | None = None
        self._eof_sent = False

    def flush(self) -> None:
        _send(self.raw, self.outgoing)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._eof_sent or self.raw.is_closing():
            return
        view = memoryview(data)
        while view:
            written = self.tls.write(view[:READ_CHUNK])
            view = view[written:]
            self.flush()

    def write_eof(self) -> None:
        """close_notify: the client reads EOF and may go on sending (its stdin)."""
        if self._eof_sent:
            return
        self._eof_sent = True
        with contextlib.suppress(ssl.SSLWantReadError, ssl.SSLError):
            self.tls.unwrap()
        self.flush()

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        if self.pump is not None:
            self.pump.cancel()
        self.raw.close()

    def abort(self) -> None:
        if self.pump is not None:
            self.pump.cancel()
        self.raw.transport.abort()

    def is_closing(self) -> bool:
        return self.raw.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self.tls
        if name == "peercert":
            return self.tls.getpeercert()
        return self.raw.get_extra_info(name, default)

    def get_write_buffer_size(self) -> int:
        return self.raw.transport.get_write_buffer_size()

    def pause_reading(self) -> None:
        self.reading.clear()

    def resume_reading(self) -> None:
        self.reading.set()

    def is_reading(self) -> bool:
        return self.reading.is_set()


class _TlsWriter(asyncio.StreamWriter):
    """A StreamWriter whose flow control and closing are the raw connection's."""

    def __init__(self, transport: _TlsTransport, protocol: asyncio.StreamReaderProtocol,
                 reader: asyncio.StreamReader, loop: asyncio.AbstractEventLoop,
                 raw: asyncio.StreamWriter) -> None:
        super().__init__(transport, protocol, reader, loop)
        self._raw = raw

    async def drain(self) -> None:
        if self._raw.is_closing():
            raise ConnectionResetError("connection lost")
        await self._raw.drain()

    async def wait_closed(self) -> None:
        await self._raw.wait_closed()
