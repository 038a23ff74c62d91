"""The UDP relays' flow table: one connected upstream socket per client address, so that
what the target answers goes back to that client. Shared by the published ports' proxy
(net/proxy.py UdpProxy) and a sleeping service's wake listener (net/udpwake.py).

Bounded: at most `max_flows` flows (an idle one, quiet for UDP_IDLE_S, makes way for a new
one) and UDP_PENDING datagrams of a client whose flow is being opened; the rest is dropped and
counted in `dropped`, so a flood from many addresses neither grows memory nor is relayed.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from typing import cast

from steelcup.net.netns import socket_in
from steelcup.net.udphold import Address

log = logging.getLogger(__name__)

UDP_IDLE_S = 60.0
UDP_MAX_FLOWS = 4096  # client addresses relayed at once (one socket each)
UDP_PENDING = 64  # a client's datagrams held while its flow is being opened

# A client -> where its flow goes (may raise: the client's datagrams are then dropped).
TargetOf = Callable[[Address], Awaitable[Address]]
# (a datagram the target answered, the client it goes back to)
Reply = Callable[[bytes, Address], None]


class _Flow(asyncio.DatagramProtocol):
    """One client's socket to its target."""

    def __init__(self, reply: Reply, client: Address) -> None:
        self.reply = reply
        self.client = client
        self.transport: asyncio.DatagramTransport | None = None
        self.last = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # selector transports are not DatagramTransport subclasses in 3.11
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.last = time.monotonic()
        self.reply(data, self.client)


class UdpFlows:
    """Relays each client's datagrams from a socket of its own, opened on its first one."""

    def __init__(self, netns: str | None, target_of: TargetOf, reply: Reply, what: str,
                 max_flows: int = UDP_MAX_FLOWS) -> None:
        self.netns = netns
        self.target_of = target_of
        self.reply = reply
        self.what = what  # the relay, for the log
        self.max_flows = max_flows
        self.dropped = 0
        self._flows: dict[Address, _Flow] = {}
        self._opening: dict[Address, list[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def relay(self, client: Address, data: bytes) -> None:
        flow = self._flows.get(client)
        if flow is not None and flow.transport is not None:
            flow.last = time.monotonic()
            flow.transport.sendto(data)
            return
        waiting = self._opening.get(client)
        if waiting is not None:  # its flow is being opened: sent after the first, in order
            if len(waiting) < UDP_PENDING:
                waiting.append(data)
            else:
                self.dropped += 1
            return
        self.expire()  # a new flow: the quiet ones go first
        if len(self._flows) + len(self._opening) >= self.max_flows:
            self.dropped += 1
            return
        self._opening[client] = [data]
        task = asyncio.get_running_loop().create_task(self._open(client))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _open(self, client: Address) -> None:
        target: Address | None = None
        try:
            target = await self.target_of(client)
            sock = socket_in(self.netns, socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.setblocking(False)
                sock.connect(target)
            except OSError:
                sock.close()
                raise
            _, flow = await asyncio.get_running_loop().create_datagram_endpoint(
                lambda: _Flow(self.reply, client), sock=sock)
        except Exception as exc:  # noqa: BLE001 - the flow's datagrams are dropped
            lost = self._opening.pop(client, [])
            self.dropped += len(lost)
            log.info("%s: %d datagrams from %s:%d not relayed%s: %s", self.what, len(lost),
                     *client, f" to {target[0]}:{target[1]}" if target else "", exc)
            return
        pending = self._opening.pop(client, None)
        if pending is None:  # `clear` came meanwhile
            if flow.transport is not None:
                flow.transport.close()
            return
        self._flows[client] = flow
        assert flow.transport is not None
        for data in pending:
            flow.transport.sendto(data)

    def expire(self) -> None:
        """Closes the flows quiet for UDP_IDLE_S."""
        now = time.monotonic()
        for client, flow in list(self._flows.items()):
            if now - flow.last > UDP_IDLE_S and flow.transport is not None:
                flow.transport.close()
                del self._flows[client]

    def clear(self) -> None:
        """Closes every flow; what is being opened is dropped."""
        for task in list(self._tasks):
            task.cancel()
        for flow in self._flows.values():
            if flow.transport is not None:
                flow.transport.close()
        self._flows.clear()
        self._opening.clear()
