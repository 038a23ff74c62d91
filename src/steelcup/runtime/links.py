"""Docker's legacy links (`--link NAME:ALIAS`) as /etc/hosts lines, decided from plain data.

dockerd writes, for each link, the linked container's address on the default bridge followed by
the alias, the linked container's hostname and its name (when the alias is not its name). A
steelcup container's /etc/hosts is written by the host before each start, so a link becomes
such a line: the linked container's address on the first network the two share (the linking
container's primary network first, as the default bridge is for dockerd). The link's environment
variables (ALIAS_PORT_..., deprecated by docker) are not set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from steelcup.errors import Conflict, InvalidArgument


@dataclass(frozen=True)
class LinkTarget:
    """What the linking container needs to know of a linked one."""

    name: str
    hostname: str
    running: bool
    addresses: tuple[tuple[str, str], ...]  # (network id, IPv4 address), in connect order


def not_found_text(name: str, reason: str) -> str:
    """dockerd's message for a link to a container that does not exist."""
    return f"could not get container for {name}: {reason}"


def hosts_lines(
    container_name: str,
    own_networks: Sequence[str],
    links: Sequence[tuple[str, LinkTarget]],
) -> tuple[tuple[str, str], ...]:
    """(names, address) pairs for /etc/hosts, one per link (alias, `target`), in link order.
    `own_networks`: the linking container's network ids, primary first. Conflict for a linked
    container that is not running (dockerd's text), InvalidArgument for one it shares no
    network with."""
    out = []
    for alias, target in links:
        if not target.running:
            raise Conflict(f"Cannot link to a non running container: /{target.name} AS "
                           f"/{container_name}/{alias}")
        theirs = dict(target.addresses)
        address = next((theirs[n] for n in own_networks if theirs.get(n)), "")
        if not address:
            raise InvalidArgument(f"Cannot link to /{target.name}, as it does not share a "
                                  f"network with /{container_name}")
        names = [alias]
        for extra in (target.hostname, target.name):
            if extra and extra not in names:
                names.append(extra)
        out.append((" ".join(names), address))
    return tuple(out)
