"""The effects of steelcup.net.netnsnic: read an engine's netns, move a VM's tap into it and
mirror it to the engine's interface, and undo that. Blocking (`ip`, `tc`, `nsenter` argv)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from steelcup.errors import InvalidArgument
from steelcup.net import links
from steelcup.net.netnsnic import (
    READ_BATCH,
    NetnsInterface,
    NetnsWiring,
    find_interface,
    netns_link_batch,
    tc_unwire_batch,
    tc_wire_batch,
)

NSENTER = "nsenter"
TC = "tc"


def _in(netns: str, argv: Sequence[str]) -> list[str]:
    # `ip -n` takes only names under /run/netns; nsenter takes the engine's path as it is
    return [NSENTER, f"--net={netns}", *argv]


def check_netns(netns: str) -> None:
    """InvalidArgument unless `netns` is an absolute path (the engine's netns file)."""
    if not netns.startswith("/") or "\n" in netns:
        raise InvalidArgument(f"a network namespace must be given by its absolute path, not "
                              f"{netns!r}")


def read_interface(netns: str) -> NetnsInterface | None:
    """The interface of `netns` whose place the guest NIC takes (netnsnic.find_interface);
    None if it has only loopback."""
    check_netns(netns)
    try:
        out = links.run(_in(netns, [links.IP, "-j", "-batch", "-"]),
                        input_text=READ_BATCH).stdout
    except links.LinkError as exc:
        raise InvalidArgument(f"cannot read the network namespace {netns}: {exc}") from exc
    return find_interface(out)


def plug(host: links.Host, wiring: NetnsWiring) -> None:
    """Move the tap (open by QEMU already: its fd stays valid) from `host` into the netns,
    bring it up and mirror it to the interface. On failure the tap and filters are gone
    again (as far as they can be) and LinkError is raised."""
    links.run(host.ip("link", "set", "dev", wiring.tap, "netns", wiring.netns))
    try:
        links.run(_in(wiring.netns, [links.IP, "-batch", "-"]),
                  input_text=netns_link_batch(wiring))
        links.run(_in(wiring.netns, [TC, "-batch", "-"]), input_text=tc_wire_batch(wiring))
    except links.LinkError:
        unplug(wiring)
        raise


def unplug(wiring: NetnsWiring) -> None:
    """Remove the tap and the interface's filters; a netns or link gone already is fine."""
    with contextlib.suppress(links.LinkError):
        links.run(_in(wiring.netns, [TC, "-batch", "-"]), input_text=tc_unwire_batch(wiring))
    with contextlib.suppress(links.LinkError):
        links.run(_in(wiring.netns, [links.IP, "link", "del", "dev", wiring.tap]),
                  ok_codes=(0, 1))
