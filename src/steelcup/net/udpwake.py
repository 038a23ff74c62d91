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

from steelcup.net import conntrack
from steelcup.net.netns import socket_in
from steelcup.net.udpflows import UDP_MAX_FLOWS, UdpFlows
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
        self.last_datagram = time.monotonic()  # from a client or back from a target
        self.held: HeldDatagrams[Address] | None = HeldDatagrams(hold)
        self.flows = UdpFlows(netns, self._target_of, self.reply,
                              f"udp wake listener {listen_ip}", max_flows)
        self._dropped = 0  # by a failed wake, or over the hold limits
        self._sock: socket.socket | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def dropped(self) -> int:
        """Datagrams not relayed: over the limits, no target, or a failed wake."""
        return self._dropped + self.flows.dropped

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
        self.flows.relay(client, data)

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
            self._dropped += held.dropped
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
        self._dropped += held.dropped
        self.held = None  # from now on datagrams are relayed; nothing runs in between
        for client, data in held.drain():
            self.flows.relay(client, data)

    async def _target_of(self, client: Address) -> Address:
        """The replica the client's flow goes to: chosen for where it was going."""
        return await self.choose_target(self.listen, await self._original(client))

    def _drop_flows(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self.flows.clear()

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
