"""Floating IPs (issue 15), the pure part: the operator's pool, choosing free addresses in it,
and the nftables rules of attached FIPs, rendered into steelcup's table by `nft.render`.

A floating IP is an address of the operator's pool (`steelcup daemon --fip-pool CIDR
--fip-interface IFACE`) that a tenant allocates and attaches to one of its containers: 1:1 NAT
both ways. While attached, the daemon holds the address on IFACE (a /32: the host answers ARP
for it there, and the pool's router or neighbours send its traffic to the host), and:
- every new connection to it from outside steelcup's bridges is DNATed to the container's
  address (all ports; its security groups then filter it like any ingress);
- the container's connections out of its bridge leave from the FIP (SNAT instead of the
  network's masquerade);
- no container reaches a pool address directly (`ip daddr POOL drop` in forward; its own FIP
  neither: only via the outside);
- flows made through a FIP pass only while that FIP is attached to that container: after a
  detach or release, conntrack's entries of the old mapping are dropped, not carried on (a
  released address may be the next tenant's).

A FIP attached to a service goes to the service's virtual IP (hyper.sh's semantics): inbound
only. One connection gets one DNAT, so the FIP is DNATed straight to the VIP's live backends,
one picked per connection (as `vip.port_rules` does for published ports); the replicas' own
connections out keep their own path (their network's masquerade, or a FIP of their own), a
service has no single source address. While the VIP has no live backend, connections to the
FIP are refused at once (tcp reset, ICMP port unreachable), as the VIP's own are, unless the
service sleeps (every replica suspended, `--auto-suspend`): then the VIP has a wake listener
(net/vip.py, services/waker.py) and the FIP's tcp connections are DNATed to it as the VIP's
own are, held while a replica resumes and relayed to it; its udp goes to the VIP's udp wake
listener the same way (net/udpwake.py: conntrack tells it the FIP and port each flow was
sent to).
Once a replica runs, the FIP is DNATed to it again. The listener is reached only through this
DNAT from outside the bridges (the `fips` chain is not jumped to from them). The replicas'
security groups filter these connections like any other ingress (they match the backend's
address, after the DNAT).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from steelcup.errors import Conflict, InvalidArgument
from steelcup.net.vip import VipTarget, balance

NAME_MAX = 64
FIP_IN = "fip_in"  # forward: flows DNATed from a FIP, checked against the current mapping
FIP_OUT = "fip_out"  # forward: flows SNATed to a FIP, likewise
NAT_CHAIN = "fips"  # nat prerouting: FIP -> container


@dataclass(frozen=True)
class FipRecord:
    """An allocated floating IP of `tenant`. Attached to a container: `container_id` and
    `network_id` (the endpoint its traffic goes to); to a service: `service_id`, `vip_id`
    (the service's virtual IP it goes to, kept current by the service layer) and that VIP's
    `network_id`. Detached: all "". """

    address: str
    tenant: str = ""
    name: str = ""
    container_id: str = ""
    network_id: str = ""
    created: str = ""
    service_id: str = ""
    vip_id: str = ""

    @property
    def attached(self) -> bool:
        return bool(self.container_id or self.service_id)

    @property
    def holder(self) -> str:
        """What it is attached to, for messages ("" when detached)."""
        if self.service_id:
            return f"service {self.service_id[:12]}"
        return f"container {self.container_id[:12]}" if self.container_id else ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FipRecord:
        data: dict[str, Any] = json.loads(text)
        return cls(**data)


@dataclass(frozen=True)
class FipTarget:
    """An attached FIP as the ruleset needs it: where its traffic goes (a container's
    address, 1:1 NAT) and the bridge that address is on; or, for a service, `target` is ""
    and `backends` are its VIP's live backends (on `bridge`; none: refused, or its tcp
    DNATed to `wake` and its udp to `udp_wake`, the VIP's wake listeners as "address:port",
    while the service sleeps)."""

    address: str
    target: str
    bridge: str
    backends: tuple[str, ...] = ()
    wake: str = ""
    udp_wake: str = ""

    @property
    def waking(self) -> bool:
        """A service's FIP without live backends whose tcp goes to the wake listener."""
        return self.service and not self.backends and bool(self.wake)

    @property
    def udp_waking(self) -> bool:
        """A service's FIP without live backends whose udp goes to the udp wake listener."""
        return self.service and not self.backends and bool(self.udp_wake)

    @property
    def service(self) -> bool:
        return not self.target

    @property
    def receivers(self) -> tuple[str, ...]:
        """The addresses its connections are DNATed to."""
        return self.backends if self.service else (self.target,)


def parse_pool(cidr: str, reserved: Sequence[IPv4Network] = ()) -> IPv4Network:
    """The operator's `--fip-pool`: an IPv4 CIDR of at least one usable address that overlaps
    none of `reserved` (steelcup's own subnet pool: a FIP is never a container's address)."""
    try:
        pool = IPv4Network(cidr, strict=False)
    except ValueError:
        raise InvalidArgument(f"--fip-pool {cidr!r} is not an IPv4 CIDR (e.g. "
                              "203.0.113.0/28)") from None
    if pool.prefixlen < 16:
        raise InvalidArgument(f"--fip-pool {pool}: at most a /16")
    for other in reserved:
        if pool.overlaps(other):
            raise InvalidArgument(f"--fip-pool {pool} overlaps {other}, steelcup's own "
                                  "container subnets")
    return pool


def _usable(pool: IPv4Network) -> Iterator[IPv4Address]:
    """The pool's addresses (its network and broadcast addresses not, below a /31)."""
    return iter(pool.hosts()) if pool.prefixlen < 31 else iter(pool)


def choose(pool: IPv4Network, taken: Collection[str], count: int) -> list[str]:
    """The `count` lowest addresses of `pool` not in `taken` (allocated FIPs, the host's own
    addresses); Conflict if the pool has fewer free."""
    if count < 1:
        raise InvalidArgument(f"count must be at least 1, not {count}")
    out: list[str] = []
    for address in _usable(pool):
        if str(address) not in taken:
            out.append(str(address))
            if len(out) == count:
                return out
    raise Conflict(f"the floating IP pool {pool} has {len(out)} free address(es), "
                   f"{count} asked")


def check_address(text: str) -> str:
    """A FIP named by a client: a plain IPv4 address (normalised)."""
    try:
        return str(IPv4Address(text))
    except ValueError:
        raise InvalidArgument(f"{text!r} is not an IPv4 address") from None


def check_name(name: str) -> str:
    """A FIP's name (`fip name IP NAME`): up to 64 printable characters; "" clears it."""
    if len(name) > NAME_MAX or not name.isprintable():
        raise InvalidArgument(f"invalid floating IP name {name!r}: up to {NAME_MAX} printable "
                              "characters")
    return name


def _q(name: str) -> str:
    return f'"{name}"'


def forward_rules(pool: IPv4Network | None) -> list[str]:
    """At the head of the forward chain (after the tenant rules): nothing reaches a pool
    address un-NATed (a container sending to one directly, or a detached one), and flows of
    a FIP mapping that no longer holds are dropped."""
    if pool is None:
        return []
    return [f"\t\tip daddr {pool} counter drop",
            f"\t\tct status dnat ct original ip daddr {pool} jump {FIP_IN}",
            f"\t\tct status snat ct reply ip daddr {pool} jump {FIP_OUT}"]


def flow_chains(pool: IPv4Network | None, targets: Sequence[FipTarget]) -> list[str]:
    """The chains `forward_rules` jump to: a flow of the current mapping returns (the rest of
    the forward chain decides), any other is dropped and counted."""
    if pool is None:
        return []
    lines = [f"\tchain {FIP_IN} {{"]
    for t in targets:
        if t.receivers:
            lines.append(f"\t\tct original ip daddr {t.address} ct reply ip saddr "
                         f"{_one_or_set(t.receivers)} return")
    lines += ["\t\tcounter drop", "\t}", f"\tchain {FIP_OUT} {{"]
    for t in targets:
        if not t.service:  # a service's FIP is inbound only
            lines.append(f"\t\tct reply ip daddr {t.address} ct original ip saddr {t.target} "
                         "return")
    lines += ["\t\tcounter drop", "\t}"]
    return lines


def _one_or_set(addresses: Sequence[str]) -> str:
    return addresses[0] if len(addresses) == 1 else "{ " + ", ".join(addresses) + " }"


def input_rules(pool: IPv4Network | None, targets: Sequence[FipTarget] = ()) -> list[str]:
    """At the end of the input chain: a pool address is never the host's own service (an
    attached FIP's connections are DNATed before input; anything else is dropped). A
    service's FIP whose VIP has no live backend refuses a new connection at once instead
    (its first packet only, as `vip` refuses its own): its tcp and its udp, each unless the
    service sleeps with a listener for it (then DNATed to that listener before input)."""
    if pool is None:
        return []
    empty = [t for t in targets if t.service and not t.backends]
    refused = [t.address for t in empty if not t.waking]
    lines = []
    if refused:
        lines.append(f'\t\tiifname != "lo" ip daddr {_one_or_set(refused)} '
                     "tcp flags & (syn | ack) == syn reject with tcp reset")
    refused = [t.address for t in empty if not t.udp_waking]
    if refused:
        lines.append(f'\t\tiifname != "lo" ip daddr {_one_or_set(refused)} '
                     "meta l4proto udp reject")
    return [*lines, f'\t\tiifname != "lo" ip daddr {pool} counter drop']


def nat_chain(targets: Sequence[FipTarget]) -> list[str]:
    """The `fips` nat chain, jumped to from prerouting for packets that did not come from a
    steelcup bridge: each FIP DNATed to its container, or to one of its service's backends
    per connection, every port; a sleeping service's tcp and udp to its VIP's wake
    listeners."""
    lines = [f"\tchain {NAT_CHAIN} {{"]
    for t in targets:
        if t.receivers:
            lines.append(f"\t\tip daddr {t.address} dnat ip to {balance(t.receivers)}")
        else:
            if t.waking:
                lines.append(f"\t\tip daddr {t.address} meta l4proto tcp dnat ip to {t.wake}")
            if t.udp_waking:
                lines.append(f"\t\tip daddr {t.address} meta l4proto udp dnat ip to "
                             f"{t.udp_wake}")
    lines.append("\t}")
    return lines


def snat_rules(targets: Sequence[FipTarget]) -> list[str]:
    """In postrouting, before the networks' masquerade: a container with a FIP leaves its
    bridge from the FIP (a service's replicas keep their own path)."""
    return [f"\t\tip saddr {t.target} oifname != {_q(t.bridge)} snat ip to {t.address}"
            for t in targets if not t.service]


def targets(records: Sequence[FipRecord], endpoints: Mapping[tuple[str, str], tuple[str, str]],
            vips: Mapping[str, VipTarget] | None = None) -> list[FipTarget]:
    """The render's view of the attached `records`: `endpoints[(container id, network id)]`
    is (address, bridge), `vips[vip id]` a service's VIP as rendered (its live backends, or
    its wake listener); a record whose endpoint or VIP is gone has no target. Sorted by
    FIP."""
    out = []
    for rec in records:
        address = str(IPv4Address(rec.address))
        if rec.service_id:
            v = (vips or {}).get(rec.vip_id)
            if v is not None:
                wake = f"{v.address}:{v.wake_port}" if v.waking else ""
                udp_wake = f"{v.address}:{v.udp_wake_port}" if v.udp_waking else ""
                out.append(FipTarget(address, "", v.bridge,
                                     tuple(str(IPv4Address(b)) for b in v.backends), wake,
                                     udp_wake))
            continue
        ep = endpoints.get((rec.container_id, rec.network_id)) if rec.attached else None
        if ep is not None:
            out.append(FipTarget(address, str(IPv4Address(ep[0])), ep[1]))
    return sorted(out, key=lambda t: IPv4Address(t.address))
