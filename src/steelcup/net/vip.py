"""Pure nftables rules of virtual IPs (service addresses), rendered into steelcup's table by
`nft.render`.

A virtual IP is an address of its network's subnet that the host holds on the bridge (a /32:
containers reach it on-link, the host answers its ARP). Each new connection to it (any port,
tcp or udp) is DNATed in the `vips` chain to one backend picked by `numgen random` (nat rules
see only a connection's first packet, so the choice is per connection and conntrack keeps it
for the connection's life, across reloads of the table). The connection is also SNATed to the
network's gateway: the backend answers through the host, so the reply is un-NATed even when
client and backend share the bridge, and a backend reaching its own VIP (hairpin) works. A VIP
without live backends is refused at once (tcp reset, ICMP port unreachable), not left to hang,
unless it has a wake port: then its tcp connections (to any port of it, and to its published
tcp ports) are DNATed to the host's own listener on the VIP's address at that port (a service
whose replicas are all suspended: services/waker.py resumes one and relays, reading where the
connection was going from conntrack); and with a udp wake port its udp (any port, and its
published udp ports) goes to the host's udp listener on its address (net/udpwake.py) the same
way; without one its udp is refused.
Its published ports DNAT straight to the backends (one NAT per connection: there is no second
DNAT from the VIP).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address

from steelcup.net.model import NetworkRecord, PortMapping, VipRecord

CHAIN = "vips"


@dataclass(frozen=True)
class VipTarget:
    """One virtual IP as the ruleset needs it: its bridge and gateway, the backends that are
    live now (sorted; none: connections are refused, or sent to `wake_port`), its published
    ports and the ports of the host's wake listeners on its address, tcp and udp (0: none)."""

    address: str
    bridge: str
    gateway: str
    backends: tuple[str, ...] = ()
    ports: tuple[PortMapping, ...] = ()
    wake_port: int = 0
    udp_wake_port: int = 0

    @property
    def waking(self) -> bool:
        """No live backends, and a listener to hold its tcp connections."""
        return not self.backends and self.wake_port > 0

    @property
    def udp_waking(self) -> bool:
        """No live backends, and a listener to hold its datagrams."""
        return not self.backends and self.udp_wake_port > 0

    def wake_to(self, proto: str) -> str:
        """The DNAT target of its `proto` traffic while it wakes ("": none)."""
        if proto == "tcp" and self.waking:
            return f"{self.address}:{self.wake_port}"
        if proto == "udp" and self.udp_waking:
            return f"{self.address}:{self.udp_wake_port}"
        return ""


def _ip_key(address: str) -> IPv4Address:
    return IPv4Address(address)  # ValueError on a corrupt record: never into the ruleset


def targets(vips: Sequence[VipRecord], networks: Sequence[NetworkRecord],
            live: Mapping[str, Collection[str]],
            wake_ports: Mapping[str, int] | None = None,
            udp_wake_ports: Mapping[str, int] | None = None) -> list[VipTarget]:
    """The render's view of `vips`: each on its network's bridge, its backends narrowed to
    `live[network_id]` (addresses of running containers on that network: a stopped or removed
    replica drops out at once, whatever the service layer last said), with its wake ports from
    `wake_ports` and `udp_wake_ports` (by VIP id)."""
    wake_ports = wake_ports or {}
    udp_wake_ports = udp_wake_ports or {}
    by_id = {n.id: n for n in networks}
    out = []
    for v in vips:
        if not v.address:  # dnsrr: a name only, nothing to balance
            continue
        net = by_id[v.network_id]
        up = live.get(v.network_id, ())
        backends = sorted((b for b in set(v.backends) if b in up), key=_ip_key)
        out.append(VipTarget(str(_ip_key(v.address)), net.bridge, net.gateway,
                             tuple(backends), v.ports, wake_ports.get(v.id, 0),
                             udp_wake_ports.get(v.id, 0)))
    return sorted(out, key=lambda t: _ip_key(t.address))


def balance(backends: Sequence[str], port: int | None = None) -> str:
    """The DNAT target: the one backend, or a random pick among several."""
    if len(backends) == 1:
        return backends[0] if port is None else f"{backends[0]}:{port}"
    pick = ", ".join(f"{i} : {b}" if port is None else f"{i} : {b} . {port}"
                     for i, b in enumerate(backends))
    return f"numgen random mod {len(backends)} map {{ {pick} }}"


def _addresses(vips: Sequence[VipTarget]) -> str:
    return "{ " + ", ".join(v.address for v in vips) + " }"


def chain(vips: Sequence[VipTarget]) -> list[str]:
    """The `vips` nat chain (jumped to from prerouting, for the bridges, and from output)."""
    lines = [f"\tchain {CHAIN} {{"]
    for v in vips:
        if v.backends:
            lines.append(f"\t\tip daddr {v.address} dnat ip to {balance(v.backends)}")
        else:
            for proto in ("tcp", "udp"):
                if to := v.wake_to(proto):
                    lines.append(f"\t\tip daddr {v.address} meta l4proto {proto} "
                                 f"dnat ip to {to}")
    lines.append("\t}")
    return lines


def port_rules(vips: Sequence[VipTarget]) -> list[str]:
    """The published ports of VIPs with live backends (and those of waking VIPs, to their
    wake listener of the port's protocol, if it has one), for the `ports` chain."""
    rules = []
    for v in vips:
        for p in sorted(v.ports, key=lambda p: (p.proto, p.host_port, p.host_ip)):
            match = f"ip daddr {p.host_ip} " if p.host_ip else ""
            to = balance(v.backends, p.container_port) if v.backends else v.wake_to(p.proto)
            if not to:
                continue
            rules.append(f"\t\t{match}{p.proto} dport {p.host_port} dnat ip to {to}")
    return rules


def _refuse(prefix: str, vips: Sequence[VipTarget]) -> list[str]:
    empty = [v for v in vips if not v.backends]
    if not empty:
        return []
    # Only a connection's first packet (a SYN, a datagram): the host's own connection to a
    # VIP has the VIP as source, so the reset or ICMP error it gets back is addressed to the VIP
    # as well and must not be refused in turn. A waking VIP's tcp (and udp, with a udp
    # listener) goes to its wake listener (DNATed to the same address): not refused.
    rules = []
    refused = [v for v in empty if not v.waking]
    if refused:
        rules.append(f"\t\t{prefix}ip daddr {_addresses(refused)} "
                     "tcp flags & (syn | ack) == syn reject with tcp reset")
    refused = [v for v in empty if not v.udp_waking]
    if refused:
        # (a new flow's datagram only: the reply to the host's own flow that a wake listener
        # relayed, sent as the service woke, has the VIP as destination too)
        rules.append(f"\t\t{prefix}ip daddr {_addresses(refused)} meta l4proto udp "
                     "ct state new reject")
    return rules


def input_rules(bridge: str, vips: Sequence[VipTarget]) -> list[str]:
    """In the input chain, in `bridge`'s block (before its drop): its containers' connections
    and datagrams to its waking VIPs reach the wake listeners (only as DNATed there: a
    listener's port is no service of the host's); those to its other VIPs without backends
    are refused."""
    mine = [v for v in vips if v.bridge == bridge]
    accept = [f'\t\tiifname "{bridge}" ip daddr {v.address} {proto} dport {port} '
              "ct status dnat accept"
              for v in mine for proto, port, on in (("tcp", v.wake_port, v.waking),
                                                    ("udp", v.udp_wake_port, v.udp_waking))
              if on]
    return [*accept, *_refuse(f'iifname "{bridge}" ', mine)]


def input_tail(vips: Sequence[VipTarget]) -> list[str]:
    """At the end of the input chain: the same for the host's own connections (the loopback
    proxy of a published port) and anything else that reaches a VIP without backends."""
    return _refuse("", vips)


def snat_rules(vips: Sequence[VipTarget]) -> list[str]:
    """In postrouting: connections made to a VIP leave for the backend from the gateway."""
    rules = []
    for bridge in sorted({v.bridge for v in vips}):
        mine = [v for v in vips if v.bridge == bridge]
        gateway = mine[0].gateway
        rules.append(f'\t\toifname "{bridge}" ct original ip daddr {_addresses(mine)} '
                     f"snat ip to {gateway}")
    return rules
