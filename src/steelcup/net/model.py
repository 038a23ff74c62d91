"""Records of the network layer: networks, endpoints (a container on a network), port mappings."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class PortMapping:
    """`-p [host_ip:]host_port:container_port[/proto]`; host_port 0 = pick one at start."""

    container_port: int
    proto: str = "tcp"  # tcp | udp
    host_ip: str = ""  # "" = all addresses
    host_port: int = 0


@dataclass(frozen=True)
class NetworkRecord:
    id: str
    name: str
    subnet: str  # "10.213.0.0/24"
    gateway: str
    bridge: str
    mtu: int = 1500
    internal: bool = False  # no egress NAT, no route out
    dns_forward: bool = True  # names not on the network: forward upstream, else REFUSED
    driver: str = "bridge"  # or "overlay": a bridge network of scope "swarm" (services)
    attachable: bool = False  # an overlay plain containers may join too (as reported)
    created: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    tenant: str = ""  # the owner ("" = the operator's); names are unique per tenant

    @property
    def scope(self) -> str:
        return "swarm" if self.driver == "overlay" else "local"

    @property
    def forwards_dns(self) -> bool:
        """Whether its DNS answers names that are not on it (from upstream): never for an
        internal network, whose containers must not reach out, not even through DNS."""
        return self.dns_forward and not self.internal

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> NetworkRecord:
        data: dict[str, Any] = json.loads(text)
        return cls(**data)

    @property
    def prefix(self) -> int:
        return int(self.subnet.split("/", 1)[1])


@dataclass(frozen=True)
class Endpoint:
    """A container connected to a network. The address is held until it disconnects."""

    network_id: str
    container_id: str
    container_name: str
    address: str
    mac: str
    aliases: tuple[str, ...] = ()
    endpoint_id: str = ""
    static: bool = False  # `address` was asked for (docker's IPAMConfig), not allocated
    # Legacy links on this network, (target container id, alias): the network's DNS answers
    # the alias with the target's address to this container alone, as dockerd's does.
    links: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> str:
        data = asdict(self)
        data["aliases"] = list(self.aliases)
        data["links"] = [list(link) for link in self.links]
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Endpoint:
        data: dict[str, Any] = json.loads(text)
        data["aliases"] = tuple(data.get("aliases", ()))
        data["links"] = tuple((str(t), str(a)) for t, a in data.get("links", ()))
        return cls(**data)


@dataclass(frozen=True)
class VipRecord:
    """A virtual service address on a network (docker's service VIP): an address of the
    network's subnet, held until released, whose connections the host spreads over
    `backends` (addresses of containers on the same network; net/vip.py). The network's DNS
    answers `name` and `aliases` with the address and `tasks.NAME` with the backends. `ports`
    are published on the host (host_port resolved when published).

    Mode "dnsrr" (docker's endpoint mode of that name) holds no address ("") and no ports:
    the name itself answers the backends."""

    id: str
    network_id: str
    name: str
    address: str
    tenant: str = ""
    aliases: tuple[str, ...] = ()
    backends: tuple[str, ...] = ()
    ports: tuple[PortMapping, ...] = ()
    created: str = ""
    mode: str = "vip"  # vip | dnsrr

    def to_json(self) -> str:
        data = asdict(self)
        data["aliases"] = list(self.aliases)
        data["backends"] = list(self.backends)
        data["ports"] = [asdict(p) for p in self.ports]
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> VipRecord:
        data: dict[str, Any] = json.loads(text)
        data["aliases"] = tuple(data.get("aliases", ()))
        data["backends"] = tuple(data.get("backends", ()))
        data["ports"] = tuple(PortMapping(**p) for p in data.get("ports", ()))
        return cls(**data)
