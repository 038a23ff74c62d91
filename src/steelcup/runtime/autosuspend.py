"""--auto-suspend (docs/checkpoints.md, "Auto-suspend"): a checkpointable container without
network traffic for its IDLE is suspended, and a connection or a datagram to one of its
published ports resumes it; the connection is held meanwhile, not refused (up to
WAKE_MAX_CONNECTIONS per container at once; a relayed connection silent for the container's
IDLE is closed), and datagrams are held (up to a limit) and delivered once it runs.

Idle means its NICs' host-side counters (tap rx/tx packets) did not move: traffic through its
published ports, TCP or UDP, and any other. While it is suspended its ports are unpublished
(its taps and NAT rules go with its VM), so the daemon listens on each of its ports itself (a
wake proxy: net/proxy.py's TcpProxy with a `before_connect`, or UdpProxy with a
`before_relay`, that resumes it). The wake proxies bind as the suspend begins, beside the
still published ports (the runtime tells `suspend_changed`), and the runtime unpublishes the
ports before it saves the VM: what comes during the save is held, and its resume waits for
the save to end. The first connection or datagram resumes the container, which publishes its
ports again once its VM runs: its own loopback proxy binds beside the wake proxy's socket
(SO_REUSEPORT for TCP, SO_REUSEADDR for UDP; the address-specific or newer socket takes new
traffic) and DNAT takes the other addresses' new traffic first. Then:
- a TCP wake proxy relays the connections it holds to the container's address, takes no more
  and ends with them;
- a UDP wake proxy relays the datagrams it held, in order, from one socket per client (so the
  replies reach it), and goes on relaying whatever still comes to it: a client's flow that
  reached it has a conntrack entry without DNAT, so its later datagrams come to this socket,
  not the container, until the entry expires. It closes once it has been quiet for
  UDP_DRAIN_S, longer than conntrack keeps an idle UDP flow.

`parse_idle` and `IdleClock` are pure; `AutoSuspender` is the daemon's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from steelcup.errors import InvalidArgument, NotFound, SteelcupError
from steelcup.net.proxy import ConnectionCap, TcpProxy, UdpProxy
from steelcup.runtime.model import Status

if TYPE_CHECKING:
    from steelcup.net.nft import PublishedPort
    from steelcup.runtime.containers import Runtime

log = logging.getLogger(__name__)

PERIOD_S = 1.0  # how often the counters are read
MAX_IDLE_S = 30 * 24 * 3600
# A resumed VM answers within seconds; a held connection waits this long for its target.
WAKE_CONNECT_TIMEOUT_S = 60.0
# conntrack forgets an idle UDP flow after 120 s (nf_conntrack_udp_timeout_stream) at most.
UDP_DRAIN_S = 180.0
# Connections a sleeping container's wake proxies hold and relay at once (its ports are open
# to anyone); more are closed at once. Each holds a descriptor or two of the daemon's.
WAKE_MAX_CONNECTIONS = 256
# A connection its wake proxy relays that carries nothing for its container's IDLE and this
# is closed: the container has (or could have) been suspended meanwhile, and the relay leads
# nowhere until a new connection wakes it; it must not hold a slot of the cap for ever.
WAKE_RELAY_GRACE_S = 5.0
# Held connections opened to a woken container at a time (net/proxy.py: a burst overflows a
# small listen backlog, and a dropped SYN waits seconds for its retransmission).
WAKE_CONNECTS_AT_ONCE = 8
_UNITS = {"s": 1, "m": 60, "h": 3600}
_IDLE_RE = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_idle(value: object, field: str) -> int:
    """Seconds of idleness from an API value: an integer of seconds, or a duration of whole
    hours, minutes and seconds ("90s", "5m", "1h30m"); 0 = never. Pure."""
    if isinstance(value, bool):
        raise InvalidArgument(f"{field}: expected seconds or a duration such as 5m")
    seconds: int
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, float) and value.is_integer():
        seconds = int(value)
    elif isinstance(value, str):
        text = value.strip()
        match = _IDLE_RE.fullmatch(text)
        if text.isdigit():
            seconds = int(text)
        elif text and match is not None:
            h, m, s = (int(g) if g else 0 for g in match.groups())
            seconds = h * _UNITS["h"] + m * _UNITS["m"] + s
        else:
            raise InvalidArgument(f"{field}: {value!r} is not seconds or a duration such as "
                                  "30s, 5m or 1h30m")
    else:
        raise InvalidArgument(f"{field}: expected seconds or a duration such as 5m")
    if seconds < 0 or seconds > MAX_IDLE_S:
        raise InvalidArgument(f"{field}: {seconds} s is out of range (0 to {MAX_IDLE_S})")
    return seconds


@dataclass(frozen=True)
class IdleClock:
    """The last counters seen and since when they have not moved."""

    counters: tuple[int, ...]
    since: float

    def observe(self, counters: tuple[int, ...], now: float) -> IdleClock:
        """The clock after seeing `counters` at `now`. Pure."""
        return self if counters == self.counters else IdleClock(counters, now)

    def idle_s(self, now: float) -> float:
        return now - self.since


def read_counters(sys_net: Path, taps: tuple[str, ...]) -> tuple[int, ...]:
    """Packets each way on each tap (a tap gone reads as -1: that is a change too)."""
    values = []
    for tap in taps:
        for key in ("rx_packets", "tx_packets"):
            try:
                values.append(int((sys_net / tap / "statistics" / key).read_text()))
            except (OSError, ValueError):
                values.append(-1)
    return tuple(values)


class AutoSuspender:
    """Suspends idle --auto-suspend containers and serves their ports while they sleep."""

    def __init__(self, runtime: Runtime, netns: str | None,
                 sys_net: Path = Path("/sys/class/net"), period_s: float = PERIOD_S) -> None:
        self.runtime = runtime
        self.netns = netns
        self.sys_net = sys_net
        self.period_s = period_s
        self._clocks: dict[str, IdleClock] = {}
        # listening for a suspended container
        self._wake: dict[str, list[TcpProxy | UdpProxy]] = {}
        self._waking: dict[str, asyncio.Task[None]] = {}
        self._caps: dict[str, ConnectionCap] = {}  # per container, over all its wake proxies
        self._draining: list[TcpProxy] = []  # no longer listening; relays held connections
        # UDP wake proxies of resumed containers: relaying flows conntrack sends them.
        self._udp_draining: dict[str, list[UdpProxy]] = {}
        runtime.suspend_watchers.append(self.suspend_changed)

    async def suspend_changed(self, cid: str) -> None:
        """The runtime's suspend watcher (`Runtime.suspend_watchers`): as a suspend of an
        --auto-suspend container begins (by this suspender or by hand), its wake proxies bind
        beside its still published ports, so what comes while its VM is saved is held and
        resumes it after; if the suspend fails they go (the container runs on)."""
        try:
            record = self.runtime.record(cid)
        except NotFound:
            return
        if not record.config.auto_suspend_s:
            return
        if self.runtime.suspending(cid):
            self._clocks.pop(cid, None)
            # The last wake's UDP relays lead to a VM that is going: they make way for the
            # new wake proxies (a datagram would go to the newer socket).
            await self._close_udp(cid)
            if cid not in self._wake:
                await self._listen(cid, self.runtime.run_ports(cid), record.config.auto_suspend_s)
        elif not record.state.suspended and cid not in self._waking:
            self._stop_listening(cid)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(SteelcupError, OSError):
                await self.tick(loop.time())
            await asyncio.sleep(self.period_s)

    async def tick(self, now: float) -> None:
        """One look at every --auto-suspend container."""
        seen = set()
        for record in self.runtime.list():
            if not record.config.auto_suspend_s:
                continue
            cid = record.id
            seen.add(cid)
            if record.state.suspended:
                self._clocks.pop(cid, None)
                await self._close_udp(cid)  # its flows' target has gone to sleep
                if cid not in self._wake and cid not in self._waking:
                    await self._listen(cid, self.runtime.suspended_ports(cid),
                                       record.config.auto_suspend_s)
                continue
            if self.runtime.suspending(cid):  # its wake proxies listen already
                continue
            self._stop_listening(cid)
            if record.state.status is not Status.RUNNING:
                self._clocks.pop(cid, None)
                continue
            counters = await asyncio.to_thread(read_counters, self.sys_net,
                                               self.runtime.run_taps(cid))
            clock = self._clocks.get(cid)
            clock = IdleClock(counters, now) if clock is None else clock.observe(counters, now)
            self._clocks[cid] = clock
            if clock.idle_s(now) >= record.config.auto_suspend_s:
                await self._suspend(cid, clock.idle_s(now))
        for cid in [c for c in (*self._wake, *self._clocks, *self._caps, *self._udp_draining)
                    if c not in seen]:
            self._clocks.pop(cid, None)
            self._caps.pop(cid, None)  # its draining proxies keep theirs to their end
            self._stop_listening(cid)
            await self._close_udp(cid)
        self._draining = [p for p in self._draining if p.relaying]
        for cid, proxies in list(self._udp_draining.items()):
            quiet = [p for p in proxies if p.quiet_s() >= UDP_DRAIN_S]
            for proxy in quiet:
                await proxy.close()
            self._udp_draining[cid] = [p for p in proxies if p not in quiet]
            if not self._udp_draining[cid]:
                del self._udp_draining[cid]

    async def _suspend(self, cid: str, idle_s: float) -> None:
        self._clocks.pop(cid, None)
        try:
            if not await self.runtime.suspend(cid):
                return
        except SteelcupError as exc:  # not running any more, or the save failed: runs on
            log.warning("container %s: auto-suspend failed: %s", cid[:12], exc)
            return
        # (its wake proxies listen since the suspend began: `suspend_changed`)
        log.info("container %s: suspended after %.0f s without network traffic; its ports "
                 "wake it", cid[:12], idle_s)

    async def _listen(self, cid: str, ports: list[PublishedPort], auto_suspend_s: int) -> None:
        """Wake proxies on the container's ports, TCP (held connections bounded by its cap)
        and UDP (held datagrams bounded by net/udphold.py)."""
        proxies: list[TcpProxy | UdpProxy] = []
        cap = self._caps.setdefault(cid, ConnectionCap(WAKE_MAX_CONNECTIONS))

        async def wake() -> None:
            task = self._waking.get(cid)
            if task is None:
                task = asyncio.create_task(self._resume(cid), name=f"wake-{cid[:12]}")
                self._waking[cid] = task
            await asyncio.shield(task)

        for port in ports:
            proxy: TcpProxy | UdpProxy
            listen_ip = port.host_ip or "0.0.0.0"
            if port.proto == "udp":
                proxy = UdpProxy(listen_ip, port.host_port, port.container_ip,
                                 port.container_port, self.netns, before_relay=wake)
            else:
                proxy = TcpProxy(listen_ip, port.host_port, port.container_ip,
                                 port.container_port, self.netns, before_connect=wake,
                                 connect_timeout_s=WAKE_CONNECT_TIMEOUT_S, cap=cap,
                                 idle_timeout_s=auto_suspend_s + WAKE_RELAY_GRACE_S,
                                 connects_at_once=WAKE_CONNECTS_AT_ONCE)
            try:
                await proxy.start()
            except OSError as exc:
                log.warning("container %s: cannot listen on port %d/%s to resume it: %s",
                            cid[:12], port.host_port, port.proto, exc)
                continue
            proxies.append(proxy)
        self._wake[cid] = proxies

    async def _resume(self, cid: str) -> None:
        resumed = False
        try:
            await self.runtime.resume(cid)
            resumed = True
            log.info("container %s: resumed by a connection or datagram", cid[:12])
        finally:
            self._waking.pop(cid, None)
            self._stop_listening(cid)
            if not resumed:  # nothing to relay to: the next tick listens afresh
                await self._close_udp(cid)

    def _stop_listening(self, cid: str) -> None:
        for proxy in self._wake.pop(cid, []):
            if isinstance(proxy, UdpProxy):
                if proxy.received:  # its clients' flows may come to it (conntrack)
                    self._udp_draining.setdefault(cid, []).append(proxy)
                else:
                    proxy.stop()
            else:
                proxy.stop_listening()
                self._draining.append(proxy)

    async def _close_udp(self, cid: str) -> None:
        for proxy in self._udp_draining.pop(cid, []):
            await proxy.close()

    async def close(self) -> None:
        for task in list(self._waking.values()):
            task.cancel()
        for cid in list(self._wake):
            self._stop_listening(cid)
        for proxy in self._draining:
            await proxy.close()
        self._draining = []
        for cid in list(self._udp_draining):
            await self._close_udp(cid)
