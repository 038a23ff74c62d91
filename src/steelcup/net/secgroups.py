"""Security groups (issue 15): a tenant's named sets of allow rules, and the pure parsing of the
document that defines one (`steelcup sg create -f FILE NAME`).

The document is a mapping (YAML or JSON; the API takes it as JSON):

    description: web servers            # optional
    rules:
      - direction: ingress              # ingress | egress
        protocol: tcp                   # tcp | udp | icmp | any (default any)
        ports: 80                       # tcp/udp only: N or "N-M" (default: every port)
        remote: 10.0.0.0/8              # CIDR (default: anywhere) ...
      - direction: ingress
        protocol: any
        remote_group: web               # ... or the addresses of that group's members

Semantics (docs/networking.md), hyper.sh's: rules only allow. A container in no group is as
open as any other; in one or more groups, ingress is the union of their ingress rules and
egress the union of their egress rules (none: no egress at all). Replies of allowed
connections and the network's DNS always pass.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from ipaddress import IPv4Network
from typing import Any

from steelcup.errors import InvalidArgument

DIRECTIONS = ("ingress", "egress")
PROTOCOLS = ("tcp", "udp", "icmp", "any")
NAME_MAX = 64
RULES_MAX = 256
_RULE_KEYS = {"direction", "protocol", "ports", "remote", "remote_group"}


@dataclass(frozen=True)
class Rule:
    direction: str  # ingress | egress
    protocol: str = "any"  # tcp | udp | icmp | any
    port_min: int = 0  # 0: every port
    port_max: int = 0
    remote: str = ""  # a CIDR; "" with no remote_group: anywhere
    remote_group: str = ""  # a group of the same tenant: its members' addresses

    def to_doc(self) -> dict[str, Any]:
        """The rule as the document spells it (what `sg inspect` shows)."""
        doc: dict[str, Any] = {"direction": self.direction, "protocol": self.protocol}
        if self.port_min:
            doc["ports"] = (str(self.port_min) if self.port_min == self.port_max
                            else f"{self.port_min}-{self.port_max}")
        if self.remote:
            doc["remote"] = self.remote
        if self.remote_group:
            doc["remote_group"] = self.remote_group
        return doc


@dataclass(frozen=True)
class SecurityGroup:
    name: str
    tenant: str = ""  # "" = the operator's
    description: str = ""
    rules: tuple[Rule, ...] = ()
    created: str = ""

    def to_json(self) -> str:
        data = asdict(self)
        data["rules"] = [asdict(r) for r in self.rules]
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SecurityGroup:
        data: dict[str, Any] = json.loads(text)
        data["rules"] = tuple(Rule(**r) for r in data.get("rules", ()))
        return cls(**data)


def check_name(name: str) -> str:
    """A group name: 1..64 of [A-Za-z0-9_.-], starting with a letter or digit."""
    ok = name[:1].isascii() and name[:1].isalnum() and all(
        c.isascii() and (c.isalnum() or c in "_.-") for c in name)
    if not ok or len(name) > NAME_MAX:
        raise InvalidArgument(f"invalid security group name {name!r}: 1 to {NAME_MAX} of "
                              "[A-Za-z0-9_.-], starting with a letter or digit")
    return name


def parse_document(doc: object) -> tuple[str, tuple[Rule, ...]]:
    """(description, rules) of a group document; InvalidArgument naming the rule and field."""
    if not isinstance(doc, dict):
        raise InvalidArgument("a security group document is a mapping with `rules:` (a list)")
    unknown = sorted(set(doc) - {"description", "rules"})
    if unknown:
        raise InvalidArgument(f"unknown key(s) {', '.join(map(str, unknown))} in the security "
                              "group (description, rules)")
    description = doc.get("description", "")
    if not isinstance(description, str):
        raise InvalidArgument("description must be a string")
    rules = doc.get("rules", [])
    if not isinstance(rules, list):
        raise InvalidArgument("rules must be a list of rules")
    if len(rules) > RULES_MAX:
        raise InvalidArgument(f"{len(rules)} rules: at most {RULES_MAX} per group")
    return description, tuple(_rule(i + 1, r) for i, r in enumerate(rules))


def _rule(n: int, raw: object) -> Rule:
    where = f"rule {n}"
    if not isinstance(raw, dict):
        raise InvalidArgument(f"{where}: a rule is a mapping (direction, protocol, ports, "
                              "remote or remote_group)")
    unknown = sorted(set(map(str, raw)) - _RULE_KEYS)
    if unknown:
        raise InvalidArgument(f"{where}: unknown key(s) {', '.join(unknown)} "
                              f"({', '.join(sorted(_RULE_KEYS))})")
    direction = raw.get("direction")
    if direction not in DIRECTIONS:
        raise InvalidArgument(f"{where}: direction must be ingress or egress, not {direction!r}")
    protocol = raw.get("protocol", "any")
    if protocol not in PROTOCOLS:
        raise InvalidArgument(f"{where}: protocol must be one of {', '.join(PROTOCOLS)}, "
                              f"not {protocol!r}")
    low = high = 0
    if raw.get("ports") is not None:
        if protocol not in ("tcp", "udp"):
            raise InvalidArgument(f"{where}: ports need protocol tcp or udp (not {protocol})")
        low, high = _ports(where, raw["ports"])
    remote, group = raw.get("remote"), raw.get("remote_group")
    if remote is not None and group is not None:
        raise InvalidArgument(f"{where}: remote (a CIDR) or remote_group, not both")
    cidr = ""
    if remote is not None:
        try:
            cidr = str(IPv4Network(str(remote), strict=False))
        except ValueError:
            raise InvalidArgument(f"{where}: remote {remote!r} is not an IPv4 CIDR "
                                  "(e.g. 10.0.0.0/8)") from None
    if group is not None:
        if not isinstance(group, str):
            raise InvalidArgument(f"{where}: remote_group must be a group name")
        check_name(group)
    return Rule(str(direction), str(protocol), low, high, cidr, group or "")


def _ports(where: str, value: object) -> tuple[int, int]:
    text = str(value) if isinstance(value, (int, str)) and not isinstance(value, bool) else ""
    low_s, _, high_s = text.partition("-")
    try:
        low, high = int(low_s), int(high_s or low_s)
    except ValueError:
        raise InvalidArgument(f"{where}: ports must be N or N-M (1..65535), not "
                              f"{value!r}") from None
    if not 1 <= low <= high <= 65535:
        raise InvalidArgument(f"{where}: ports {value!r} out of range (1 <= N <= M <= 65535)")
    return low, high
