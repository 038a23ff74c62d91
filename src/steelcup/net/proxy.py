"""Userspace port proxy for the host's loopback (like docker-proxy): `-p 8080:80` listens on
127.0.0.1:8080 here and relays each TCP connection / UDP flow to container_ip:container_port.
It holds the port; the loopback's DNAT (net/nft.py) takes a running container's connections
before they reach it, so it serves what no rule takes (a VIP's ports). The same classes, with a hook
before they relay, are a suspended container's wake listeners (runtime/autosuspend.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import cast

from steelcup.net.netns import socket_in
from steelcup.net.udpflows import UDP_MAX_FLOWS, UdpFlows
from steelcup.net.udphold import DEFAULT_LIMITS, Address, HeldDatagrams, HoldLimits

log = logging.getLogger(__name__)

CHUNK_BYTES = 65536
LISTEN_BACKLOG = 128
CONNECT_TIMEOUT_S = 5.0
SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h: a DNATed connection's destination before NAT

# (where the client's connection was going, before DNAT) -> where to relay it
ChooseTarget = Callable[[tuple[str, int]], Awaitable[tuple[str, int]]]


def parse_sockaddr_in(raw: bytes) -> tuple[str, int]:
    """A `struct sockaddr_in` (as SO_ORIGINAL_DST returns it) -> (address, port). Pure."""
    if len(raw) < 8:
        raise ValueError(f"a sockaddr_in is 8 bytes at least, not {len(raw)}")
    family, port = struct.unpack_from("=HH", raw)
    if family != socket.AF_INET:
        raise ValueError(f"not an IPv4 address (family {family})")
    return socket.inet_ntoa(raw[4:8]), socket.ntohs(port)


def original_destination(sock: socket.socket) -> tuple[str, int]:
    """Where an accepted, DNATed connection was going (conntrack's original destination)."""
    return parse_sockaddr_in(sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16))


class ConnectionCap:
    """A bound on the connections open at once through the proxies that share it. A wake
    proxy listens on a published port anyone may connect to: without a bound, connections
    held while the container resumes (and relays that outlive its run) would take the
    daemon's file descriptors and memory without end."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a connection cap needs a limit of 1 or more, not {limit}")
        self.limit = limit
        self.open = 0

    def take(self) -> bool:
        """One more connection, if there is room for it."""
        if self.open >= self.limit:
            return False
        self.open += 1
        return True

    def give(self) -> None:
        self.open -= 1


class _Activity:
    """When a relayed connection last carried a byte, either way."""

    def __init__(self, now: float) -> None:
        self.last = now


class TcpProxy:
    """Listens on (listen_ip, listen_port) and relays to (target_ip, target_port).

    The port is bound with SO_REUSEPORT: a suspended container's wake proxy (the same class,
    with `before_connect` resuming it; runtime/autosuspend.py) listens on the port while the
    container's own proxy is opened again, so no connection is refused in between.
    `before_connect` is awaited for each connection before it is relayed (one that raises
    drops the connection). With `choose_target` the target is chosen per connection instead,
    from where the connection was going before it was DNATed to this listener (a service's
    wake listener, services/waker.py); one that raises drops the connection.

    With `cap`, a connection beyond it is closed at once (the cap may be shared by several
    proxies); with `idle_timeout_s`, a relayed connection that carried nothing either way
    for that long is closed; with `connects_at_once`, at most that many connections to the
    target are being opened at a time (a wake proxy's held connections go on together once
    their container runs: a burst that would overflow a small listen backlog in the guest,
    whose dropped SYNs then wait for TCP's retransmissions, seconds apart).

    The bytes are moved by the kernel (`splice` through a pipe per direction): they are not
    copied into this process, which a download through the loopback proxy is bound by."""

    def __init__(self, listen_ip: str, listen_port: int, target_ip: str, target_port: int,
                 netns: str | None = None,
                 before_connect: Callable[[], Awaitable[None]] | None = None,
                 connect_timeout_s: float = CONNECT_TIMEOUT_S,
                 choose_target: ChooseTarget | None = None, cap: ConnectionCap | None = None,
                 idle_timeout_s: float | None = None,
                 connects_at_once: int | None = None) -> None:
        self.listen = (listen_ip, listen_port)
        self.target = (target_ip, target_port)
        self.netns = netns
        self.before_connect = before_connect
        self.choose_target = choose_target
        self.connect_timeout_s = connect_timeout_s
        self.cap = cap
        self.idle_timeout_s = idle_timeout_s
        self._connecting = (asyncio.Semaphore(connects_at_once) if connects_at_once
                            else contextlib.nullcontext())
        self._listener: socket.socket | None = None
        self._port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conns: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The port it listens (or listened) on."""
        assert self._port, "not started"
        return self._port

    async def start(self) -> None:
        sock = socket_in(self.netns, socket.AF_INET, socket.SOCK_STREAM, bind=self.listen,
                         reuse_port=True)
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
        self._loop = asyncio.get_running_loop()
        self._listener = sock
        self._port = int(sock.getsockname()[1])
        self._loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        """The listener is readable: take what is in its queue (a batch, as asyncio's server
        does), a task per connection."""
        listener, loop = self._listener, self._loop
        assert listener is not None and loop is not None
        for _ in range(LISTEN_BACKLOG):
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors: the queue waits for the next turn
                log.warning("proxy %s: accept: %s", self.listen, exc)
                return
            conn.setblocking(False)
            if self.cap is not None and not self.cap.take():
                log.debug("proxy %s: %d connections open, the most it holds: one refused",
                          self.listen, self.cap.limit)
                conn.close()
                continue
            task = loop.create_task(self._handle(conn), name=f"proxy-{self.listen[1]}")
            self._conns.add(task)
            task.add_done_callback(self._conns.discard)

    async def _handle(self, conn: socket.socket) -> None:
        up: socket.socket | None = None
        try:
            target = self.target
            try:
                if self.before_connect is not None:
                    await self.before_connect()
                if self.choose_target is not None:
                    target = await self.choose_target(original_destination(conn))
            except Exception as exc:  # noqa: BLE001 - the client's connection is dropped
                log.warning("proxy %s: not relayed: %s", self.listen, exc)
                return
            up = socket_in(self.netns, socket.AF_INET, socket.SOCK_STREAM)
            up.setblocking(False)
            try:
                async with asyncio.timeout(self.connect_timeout_s), self._connecting:
                    await asyncio.get_running_loop().sock_connect(up, target)
            except (OSError, TimeoutError) as exc:
                log.info("proxy %s -> %s: %r", self.listen, target, exc)
                return
            activity = _Activity(asyncio.get_running_loop().time())
            await asyncio.gather(_splice(conn, up, activity, self.idle_timeout_s),
                                 _splice(up, conn, activity, self.idle_timeout_s))
        finally:
            if up is not None:
                up.close()
            conn.close()
            if self.cap is not None:
                self.cap.give()

    def stop_listening(self) -> None:
        """No new connections; those relayed go on until they end (or `close`). What the
        kernel has queued is taken first: closing the listener would reset it (a port's
        listeners hand over to each other: the loopback proxy and a wake proxy)."""
        if self._listener is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._listener.fileno())
                self._accept()
            self._listener.close()
            self._listener = None

    @property
    def relaying(self) -> int:
        return len(self._conns)

    async def close(self) -> None:
        self.stop_listening()
        for task in list(self._conns):
            task.cancel()
        for task in list(self._conns):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def _ready(fd: int, writable: bool, timeout_s: float | None) -> None:
    """Until `fd` can be read (or written); TimeoutError after `timeout_s`."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    if writable:
        loop.add_writer(fd, wake)
    else:
        loop.add_reader(fd, wake)
    try:
        async with asyncio.timeout(timeout_s):
            await ready
    finally:
        if writable:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


async def _splice(src: socket.socket, dst: socket.socket, activity: _Activity,
                  idle_timeout_s: float | None) -> None:
    """Move one direction, src to dst, through a pipe of its own; at src's end, dst's write
    side is shut. With `idle_timeout_s`, once neither direction has carried a byte for that
    long, both sockets are shut (the other direction ends with it). An error either way
    shuts both, so the other direction ends too."""
    loop = asyncio.get_running_loop()
    flags = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
    pipe_r, pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        while True:
            try:
                moved = os.splice(src.fileno(), pipe_w, CHUNK_BYTES, flags=flags)
            except (BlockingIOError, InterruptedError):
                try:
                    await _ready(src.fileno(), False, idle_timeout_s)
                except TimeoutError:
                    assert idle_timeout_s is not None  # only a deadline times out
                    if loop.time() - activity.last < idle_timeout_s:
                        continue  # the other direction is busy
                    _shut(src, dst)
                    return
                continue
            if moved == 0:  # src's end
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                return
            activity.last = loop.time()
            while moved:
                try:
                    moved -= os.splice(pipe_r, dst.fileno(), moved, flags=flags)
                except (BlockingIOError, InterruptedError):
                    await _ready(dst.fileno(), True, None)
    except OSError:
        _shut(src, dst)
    finally:
        os.close(pipe_r)
        os.close(pipe_w)


def _shut(*socks: socket.socket) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class UdpProxy(asyncio.DatagramProtocol):
    """One upstream socket per client address; idle flows close after UDP_IDLE_S. At most
    `max_flows` flows, and UDP_PENDING datagrams of a client whose flow is being opened: a
    flood from many addresses is dropped (and counted in `dropped`), not relayed.

    With `before_relay` (a suspended container's UDP wake listener, runtime/autosuspend.py)
    nothing is relayed until it returns: the first datagram starts it and the datagrams are
    held meanwhile (net/udphold.py: within `hold`, the excess dropped), then relayed in the
    order they came (each client's from its own flow, so replies reach it), and the proxy
    relays as usual from then on. One that raises drops what is held; the next datagram
    starts it again."""

    def __init__(self, listen_ip: str, listen_port: int, target_ip: str, target_port: int,
                 netns: str | None = None,
                 before_relay: Callable[[], Awaitable[None]] | None = None,
                 hold: HoldLimits = DEFAULT_LIMITS, max_flows: int = UDP_MAX_FLOWS) -> None:
        self.listen = (listen_ip, listen_port)
        self.target = (target_ip, target_port)
        self.netns = netns
        self.before_relay = before_relay
        self.hold = hold
        self.max_flows = max_flows
        self.transport: asyncio.DatagramTransport | None = None
        self.received = 0  # datagrams from clients
        self.last_datagram = time.monotonic()  # either way
        self.held: HeldDatagrams[Address] | None = (HeldDatagrams(hold) if before_relay
                                                    else None)
        self.flows = UdpFlows(netns, self._target_of, self._reply,
                              f"proxy {listen_ip}:{listen_port}/udp", max_flows)
        self._dropped = 0  # by a failed before_relay, or over the hold limits
        self._pending: set[asyncio.Task[None]] = set()
        self._lost = asyncio.Event()  # its socket is closed

    @property
    def dropped(self) -> int:
        """Datagrams not relayed: over the limits, or a failed before_relay."""
        return self._dropped + self.flows.dropped

    async def start(self) -> None:
        sock = socket_in(self.netns, socket.AF_INET, socket.SOCK_DGRAM, bind=self.listen)
        sock.setblocking(False)
        await asyncio.get_running_loop().create_datagram_endpoint(lambda: self, sock=sock)

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    @property
    def relaying(self) -> bool:
        """Datagrams go to the target (no `before_relay`, or it returned)."""
        return self.held is None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # selector transports are not DatagramTransport subclasses in 3.11
        self.transport = cast(asyncio.DatagramTransport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost.set()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.last_datagram = time.monotonic()
        self.received += 1
        if self.held is not None:
            if self.held.push(addr, data):
                self._spawn(self._wake(self.held))
            return
        self.flows.relay(addr, data)

    async def _target_of(self, client: Address) -> Address:
        return self.target

    def _reply(self, data: bytes, client: Address) -> None:
        self.last_datagram = time.monotonic()
        if self.transport is not None:
            self.transport.sendto(data, client)

    def _spawn(self, coro: Coroutine[None, None, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _wake(self, held: HeldDatagrams[Address]) -> None:
        assert self.before_relay is not None
        try:
            await self.before_relay()
        except Exception as exc:  # noqa: BLE001 - the held datagrams are dropped
            count = held.discard()
            self._dropped += held.dropped
            log.warning("proxy %s/udp: %d datagrams not relayed: %s", self.listen, count, exc)
            self.held = HeldDatagrams(self.hold)
            return
        if held.dropped:
            log.warning("proxy %s/udp: %d datagrams (%d bytes) dropped while waiting for "
                        "%s:%d (more than %d datagrams or %d bytes)", self.listen,
                        held.dropped, held.dropped_bytes, *self.target,
                        self.hold.max_datagrams, self.hold.max_bytes)
        self._dropped += held.dropped
        self.held = None  # from now on datagram_received relays; nothing runs in between
        for addr, data in held.drain():
            self.flows.relay(addr, data)

    def quiet_s(self) -> float:
        """Seconds since the last datagram, from a client or back from the target."""
        return time.monotonic() - self.last_datagram

    async def close(self) -> None:
        """`stop`, and wait until the port is free again."""
        self.stop()
        if self.transport is not None:
            await self._lost.wait()  # the transport closes its socket on the loop's next turn

    def stop(self) -> None:
        """Closes the socket and every flow; what is held or pending is dropped."""
        for task in list(self._pending):
            task.cancel()
        self.flows.clear()
        if self.transport is not None:
            self.transport.close()
