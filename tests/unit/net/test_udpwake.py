"""A sleeping service's UDP wake listener (net/udpwake.py) on the loopback, with real sockets:
the first datagram wakes (once), those sent meanwhile are held within the limits and then
relayed in order to the chosen target, whose replies reach the client; a failed wake drops
what was held and the next datagram wakes again; `hold` after a wake holds anew. (The DNAT
that brings it a VIP's datagrams is the VM tier's: tests/vm/test_service_udp_wake.py.)"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from steelcup.net.conntrack import ConntrackError
from steelcup.net.udphold import DEFAULT_LIMITS, HoldLimits
from steelcup.net.udpwake import UdpWakeRelay

Address = tuple[str, int]
VIP_PORT = ("10.0.0.100", 53)  # where conntrack says the clients' flows were going


class Echo(asyncio.DatagramProtocol):
    """The replica: answers each datagram with "echo:" + it, and keeps what it got."""

    def __init__(self) -> None:
        self.got: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.got.append(data)
        assert self.transport is not None
        self.transport.sendto(b"echo:" + data, addr)


class Service:
    """What the waker gives the listener: a wake that waits for `gate` (or fails), and the
    echo server as the target."""

    def __init__(self, target: Address) -> None:
        self.target = target
        self.gate = asyncio.Event()
        self.wakes: list[tuple[Address, Address]] = []
        self.fail = False

    async def wake(self, listener: Address, original: Address) -> None:
        self.wakes.append((listener, original))
        await self.gate.wait()
        if self.fail:
            raise RuntimeError("no replica could be resumed")

    async def choose(self, listener: Address, original: Address) -> Address:
        return self.target


@asynccontextmanager
async def running(limits: HoldLimits = DEFAULT_LIMITS) -> AsyncIterator[
        tuple[UdpWakeRelay, Service, Echo]]:
    loop = asyncio.get_running_loop()
    transport, echo = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    service = Service(transport.get_extra_info("sockname"))
    relay = UdpWakeRelay("127.0.0.1", None, service.wake, service.choose, limits,
                         origin=lambda listener, client: VIP_PORT)
    await relay.start()
    try:
        yield relay, service, echo
    finally:
        relay.close()
        transport.close()


def client() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


async def replies(sock: socket.socket, count: int) -> list[tuple[bytes, Address]]:
    loop = asyncio.get_running_loop()
    out = []
    async with asyncio.timeout(5):
        while len(out) < count:
            data, addr = await loop.sock_recvfrom(sock, 4096)
            out.append((data, addr))
    return out


async def eventually(check: object) -> None:
    async with asyncio.timeout(5):
        while not check():  # type: ignore[operator]
            await asyncio.sleep(0.01)


def test_datagrams_are_held_until_the_wake_then_relayed_in_order_with_replies() -> None:
    async def main() -> None:
        async with running() as (relay, service, echo):
            sock = client()
            for n in range(3):
                sock.sendto(f"q{n}".encode(), relay.listen)
            await eventually(lambda: relay.received == 3)
            # one wake for the three, given where they were sent before the DNAT
            assert service.wakes == [(relay.listen, VIP_PORT)]
            assert echo.got == [] and relay.holding
            service.gate.set()
            got = await replies(sock, 3)
            assert [d for d, _ in got] == [b"echo:q0", b"echo:q1", b"echo:q2"]
            assert {a for _, a in got} == {relay.listen}  # from the address it sent to
            assert echo.got == [b"q0", b"q1", b"q2"] and not relay.holding
            # woken: later datagrams are relayed at once, from the same flow
            sock.sendto(b"q3", relay.listen)
            assert (await replies(sock, 1))[0][0] == b"echo:q3"
            assert len(service.wakes) == 1 and relay.dropped == 0
            sock.close()

    asyncio.run(main())


def test_what_does_not_fit_is_dropped_and_counted() -> None:
    async def main() -> None:
        async with running(HoldLimits(max_datagrams=2, max_bytes=1000)) as (relay, service,
                                                                             echo):
            sock = client()
            for n in range(5):
                sock.sendto(f"f{n}".encode(), relay.listen)
            await eventually(lambda: relay.received == 5)
            service.gate.set()
            assert [d for d, _ in await replies(sock, 2)] == [b"echo:f0", b"echo:f1"]
            await eventually(lambda: not relay.holding)
            assert relay.dropped == 3 and echo.got == [b"f0", b"f1"]
            sock.close()

    asyncio.run(main())


def test_a_failed_wake_drops_what_was_held_and_the_next_datagram_wakes_again() -> None:
    async def main() -> None:
        async with running() as (relay, service, echo):
            sock = client()
            service.fail = True
            service.gate.set()
            sock.sendto(b"lost", relay.listen)
            await eventually(lambda: relay.dropped == 1)
            assert relay.holding and echo.got == []
            service.fail = False
            sock.sendto(b"again", relay.listen)
            assert (await replies(sock, 1))[0][0] == b"echo:again"
            assert len(service.wakes) == 2
            sock.close()

    asyncio.run(main())


def test_hold_after_a_wake_closes_the_flows_and_holds_anew() -> None:
    async def main() -> None:
        async with running() as (relay, service, echo):
            sock = client()
            service.gate.set()
            sock.sendto(b"a", relay.listen)
            await replies(sock, 1)
            service.gate.clear()  # the service fell asleep again
            relay.hold()
            sock.sendto(b"b", relay.listen)
            await eventually(lambda: len(service.wakes) == 2)
            assert echo.got == [b"a"] and relay.holding
            service.gate.set()
            assert (await replies(sock, 1))[0][0] == b"echo:b"
            sock.close()

    asyncio.run(main())


def test_a_datagram_that_was_not_dnated_wakes_for_the_listener_itself() -> None:
    """conntrack knows no DNATed flow of the client (ENOENT): its destination is the
    listener, which the waker refuses to wake for."""
    def nothing(listener: Address, client: Address) -> Address:
        raise ConntrackError(errno.ENOENT, "no such flow")

    async def main() -> None:
        async with running() as (relay, service, echo):
            relay.origin = nothing
            service.gate.set()
            sock = client()
            sock.sendto(b"straight", relay.listen)
            await eventually(lambda: len(service.wakes) == 1)
            assert service.wakes == [(relay.listen, relay.listen)]
            sock.close()

    asyncio.run(main())
