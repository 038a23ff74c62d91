"""The UDP proxy on the host's loopback (net/proxy.py's UdpProxy): as a suspended container's
wake listener it holds datagrams until its target is up, then relays them in order with the
replies going back to each client; its limits drop a flood instead of growing.
tests/vm/test_udp_wake.py runs it with a real VM."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

from steelcup.errors import InvalidArgument
from steelcup.net.proxy import UdpProxy
from steelcup.net.udphold import HoldLimits


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Echo(asyncio.DatagramProtocol):
    """A UDP service: records what it gets and answers `up:` + the datagram."""

    def __init__(self) -> None:
        self.got: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.got.append(data)
        assert self.transport is not None
        self.transport.sendto(b"up:" + data, addr)


async def _echo_on(port: int) -> Echo:
    _, echo = await asyncio.get_running_loop().create_datagram_endpoint(
        Echo, local_addr=("127.0.0.1", port))
    return echo


def _client() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    return sock


async def _recv(sock: socket.socket) -> bytes:
    return await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 2048), 10)


async def _until(check: Callable[[], bool], what: str) -> None:
    async with asyncio.timeout(10):
        while not check():
            await asyncio.sleep(0.01)  # polling the test's own observation, bounded
    assert check(), what


def _waker(back: int, calls: list[str], echoes: list[Echo],
           gate: asyncio.Event | None = None) -> Callable[[], Awaitable[None]]:
    async def wake() -> None:  # as a resume does: the target comes up meanwhile
        calls.append("wake")
        if gate is not None:
            await gate.wait()
        echoes.append(await _echo_on(back))
    return wake


def test_datagrams_are_held_until_the_target_is_up_then_relayed_in_order() -> None:
    async def main() -> None:
        front, back = _free_udp_port(), _free_udp_port()
        calls: list[str] = []
        echoes: list[Echo] = []
        gate = asyncio.Event()
        proxy = UdpProxy("127.0.0.1", front, "127.0.0.1", back,
                         before_relay=_waker(back, calls, echoes, gate))
        await proxy.start()
        a, b = _client(), _client()
        try:
            for sock, data in ((a, b"1"), (b, b"x"), (a, b"2"), (a, b"3")):
                sock.sendto(data, ("127.0.0.1", front))
            await _until(lambda: proxy.received == 4, "all four held")
            assert calls == ["wake"] and not proxy.relaying  # one wake for all of them
            gate.set()
            assert [await _recv(a) for _ in range(3)] == [b"up:1", b"up:2", b"up:3"]
            assert await _recv(b) == b"up:x"
            assert [d for d in echoes[0].got if d != b"x"] == [b"1", b"2", b"3"]
            assert proxy.relaying and proxy.dropped == 0
            a.sendto(b"4", ("127.0.0.1", front))  # relayed as usual from now on
            assert await _recv(a) == b"up:4"
            assert calls == ["wake"]
        finally:
            a.close()
            b.close()
            await proxy.close()
            for echo in echoes:
                assert echo.transport is not None
                echo.transport.close()

    asyncio.run(main())


def test_a_flood_wakes_once_and_what_exceeds_the_hold_is_dropped_and_counted() -> None:
    async def main() -> None:
        front, back = _free_udp_port(), _free_udp_port()
        calls: list[str] = []
        echoes: list[Echo] = []
        gate = asyncio.Event()
        proxy = UdpProxy("127.0.0.1", front, "127.0.0.1", back,
                         before_relay=_waker(back, calls, echoes, gate),
                         hold=HoldLimits(max_datagrams=5, max_bytes=4096))
        await proxy.start()
        flood = _client()
        try:
            for i in range(100):
                flood.sendto(str(i).encode(), ("127.0.0.1", front))
            await _until(lambda: proxy.held is not None and proxy.held.seen == proxy.received
                         and proxy.received >= 50, "the flood read")
            await asyncio.sleep(0.1)  # the rest of it, if the kernel kept it
            gate.set()
            await _until(lambda: bool(echoes) and len(echoes[0].got) == 5, "five relayed")
            assert echoes[0].got == [b"0", b"1", b"2", b"3", b"4"]
            assert calls == ["wake"]
            assert proxy.dropped == proxy.received - 5
        finally:
            flood.close()
            await proxy.close()
            for echo in echoes:
                assert echo.transport is not None
                echo.transport.close()

    asyncio.run(main())


def test_a_failed_wake_drops_what_is_held_and_the_next_datagram_wakes_again() -> None:
    async def main() -> None:
        front, back = _free_udp_port(), _free_udp_port()
        calls: list[str] = []
        echoes: list[Echo] = []

        async def wake() -> None:
            calls.append("wake")
            if len(calls) == 1:
                raise InvalidArgument("no checkpoint")
            echoes.append(await _echo_on(back))

        proxy = UdpProxy("127.0.0.1", front, "127.0.0.1", back, before_relay=wake)
        await proxy.start()
        client = _client()
        try:
            client.sendto(b"lost", ("127.0.0.1", front))
            await _until(lambda: proxy.dropped == 1, "the held datagram dropped")
            assert not proxy.relaying
            client.sendto(b"again", ("127.0.0.1", front))
            assert await _recv(client) == b"up:again"
            assert calls == ["wake", "wake"] and echoes[0].got == [b"again"]
        finally:
            client.close()
            await proxy.close()
            for echo in echoes:
                assert echo.transport is not None
                echo.transport.close()

    asyncio.run(main())


def test_clients_beyond_the_flow_limit_are_dropped_and_counted() -> None:
    async def main() -> None:
        front, back = _free_udp_port(), _free_udp_port()
        echo = await _echo_on(back)
        proxy = UdpProxy("127.0.0.1", front, "127.0.0.1", back, max_flows=2)
        await proxy.start()
        clients = [_client() for _ in range(3)]
        try:
            for i, sock in enumerate(clients[:2]):
                sock.sendto(b"c%d" % i, ("127.0.0.1", front))
                assert await _recv(sock) == b"up:c%d" % i
            clients[2].sendto(b"c2", ("127.0.0.1", front))
            await _until(lambda: proxy.dropped == 1, "the third client dropped")
            clients[0].sendto(b"more", ("127.0.0.1", front))  # a known flow still goes
            assert await _recv(clients[0]) == b"up:more"
            assert b"c2" not in echo.got
        finally:
            for sock in clients:
                sock.close()
            await proxy.close()
            assert echo.transport is not None
            echo.transport.close()

    asyncio.run(main())
