"""A sleeping service's UDP wake listener (services/waker.py; docs/services.md, "Auto-suspend"):
one socket on a virtual IP's address, at a port the kernel picks, to which the ruleset DNATs
the VIP's udp (every port) and its published udp ports while every replica is suspended
(net/vip.py). A datagram carries only its destination after the DNAT (the listener), so each
client's flow's destination before it is asked of conntrack (`origin`: net/conntrack.py).

The first datagram calls `wake` with the listener's address and that destination (the
service's replicas resume; one that raises drops what is held, and the next datagram starts
again); those that come meanwhile are held (net/udphold.py: bounded, the excess dropped and
counted). Then each is relayed in arrival order, from one socket per client, to the address
`choose_target` names for its destination (given the same), and the target's replies go back
to the client from this socket: conntrack gives them the source the client sent to. Once
woken it relays whatever still comes (a flow that reached it keeps coming here while
conntrack keeps its DNAT). `hold` makes it hold and wake again: the service fell asleep once
more. A client's flows are one per client address: one client port sending to two ports of
a sleeping VIP clashes in conntrack anyway (both DNAT to this one port).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import cast

from steelcup.net import conntrack
from steelcup.net.netns import socket_in
from steelcup.net.proxy import UDP_IDLE_S, UDP_MAX_FLOWS, UDP_PENDING
from steelcup.net.udphold import DEFAULT_LIMITS, Address, HeldDatagrams, HoldLimits

log = logging.getLogger(__name__)

DATAGRAM_MAX = 65535
READ_BURST = 64  # datagrams read per wake-up of the loop, then other work runs

# (the listener's own address, a client's flow's original destination) -> ...
Wake = Callable[[Address, Address], Awaitable[None]]
ChooseTarget = Callable[[Address, Address], Awaitable[Address]]
# (the listener's own address, a client) -> the client's flow's original destination
# (blocking; ConntrackError ENOENT: it was not DNATed, sent to the listener straight)
Origin = Callable[[Address, Address], Address]


class _Upstream(asyncio.DatagramProtocol):
    """One flow's socket to its target: what the target answers goes back to the client."""

    def __init__(self, relay: UdpWakeRelay, client: Address) -> None:
        self.relay = relay
        self.client = client
        self.transport: asyncio.DatagramTransport | None = None
        self.last = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # selector transports are not DatagramTransport subclasses in 3.11
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.last = time.monotonic()
        self.relay.reply(data, self.client)


class UdpWakeRelay:
    """Holds a sleeping service's datagrams until `wake` returns, then relays them."""

    def __init__(self, listen_ip: str, netns: str | None, wake: Wake,
                 choose_target: ChooseTarget, hold: HoldLimits = DEFAULT_LIMITS,
                 max_flows: int = UDP_MAX_FLOWS, origin: Origin | None = None) -> None:
        self.listen_ip = listen_ip
        self.netns = netns
        self.wake = wake
        self.choose_target = choose_target
        self.origin: Origin = origin or functools.partial(conntrack.lookup, netns)
        self.limits = hold
        self.max_flows = max_flows
        self.received = 0
        self.dropped = 0  # over the limits, no target, or a failed wake
        self.last_datagram = time.monotonic()  # from a client or back from a target
        self.held: HeldDatagrams[Address] | None = HeldDatagrams(hold)
        self._sock: socket.socket | None = None
        self._flows: dict[Address, _Upstream] = {}
        self._opening: dict[Address, list[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._sock is not None
        return int(self._sock.getsockname()[1])

    @property
    def listen(self) -> Address:
        return self.listen_ip, self.port

    @property
    def holding(self) -> bool:
        """Datagrams are held until a wake (not relayed)."""
        return self.held is not None

    async def start(self) -> None:
        sock = socket_in(self.netns, socket.AF_INET, socket.SOCK_DGRAM,
                         bind=(self.listen_ip, 0))
        try:
            sock.setblocking(False)
            asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)
        except BaseException:
            sock.close()
            raise
        self._sock = sock

    def _readable(self) -> None:
        assert self._sock is not None
        for _ in range(READ_BURST):
            try:
                data, client = self._sock.recvfrom(DATAGRAM_MAX)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # an ICMP error of an earlier reply: nothing to read
                log.debug("udp wake listener %s: %s", self.listen_ip, exc)
                return
            self._received((client[0], client[1]), data)

    def _received(self, client: Address, data: bytes) -> None:
        self.received += 1
        self.last_datagram = time.monotonic()
        if self.held is not None:
            if self.held.push(client, data):
                self._spawn(self._wake(self.held, client))
            return
        self._relay(client, data)

    async def _original(self, client: Address) -> Address:
        """Where the client's flow was going before the DNAT (the listener: not DNATed)."""
        try:
            return await asyncio.to_thread(self.origin, self.listen, client)
        except conntrack.ConntrackError as exc:
            if exc.errno != errno.ENOENT:
                raise
            return self.listen

    def reply(self, data: bytes, client: Address) -> None:
        self.last_datagram = time.monotonic()
        if self._sock is not None:
            with contextlib.suppress(OSError):  # a full buffer drops it, as the network would
                self._sock.sendto(data, client)

    def _spawn(self, coro: Coroutine[None, None, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _wake(self, held: HeldDatagrams[Address], first: Address) -> None:
        try:
            await self.wake(self.listen, await self._original(first))
        except Exception as exc:  # noqa: BLE001 - the held datagrams are dropped
            count = held.discard()
            self.dropped += held.dropped
            log.warning("udp wake listener %s: %d datagrams not relayed: %s", self.listen_ip,
                        count, exc)
            if self.held is held:
                self.held = HeldDatagrams(self.limits)
            return
        if self.held is not held:  # `hold` or `close` came first
            return
        if held.dropped:
            log.warning("udp wake listener %s: %d datagrams (%d bytes) dropped while the "
                        "service woke (more than %d datagrams or %d bytes)", self.listen_ip,
                        held.dropped, held.dropped_bytes, self.limits.max_datagrams,
                        self.limits.max_bytes)
        self.dropped += held.dropped
        self.held = None  # from now on datagrams are relayed; nothing runs in between
        for client, data in held.drain():
            self._relay(client, data)

    def _relay(self, client: Address, data: bytes) -> None:
        upstream = self._flows.get(client)
        if upstream is not None and upstream.transport is not None:
            upstream.last = time.monotonic()
            upstream.transport.sendto(data)
            return
        waiting = self._opening.get(client)
        if waiting is not None:  # its flow is being opened: sent after the first, in order
            if len(waiting) < UDP_PENDING:
                waiting.append(data)
            else:
                self.dropped += 1
            return
        if len(self._flows) + len(self._opening) >= self.max_flows:
            self._expire()
            if len(self._flows) + len(self._opening) >= self.max_flows:
                self.dropped += 1
                return
        self._opening[client] = [data]
        self._spawn(self._open(client))

    async def _open(self, client: Address) -> None:
        original = self.listen
        try:
            original = await self._original(client)
            target = await self.choose_target(self.listen, original)
            sock = socket_in(self.netns, socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.setblocking(False)
                sock.connect(target)
            except OSError:
                sock.close()
                raise
            _, upstream = await asyncio.get_running_loop().create_datagram_endpoint(
                lambda: _Upstream(self, client), sock=sock)
        except Exception as exc:  # noqa: BLE001 - the flow's datagrams are dropped
            lost = self._opening.pop(client, [])
            self.dropped += len(lost)
            log.info("udp wake listener %s: %d datagrams to %s:%d not relayed: %s",
                     self.listen_ip, len(lost), *original, exc)
            return
        pending = self._opening.pop(client, None)
        if pending is None:  # `hold` or `close` came meanwhile
            if upstream.transport is not None:
                upstream.transport.close()
            return
        self._flows[client] = upstream
        assert upstream.transport is not None
        for data in pending:
            upstream.transport.sendto(data)

    def _expire(self) -> None:
        now = time.monotonic()
        for client, upstream in list(self._flows.items()):
            if now - upstream.last > UDP_IDLE_S and upstream.transport is not None:
                upstream.transport.close()
                del self._flows[client]

    def _drop_flows(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for upstream in self._flows.values():
            if upstream.transport is not None:
                upstream.transport.close()
        self._flows.clear()
        self._opening.clear()

    def hold(self) -> None:
        """The service sleeps again: its flows' targets are suspended; hold and wake anew."""
        if self.held is None:
            self._drop_flows()
            self.held = HeldDatagrams(self.limits)

    def quiet_s(self) -> float:
        """Seconds since the last datagram, from a client or back from a target."""
        return time.monotonic() - self.last_datagram

    def close(self) -> None:
        """The socket and every flow close; what is held or pending is dropped."""
        self._drop_flows()
        self.held = None
        if self._sock is not None:
            with contextlib.suppress(ValueError, RuntimeError):  # the loop may be closing
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
