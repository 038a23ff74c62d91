"""`NetworkManager`: networks (bridge + subnet + DNS) and the NICs of running containers.

Persistent: networks, endpoints (a container's address on a network), virtual IPs (a
service's balanced address on a network) and floating IPs (net/fipmanager.py) in SQLite.
Live (this daemon run): taps, published ports and their proxies, the per-network DNS
responders, and the nftables table, which is re-rendered from the whole state and loaded
atomically on each change.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network

from steelcup.errors import Conflict, InvalidArgument, NotFound, Unsupported
from steelcup.guest.ops import GuestNic
from steelcup.net import antispoof, conntrack, dns, fip, ipam, links, netnsnic, nft
from steelcup.net import vip as vip_rules
from steelcup.net.fipmanager import FloatingIps
from steelcup.net.fipstore import FipStore
from steelcup.net.keeper import Ports
from steelcup.net.links import Host
from steelcup.net.model import Endpoint, NetworkRecord, PortMapping, VipRecord
from steelcup.net.netns import socket_in
from steelcup.net.portkeeper import InProcessPorts
from steelcup.net.sgmanager import SecurityGroups
from steelcup.net.sgstore import SecurityGroupStore
from steelcup.net.store import NetStore
from steelcup.runtime.model import HOST_GATEWAY
from steelcup.tenancy.quota import Admit, unlimited

log = logging.getLogger(__name__)

DEFAULT_NETWORK = "bridge"
DEFAULT_BRIDGE = "steelcup0"
TAP_PREFIX = "sct"
BRIDGE_PREFIX = "sc-"
PREDEFINED_MODES = ("none", "host")
NETWORK_NAME_MAX = 255
OPTION_DNS_FORWARD = "steelcup.dns.forward"  # "false": names not on the network are REFUSED
OPTION_MTU = "com.docker.network.driver.mtu"
# "overlay" (docker's swarm-scoped driver) is a bridge network here, reported as an overlay
# of scope "swarm" so the docker CLI lets services join it (one node: nothing to overlay).
NETWORK_DRIVERS = ("bridge", "overlay", "")
OPTION_BRIDGE_NAME = "com.docker.network.bridge.name"
TASKS_PREFIX = "tasks."  # `tasks.NAME`: every live backend of the virtual IP NAME (dnsrr)
VIP_MODES = ("vip", "dnsrr")  # docker's endpoint modes
_VIP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


@dataclass(frozen=True)
class NicPlan:
    """Everything the runtime needs for one NIC of a container's VM."""

    network_id: str
    network_name: str
    bridge: str
    tap: str
    netdev_id: str
    mac: str
    address: str
    prefix: int
    gateway: str
    mtu: int
    dns_server: str
    ifname: str
    default_route: bool
    aliases: tuple[str, ...] = ()

    @property
    def qemu_argv(self) -> tuple[str, ...]:
        return (
            "-netdev", f"tap,id={self.netdev_id},ifname={self.tap},script=no,downscript=no",
            "-device", f"virtio-net-device,netdev={self.netdev_id},mac={self.mac}",
        )  # fmt: skip

    def guest_nic(self) -> GuestNic:
        return GuestNic(mac=self.mac, ifname=self.ifname, address=self.address,
                        prefix=self.prefix, gateway=self.gateway if self.default_route else "",
                        mtu=self.mtu)


@dataclass(frozen=True)
class Attachment:
    """What `attach` returns: NICs (first = default route), published ports, guest files."""

    nics: tuple[NicPlan, ...]
    ports: tuple[nft.PublishedPort, ...]

    @property
    def qemu_argv(self) -> tuple[str, ...]:
        return tuple(arg for nic in self.nics for arg in nic.qemu_argv)

    def resolv_conf(self, dns: Sequence[str] = (), search: Sequence[str] = (),
                    options: Sequence[str] = ()) -> str:
        """The guest's resolv.conf: the network's DNS (which knows the containers by name)
        first, then `--dns` servers, `--dns-search` and `--dns-option`; "" if there is
        nothing to say (no network, no --dns)."""
        servers = [self.nics[0].dns_server] if self.nics else []
        servers += [s for s in dns if s not in servers]
        if not servers:
            return ""
        lines = [f"nameserver {s}" for s in servers]
        if search:
            lines.append("search " + " ".join(search))
        opts = [] if any(o.startswith("ndots:") for o in options) else ["ndots:0"]
        lines.append("options " + " ".join([*opts, *options]))
        return "\n".join(lines) + "\n"

    def hosts_file(self, hostname: str, extra: Sequence[tuple[str, str]] = ()) -> str:
        """The guest's /etc/hosts; `extra` are `--add-host` (NAME, IP) pairs, IP possibly
        host-gateway (the first network's gateway, or refused without a network)."""
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        for nic in self.nics:
            lines.append(f"{nic.address}\t{hostname}")
        for name, address in extra:
            if address == HOST_GATEWAY:
                if not self.nics:
                    raise InvalidArgument(f"--add-host {name}:{HOST_GATEWAY} needs a network "
                                          "(this container has none)")
                address = self.nics[0].gateway
            lines.append(f"{address}\t{name}")
        return "\n".join(lines) + "\n"


@dataclass
class _Live:
    """Per running container: its taps, ports and the keys of its loopback proxies.
    `dormant`: its ports are its own but not published (no DNAT, no loopback proxy, no
    virtual IP's traffic): a VM being restored or saved (`unpublish`, `publish`)."""

    taps: list[str] = field(default_factory=list)
    ports: list[nft.PublishedPort] = field(default_factory=list)
    proxies: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)  # keys of proxies relaying, not listening
    dormant: bool = False


@functools.lru_cache(maxsize=4096)  # every ruleset load names every endpoint's tap
def _tap_name(container_id: str, network_id: str) -> str:
    digest = hashlib.sha256(f"{container_id}/{network_id}".encode()).hexdigest()
    return TAP_PREFIX + digest[: links.IFNAME_MAX - len(TAP_PREFIX)]


def _proxy_key(container_id: str, pub: nft.PublishedPort) -> str:
    """How the port keeper knows one loopback proxy: the container and the port."""
    return f"{container_id}/{pub.proto}/{pub.host_port}"


VIP_KEY_PREFIX = "vip:"


def _vip_proxies(vip: VipRecord) -> dict[str, tuple[str, int, tuple[str, int]]]:
    """The port keeper's loopback proxies of a VIP's published ports, by key."""
    return {f"{VIP_KEY_PREFIX}{vip.id}/{pm.proto}/{pm.host_port}":
            (pm.proto, pm.host_port, (vip.address, pm.container_port))
            for pm in vip.ports if pm.host_ip in ("", "127.0.0.1") and vip.address}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z"


def _host_routes(host: Host) -> list[IPv4Network]:
    out = links.run(host.ip("-4", "-o", "route", "show", "table", "all")).stdout
    return ipam.parse_routes(out)


def check_vip_name(name: str) -> str:
    """A name the network's DNS answers with a virtual IP: a DNS-safe 1..63 characters, not
    `tasks.*` (that names the backends of another one)."""
    if not _VIP_NAME.fullmatch(name):
        raise InvalidArgument(f"invalid virtual IP name {name!r}: 1 to 63 letters, digits, "
                              "'_', '.' or '-', starting with a letter or digit")
    if name.lower().startswith(TASKS_PREFIX):
        raise InvalidArgument(f"invalid virtual IP name {name!r}: {TASKS_PREFIX}NAME names "
                              "the backends of the virtual IP NAME")
    return name


def check_network_name(name: str) -> str:
    """A name `network create` accepts: 1..255 printable characters without '/', none of
    the network modes a container's NetworkMode names instead of a network."""
    if not name or len(name) > NETWORK_NAME_MAX:
        raise InvalidArgument(f"invalid network name: must be 1 to {NETWORK_NAME_MAX} characters")
    if name in (*PREDEFINED_MODES, "default") or name.startswith("container:"):
        raise InvalidArgument(f"invalid network name {name!r}: it names a network mode")
    if "/" in name or not name.isprintable():
        raise InvalidArgument(
            f"invalid network name {name!r}: control characters and '/' are not allowed")
    return name


class NetworkManager:
    def __init__(
        self,
        store: NetStore,
        host: Host | None = None,
        *,
        pool: str = ipam.DEFAULT_POOL,
        prefix: int = ipam.DEFAULT_PREFIX,
        mtu: int = 1500,
        upstreams: Sequence[tuple[str, int]] | None = None,
        host_routes: Callable[[], list[IPv4Network]] | None = None,
        dns_port: int = 53,
        ports: Ports | None = None,
        fip_pool: str | None = None,
        fip_interface: str | None = None,
    ) -> None:
        """`fip_pool`, `fip_interface`: the operator's floating IP pool (a CIDR outside
        `pool`) and the host interface its addresses are answered on (None: no FIPs)."""
        self.store = store
        self.host = host or Host()
        # The loopback proxies of published ports: the daemon's port keeper process, which
        # outlives it (live restore); by default this process's own.
        self.ports: Ports = ports or InProcessPorts(self.host.netns)
        self.pool = ipam.parse_subnet(pool)
        self.prefix = prefix
        self.mtu = mtu
        if upstreams is None:
            try:
                with open("/etc/resolv.conf") as f:
                    upstreams = [(a, 53) for a in dns.read_resolv_conf(f.read())]
            except OSError:
                upstreams = []
        self.upstreams = list(upstreams)
        self._host_routes = host_routes or (lambda: _host_routes(self.host))
        self.dns_port = dns_port
        # What this manager loaded last (None: unknown): the ruleset but the guards' elements
        # and the published ports' rules, then the guards and the ports. A new endpoint's
        # guard and a new port's rule are added to what is loaded (`_apply_rules`).
        self._applied: str | None = None
        self._guards_loaded: frozenset[antispoof.TapGuard] = frozenset()
        self._ports_loaded: frozenset[nft.PublishedPort] = frozenset()
        self._dns: dict[str, dns.DnsServer] = {}
        self._live: dict[str, _Live] = {}
        self._held: dict[str, tuple[nft.PublishedPort, ...]] = {}  # suspended containers'
        self._vip_proxies: dict[str, list[str]] = {}  # port keeper keys, by VIP id
        # Taps being deleted, by name (`_delete_taps`): a tap's name is its container's on its
        # network, so only that container's next attach waits for it.
        self._deleting: dict[str, asyncio.Task[None]] = {}
        # The host's wake listeners on a VIP's address (services/waker.py), by VIP id: while
        # the VIP has no live backends its tcp connections and datagrams go there (net/vip.py).
        self._wake_ports: dict[str, int] = {}
        self._udp_wake_ports: dict[str, int] = {}
        self._lock = asyncio.Lock()
        self.forget_udp_flows = conntrack.forget_udp_flows  # (netns, address); tests replace it
        # the tenant's quota gate around a creation (steelcup.tenancy.quota; none: unlimited)
        self.admit: Admit = unlimited
        self.security_groups = SecurityGroups(SecurityGroupStore(store.connection),
                                              self.reload_rules, self._addresses_of)
        self._bridge_netfilter = False  # br_netfilter's IPv4 hook checked on (for groups)
        self.fips = FloatingIps(
            FipStore(store.connection), store, self.host, self.reload_rules,
            fip.parse_pool(fip_pool, [self.pool]) if fip_pool else None, fip_interface)

    # -- lookup --------------------------------------------------------------------------

    def networks(self, tenant: str | None = None) -> list[NetworkRecord]:
        """Every tenant's networks (None: the operator's view), or only `tenant`'s."""
        return self.store.networks(tenant)

    def get(self, ref: str) -> NetworkRecord:
        """By id, name, or unique id prefix, as the operator sees them (every tenant's)."""
        return self.resolve(ref, None)

    def resolve(self, ref: str, tenant: str | None) -> NetworkRecord:
        """The network `ref` (id, name or unique id prefix: docker's rules) names for `tenant`;
        another tenant's is exactly as missing as a missing one (no existence oracle).

        A tenant's `bridge` is its own default network, made on first use. None is the operator,
        who sees every tenant's: a name several tenants use is the operator's own if it has one,
        else refused as ambiguous."""
        if tenant is not None and ref == DEFAULT_NETWORK:
            return self.default_network(tenant)
        nets = self.store.networks(tenant)
        by_id = [n for n in nets if n.id == ref]
        if by_id:
            return by_id[0]
        named = [n for n in nets if n.name == ref]
        if named:
            own = [n for n in named if not n.tenant]
            if own or len(named) == 1:
                return (own or named)[0]
            raise InvalidArgument(f"{len(named)} networks of different tenants are named "
                                  f"{ref!r}: use the id")
        matches = [n for n in nets if ref and n.id.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise InvalidArgument(f"network {ref} is ambiguous ({len(matches)} matches)")
        raise NotFound(f"network {ref} not found")

    def default_network(self, tenant: str) -> NetworkRecord:
        """`tenant`'s `bridge`: its own bridge and subnet, made (recorded) on first use; the
        bridge itself comes up with the first container that attaches to it."""
        for net in self.store.networks(tenant):
            if net.name == DEFAULT_NETWORK:
                return net
        # No await between choosing the subnet and recording it: atomic on the event loop.
        routes = self._host_routes()
        return self._record_network(DEFAULT_NETWORK, tenant, routes,
                                    bridge=DEFAULT_BRIDGE if not tenant else None)

    def endpoints(self, network_id: str) -> list[Endpoint]:
        return self.store.endpoints(network_id)

    def container_endpoints(self, container_id: str) -> list[Endpoint]:
        return [e for e in self.store.endpoints() if e.container_id == container_id]

    def is_active(self, container_id: str) -> bool:
        return container_id in self._live

    def published_ports(self, container_id: str) -> list[nft.PublishedPort]:
        """Ports published for the container's current run (empty when it is not running)."""
        live = self._live.get(container_id)
        return list(live.ports) if live is not None else []

    # -- lifecycle of the manager -----------------------------------------------------------

    async def startup(self, kept: Mapping[str, tuple[Sequence[str],
                                                     Sequence[nft.PublishedPort]]] | None = None
                      ) -> None:
        """Recreate bridges, rules and resolvers of persisted networks; ensure the default.
        `kept`: the taps and published ports of running containers whose VMs outlived the
        previous daemon (live restore), by container id: they are this run's from the start,
        so their NAT rules never go away and their loopback proxies are back at once (the
        runtime `detach`es one it cannot re-attach)."""
        kept = kept or {}
        async with self._lock:
            keep_taps = {t for taps, _ in kept.values() for t in taps}
            for tap in await asyncio.to_thread(links.list_links, self.host, TAP_PREFIX):
                if tap in keep_taps:
                    continue
                await asyncio.to_thread(links.delete_link, self.host, tap)  # a crashed run's
            # A tap for an engine's netns is here only until it is moved there: one left
            # here is a crashed start's (netnsnic)
            for tap in await asyncio.to_thread(links.list_links, self.host,
                                               netnsnic.TAP_PREFIX):
                await asyncio.to_thread(links.delete_link, self.host, tap)
            if not any(n.name == DEFAULT_NETWORK for n in self.store.networks("")):
                await self._create_locked(DEFAULT_NETWORK, bridge=DEFAULT_BRIDGE)
            for net in self.store.networks():
                await self._bring_up(net)
            for container_id, (taps, ports) in kept.items():
                self._live[container_id] = _Live(taps=list(taps), ports=list(ports))
            await self._adopt_proxies()
            await self._apply_rules()

    async def _adopt_proxies(self) -> None:
        """The loopback proxies of the kept containers' and the virtual IPs' published ports:
        those the port keeper still serves (they answered throughout the restart) stay, the
        rest of what it serves closes, and a port it lacks (the keeper died, or its VIP is
        new) opens again; a port taken meanwhile is logged: that port refuses connections."""
        wanted: dict[str, tuple[str, int, tuple[str, int]]] = {
            _proxy_key(cid, pub): (pub.proto, pub.host_port,
                                   (pub.container_ip, pub.container_port))
            for cid, live in self._live.items()
            for pub in live.ports if pub.host_ip in ("", "127.0.0.1")}
        for vip in self.store.vips():
            wanted.update(_vip_proxies(vip))
        for opened in await self.ports.listing():
            if opened.key not in wanted:
                await self.ports.close(opened.key)
        for key, (proto, port, target) in wanted.items():
            owner = key.split("/", 1)[0]
            try:
                await self.ports.open(key, proto, port, target)
            except (Conflict, OSError) as exc:
                log.warning("%s: no proxy for 127.0.0.1:%d: %s", owner[:16], port, exc)
                continue
            if owner.startswith(VIP_KEY_PREFIX):
                self._vip_proxies.setdefault(owner[len(VIP_KEY_PREFIX):], []).append(key)
            else:
                self._live[owner].proxies.append(key)
        if not wanted:
            await self.ports.stop()  # an idle keeper a killed daemon left; made again on need

    async def close(self, keep: Collection[str] = ()) -> None:
        """Stop resolvers, proxies and taps of this run (networks and rules stay). Containers
        in `keep` run on without the daemon (live restore): their taps, NAT rules and loopback
        proxies (in the port keeper) stay for the next daemon to adopt; with none kept the
        port keeper exits."""
        async with self._lock:
            kept_proxies = False
            for cid in list(self._live):
                if cid in keep:
                    kept_proxies |= bool(self._live.pop(cid).proxies)
                    continue
                await self._detach_locked(cid)
            # A VIP's ports stay with kept containers (its backends may be among them).
            if keep:
                kept_proxies |= any(self._vip_proxies.values())
            self._vip_proxies.clear()
            await self._taps_deleted()
            for server in self._dns.values():
                server.close()
            self._dns.clear()
            if kept_proxies:
                await self.ports.detach()
            else:
                await self.ports.stop()

    async def _bring_up(self, net: NetworkRecord) -> None:
        await asyncio.to_thread(links.ensure_bridge, self.host, net.bridge,
                                f"{net.gateway}/{net.prefix}", net.mtu)
        for vip in self.store.vips(net.id):
            if vip.address:
                await asyncio.to_thread(links.add_address, self.host, net.bridge,
                                        f"{vip.address}/32")
        if not net.internal:
            await asyncio.to_thread(self._enable_forwarding)
        if net.id not in self._dns:
            self._dns[net.id] = await self._start_dns(net)

    def _enable_forwarding(self) -> None:
        links.run(self.host.wrap(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]))
        # A published port's listeners take turns (SO_REUSEPORT: the loopback proxy and a
        # suspended container's wake proxy, one closing as the other opens). Without this, a
        # connection the kernel had queued on the one that closes is reset; with it, it moves
        # to the other (Linux 5.14; an older kernel keeps the old behaviour).
        with contextlib.suppress(links.LinkError):
            links.run(self.host.wrap(["sysctl", "-q", "-w", "net.ipv4.tcp_migrate_req=1"]))

    async def _start_dns(self, net: NetworkRecord) -> dns.DnsServer:
        server = dns.DnsServer(lambda name, client: self._resolve(net.id, name, client),
                               forward=net.forwards_dns, upstreams=self.upstreams)
        try:
            sock = await asyncio.to_thread(socket_in, self.host.netns, socket.AF_INET,
                                           socket.SOCK_DGRAM, (net.gateway, self.dns_port))
            sock.setblocking(False)
            await asyncio.get_running_loop().create_datagram_endpoint(lambda: server, sock=sock)
        except OSError as exc:
            log.warning("network %s: no embedded DNS on %s:%d: %s", net.name, net.gateway,
                        self.dns_port, exc)
        return server

    def _resolve(self, network_id: str, name: str, client: str = ""
                 ) -> list[IPv4Address] | None:
        """The live containers the name means on the network: their names, short ids and
        aliases for anyone; a virtual IP's name and aliases (its address) and `tasks.NAME`
        (its live backends, maybe none); and the asking container's own link aliases for it
        alone."""
        name = name.rstrip(".").lower()
        out = []
        live = [ep for ep in self.store.endpoints(network_id) if ep.container_id in self._live]
        for ep in live:
            names = {ep.container_name.lower(), ep.container_id[:12], *map(str.lower, ep.aliases)}
            if name in names:
                out.append(IPv4Address(ep.address))
        if out:
            return out
        up = {ep.address for ep in live}
        for vip in self.store.vips(network_id):
            vip_names = {vip.name.lower(), *map(str.lower, vip.aliases)}
            if name in vip_names and vip.address:
                return [IPv4Address(vip.address)]
            if name in vip_names or (name.startswith(TASKS_PREFIX)
                                     and name[len(TASKS_PREFIX):] in vip_names):
                return [IPv4Address(b) for b in vip.backends if b in up]
        if not client:
            return None
        asker = next((ep for ep in live if ep.address == client), None)
        targets = {t for t, alias in (asker.links if asker else ()) if alias.lower() == name}
        return [IPv4Address(ep.address) for ep in live if ep.container_id in targets] or None

    async def _apply_rules(self) -> None:
        """Load the ruleset for the current networks, endpoints, published ports and security
        groups, unless it is the one this manager loaded last (a run without ports of a
        container that ran before leaves it as it was: no `nft`)."""
        ports = [p for live in self._live.values() if not live.dormant for p in live.ports]
        nets = self.store.networks()
        endpoints = self.store.endpoints()  # read once: hundreds of rows, decoded each time
        vip_records = self.store.vips()
        vips = vip_rules.targets(vip_records, nets, self._live_addresses(endpoints),
                                 self._wake_ports, self._udp_wake_ports)
        bridges = {n.id: n.bridge for n in nets}
        by_address = {v.address: v for v in vips}
        fips = self.fips.targets({(ep.container_id, ep.network_id): (ep.address,
                                                                    bridges[ep.network_id])
                                  for ep in endpoints},
                                 {v.id: by_address[str(IPv4Address(v.address))]
                                  for v in vip_records if v.address})
        nics = self._endpoint_nics(nets, endpoints)
        if self.security_groups.has_members(nics):
            await asyncio.to_thread(self._ensure_bridge_netfilter)
        groups = self.security_groups.render(nics)
        # Without the published ports' rules: those are compared apart, as the guards are
        rest = nft.render(nets, (), vips, fips, self.fips.pool) + groups
        guards = frozenset(self._tap_guards(endpoints))
        wanted_ports = frozenset(ports)
        added = None  # None: load the whole ruleset
        if rest == self._applied and wanted_ports >= self._ports_loaded:
            live_taps = {tap for live in self._live.values() for tap in live.taps}
            added = antispoof.update(self._guards_loaded, guards, live_taps)
            if added is not None:
                added += nft.add_ports(wanted_ports - self._ports_loaded)
        if added is None or added:
            loaded = self._guards_loaded | guards if added else guards
            self._applied = None  # unknown until the load succeeds
            await asyncio.to_thread(
                nft.apply, self.host,
                added or (nft.render(nets, ports, vips, fips, self.fips.pool)
                          + antispoof.render(guards, TAP_PREFIX)
                          + groups))
            self._applied, self._guards_loaded, self._ports_loaded = rest, loaded, wanted_ports
        await self.fips.sync_addresses(fips)  # after the rules: no address before its DNAT

    def _live_addresses(self, endpoints: Sequence[Endpoint] | None = None
                        ) -> dict[str, set[str]]:
        """Addresses of running containers (but dormant ones: no VM answers), by network id."""
        out: dict[str, set[str]] = {}
        for ep in self.store.endpoints() if endpoints is None else endpoints:
            live = self._live.get(ep.container_id)
            if live is not None and not live.dormant:
                out.setdefault(ep.network_id, set()).add(ep.address)
        return out

    async def reload_rules(self) -> None:
        """Re-render and load the ruleset (security groups or memberships changed)."""
        async with self._lock:
            await self._apply_rules()

    def _addresses_of(self, container_id: str) -> list[str]:
        return [ep.address for ep in self.container_endpoints(container_id)]

    @staticmethod
    def _endpoint_nics(nets: Sequence[NetworkRecord], endpoints: Sequence[Endpoint]
                       ) -> dict[str, list[tuple[str, str]]]:
        """(address, gateway) of every endpoint, by container id: a stopped container's
        address stays its own, so its rules can stay too (a start or stop loads nothing)."""
        gateways = {n.id: n.gateway for n in nets}
        out: dict[str, list[tuple[str, str]]] = {}
        for ep in endpoints:
            out.setdefault(ep.container_id, []).append((ep.address, gateways[ep.network_id]))
        return out

    def _ensure_bridge_netfilter(self) -> None:
        """Security groups filter traffic between containers of one bridge in the IP hooks:
        br_netfilter must hand bridged IPv4 to them (as docker also requires)."""
        if self._bridge_netfilter:
            return
        try:
            links.run(self.host.wrap(["sysctl", "-q", "-w",
                                      "net.bridge.bridge-nf-call-iptables=1"]))
        except links.LinkError as exc:
            raise Unsupported("security groups need the kernel's br_netfilter (modprobe "
                              f"br_netfilter), which is not available: {exc}") from exc
        self._bridge_netfilter = True

    @staticmethod
    def _tap_guards(endpoints: Sequence[Endpoint]) -> list[antispoof.TapGuard]:
        """Every endpoint's tap with the one MAC and address it may send from. A tap's name is
        a function of container and network, and an endpoint keeps its address while it
        exists: the guard is there before the tap is made, and stays across stop and start,
        so only a new endpoint changes this part of the ruleset."""
        return [antispoof.TapGuard(_tap_name(ep.container_id, ep.network_id), ep.mac,
                                   ep.address) for ep in endpoints]

    # -- networks ----------------------------------------------------------------------------

    async def create(
        self,
        name: str,
        *,
        subnet: str | None = None,
        gateway: str | None = None,
        internal: bool = False,
        labels: dict[str, str] | None = None,
        options: dict[str, str] | None = None,
        driver: str = "bridge",
        attachable: bool = False,
        tenant: str = "",
    ) -> NetworkRecord:
        """A network of `tenant` ("" = the operator's) with its bridge up and its rules
        loaded. A tenant's subnet, if it names one, must lie in the daemon's pool and clear
        the host's routes (a tenant's bridge must never shadow a network the host reaches),
        and a tenant cannot name the bridge interface."""
        if driver not in NETWORK_DRIVERS:
            raise Unsupported(f"network driver {driver!r} is not supported (bridge, or overlay: "
                              "a bridge network that services can join)")
        check_network_name(name)
        if name == DEFAULT_NETWORK:  # every tenant's exists (made on first use)
            raise Conflict(f"network with name {name} already exists")
        if tenant and OPTION_BRIDGE_NAME in (options or {}):
            raise InvalidArgument(f"option {OPTION_BRIDGE_NAME} is the operator's to set: "
                                  "a tenant's bridge is named by steelcup")
        async with self._lock:
            with self.admit(tenant, {"networks": 1}):
                net = await self._create_locked(name, subnet=subnet, gateway=gateway,
                                                internal=internal, labels=labels,
                                                options=options, tenant=tenant,
                                                driver=driver or "bridge",
                                                attachable=attachable)
            try:
                await self._bring_up(net)
                await self._apply_rules()
            except Exception:
                await self._teardown(net)
                raise
            return net

    async def _create_locked(
        self, name: str, *, subnet: str | None = None, gateway: str | None = None,
        internal: bool = False, labels: dict[str, str] | None = None,
        options: dict[str, str] | None = None, bridge: str | None = None, tenant: str = "",
        driver: str = "bridge", attachable: bool = False,
    ) -> NetworkRecord:
        routes = await asyncio.to_thread(self._host_routes) if tenant or not subnet else []
        return self._record_network(name, tenant, routes, subnet=subnet, gateway=gateway,
                                    internal=internal, labels=labels, options=options,
                                    bridge=bridge, driver=driver, attachable=attachable)

    def _record_network(
        self, name: str, tenant: str, routes: Sequence[IPv4Network], *,
        subnet: str | None = None, gateway: str | None = None, internal: bool = False,
        labels: dict[str, str] | None = None, options: dict[str, str] | None = None,
        bridge: str | None = None, driver: str = "bridge", attachable: bool = False,
    ) -> NetworkRecord:
        """Choose the subnet and bridge name and record the network; no await in here, so
        two creates cannot take the same subnet or bridge."""
        options = dict(options or {})
        existing = self.store.networks()
        taken = [IPv4Network(n.subnet) for n in existing]
        if subnet:
            gw = ipam.parse_address(gateway) if gateway else None
            wanted = ipam.parse_subnet(subnet)
            if tenant:
                ipam.check_tenant_subnet(wanted, self.pool, routes)
            plan = ipam.check_subnet(wanted, gw, taken)
        else:
            if gateway:
                raise InvalidArgument("a gateway needs a subnet")
            plan = ipam.choose_subnet(self.pool, self.prefix, taken, routes)
        net_id = os.urandom(32).hex()
        try:
            mtu = int(options.get(OPTION_MTU, self.mtu))
        except ValueError:
            raise InvalidArgument(f"invalid {OPTION_MTU}: {options[OPTION_MTU]!r}") from None
        if not 576 <= mtu <= 65535:
            raise InvalidArgument(f"MTU {mtu} out of range 576..65535")
        bridge = bridge or options.get(OPTION_BRIDGE_NAME) or BRIDGE_PREFIX + net_id[:12]
        links.check_ifname(bridge)
        if bridge.startswith(TAP_PREFIX) or any(n.bridge == bridge for n in existing):
            raise Conflict(f"bridge {bridge} is taken (by another network or steelcup's taps)")
        net = NetworkRecord(
            id=net_id, name=name, subnet=str(plan.subnet), gateway=str(plan.gateway),
            bridge=bridge, mtu=mtu, internal=internal,
            dns_forward=options.get(OPTION_DNS_FORWARD, "true").lower() != "false",
            created=_now(), labels=dict(labels or {}), options=options, tenant=tenant,
            driver=driver, attachable=attachable,
        )
        self.store.insert_network(net)
        return net

    async def remove(self, ref: str, tenant: str | None = None) -> None:
        """Delete a network with no endpoints: its bridge, resolver and rules go with it."""
        async with self._lock:
            net = self.resolve(ref, tenant)
            if net.name == DEFAULT_NETWORK:
                raise Conflict(f"{DEFAULT_NETWORK} is a pre-defined network and cannot be removed")
            eps = self.store.endpoints(net.id)
            if eps:
                names = ", ".join(e.container_name for e in eps)
                raise Conflict(f"error while removing network: network {net.name} id {net.id} "
                               f"has active endpoints ({names})")
            self._refuse_with_vips(net)
            self.store.delete_network(net.id)
            await self._teardown(net)

    async def remove_tenant(self, tenant: str) -> None:
        """Every network of a removed tenant, its default `bridge` too (none may have
        endpoints left: its containers are gone first), and its security groups."""
        if not tenant:
            raise ValueError("the operator's networks are not a tenant's")
        async with self._lock:
            for net in self.store.networks(tenant):
                if self.store.endpoints(net.id):
                    raise Conflict(f"network {net.name} of tenant {tenant} still has endpoints")
                self._refuse_with_vips(net)
                self.store.delete_network(net.id)
                await self._teardown(net)
            self.security_groups.store.delete_tenant(tenant)
            self.fips.forget_tenant(tenant)

    def _refuse_with_vips(self, net: NetworkRecord) -> None:
        vips = self.store.vips(net.id)
        if vips:
            names = ", ".join(v.name for v in vips)
            raise Conflict(f"network {net.name} has virtual IPs of services ({names}): remove "
                           "the services first")

    async def _teardown(self, net: NetworkRecord) -> None:
        server = self._dns.pop(net.id, None)
        if server is not None:
            server.close()
        with contextlib.suppress(Exception):
            self.store.delete_network(net.id)
        await self._apply_rules()
        await asyncio.to_thread(links.delete_link, self.host, net.bridge)

    async def prune(self, tenant: str | None = None) -> list[str]:
        """Remove `tenant`'s unused networks (None: every tenant's), never a default one."""
        removed = []
        for net in self.store.networks(tenant):
            if (net.name != DEFAULT_NETWORK and not self.store.endpoints(net.id)
                    and not self.store.vips(net.id)):
                await self.remove(net.id)
                removed.append(net.name)
        return removed

    # -- endpoints ---------------------------------------------------------------------------

    def connect(self, ref: str, container_id: str, container_name: str,
                aliases: Sequence[str] = (), address: str | None = None, *,
                tenant: str = "", links: Sequence[tuple[str, str]] = ()) -> Endpoint:
        """Give the container, of `tenant`, an address on the network (kept until it
        disconnects); `ref` is looked up among that tenant's networks only, so a container
        never joins another tenant's network.

        Takes effect at the container's next start: a microVM's NICs are fixed at boot.
        """
        net = self.resolve(ref, tenant)
        if any(e.container_id == container_id for e in self.store.endpoints(net.id)):
            raise Conflict(f"endpoint with name {container_name} already exists in network "
                           f"{net.name}")
        plan = ipam.SubnetPlan(IPv4Network(net.subnet), IPv4Address(net.gateway))
        wanted = ipam.parse_address(address) if address else None
        addr = ipam.allocate_address(plan, self._used_addresses(net.id), wanted)
        ep = Endpoint(net.id, container_id, container_name, str(addr), ipam.mac_for(addr),
                      tuple(aliases), os.urandom(32).hex(), static=wanted is not None,
                      links=tuple(links))
        self.store.insert_endpoint(ep)
        return ep

    def _used_addresses(self, network_id: str) -> list[IPv4Address]:
        """Addresses taken on the network: its containers' and its virtual IPs'."""
        return [IPv4Address(a) for a in (*(e.address for e in self.store.endpoints(network_id)),
                                         *(v.address for v in self.store.vips(network_id)
                                           if v.address))]

    def link_targets(self, ref: str, tenant: str, links: Sequence[tuple[str, str]],
                     container_of: Callable[[str], tuple[str, str]]
                     ) -> tuple[tuple[str, str], ...]:
        """An endpoint's legacy links on a network (what docker-compose sends for `links:`)
        as (target container id, alias): each target must be on the network (dockerd's
        rule). `container_of(ref)` -> (id, name) among the linking container's tenant's,
        NotFound otherwise. The network's DNS then answers each alias to the linking
        container alone (`_resolve`)."""
        if not links:
            return ()
        net = self.resolve(ref, tenant)
        on_it = {e.container_id for e in self.store.endpoints(net.id)}
        out = []
        for target, alias in links:
            target_id, target_name = container_of(target)
            if target_id not in on_it:
                raise InvalidArgument(f"cannot link to {target_name}: it is not on network "
                                      f"{net.name}")
            out.append((target_id, alias))
        return tuple(out)

    def disconnect(self, ref: str, container_id: str, *, force: bool = False) -> None:
        net = self.get(ref)  # by id from callers that resolved it for the caller
        if not any(e.container_id == container_id for e in self.store.endpoints(net.id)):
            # dockerd refuses this with or without force
            raise NotFound(f"container {container_id} is not connected to the network "
                           f"{net.name}")
        if container_id in self._live and not force:
            raise Conflict("cannot disconnect a running container (steelcup VMs have no NIC "
                           "hot-unplug): stop it first")
        self._delete_endpoint(net.id, container_id)

    async def leave(self, ref: str, container_id: str, *, force: bool = False) -> None:
        """`network disconnect`: `disconnect`, then the rules without its endpoint (its
        address may go to another container next: a floating IP's NAT to it goes now, and so
        does a running container's guard; a stopped one's tap is gone, and its guard with the
        next full load). A reader of its floating IP waits for them (FloatingIps.settled)."""
        with self.fips.changing():
            self.disconnect(ref, container_id, force=force)
            await self.reload_rules()

    def _delete_endpoint(self, network_id: str, container_id: str) -> None:
        """Free the container's address, and take it out of the network's virtual IPs: the
        address may go to another container next."""
        eps = [e for e in self.store.endpoints(network_id) if e.container_id == container_id]
        self.store.delete_endpoint(network_id, container_id)
        self.fips.forget_container(container_id, network_id)  # its FIP stays allocated
        for ep in eps:
            for vip in self.store.vips(network_id):
                if ep.address in vip.backends:
                    self.store.update_vip(replace(
                        vip, backends=tuple(b for b in vip.backends if b != ep.address)))

    async def release(self, container_id: str) -> None:
        """The container is removed: stop its NICs and free all its addresses."""
        await self.detach(container_id)
        had_fip = self.fips.of_container(container_id) is not None
        # a reader of its floating IP sees it detached once its NAT is gone (`settled`)
        with self.fips.changing():
            for ep in self.container_endpoints(container_id):
                self._delete_endpoint(ep.network_id, container_id)
            if self.security_groups.forget(container_id) or had_fip:
                await self.reload_rules()  # its addresses leave its groups' remote_group rules

    # -- running containers ------------------------------------------------------------------

    async def attach(
        self,
        container_id: str,
        container_name: str,
        network_mode: str,
        *,
        aliases: Sequence[str] = (),
        ports: Sequence[PortMapping] = (),
        tenant: str = "",
        dormant: bool = False,
    ) -> Attachment:
        """Plan the NICs of every network the container is on (connecting it to
        `network_mode` first if needed: tap names, bridges, MTUs, addresses), publish its ports,
        and say how to boot the VM. The taps themselves are the pool's to make (a ready VM
        brings its own); `detach` deletes whatever carries their names. `dormant`: its ports
        are reserved, and published only by `publish` (a restored VM, which answers nothing
        until its state is loaded: a connection meanwhile would wait in vain for its ARP)."""
        mode = network_mode or "default"
        if mode == "none":
            if ports:
                raise InvalidArgument("published ports need a network (not --network none)")
            return Attachment((), ())
        if mode == "host" or mode.startswith("container:"):
            raise Unsupported(f"network mode {mode!r} is not supported by VM containers")
        async with self._lock:
            if container_id in self._live:
                raise Conflict(f"container {container_id[:12]} already has NICs")
            primary = self.resolve(
                DEFAULT_NETWORK if mode in ("default", DEFAULT_NETWORK) else mode, tenant)
            eps = self.container_endpoints(container_id)
            if not any(e.network_id == primary.id for e in eps):
                self.connect(primary.id, container_id, container_name, aliases, tenant=tenant)
                eps = self.container_endpoints(container_id)
            eps.sort(key=lambda e: e.network_id != primary.id)  # primary first: default route
            live = _Live(dormant=dormant)
            self._live[container_id] = live
            try:
                nics = []
                for i, ep in enumerate(eps):
                    net = next(n for n in self.store.networks() if n.id == ep.network_id)
                    if net.tenant != tenant:  # connect never allows it: a corrupted record
                        raise Conflict(f"container {container_id[:12]} is on network "
                                       f"{net.name} of another tenant")
                    if net.id not in self._dns:  # a default network made since startup
                        await self._bring_up(net)
                    if ep.container_name != container_name:
                        ep = replace(ep, container_name=container_name)  # renamed container
                        self.store.delete_endpoint(ep.network_id, container_id)
                        self.store.insert_endpoint(ep)
                    # Planned, not made: the pool makes it, or names a ready VM's tap so.
                    tap = _tap_name(container_id, net.id)
                    live.taps.append(tap)
                    nics.append(NicPlan(
                        network_id=net.id, network_name=net.name, bridge=net.bridge, tap=tap,
                        netdev_id=f"net{i}", mac=ep.mac, address=ep.address, prefix=net.prefix,
                        gateway=net.gateway, mtu=net.mtu, dns_server=net.gateway,
                        ifname=f"eth{i}", default_route=(i == 0 and not net.internal),
                        aliases=ep.aliases,
                    ))
                await self._taps_deleted(live.taps)  # a restart's: its last run's taps
                await self._reserve(container_id, live, nics[0], ports)
                if not dormant:
                    await self._open_proxies(container_id, live, strict=True)
                await self._apply_rules()
            except BaseException:
                await self._detach_locked(container_id)
                raise
            return Attachment(tuple(nics), tuple(live.ports))

    async def publish(self, container_id: str, *, strict: bool = False) -> None:
        """A dormant container's ports are published (its VM answers now): DNAT, loopback
        proxies, its virtual IPs' traffic. A proxy whose port is taken is logged, or with
        `strict` raised (Conflict, OSError; a start fails and detaches)."""
        async with self._lock:
            live = self._live.get(container_id)
            if live is None or not live.dormant:
                return
            live.dormant = False
            try:
                await self._open_proxies(container_id, live, strict=strict)
            finally:
                await self._apply_rules()

    async def unpublish(self, container_id: str) -> None:
        """The running container's ports stop taking new connections (its DNAT and loopback
        proxies go; established flows keep their conntrack entries) but stay its own: its VM
        is about to be saved, and what comes meanwhile goes to whoever listens beside (the
        auto-suspender's wake proxies). `publish` undoes it."""
        async with self._lock:
            live = self._live.get(container_id)
            if live is None or live.dormant:
                return
            live.dormant = True
            for key in live.proxies:  # what they relay now may end before the VM stops
                await self.ports.release(key)
            live.released = list(dict.fromkeys((*live.released, *live.proxies)))
            live.proxies = []
            await self._apply_rules()
            # A udp client's flow DNATed to it would stay DNATed to its address (a VM that is
            # going) until conntrack forgets it; forgotten, its next datagram is a new flow,
            # which finds the wake listener. (tcp flows stay: a held connection lives on in
            # the saved VM and answers again after its resume.)
            for address in self._addresses_of(container_id):
                try:
                    await asyncio.to_thread(self.forget_udp_flows, self.host.netns, address)
                except OSError as exc:
                    log.warning("container %s: forgetting its udp flows: %s",
                                container_id[:12], exc)

    async def _open_proxies(self, container_id: str, live: _Live, *, strict: bool) -> None:
        """The host's loopback gets a userspace proxy per port (in the port keeper): it holds
        the port, and serves it when the loopback's DNAT does not (net/nft.py). Not
        `strict`: a port that cannot be had is logged and skipped."""
        for pub in live.ports:
            if pub.host_ip not in ("", "127.0.0.1"):
                continue
            key = _proxy_key(container_id, pub)
            try:
                await self.ports.open(key, pub.proto, pub.host_port,
                                      (pub.container_ip, pub.container_port))
            except (Conflict, OSError) as exc:
                if strict:
                    raise
                log.warning("container %s: no proxy for 127.0.0.1:%d: %s", container_id[:12],
                            pub.host_port, exc)
                continue
            live.proxies.append(key)

    async def _reserve(self, container_id: str, live: _Live, nic: NicPlan,
                       ports: Sequence[PortMapping]) -> None:
        for pm in ports:
            if pm.proto not in ("tcp", "udp"):
                raise InvalidArgument(f"unsupported protocol {pm.proto!r} (tcp or udp)")
            host_port = pm.host_port or await asyncio.to_thread(self._free_port, pm.proto)
            pub = nft.PublishedPort(pm.host_ip if pm.host_ip not in ("", "0.0.0.0") else "",
                                    host_port, nic.address, pm.container_port, pm.proto)
            if (host_port, pm.proto) in self._ports_taken(but_container=container_id):
                raise Conflict(f"Bind for {pm.host_ip or '0.0.0.0'}:{host_port} failed: port "
                               "is already allocated")
            live.ports.append(pub)

    def hold_ports(self, container_id: str, ports: Sequence[nft.PublishedPort]) -> None:
        """A suspended container's ports stay its own while it is not attached: no other
        container or VIP publishes them (its wake proxies listen there; docs/checkpoints.md)."""
        self._held[container_id] = tuple(ports)

    def drop_held_ports(self, container_id: str) -> None:
        self._held.pop(container_id, None)

    def _ports_taken(self, but_vip: str = "", but_container: str = "") -> set[tuple[int, str]]:
        """(host port, proto) published now: by running containers, held for suspended ones
        (but `but_container`'s, which is being attached again) and by virtual IPs (but
        `but_vip`'s, which it is replacing)."""
        taken = {(p.host_port, p.proto) for live in self._live.values() for p in live.ports}
        taken |= {(p.host_port, p.proto) for cid, held in self._held.items()
                  if cid != but_container for p in held}
        taken |= {(p.host_port, p.proto) for v in self.store.vips() if v.id != but_vip
                  for p in v.ports}
        return taken

    def run_state(self, container_id: str) -> tuple[tuple[str, ...], tuple[nft.PublishedPort, ...]]:
        """The taps and published ports of the container's current run."""
        live = self._live.get(container_id)
        if live is None:
            return (), ()
        return tuple(live.taps), tuple(live.ports)

    def _free_port(self, proto: str) -> int:
        kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
        with socket_in(self.host.netns, socket.AF_INET, kind, ("0.0.0.0", 0)) as s:
            return int(s.getsockname()[1])

    async def detach(self, container_id: str) -> None:
        """The VM is gone: delete its taps, unpublish its ports. Addresses stay allocated."""
        async with self._lock:
            await self._detach_locked(container_id)

    async def _detach_locked(self, container_id: str) -> None:
        live = self._live.pop(container_id, None)
        if live is None:
            return
        for key in (*live.proxies, *live.released):
            await self.ports.close(key)
        self._delete_taps(live.taps)
        if live.ports or self._is_backend(container_id):
            await self._apply_rules()

    def _delete_taps(self, taps: Sequence[str]) -> None:
        """Delete a gone VM's taps, in the background: the kernel unregisters a device only
        after RCU grace periods (15-50 ms a tap here), which a `run --rm` would otherwise wait
        for. The tap no longer carries anything (QEMU closed it, so the bridge port is down and
        its forwarding entries flushed); `attach` waits for a deletion of a tap it plans,
        `close` for all."""
        for tap in taps:
            task = asyncio.create_task(self._delete_tap(tap), name=f"delete-{tap}")
            self._deleting[tap] = task
            task.add_done_callback(functools.partial(self._tap_deleted, tap))

    def _tap_deleted(self, tap: str, task: asyncio.Task[None]) -> None:
        if self._deleting.get(tap) is task:
            del self._deleting[tap]

    async def _delete_tap(self, tap: str) -> None:
        try:
            await asyncio.to_thread(links.delete_link, self.host, tap)
        except links.LinkError as exc:
            log.warning("deleting tap %s: %s", tap, exc)

    async def _taps_deleted(self, taps: Collection[str] | None = None) -> None:
        """Until the deletions of `taps` (None: of all) have ended."""
        pending = [t for name, t in self._deleting.items() if taps is None or name in taps]
        if pending:
            await asyncio.gather(*pending)

    def _is_backend(self, container_id: str) -> bool:
        addresses = {(e.network_id, e.address) for e in self.container_endpoints(container_id)}
        return any((v.network_id, b) in addresses for v in self.store.vips() for b in v.backends)

    # -- virtual IPs (service addresses) -----------------------------------------------------

    def vips(self, network_id: str | None = None, tenant: str | None = None) -> list[VipRecord]:
        """Every virtual IP (None: the operator's view), or a network's, or `tenant`'s."""
        return [v for v in self.store.vips(network_id) if tenant is None or v.tenant == tenant]

    def get_vip(self, vip_id: str, tenant: str | None = None) -> VipRecord:
        """By id; another tenant's is as missing as a missing one."""
        for vip in self.store.vips():
            if vip.id == vip_id and (tenant is None or vip.tenant == tenant):
                return vip
        raise NotFound(f"virtual IP {vip_id} not found")

    async def reserve_vip(self, network: str, name: str, tenant: str = "", *,
                          aliases: Sequence[str] = (), address: str | None = None,
                          mode: str = "vip") -> VipRecord:
        """A virtual IP on `tenant`'s `network` (id or name, looked up in that tenant's only),
        answered by the network's DNS as `name` and `aliases` (and `tasks.NAME` for its
        backends): an address of the subnet (`address` if free, else the lowest free one)
        held on the bridge until `release_vip`. It has no backends yet: connections to it are
        refused until `set_backends`. Mode "dnsrr": no address, the names answer the
        backends themselves (docker's endpoint mode dnsrr)."""
        check_vip_name(name)
        for alias in aliases:
            check_vip_name(alias)
        if mode not in VIP_MODES:
            raise InvalidArgument(f"invalid endpoint mode {mode!r} (vip or dnsrr)")
        if mode == "dnsrr" and address:
            raise InvalidArgument("endpoint mode dnsrr has no virtual IP: no address to ask for")
        async with self._lock:
            net = self.resolve(network, tenant)
            plan = ipam.SubnetPlan(IPv4Network(net.subnet), IPv4Address(net.gateway))
            wanted = ipam.parse_address(address) if address else None
            # No await between choosing the address and recording it (as in `connect`).
            addr = "" if mode == "dnsrr" else str(
                ipam.allocate_address(plan, self._used_addresses(net.id), wanted))
            vip = VipRecord(os.urandom(32).hex(), net.id, name, addr, net.tenant,
                            tuple(aliases), created=_now(), mode=mode)
            self.store.insert_vip(vip)
            try:
                await self._bring_up(net)  # also puts the address on the bridge
                await self._apply_rules()
            except BaseException:
                self.store.delete_vip(vip.id)
                if vip.address:
                    with contextlib.suppress(Exception):
                        await asyncio.to_thread(links.delete_address, self.host, net.bridge,
                                                f"{vip.address}/32")
                raise
            return vip

    async def set_backends(self, vip_id: str, backends: Sequence[str]) -> VipRecord:
        """Spread new connections to the VIP over `backends` (addresses of containers on its
        network; the whole set, replacing the previous one). Connections already made keep
        their backend; a backend whose container is not running gets none until it runs."""
        async with self._lock:
            vip = self.get_vip(vip_id)
            net = self.get(vip.network_id)
            on_net = {e.address for e in self.store.endpoints(net.id)}
            chosen = set()
            for text in backends:
                backend = str(ipam.parse_address(text))
                if backend not in on_net:
                    raise InvalidArgument(f"{backend} is not the address of a container on "
                                          f"network {net.name}")
                chosen.add(backend)
            new = replace(vip, backends=tuple(sorted(chosen, key=IPv4Address)))
            if new != vip:
                self.store.update_vip(new)
            await self._apply_rules()
            return new

    async def publish_vip(self, vip_id: str, ports: Sequence[PortMapping]) -> VipRecord:
        """Publish the VIP's ports on the host (all of them: replaces the previous set;
        `container_port` is the port on the VIP and its backends; host_port 0 = a free one):
        DNAT from the host's other addresses, a proxy to the VIP on 127.0.0.1."""
        async with self._lock:
            vip = self.get_vip(vip_id)
            if not vip.address and ports:
                raise InvalidArgument(f"{vip.name} has endpoint mode dnsrr: no virtual IP to "
                                      "publish ports from (publish the containers' own)")
            taken = self._ports_taken(but_vip=vip.id)
            resolved: list[PortMapping] = []
            for pm in ports:
                if pm.proto not in ("tcp", "udp"):
                    raise InvalidArgument(f"unsupported protocol {pm.proto!r} (tcp or udp)")
                if not 1 <= pm.container_port <= 65535 or not 0 <= pm.host_port <= 65535:
                    raise InvalidArgument(f"invalid port mapping {pm.host_port}:"
                                          f"{pm.container_port}")
                host_ip = "" if pm.host_ip in ("", "0.0.0.0") else str(
                    ipam.parse_address(pm.host_ip))
                host_port = pm.host_port or await asyncio.to_thread(self._free_port, pm.proto)
                if (host_port, pm.proto) in taken:
                    raise Conflict(f"Bind for {host_ip or '0.0.0.0'}:{host_port} failed: port "
                                   "is already allocated")
                taken.add((host_port, pm.proto))
                resolved.append(PortMapping(pm.container_port, pm.proto, host_ip, host_port))
            new = replace(vip, ports=tuple(resolved))
            for key in self._vip_proxies.pop(vip.id, []):
                await self.ports.close(key)
            try:
                self._vip_proxies[vip.id] = await self._vip_loopback(new, strict=True)
            except BaseException:
                self._vip_proxies[vip.id] = await self._vip_loopback(vip, strict=False)
                raise
            self.store.update_vip(new)
            await self._apply_rules()
            return new

    async def set_vip_wake(self, vip_id: str, port: int, udp_port: int = 0) -> None:
        """While the VIP has no live backends, send its tcp connections (and those to its
        published tcp ports) to the host's listener on the VIP's address at `port`, and its
        datagrams (to any port, and its published udp ports) to the host's udp listener there
        at `udp_port` (0: refuse them again). The listeners must be bound first."""
        for value in (port, udp_port):
            if not 0 <= value <= 65535:
                raise InvalidArgument(f"invalid wake port {value}")
        async with self._lock:
            self.get_vip(vip_id)
            before = (self._wake_ports.get(vip_id, 0), self._udp_wake_ports.get(vip_id, 0))
            if before == (port, udp_port):
                return
            for ports, value in ((self._wake_ports, port), (self._udp_wake_ports, udp_port)):
                if value:
                    ports[vip_id] = value
                else:
                    ports.pop(vip_id, None)
            await self._apply_rules()

    async def release_vip(self, vip_id: str) -> None:
        """The VIP's name, address, rules and published ports go."""
        async with self._lock:
            vip = self.get_vip(vip_id)
            self._wake_ports.pop(vip.id, None)
            self._udp_wake_ports.pop(vip.id, None)
            for key in self._vip_proxies.pop(vip.id, []):
                await self.ports.close(key)
            self.store.delete_vip(vip.id)
            await self._apply_rules()
            if vip.address:
                net = self.get(vip.network_id)
                await asyncio.to_thread(links.delete_address, self.host, net.bridge,
                                        f"{vip.address}/32")

    async def _vip_loopback(self, vip: VipRecord, *, strict: bool) -> list[str]:
        """Proxies (in the port keeper) from 127.0.0.1 to the VIP for its published ports
        (the loopback's DNAT chain has containers' ports only; the proxy's connection to the
        VIP is balanced by the `vips` chain). A port that cannot be bound: Conflict when
        `strict` (none is left open), else logged."""
        opened: list[str] = []
        for key, (proto, port, target) in _vip_proxies(vip).items():
            try:
                await self.ports.open(key, proto, port, target)
            except (Conflict, OSError) as exc:
                if strict:
                    for done in opened:
                        await self.ports.close(done)
                    raise
                log.warning("virtual IP %s: no proxy for 127.0.0.1:%d: %s", vip.name, port, exc)
                continue
            opened.append(key)
        return opened
