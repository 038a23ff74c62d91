"""A VM NIC bridged into a network namespace the engine made (podman, CNI): Kata's tc model.

The netns holds an interface the engine configured (a veth with an address and routes). The
VM's tap is moved into that netns and two tc ingress filters mirror every frame between the
interface and the tap (`mirred egress redirect`), so the guest NIC, carrying the interface's
MAC, address, default route and MTU, is on the engine's network in its place. The interface
keeps its address: ingress is redirected before the netns's own IP stack sees it, and the
engine's teardown finds the interface as it made it. docs/oci-runtime.md.

Pure: `ip -j` output in, the interface found and the command input for wiring out.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from steelcup.errors import InvalidArgument

TAP_PREFIX = "scn"  # + 12 hex: at most 15 characters (not the network layer's "sct")
INGRESS = "ffff:"


@dataclass(frozen=True)
class NetnsInterface:
    """The netns interface whose place the guest NIC takes."""

    name: str
    mac: str
    mtu: int
    address: str
    prefix: int
    gateway: str  # "" = no default route through it


@dataclass(frozen=True)
class NetnsWiring:
    """One container's tap in one netns, mirrored to `iface`."""

    netns: str  # the namespace's path (e.g. /run/netns/netns-...)
    tap: str
    iface: NetnsInterface


def tap_name(container_id: str) -> str:
    digest = hashlib.sha256(container_id.encode()).hexdigest()
    return TAP_PREFIX + digest[:12]


# What `ip -j -batch -` reads in the netns: its interfaces, then its (IPv4) routes.
READ_BATCH = "addr show\nroute show\n"


def parse_read_batch(text: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """`ip -j -batch -` output of READ_BATCH (one JSON list per command) -> (links, routes)."""
    decoder = json.JSONDecoder()
    docs: list[list[dict[str, Any]]] = []
    pos = 0
    try:
        while len(docs) < 2:
            while pos < len(text) and text[pos].isspace():
                pos += 1
            value, pos = decoder.raw_decode(text, pos)
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                raise ValueError("not a list of objects")
            docs.append(value)
    except ValueError as exc:
        raise InvalidArgument(f"cannot read the network namespace's interfaces and routes "
                              f"(`ip -j` output): {exc}") from exc
    return docs[0], docs[1]


def find_interface(text: str) -> NetnsInterface | None:
    """The interface to bridge, from `ip -j -batch -` output of READ_BATCH in the netns:
    the one the default route leaves by, else the first one with an IPv4 address (not
    loopback). None if there is none (podman's `--network none` netns has loopback only:
    the VM gets loopback only as well)."""
    links, routes = parse_read_batch(text)
    gateways = {str(r.get("dev", "")): str(r.get("gateway", "")) for r in routes
                if r.get("dst") == "default" and r.get("gateway")}
    candidates: list[NetnsInterface] = []
    for link in links:
        name = str(link.get("ifname", ""))
        if not name or link.get("link_type") == "loopback":
            continue
        ipv4 = [a for a in link.get("addr_info", []) or []
                if isinstance(a, dict) and a.get("family") == "inet" and a.get("local")]
        if not ipv4:
            continue
        mtu = link.get("mtu")
        candidates.append(NetnsInterface(
            name=name, mac=str(link.get("address", "")).lower(),
            mtu=mtu if isinstance(mtu, int) and mtu > 0 else 1500,
            address=str(ipv4[0]["local"]), prefix=int(ipv4[0].get("prefixlen", 32)),
            gateway=gateways.get(name, "")))
    for iface in candidates:
        if iface.gateway:
            return iface
    return candidates[0] if candidates else None


def netns_link_batch(wiring: NetnsWiring) -> str:
    """`ip -batch` input, in the netns, once the tap is there: the tap up at the MTU."""
    return f"link set dev {wiring.tap} mtu {wiring.iface.mtu} up\n"


def tc_wire_batch(wiring: NetnsWiring) -> str:
    """`tc -batch` input, in the netns: ingress qdiscs on both, every frame that comes in on
    one leaves by the other."""
    iface, tap = wiring.iface.name, wiring.tap
    lines = [f"qdisc add dev {iface} ingress", f"qdisc add dev {tap} ingress"]
    for src, dst in ((iface, tap), (tap, iface)):
        lines.append(f"filter add dev {src} parent {INGRESS} protocol all u32 match u32 0 0 "
                     f"action mirred egress redirect dev {dst}")
    return "".join(line + "\n" for line in lines)


def tc_unwire_batch(wiring: NetnsWiring) -> str:
    """`tc -batch` input that removes the interface's ingress qdisc and with it its filter
    (the tap's go with the tap)."""
    return f"qdisc del dev {wiring.iface.name} ingress\n"
