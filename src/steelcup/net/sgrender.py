"""Pure render of the security-group table (`inet steelcup_sg`) from the containers that are in
groups, by their endpoints' addresses (held while they exist, running or not). Loaded in the
same `nft -f` transaction as the other steelcup tables.

A container's traffic is recognised by its addresses: the anti-spoofing table
(net/antispoof.py) drops, on the container's own tap, anything it sends from another address,
so `ip saddr` is the sender and `ip daddr` the receiver. Bridged traffic between containers of
one network reaches these IP hooks through br_netfilter (the daemon checks it is on), with
connection tracking, which the bridge family lacks on these kernels.

- a remote_group is a named set of its members' addresses (one lookup per rule);
- ingress: postrouting (after DNAT: the container's own port), per container address a chain:
  replies of its connections, then its groups' ingress rules, else counted drop;
- egress: prerouting after conntrack (-150, before DNAT: the address it asked for), replies,
  its networks' DNS (gateway:53), its groups' egress rules, else counted drop; a container
  none of whose groups has an egress rule sends nothing but replies and DNS (hyper.sh's
  semantics, issue 15).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from steelcup.net.secgroups import Rule, SecurityGroup

TABLE = "steelcup_sg"


@dataclass(frozen=True)
class Guarded:
    """A container in at least one group, with its addresses."""

    container_id: str
    addresses: tuple[str, ...]  # its NICs' addresses
    dns: tuple[str, ...]  # its networks' gateways (the embedded DNS)
    groups: tuple[SecurityGroup, ...]


def delete_lines() -> list[str]:
    return [f"table inet {TABLE} {{}}", f"delete table inet {TABLE}"]


def render(guarded: Sequence[Guarded], members: Mapping[tuple[str, str], Sequence[str]]) -> str:
    """The table for `guarded`; `members[(tenant, group)]` are the addresses of that group's
    members (for remote_group rules: a group with none matches nothing)."""
    items = sorted(guarded, key=lambda g: g.container_id)
    lines = [*delete_lines(), f"table inet {TABLE} {{"]
    out = lines.append
    # one named set per remote group in use: a rule is one lookup, whatever the member count
    used = sorted({(g.groups[0].tenant, r.remote_group) for g in items for grp in g.groups
                   for r in grp.rules if r.remote_group})
    sets = {key: _set_name(*key) for key in used if members.get(key)}
    for key, set_name in sets.items():
        out(f"\tset {set_name} {{")
        out("\t\ttype ipv4_addr")
        out("\t\telements = { " + ", ".join(sorted(set(members[key]), key=_ip_key)) + " }")
        out("\t}")
    # every member has both chains: with no egress rule, nothing but replies and DNS goes out
    addressed = sorted(((a, g) for g in items for a in g.addresses), key=_addr_key)
    out("\tchain ingress {")
    out("\t\ttype filter hook postrouting priority filter; policy accept;")
    if addressed:
        out("\t\tip daddr vmap { " + ", ".join(
            f"{a} : goto in_{_key(g)}" for a, g in addressed) + " }")
    out("\t}")
    out("\tchain egress {")
    out("\t\ttype filter hook prerouting priority -150; policy accept;")
    if addressed:
        out("\t\tip saddr vmap { " + ", ".join(
            f"{a} : goto out_{_key(g)}" for a, g in addressed) + " }")
    out("\t}")
    for g in items:
        out(f"\tchain in_{_key(g)} {{")
        out("\t\tct state established,related accept")
        for rule in _rules(g, "ingress"):
            lines.extend(_rule_lines(rule, g, sets, "saddr"))
        out("\t\tcounter drop")
        out("\t}")
        out(f"\tchain out_{_key(g)} {{")
        out("\t\tct state established,related accept")
        for gw in sorted(set(g.dns)):
            out(f"\t\tip daddr {gw} udp dport 53 accept")
            out(f"\t\tip daddr {gw} tcp dport 53 accept")
        for rule in _rules(g, "egress"):
            lines.extend(_rule_lines(rule, g, sets, "daddr"))
        out("\t\tcounter drop")
        out("\t}")
    out("}")
    return "\n".join(lines) + "\n"


def _key(g: Guarded) -> str:
    key = g.container_id[:12]
    if not key.isascii() or not key.isalnum():  # ids are hex: this names a chain
        raise ValueError(f"container id {g.container_id!r} cannot name a chain")
    return key


def _addr_key(item: tuple[str, Guarded]) -> tuple[int, ...]:
    return _ip_key(item[0])


def _rules(g: Guarded, direction: str) -> list[Rule]:
    """The union of its groups' rules of `direction`, duplicates once, in a stable order."""
    seen: dict[Rule, None] = {}
    for grp in sorted(g.groups, key=lambda grp: grp.name):
        for rule in grp.rules:
            if rule.direction == direction:
                seen.setdefault(rule, None)
    return list(seen)


def _set_name(tenant: str, group: str) -> str:
    """A set's name: nft identifiers cannot hold every group name, a digest can."""
    return "members_" + hashlib.sha256(f"{tenant}/{group}".encode()).hexdigest()[:16]


def _ip_key(address: str) -> tuple[int, ...]:
    return tuple(int(part) for part in address.split("."))


def _rule_lines(rule: Rule, g: Guarded, sets: Mapping[tuple[str, str], str],
                field: str) -> list[str]:
    match = []
    if rule.remote_group:
        set_name = sets.get((g.groups[0].tenant, rule.remote_group))
        if set_name is None:
            return []  # a group without members: nobody to allow
        match.append(f"ip {field} @{set_name}")
    elif rule.remote and rule.remote != "0.0.0.0/0":
        match.append(f"ip {field} {rule.remote}")
    if rule.protocol in ("tcp", "udp"):
        if rule.port_min:
            ports = (str(rule.port_min) if rule.port_min == rule.port_max
                     else f"{rule.port_min}-{rule.port_max}")
            match.append(f"{rule.protocol} dport {ports}")
        else:
            match.append(f"meta l4proto {rule.protocol}")
    elif rule.protocol == "icmp":
        match.append("meta l4proto icmp")
    return ["\t\t" + " ".join([*match, "accept"])]
