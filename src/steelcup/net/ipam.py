"""Pure IP address management: subnets from a pool, addresses within a subnet.

No state here: callers pass what is in use (from the store), so a restarted daemon that reloads
its allocations can never hand out an address twice.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from steelcup.errors import Conflict, InvalidArgument

# Far from docker (172.17/16, 172.18+), podman (10.88/16) and the usual 192.168 home ranges.
DEFAULT_POOL = "10.213.0.0/16"
DEFAULT_PREFIX = 24


@dataclass(frozen=True)
class SubnetPlan:
    subnet: IPv4Network
    gateway: IPv4Address


def parse_subnet(text: str) -> IPv4Network:
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise InvalidArgument(f"invalid subnet {text!r}: {exc}") from None
    if not isinstance(net, IPv4Network):
        raise InvalidArgument(f"only IPv4 subnets are supported, got {text!r}")
    if net.prefixlen > 30:
        raise InvalidArgument(f"subnet {text} is too small (at most /30)")
    return net


def parse_address(text: str) -> IPv4Address:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise InvalidArgument(f"invalid IPv4 address {text!r}") from None
    if not isinstance(addr, IPv4Address):
        raise InvalidArgument(f"only IPv4 addresses are supported, got {text!r}")
    return addr


def parse_routes(ip_route_output: str) -> list[IPv4Network]:
    """Destinations of `ip -4 -o route show table all` lines (default routes skipped)."""
    out: list[IPv4Network] = []
    for line in ip_route_output.splitlines():
        words = line.split()
        if words and words[0] in ("local", "broadcast", "unicast"):
            words = words[1:]
        if not words or words[0] == "default":
            continue
        try:
            net = ipaddress.ip_network(words[0], strict=False)
        except ValueError:
            continue
        if isinstance(net, IPv4Network) and not net.is_loopback:
            out.append(net)
    return out


def choose_subnet(
    pool: IPv4Network,
    prefix: int,
    taken: Iterable[IPv4Network],
    host_routes: Iterable[IPv4Network] = (),
) -> SubnetPlan:
    """The first /prefix of `pool` overlapping neither a network's subnet nor a host route."""
    if prefix < pool.prefixlen or prefix > 30:
        raise InvalidArgument(f"prefix /{prefix} does not fit pool {pool}")
    avoid = [*taken, *host_routes]
    for candidate in pool.subnets(new_prefix=prefix):
        if not any(candidate.overlaps(other) for other in avoid):
            return SubnetPlan(candidate, next(candidate.hosts()))
    raise Conflict(f"no free /{prefix} subnet left in pool {pool}")


def check_tenant_subnet(
    subnet: IPv4Network, pool: IPv4Network, host_routes: Iterable[IPv4Network]
) -> None:
    """A tenant's own choice of subnet: inside the daemon's pool and clear of every route of
    the host, so a tenant's bridge can never shadow a network the host reaches."""
    if not subnet.subnet_of(pool):
        raise InvalidArgument(f"subnet {subnet} is outside this daemon's pool {pool}: a "
                              "tenant's networks take their subnets from it")
    for route in host_routes:
        if subnet.overlaps(route):
            raise Conflict(f"subnet {subnet} overlaps a network the host reaches: pick another")


def check_subnet(
    subnet: IPv4Network,
    gateway: IPv4Address | None,
    taken: Iterable[IPv4Network],
) -> SubnetPlan:
    """A user-chosen subnet: must not overlap another network (of any tenant: they share the
    host's routing table); gateway defaults to .1. The message names no other network."""
    for other in taken:
        if subnet.overlaps(other):
            raise Conflict(f"subnet {subnet} overlaps a subnet already in use: pick another")
    gw = gateway if gateway is not None else next(subnet.hosts())
    if gw not in subnet or gw in (subnet.network_address, subnet.broadcast_address):
        raise InvalidArgument(f"gateway {gw} is not a host address of {subnet}")
    return SubnetPlan(subnet, gw)


def allocate_address(
    plan: SubnetPlan, used: Iterable[IPv4Address], wanted: IPv4Address | None = None
) -> IPv4Address:
    """`wanted` if free, else the lowest free host address (never the gateway)."""
    in_use = {plan.gateway, *used}
    if wanted is not None:
        if wanted not in plan.subnet or wanted in (
            plan.subnet.network_address, plan.subnet.broadcast_address
        ):
            raise InvalidArgument(f"address {wanted} is not a host address of {plan.subnet}")
        if wanted in in_use:
            raise Conflict(f"address {wanted} is already in use on {plan.subnet}")
        return wanted
    for addr in plan.subnet.hosts():
        if addr not in in_use:
            return addr
    raise Conflict(f"no free address left in {plan.subnet}")


def mac_for(address: IPv4Address) -> str:
    """A locally administered MAC derived from the address (docker's 02:42 scheme)."""
    octets = address.packed
    return "02:42:" + ":".join(f"{b:02x}" for b in octets)
