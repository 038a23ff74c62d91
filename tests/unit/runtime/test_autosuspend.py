"""--auto-suspend's parts without a VM (runtime/autosuspend.py): the IDLE setting, the idle
clock, the tap counters, and the wake proxies that hold a connection or datagrams until their
target is up (on the host's loopback; tests/vm/test_suspend.py and tests/vm/test_udp_wake.py
run them with a real VM)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from steelcup.errors import InvalidArgument
from steelcup.net.nft import PublishedPort
from steelcup.net.proxy import TcpProxy
from steelcup.runtime import autosuspend
from steelcup.runtime.autosuspend import AutoSuspender, IdleClock, parse_idle, read_counters
from steelcup.runtime.model import ContainerConfig, ContainerRecord, ContainerState, Status


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


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class UdpAnswer(asyncio.DatagramProtocol):
    """A resumed container's UDP service: answers `awake:` + the datagram."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(b"awake:" + data, addr)


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


class FakeRuntime:
    """What AutoSuspender asks of the runtime: one --auto-suspend container whose resume
    brings up `target_port` on the loopback, as a resumed VM's service."""

    def __init__(self, record: ContainerRecord, host_port: int, target_port: int) -> None:
        self.current = record
        self.host_port = host_port
        self.target_port = target_port
        self.udp_port = _free_port(socket.SOCK_DGRAM)
        self.udp_target_port = _free_port(socket.SOCK_DGRAM)
        self.calls: list[str] = []
        self.servers: list[asyncio.Server] = []
        self.udp: list[UdpAnswer] = []
        self.suspend_watchers: list[Callable[[str], Awaitable[None]]] = []
        self.saving = False
        self.save_s = 0.0  # how long a suspend's save takes
        self.busy = asyncio.Lock()  # as the runtime's per container: a resume waits a save

    def list(self) -> list[ContainerRecord]:
        return [self.current]

    def record(self, ref: str) -> ContainerRecord:
        return self.current

    def suspending(self, ref: str) -> bool:
        return self.saving

    def run_taps(self, ref: str) -> tuple[str, ...]:
        return ("sct1",)

    def run_ports(self, ref: str) -> list[PublishedPort]:
        return [PublishedPort("127.0.0.1", self.host_port, "127.0.0.1", self.target_port),
                PublishedPort("127.0.0.1", self.udp_port, "127.0.0.1", self.udp_target_port,
                              "udp")]

    def suspended_ports(self, ref: str) -> list[PublishedPort]:
        return self.run_ports(ref) if self.current.state.suspended else []

    async def suspend(self, ref: str) -> bool:
        """As the runtime's: its watchers are told before the save, which takes `save_s`."""
        async with self.busy:
            self.calls.append("suspend")
            self.saving = True
            for watcher in self.suspend_watchers:
                await watcher(ref)
            await asyncio.sleep(self.save_s)
            self.current = self.current.with_state(status=Status.EXITED, suspended=True)
            self.saving = False
        return True

    async def resume(self, ref: str) -> bool:
        if not (self.current.state.suspended or self.saving):
            return False
        async with self.busy:
            return await self._resume()

    async def _resume(self) -> bool:
        self.calls.append("resume")
        await asyncio.sleep(0.2)  # a resume takes a while: datagrams come meanwhile

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"awake")
            await writer.drain()
            writer.close()

        self.servers.append(await asyncio.start_server(answer, "127.0.0.1", self.target_port))
        _, udp = await asyncio.get_running_loop().create_datagram_endpoint(
            UdpAnswer, local_addr=("127.0.0.1", self.udp_target_port))
        self.udp.append(udp)
        self.current = self.current.with_state(status=Status.RUNNING, suspended=False)
        return True

    def close(self) -> None:
        for server in self.servers:
            server.close()
        for udp in self.udp:
            if udp.transport is not None:
                udp.transport.close()


def test_an_idle_container_is_suspended_and_a_connection_resumes_it_once(
        tmp_path: Path) -> None:
    stats = tmp_path / "sct1" / "statistics"
    stats.mkdir(parents=True)
    for key in ("rx_packets", "tx_packets"):
        (stats / key).write_text("5\n")

    async def main() -> None:
        record = ContainerRecord(
            id="c" * 64, name="web", created="2026-01-01T00:00:00Z",
            config=ContainerConfig(image="b", image_id="", checkpointable=True,
                                   auto_suspend_s=4),
            path="httpd", args=(), state=ContainerState(status=Status.RUNNING))
        runtime = FakeRuntime(record, _free_port(), _free_port())
        suspender = AutoSuspender(runtime, None, sys_net=tmp_path)  # type: ignore[arg-type]
        try:
            await suspender.tick(100.0)
            (stats / "rx_packets").write_text("6\n")  # traffic: the clock starts again
            await suspender.tick(103.0)
            await suspender.tick(106.0)
            assert runtime.calls == []
            await suspender.tick(107.0)
            assert runtime.calls == ["suspend"]
            # Two clients at once: held, one resume, both answered.
            clients = [await asyncio.open_connection("127.0.0.1", runtime.host_port)
                       for _ in range(2)]
            for reader, writer in clients:
                assert await asyncio.wait_for(reader.read(), 10) == b"awake"
                writer.close()
            assert runtime.calls == ["suspend", "resume"]
            await suspender.tick(108.0)  # running again: its clock starts afresh
            await suspender.tick(111.0)
            assert runtime.calls == ["suspend", "resume"]
            with pytest.raises(OSError):  # the wake proxy listens no more
                await asyncio.open_connection("127.0.0.1", runtime.host_port)
        finally:
            await suspender.close()
            runtime.close()

    asyncio.run(main())


def _counters(tmp_path: Path) -> None:
    stats = tmp_path / "sct1" / "statistics"
    stats.mkdir(parents=True)
    for key in ("rx_packets", "tx_packets"):
        (stats / key).write_text("5\n")


def _sleepy() -> ContainerRecord:
    return ContainerRecord(
        id="d" * 64, name="dns", created="2026-01-01T00:00:00Z",
        config=ContainerConfig(image="b", image_id="", checkpointable=True, auto_suspend_s=2),
        path="named", args=(), state=ContainerState(status=Status.RUNNING))


async def _recv(sock: socket.socket) -> bytes:
    return await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 2048), 10)


def test_a_datagram_resumes_a_suspended_container_and_is_answered(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _counters(tmp_path)

    async def main() -> None:
        runtime = FakeRuntime(_sleepy(), _free_port(), _free_port())
        suspender = AutoSuspender(runtime, None, sys_net=tmp_path)  # type: ignore[arg-type]
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.setblocking(False)
        wake_port = ("127.0.0.1", runtime.udp_port)
        try:
            await suspender.tick(100.0)
            await suspender.tick(102.0)
            assert runtime.calls == ["suspend"]
            # Datagrams sent while it resumes are held and answered in order, one resume.
            for query in (b"q1", b"q2", b"q3"):
                client.sendto(query, wake_port)
            assert [await _recv(client) for _ in range(3)] == [b"awake:q1", b"awake:q2",
                                                                b"awake:q3"]
            assert runtime.calls == ["suspend", "resume"]
            await suspender.tick(103.0)  # running: the UDP wake proxy relays on (conntrack)
            client.sendto(b"q4", wake_port)
            assert await _recv(client) == b"awake:q4"
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken, \
                    pytest.raises(OSError):  # still bound: its clients' flows may come to it
                taken.bind(wake_port)
            monkeypatch.setattr(autosuspend, "UDP_DRAIN_S", 0.0)
            await suspender.tick(104.0)  # quiet long enough (not yet idle): it is closed
            assert runtime.calls == ["suspend", "resume"]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as free:
                free.bind(wake_port)
        finally:
            client.close()
            await suspender.close()
            runtime.close()

    asyncio.run(main())


def test_suspended_again_the_udp_relay_makes_way_for_a_new_wake_listener(
        tmp_path: Path) -> None:
    _counters(tmp_path)

    async def main() -> None:
        runtime = FakeRuntime(_sleepy(), _free_port(), _free_port())
        suspender = AutoSuspender(runtime, None, sys_net=tmp_path)  # type: ignore[arg-type]
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.setblocking(False)
        wake_port = ("127.0.0.1", runtime.udp_port)
        try:
            await suspender.tick(100.0)
            await suspender.tick(102.0)
            client.sendto(b"one", wake_port)
            assert await _recv(client) == b"awake:one"
            runtime.close()  # its service went away with the VM
            await suspender.tick(103.0)
            await suspender.tick(106.0)  # idle: suspended again
            assert runtime.calls == ["suspend", "resume", "suspend"]
            client.sendto(b"two", wake_port)  # the same client: a new wake, not a dead relay
            assert await _recv(client) == b"awake:two"
            assert runtime.calls == ["suspend", "resume", "suspend", "resume"]
        finally:
            client.close()
            await suspender.close()
            runtime.close()

    asyncio.run(main())


def test_a_connection_during_a_suspend_is_held_and_resumes_it_after() -> None:
    """`steelcup suspend` by hand (not the suspender's own): its watcher binds the wake
    proxies as the save begins, so a connection made during the save is held, and resumes
    the container once the save is done (not refused, not lost with the VM)."""

    async def main() -> None:
        runtime = FakeRuntime(_sleepy(), _free_port(), _free_port())
        runtime.save_s = 0.5
        suspender = AutoSuspender(runtime, None, period_s=3600)  # type: ignore[arg-type]
        try:
            suspending = asyncio.create_task(runtime.suspend(runtime.current.id))
            await asyncio.sleep(0.1)  # saving now
            assert runtime.saving
            reader, writer = await asyncio.open_connection("127.0.0.1", runtime.host_port)
            assert await asyncio.wait_for(reader.read(), 10) == b"awake"
            writer.close()
            assert await suspending
            assert runtime.calls == ["suspend", "resume"]
        finally:
            await suspender.close()
            runtime.close()

    asyncio.run(main())


def test_a_failed_suspend_takes_its_wake_proxies_away() -> None:
    async def main() -> None:
        runtime = FakeRuntime(_sleepy(), _free_port(), _free_port())
        suspender = AutoSuspender(runtime, None, period_s=3600)  # type: ignore[arg-type]
        try:
            runtime.saving = True
            await suspender.suspend_changed(runtime.current.id)
            with socket.socket() as taken, pytest.raises(OSError):  # a wake proxy has it
                taken.bind(("127.0.0.1", runtime.host_port))
            runtime.saving = False  # the save failed: it runs on
            await suspender.suspend_changed(runtime.current.id)
            with socket.socket() as free:
                free.bind(("127.0.0.1", runtime.host_port))
            assert runtime.calls == []
        finally:
            await suspender.close()
            runtime.close()

    asyncio.run(main())
