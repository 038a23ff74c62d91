"""Pure render of steelcup's whole nftables ruleset (one `inet steelcup` table) from the networks
and published ports; applied atomically with `nft -f` (see `apply`).

The table is `inet`: its filter rules see IPv4 and IPv6 alike, so a host service listening on
`::` is no more reachable from a container (over a bridge's link-local address) than one on
0.0.0.0. Containers have no IPv6 of their own yet: everything IPv6 from a bridge is dropped.

Policy per network (bridge B, subnet S, gateway G):
- tenants first: nothing from the bridges of one tenant goes to another tenant's bridges or
  subnets (published ports included: a DNATed packet has the container's address), before any
  other rule, conntrack's included, and counted (`counter`), so an operator sees attempts;
- containers on B reach each other; traffic between two steelcup bridges is dropped;
- containers reach the host only for DNS (G:53) and ping of G: the host's services are not
  exposed to them;
- egress to anything else is forwarded and masqueraded, unless the network is internal;
- published ports: DNAT from the host's local addresses to the container, its loopback
  (127.0.0.1) included: the bridges route loopback sources (`route_localnet`, set by
  links.ensure_bridge) and such connections leave masqueraded as the gateway. As netavark and
  docker without its userland proxy do; the userspace proxy (net/proxy.py) still holds the
  port on 127.0.0.1 and serves it when no rule does (a dormant container's wake, a VIP);
- nothing addressed to 127.0.0.0/8 comes in from a bridge (`route_localnet` would deliver it
  to the host's loopback services): dropped before conntrack, as the guard table
  (net/antispoof.py) drops it from a tap;
- virtual IPs (net/vip.py): connections to a VIP are spread over its live backends;
- floating IPs (net/fip.py): 1:1 NAT between an attached FIP and its container; no container
  reaches the pool directly.
Only steelcup's own table is touched: the file deletes and recreates it in one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network

from steelcup.net import antispoof, fip, links, sgrender, vip
from steelcup.net.links import Host
from steelcup.net.model import NetworkRecord

TABLE = "steelcup"
LOOPBACK = "127.0.0.1"  # the host's loopback address ports are published on
LOOPBACK_CHAIN = "loopback_ports"


@dataclass(frozen=True)
class PublishedPort:
    """A port mapping in effect: host_port resolved, container address known."""

    host_ip: str  # "" = every local address
    host_port: int
    container_ip: str
    container_port: int
    proto: str = "tcp"


def _q(name: str) -> str:
    return f'"{name}"'


def _set(names: Sequence[str]) -> str:
    return "{ " + ", ".join(_q(n) for n in names) + " }"


def render(networks: Sequence[NetworkRecord], ports: Sequence[PublishedPort] = (),
           vips: Sequence[vip.VipTarget] = (), fips: Sequence[fip.FipTarget] = (),
           fip_pool: IPv4Network | None = None) -> str:
    """The complete `nft -f` input for `networks` (sorted by bridge: stable output), their
    containers' published `ports`, their virtual IPs (`vip.targets`) and the attached
    floating IPs of the pool `fip_pool` (`fip.targets`; None: the daemon has no pool)."""
    nets = sorted(networks, key=lambda n: n.bridge)
    for n in nets:
        links.check_ifname(n.bridge)
    unknown = {v.bridge for v in vips} | {f.bridge for f in fips}
    unknown -= {n.bridge for n in nets}
    if unknown:
        raise ValueError(f"virtual or floating IPs on bridges of no network: {sorted(unknown)}")
    if fips and fip_pool is None:
        raise ValueError("floating IPs without a pool")
    lines = [*_delete_lines(), f"table inet {TABLE} {{"]
    out = lines.append
    bridges = [n.bridge for n in nets]

    out("\tchain forward {")
    out("\t\ttype filter hook forward priority filter; policy accept;")
    lines.extend(_tenant_isolation(nets))
    lines.extend(fip.forward_rules(fip_pool))
    if nets:
        out(f"\t\toifname {_set(bridges)} ct state established,related accept")
        for n in nets:
            out(f"\t\tiifname {_q(n.bridge)} oifname {_q(n.bridge)} accept")
        out(f"\t\tiifname {_set(bridges)} oifname {_set(bridges)} drop")
        for n in nets:
            if n.internal:
                out(f"\t\tiifname {_q(n.bridge)} drop")
                out(f"\t\toifname {_q(n.bridge)} drop")
            else:
                out(f"\t\tiifname {_q(n.bridge)} ip saddr {n.subnet} accept")
                out(f"\t\tiifname {_q(n.bridge)} drop")
                out(f"\t\toifname {_q(n.bridge)} ct status dnat accept")
                out(f"\t\toifname {_q(n.bridge)} drop")
    out("\t}")

    out("\tchain input {")
    out("\t\ttype filter hook input priority filter; policy accept;")
    for n in nets:
        b = _q(n.bridge)
        out(f"\t\tiifname {b} ct state established,related accept")
        out(f"\t\tiifname {b} ip daddr {n.gateway} udp dport 53 accept")
        out(f"\t\tiifname {b} ip daddr {n.gateway} tcp dport 53 accept")
        out(f"\t\tiifname {b} ip daddr {n.gateway} icmp type echo-request accept")
        lines.extend(vip.input_rules(n.bridge, vips))
        out(f"\t\tiifname {b} drop")
    lines.extend(vip.input_tail(vips))
    lines.extend(fip.input_rules(fip_pool, fips))
    out("\t}")

    lines.extend(fip.flow_chains(fip_pool, fips))
    if vips:
        lines.extend(vip.chain(vips))
    if fips:
        lines.extend(fip.nat_chain(fips))

    out("\tchain ports {")
    lines.extend(f"\t\t{rule}" for rule in _chain_rules(ports, "ports"))
    lines.extend(vip.port_rules(vips))
    out("\t}")

    out(f"\tchain {LOOPBACK_CHAIN} {{")
    lines.extend(f"\t\t{rule}" for rule in _chain_rules(ports, LOOPBACK_CHAIN))
    out("\t}")

    out("\tchain loopback_guard {")
    out("\t\ttype filter hook prerouting priority raw; policy accept;")
    if nets:
        out(f"\t\tiifname {_set(bridges)} ip daddr 127.0.0.0/8 counter drop")
    out("\t}")

    out("\tchain prerouting {")
    out("\t\ttype nat hook prerouting priority dstnat; policy accept;")
    if vips:  # a VIP before the ports: a published port must not capture VIP:port
        out(f"\t\tiifname {_set(bridges)} jump {vip.CHAIN}")
    if fips:  # before the ports: a port published on every address must not capture a FIP
        out(f"\t\tiifname != {_set(bridges)} jump {fip.NAT_CHAIN}")
    out("\t\tfib daddr type local jump ports")
    out("\t}")

    out("\tchain output {")
    out("\t\ttype nat hook output priority -100; policy accept;")
    if vips:
        out(f"\t\tjump {vip.CHAIN}")
    out(f"\t\tip daddr {LOOPBACK} jump {LOOPBACK_CHAIN}")
    out("\t\tip daddr != 127.0.0.0/8 fib daddr type local jump ports")
    out("\t}")

    out("\tchain postrouting {")
    out("\t\ttype nat hook postrouting priority srcnat; policy accept;")
    lines.extend(vip.snat_rules(vips))
    lines.extend(fip.snat_rules(fips))
    for n in nets:
        if not n.internal:
            out(f"\t\tip saddr {n.subnet} oifname != {_q(n.bridge)} masquerade")
    if nets:  # the host's loopback connections to published ports
        out(f"\t\tip saddr 127.0.0.0/8 oifname {_set(bridges)} masquerade")
    out("\t}")
    out("}")
    return "\n".join(lines) + "\n"


def _port_order(p: PublishedPort) -> tuple[str, int, str]:
    return p.proto, p.host_port, p.host_ip


def port_rule(p: PublishedPort) -> str:
    """The `ports` chain's rule for a published port. No two published ports (of containers
    or VIPs) share a host port and protocol, so the chain's rules never overlap and their
    order does not matter."""
    match = f"ip daddr {p.host_ip} " if p.host_ip else ""
    return match + loopback_rule(p)


def loopback_rule(p: PublishedPort) -> str:
    """The rule of the chain the host's connections to 127.0.0.1 go through, for a port
    published there or on every address."""
    return f"{p.proto} dport {p.host_port} dnat ip to {p.container_ip}:{p.container_port}"


def add_ports(ports: Iterable[PublishedPort]) -> str:
    """`nft -f` input that adds the rules of `ports` to a loaded table's port chains: ~3 ms,
    where reloading the table waits for RCU grace periods (deleting a rule does too)."""
    return "".join(f"add rule inet {TABLE} {chain} {rule}\n"
                   for chain in ("ports", LOOPBACK_CHAIN) for rule in _chain_rules(ports, chain))


def _chain_rules(ports: Iterable[PublishedPort], chain: str) -> list[str]:
    """The rules of `ports` in the chain `ports` (every address but the loopback) or
    `LOOPBACK_CHAIN` (ports of the loopback or of every address)."""
    if chain == LOOPBACK_CHAIN:
        return [loopback_rule(p) for p in sorted(ports, key=_port_order)
                if p.host_ip in ("", LOOPBACK)]
    return [port_rule(p) for p in sorted(ports, key=_port_order) if p.host_ip != LOOPBACK]


def _tenant_isolation(nets: Sequence[NetworkRecord]) -> list[str]:
    """Per tenant owning networks (the operator's "" included), when there are several: drop
    what its bridges send to the bridges or subnets of every other tenant. Holds on its own,
    whatever the per-network rules after it allow."""
    tenants = sorted({n.tenant for n in nets})
    if len(tenants) < 2:
        return []
    out = []
    for tenant in tenants:
        own = _set([n.bridge for n in nets if n.tenant == tenant])
        others = [n for n in nets if n.tenant != tenant]
        subnets = "{ " + ", ".join(n.subnet for n in others) + " }"
        out.append(f"\t\tiifname {own} oifname {_set([n.bridge for n in others])} counter drop")
        out.append(f"\t\tiifname {own} ip daddr {subnets} counter drop")
    return out


def _delete_lines() -> list[str]:
    # Also the `ip` table of daemons before the switch to `inet`.
    return [f"table {family} {TABLE} {{}}\ndelete table {family} {TABLE}"
            for family in ("ip", "inet")]


def render_delete() -> str:
    """Input for `nft -f` that removes steelcup's tables (and only them), present or not:
    this one and those loaded with it (anti-spoofing, security groups)."""
    return "\n".join([*_delete_lines(), *antispoof.delete_lines(),
                      *sgrender.delete_lines()]) + "\n"


def apply(host: Host, ruleset: str) -> None:
    """Load `ruleset` atomically: nft applies the whole file as one transaction or nothing.
    In the daemon's process through libnftables (net.nftlib), else with the `nft` process;
    LinkError with nft's message if it is refused."""
    host.load_nft(ruleset)
