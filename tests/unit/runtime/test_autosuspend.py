"""--auto-suspend's parts without a VM (runtime/autosuspend.py): the IDLE setting, the idle
clock, the tap counters, and the wake proxy that holds a connection until its target is up
(on the host's loopback; tests/vm/test_suspend.py runs it with a real VM)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from steelcup.errors import InvalidArgument
from steelcup.net.proxy import TcpProxy
from steelcup.runtime.autosuspend import IdleClock, parse_idle, read_counters


def test_idle_is_seconds_or_a_duration() -> None:
    assert parse_idle(30, "f") == 30
    assert parse_idle(30.0, "f") == 30
    assert parse_idle("45", "f") == 45
    assert parse_idle("90s", "f") == 90
    assert parse_idle("5m", "f") == 300
    assert parse_idle("1h30m", "f") == 5400
    assert parse_idle(0, "f") == 0
    for bad in ("soon", "5 m", "1.5m", "", True, -1, [], 10**9, 1.5):
        with pytest.raises(InvalidArgument, match="f"):
            parse_idle(bad, "f")


def test_the_idle_clock_restarts_when_counters_move() -> None:
    clock = IdleClock((1, 2), since=100.0)
    assert clock.observe((1, 2), 130.0) is clock and clock.idle_s(130.0) == 30.0
    moved = clock.observe((1, 3), 131.0)
    assert moved.since == 131.0 and moved.idle_s(140.0) == 9.0


def test_counters_are_read_per_tap_and_a_missing_tap_reads_as_a_change(tmp_path: Path) -> None:
    stats = tmp_path / "sct1" / "statistics"
    stats.mkdir(parents=True)
    (stats / "rx_packets").write_text("7\n")
    (stats / "tx_packets").write_text("9\n")
    assert read_counters(tmp_path, ("sct1",)) == (7, 9)
    assert read_counters(tmp_path, ("sct1", "gone")) == (7, 9, -1, -1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_wake_proxy_holds_a_connection_until_its_target_is_up() -> None:
    async def main() -> None:
        front, back = _free_port(), _free_port()
        servers: list[asyncio.Server] = []

        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"up:" + await reader.readline())
            await writer.drain()
            writer.close()

        async def wake() -> None:  # as a resume does: the target comes up meanwhile
            await asyncio.sleep(0.3)
            servers.append(await asyncio.start_server(echo, "127.0.0.1", back))

        proxy = TcpProxy("0.0.0.0", front, "127.0.0.1", back, before_connect=wake)
        await proxy.start()
        # The container's own proxy binds the port beside it (SO_REUSEPORT), as a resume's
        # publication does, and takes the loopback's new connections from then on.
        own = TcpProxy("127.0.0.1", front, "127.0.0.1", back)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", front)
            writer.write(b"hello\n")
            await writer.drain()
            assert await asyncio.wait_for(reader.read(), 10) == b"up:hello\n"
            writer.close()
            await own.start()
            proxy.stop_listening()
            reader, writer = await asyncio.open_connection("127.0.0.1", front)
            writer.write(b"again\n")
            assert await asyncio.wait_for(reader.read(), 10) == b"up:again\n"
            writer.close()
        finally:
            await proxy.close()
            await own.close()
            for server in servers:
                server.close()

    asyncio.run(main())


def test_a_wake_that_fails_drops_the_connection() -> None:
    async def main() -> None:
        front = _free_port()

        async def wake() -> None:
            raise InvalidArgument("no checkpoint")

        proxy = TcpProxy("127.0.0.1", front, "127.0.0.1", 9, before_connect=wake)
        await proxy.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", front)
            assert await asyncio.wait_for(reader.read(), 10) == b""
            writer.close()
        finally:
            await proxy.close()

    asyncio.run(main())
