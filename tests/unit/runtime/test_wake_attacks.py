"""Hostile clients of a wake proxy (runtime/autosuspend.py, net/proxy.py), on the host's
loopback with a fake runtime: 200 connections at once to a sleeping container resume it once
and are all answered; past the cap connections are closed at once while the held ones wait;
a client that connects and sends nothing, or half a request, blocks no other client and is
closed once silent for the container's IDLE, freeing its slot (tests/vm/test_wake_attacks.py
does the same against a real VM)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from steelcup.net.nft import PublishedPort
from steelcup.net.proxy import ConnectionCap, TcpProxy
from steelcup.runtime.autosuspend import AutoSuspender
from steelcup.runtime.model import ContainerConfig, ContainerRecord, ContainerState, Status


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SleepingRuntime:
    """One suspended --auto-suspend container whose resume (slow, as a real one) brings up a
    server on `target_port` that answers each request line with `awake`, and publishes its
    port again as the runtime does (its own proxy beside the wake proxy: a connection whose
    SYN the kernel queued past the wake proxy's backlog is answered by it)."""

    def __init__(self, host_port: int, target_port: int, idle_s: int = 60) -> None:
        self.host_port = host_port
        self.target_port = target_port
        self.record = ContainerRecord(
            id="c" * 64, name="web", created="2026-01-01T00:00:00Z",
            config=ContainerConfig(image="b", image_id="", checkpointable=True,
                                   auto_suspend_s=idle_s),
            path="httpd", args=(),
            state=ContainerState(status=Status.EXITED, suspended=True))
        self.resumes = 0
        self.servers: list[asyncio.Server] = []
        self.published: list[TcpProxy] = []
        self.suspend_watchers: list[object] = []

    def list(self) -> list[ContainerRecord]:
        return [self.record]

    def suspending(self, ref: str) -> bool:
        return False

    def run_taps(self, ref: str) -> tuple[str, ...]:
        return ()

    def suspended_ports(self, ref: str) -> list[PublishedPort]:
        return [PublishedPort("127.0.0.1", self.host_port, "127.0.0.1", self.target_port)]

    async def suspend(self, ref: str) -> bool:
        raise AssertionError("not asked here")

    async def resume(self, ref: str) -> bool:
        self.resumes += 1
        await asyncio.sleep(0.5)  # a resume takes a while: every connection is held

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if await reader.readline():
                writer.write(b"awake\n")
                await writer.drain()
            writer.close()

        self.servers.append(await asyncio.start_server(answer, "127.0.0.1", self.target_port,
                                                       backlog=512))
        own = TcpProxy("127.0.0.1", self.host_port, "127.0.0.1", self.target_port)
        await own.start()
        self.published.append(own)
        self.record = self.record.with_state(status=Status.RUNNING, suspended=False)
        return True


async def _ask(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET / HTTP/1.0\n")
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()


def test_two_hundred_connections_at_once_resume_it_once_and_are_all_answered() -> None:
    async def main() -> None:
        runtime = SleepingRuntime(_free_port(), _free_port())
        suspender = AutoSuspender(runtime, None)  # type: ignore[arg-type]
        try:
            await suspender.tick(0.0)  # it sleeps: its wake proxy listens
            answers = await asyncio.gather(*(_ask(runtime.host_port) for _ in range(200)))
            assert answers == [b"awake\n"] * 200
            assert runtime.resumes == 1
        finally:
            await suspender.close()
            for own in runtime.published:
                await own.close()
            for server in runtime.servers:
                server.close()

    asyncio.run(main())


def test_connections_past_the_cap_are_closed_at_once_while_the_held_ones_wait() -> None:
    async def main() -> None:
        front, back = _free_port(), _free_port()
        up = asyncio.Event()
        servers: list[asyncio.Server] = []

        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"up:" + await reader.readline())
            await writer.drain()
            writer.close()

        async def wake() -> None:
            await up.wait()

        cap = ConnectionCap(4)
        proxy = TcpProxy("127.0.0.1", front, "127.0.0.1", back, before_connect=wake, cap=cap)
        await proxy.start()
        try:
            held = [await asyncio.open_connection("127.0.0.1", front) for _ in range(4)]
            for _, writer in held:
                writer.write(b"hi\n")
            await asyncio.sleep(0.2)
            assert cap.open == 4
            for _ in range(3):  # beyond the cap: closed at once, not held
                reader, writer = await asyncio.open_connection("127.0.0.1", front)
                assert await asyncio.wait_for(reader.read(), 5) == b""
                writer.close()
            servers.append(await asyncio.start_server(echo, "127.0.0.1", back))
            up.set()
            for reader, writer in held:
                assert await asyncio.wait_for(reader.read(), 10) == b"up:hi\n"
                writer.close()
            await asyncio.sleep(0.2)
            assert cap.open == 0 and proxy.relaying == 0  # their slots are free again
            reader, writer = await asyncio.open_connection("127.0.0.1", front)
            writer.write(b"again\n")
            assert await asyncio.wait_for(reader.read(), 10) == b"up:again\n"
            writer.close()
        finally:
            await proxy.close()
            for server in servers:
                server.close()

    asyncio.run(main())


def test_a_cap_needs_room_for_one() -> None:
    with pytest.raises(ValueError, match="1 or more"):
        ConnectionCap(0)


def test_silent_and_half_sent_clients_block_no_one_and_are_closed_when_idle() -> None:
    async def main() -> None:
        front, back = _free_port(), _free_port()

        async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            line = await reader.readline()  # a half request waits here, as httpd would
            if line.endswith(b"\n"):
                writer.write(b"ok\n")
                await writer.drain()
            writer.close()

        backend = await asyncio.start_server(server, "127.0.0.1", back)
        cap = ConnectionCap(8)
        proxy = TcpProxy("127.0.0.1", front, "127.0.0.1", back, cap=cap, idle_timeout_s=1.0)
        await proxy.start()
        loop = asyncio.get_running_loop()
        try:
            silent_r, silent_w = await asyncio.open_connection("127.0.0.1", front)
            half_r, half_w = await asyncio.open_connection("127.0.0.1", front)
            half_w.write(b"\x16\x03\x01\x02\x00GET / HT")  # half a TLS record, half a line
            await half_w.drain()
            # a slow but live client: a byte every 0.4 s for 2 s is never cut
            slow_r, slow_w = await asyncio.open_connection("127.0.0.1", front)
            started = loop.time()
            assert await asyncio.wait_for(_ask(front), 5) == b"ok\n"  # not blocked by them
            for _ in range(5):
                slow_w.write(b"x")
                await slow_w.drain()
                await asyncio.sleep(0.4)
            # The silent ones were closed once idle for 1 s (not before), the live one not.
            assert await asyncio.wait_for(silent_r.read(), 5) == b""
            assert await asyncio.wait_for(half_r.read(), 5) == b""
            assert loop.time() - started >= 1.0
            slow_w.write(b"\n")
            assert await asyncio.wait_for(slow_r.read(), 5) == b"ok\n"
            for writer in (silent_w, half_w, slow_w):
                writer.close()
            await asyncio.sleep(0.2)
            assert cap.open == 0
        finally:
            await proxy.close()
            backend.close()

    asyncio.run(main())
