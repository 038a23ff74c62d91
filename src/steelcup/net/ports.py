"""Pure parsing of docker's port syntaxes: the CLI's `-p`, and the daemon's
HostConfig.PortBindings / PublishAllPorts / ExposedPorts -> `PortMapping`s."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from steelcup.errors import InvalidArgument
from steelcup.net.model import PortMapping

Bindings = dict[str, list[dict[str, str]]]


def _port_range(text: str, what: str) -> list[int]:
    lo, dash, hi = text.partition("-")
    try:
        start = int(lo)
        end = int(hi) if dash else start
    except ValueError:
        raise InvalidArgument(f"invalid {what} port {text!r}") from None
    if not 1 <= start <= end <= 65535:
        raise InvalidArgument(f"invalid {what} port range {text!r}")
    return list(range(start, end + 1))


def parse_publish(spec: str) -> tuple[dict[str, dict[str, Any]], Bindings]:
    """One `-p` value -> (ExposedPorts entries, PortBindings entries), docker's shapes.

    Forms: `C`, `H:C`, `IP:H:C`, `IP::C`, each with `/tcp` or `/udp`; H and C may be ranges of
    equal length (`8000-8001:80-81`).
    """
    body, _, proto = spec.partition("/")
    proto = proto or "tcp"
    if proto not in ("tcp", "udp"):
        raise InvalidArgument(f"invalid protocol {proto!r} in {spec!r} (tcp or udp)")
    host_ip = ""
    if body.startswith("["):
        raise InvalidArgument("IPv6 host addresses are not supported")
    parts = body.split(":")
    if len(parts) == 1:
        host, ctr = "", parts[0]
    elif len(parts) == 2:
        host, ctr = parts
    elif len(parts) == 3:
        host_ip, host, ctr = parts
        try:
            ipaddress.IPv4Address(host_ip)
        except ValueError:
            raise InvalidArgument(f"invalid IP address {host_ip!r} in {spec!r}") from None
    else:
        raise InvalidArgument(f"invalid port specification {spec!r}")
    ctr_ports = _port_range(ctr, "container")
    host_ports: list[int | None] = [None] * len(ctr_ports)
    if host:
        hp = _port_range(host, "host")
        if len(hp) != len(ctr_ports):
            if len(ctr_ports) == 1 and len(hp) > 1:
                raise InvalidArgument(f"host port ranges for one container port are not "
                                      f"supported: {spec!r}")
            raise InvalidArgument(f"port ranges of different sizes in {spec!r}")
        host_ports = list(hp)
    exposed: dict[str, dict[str, Any]] = {}
    bindings: Bindings = {}
    for cp, hp_ in zip(ctr_ports, host_ports, strict=True):
        key = f"{cp}/{proto}"
        exposed[key] = {}
        bindings.setdefault(key, []).append(
            {"HostIp": host_ip, "HostPort": str(hp_) if hp_ else ""})
    return exposed, bindings


def merge_publish(specs: Iterable[str]) -> tuple[dict[str, dict[str, Any]], Bindings]:
    exposed: dict[str, dict[str, Any]] = {}
    bindings: Bindings = {}
    for spec in specs:
        e, b = parse_publish(spec)
        exposed.update(e)
        for key, items in b.items():
            bindings.setdefault(key, []).extend(items)
    return exposed, bindings


def _key(key: str) -> tuple[int, str]:
    port, _, proto = key.partition("/")
    proto = proto or "tcp"
    try:
        num = int(port)
    except ValueError:
        raise InvalidArgument(f"invalid port {key!r}") from None
    if not 1 <= num <= 65535 or proto not in ("tcp", "udp"):
        raise InvalidArgument(f"invalid port {key!r}")
    return num, proto


def port_mappings(
    port_bindings: Mapping[str, Any] | None,
    publish_all: bool = False,
    exposed_ports: Iterable[str] = (),
) -> list[PortMapping]:
    """HostConfig.PortBindings (+ every exposed port when PublishAllPorts) -> mappings;
    HostPort "" or absent = a free port chosen at start."""
    out: list[PortMapping] = []
    seen: set[tuple[int, str]] = set()
    for key, items in (port_bindings or {}).items():
        cport, proto = _key(key)
        seen.add((cport, proto))
        for item in items or [{}]:
            host_port_text = str((item or {}).get("HostPort", "") or "")
            try:
                host_port = int(host_port_text) if host_port_text else 0
            except ValueError:
                raise InvalidArgument(f"invalid host port {host_port_text!r}") from None
            if not 0 <= host_port <= 65535:
                raise InvalidArgument(f"invalid host port {host_port}")
            out.append(PortMapping(cport, proto, str((item or {}).get("HostIp", "") or ""),
                                   host_port))
    if publish_all:
        for key in exposed_ports:
            cport, proto = _key(key)
            if (cport, proto) not in seen:
                seen.add((cport, proto))
                out.append(PortMapping(cport, proto))
    return out
