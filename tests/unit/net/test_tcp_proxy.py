"""The TCP proxy's relay on the loopback (the bytes moved with splice): what goes through
arrives whole both ways, a half-close reaches the other end and the answer still comes back,
a reset upstream ends the client's connection, an idle relay is closed, and a proxy that
stops listening relays on what it has."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from steelcup.net.proxy import TcpProxy

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def _proxied(handler: Handler, idle_timeout_s: float | None = None
                   ) -> AsyncIterator[TcpProxy]:
    """A proxy on a free loopback port to a server running `handler`."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    target = int(server.sockets[0].getsockname()[1])
    proxy = TcpProxy("127.0.0.1", _free_port(), "127.0.0.1", target,
                     idle_timeout_s=idle_timeout_s)
    try:
        await proxy.start()
        yield proxy
    finally:
        await proxy.close()
        server.close()


def test_megabytes_go_through_whole_both_ways() -> None:
    upload = os.urandom(12 << 20)
    download = os.urandom(20 << 20)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got = await reader.readexactly(len(upload))
        writer.write(hashlib.sha256(got).digest())
        writer.write(download)
        await writer.drain()
        writer.close()

    async def main() -> None:
        async with _proxied(serve) as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(upload)
            await writer.drain()
            digest = await reader.readexactly(32)
            assert digest == hashlib.sha256(upload).digest()
            assert await reader.read() == download
            writer.close()

    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_half_close_reaches_the_server_and_its_answer_comes_back() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        question = await reader.read()  # to the client's end of writing
        writer.write(b"answer to " + question)
        await writer.drain()
        writer.close()

    async def main() -> None:
        async with _proxied(serve) as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(b"ping")
            writer.write_eof()
            assert await asyncio.wait_for(reader.read(), 10) == b"answer to ping"
            writer.close()

    asyncio.run(main())


def test_a_reset_upstream_ends_the_client_s_connection() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(4)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # a reset, not a FIN

    async def main() -> None:
        async with _proxied(serve) as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(b"ping")
            with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
                await asyncio.wait_for(reader.readexactly(1), 10)
            writer.close()
            await asyncio.sleep(0.1)
            assert proxy.relaying == 0

    asyncio.run(main())


def test_an_idle_relay_is_closed_and_a_stopped_proxy_relays_on() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            writer.write(line)
            await writer.drain()
        writer.close()

    async def main() -> None:
        async with _proxied(echo, idle_timeout_s=0.5) as proxy:
            quiet = await asyncio.open_connection("127.0.0.1", proxy.port)
            busy = await asyncio.open_connection("127.0.0.1", proxy.port)
            proxy.stop_listening()
            with pytest.raises(OSError):
                await asyncio.open_connection("127.0.0.1", proxy.port)
            for _ in range(8):  # every 0.2 s: never idle for 0.5 s
                busy[1].write(b"tick\n")
                assert await asyncio.wait_for(busy[0].readline(), 5) == b"tick\n"
                await asyncio.sleep(0.2)
            assert await asyncio.wait_for(quiet[0].read(), 5) == b""  # closed as idle
            assert proxy.relaying == 1
            busy[1].close()
            quiet[1].close()

    asyncio.run(main())


def test_connections_queued_when_it_stops_listening_are_relayed_not_reset() -> None:
    """The kernel completes handshakes before the proxy accepts: those still queued when it
    stops listening are taken and relayed (a wake proxy closes as the loopback proxy opens)."""

    async def hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello")
        await writer.drain()
        writer.close()

    async def main() -> None:
        async with _proxied(hello) as proxy:
            port = proxy.port
            clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(5)]
            proxy.stop_listening()  # before the loop ran `_accept` for them: all queued
            for client in clients:
                client.setblocking(False)
                data = await asyncio.wait_for(
                    asyncio.get_running_loop().sock_recv(client, 16), 10)
                assert data == b"hello"
                client.close()

    asyncio.run(main())


def test_connects_at_once_opens_that_many_upstream_connections_at_a_time() -> None:
    async def hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hi")
        await writer.drain()
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(hello, "127.0.0.1", 0)
        target = int(server.sockets[0].getsockname()[1])
        proxy = TcpProxy("127.0.0.1", _free_port(), "127.0.0.1", target, connects_at_once=2)
        loop = asyncio.get_running_loop()
        real_connect = loop.sock_connect
        opening = peak = 0

        async def slow_connect(sock: socket.socket, address: tuple[str, int]) -> None:
            nonlocal opening, peak
            opening += 1
            peak = max(peak, opening)
            await asyncio.sleep(0.05)  # a handshake that takes a while
            await real_connect(sock, address)
            opening -= 1

        loop.sock_connect = slow_connect  # type: ignore[method-assign]
        try:
            await proxy.start()
            clients = [await asyncio.open_connection("127.0.0.1", proxy.port)
                       for _ in range(6)]
            for reader, writer in clients:
                assert await asyncio.wait_for(reader.read(), 10) == b"hi"
                writer.close()
            assert peak == 2
        finally:
            loop.sock_connect = real_connect  # type: ignore[method-assign]
            await proxy.close()
            server.close()

    asyncio.run(main())
