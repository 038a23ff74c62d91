"""The port keeper: a real keeper process serving loopback proxies that outlive the daemon's
connection to it (live restore), taken over by the next daemon, replaced when it dies."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from steelcup.errors import Conflict
from steelcup.net.keeper import PortKeeper
from steelcup.net.portkeeper import Keeper


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def _echo() -> AsyncIterator[int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"echo:" + await reader.readline())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()


def _with_echo(scenario: Callable[[int], Awaitable[None]]) -> None:
    async def main() -> None:
        async with _echo() as port:
            await scenario(port)

    asyncio.run(main())


async def _through(port: int, word: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(word + b"\n")
    await writer.drain()
    data = await reader.read()
    writer.close()
    return data


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def test_proxies_outlive_the_daemons_connection_and_are_taken_over(tmp_path: Path) -> None:
    async def scenario(echo: int) -> None:
        port = _free_port()
        first = PortKeeper(tmp_path / "ports", None)
        await first.open("c1/tcp/1", "tcp", port, ("127.0.0.1", echo))
        assert await _through(port, b"one") == b"echo:one\n"
        pid = first._pid
        assert pid is not None and pid != os.getpid()

        await first.detach()  # a live-restore daemon exits: the keeper serves on
        assert _running(pid)
        assert await _through(port, b"gap") == b"echo:gap\n"

        second = PortKeeper(tmp_path / "ports", None)
        assert await second.attach()
        assert second._pid == pid
        [opened] = await second.listing()
        assert (opened.key, opened.port, opened.target) == ("c1/tcp/1", port, ("127.0.0.1", echo))
        await second.open("c1/tcp/1", "tcp", port, ("127.0.0.1", echo))  # the same: a no-op
        assert await _through(port, b"two") == b"echo:two\n"

        await second.close("c1/tcp/1")
        with pytest.raises(OSError):
            await _through(port, b"closed")
        await second.stop()
        assert not _running(pid)
        assert not (tmp_path / "ports" / "keeper.sock").exists()
        assert not await PortKeeper(tmp_path / "ports", None).attach()

    _with_echo(scenario)


def test_a_released_port_takes_no_connection_and_relays_the_ones_it_has(
        tmp_path: Path) -> None:
    """`release` (a container's ports unpublished for its save): the port is free for a
    wake proxy, and a request relayed at that moment is answered; `close` ends it."""

    async def main() -> None:
        gate = asyncio.Event()

        async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            line = await reader.readline()
            await gate.wait()
            writer.write(b"late:" + line)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(slow, "127.0.0.1", 0)
        target = int(server.sockets[0].getsockname()[1])
        port = _free_port()
        keeper = PortKeeper(tmp_path / "ports", None)
        try:
            await keeper.open("c1/tcp/1", "tcp", port, ("127.0.0.1", target))
            in_flight = asyncio.create_task(_through(port, b"one"))
            await asyncio.sleep(0.3)  # relayed, waiting for its answer
            await keeper.release("c1/tcp/1")
            with pytest.raises(OSError):
                await asyncio.open_connection("127.0.0.1", port)
            assert await keeper.listing() == []
            gate.set()
            assert await asyncio.wait_for(in_flight, 10) == b"late:one\n"
            await keeper.close("c1/tcp/1")
        finally:
            server.close()
            await keeper.stop()

    asyncio.run(main())


def test_a_port_in_use_is_a_conflict(tmp_path: Path) -> None:
    async def scenario(echo: int) -> None:
        keeper = PortKeeper(tmp_path / "ports", None)
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            busy = int(taken.getsockname()[1])
            with pytest.raises(Conflict, match=f"127.0.0.1:{busy}"):
                await keeper.open("c/tcp/x", "tcp", busy, ("127.0.0.1", echo))
        assert await keeper.listing() == []
        await keeper.stop()

    _with_echo(scenario)


def test_a_dead_keeper_is_replaced(tmp_path: Path) -> None:
    async def scenario(echo: int) -> None:
        keeper = PortKeeper(tmp_path / "ports", None)
        port = _free_port()
        await keeper.open("a/tcp/1", "tcp", port, ("127.0.0.1", echo))
        dead = keeper._pid
        assert dead is not None
        os.kill(dead, signal.SIGKILL)
        await asyncio.to_thread(os.waitpid, dead, 0)
        # The next order starts another keeper; the port is opened again by whoever asks.
        await keeper.open("a/tcp/1", "tcp", port, ("127.0.0.1", echo))
        assert keeper._pid not in (None, dead)
        assert await _through(port, b"again") == b"echo:again\n"
        # A daemon that finds a dead keeper's socket starts afresh.
        new_pid = keeper._pid
        assert new_pid is not None
        os.kill(new_pid, signal.SIGKILL)
        await asyncio.to_thread(os.waitpid, new_pid, 0)
        assert not await PortKeeper(tmp_path / "ports", None).attach()

    _with_echo(scenario)


@pytest.mark.parametrize("request_, error", [
    ([], "a request is a JSON object"),
    ({"op": "dance"}, "unknown op 'dance'"),
    ({"op": "open", "key": "k", "proto": "sctp", "port": 1, "target": ["1.2.3.4", 1]},
     "bad open request"),
    ({"op": "open", "key": "k", "proto": "tcp", "port": 0, "target": ["1.2.3.4", 1]},
     "bad open request"),
    ({"op": "open", "key": "k", "proto": "tcp", "port": 80}, "bad open request"),
])
def test_bad_requests_get_an_error(request_: object, error: str) -> None:
    reply = asyncio.run(Keeper(None).answer(request_))
    assert error in reply["error"]
