"""A tap's placement (net.links over net.rtnl): on a bridge with hairpin on and up, the stale
neighbour entry of its address gone and no other; on no bridge (name and MTU only, for a NIC
that goes into an engine's netns); a failed placement leaves the spare as it was. Real links
in a scratch network namespace (root); the requests' encoding is checked without one."""

from __future__ import annotations

import os
import struct
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from steelcup.net import links, netlink, rtnl
from steelcup.net.links import Host, LinkError


@pytest.fixture
def host() -> Iterator[Host]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    ns = f"sc-place-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        scratch = Host(ns)
        links.ensure_bridge(scratch, "br0", "10.77.0.1/24", 1500)  # its own MAC, as ours
        yield scratch
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=True)


def _ip(host: Host, *args: str) -> str:
    return subprocess.run(host.ip(*args), check=True, capture_output=True, text=True).stdout


def _link(host: Host, name: str) -> str:
    return _ip(host, "-d", "-o", "link", "show", "dev", name)


def _flags(host: Host, name: str) -> set[str]:
    return set(_link(host, name).split("<", 1)[1].split(">", 1)[0].split(","))


def _neighbours(host: Host) -> str:
    return _ip(host, "neigh", "show", "dev", "br0")


def test_a_spare_takes_its_place_on_the_bridge(host: Host) -> None:
    links.create_tap(host, "scwspare1")
    for address, mac in (("10.77.0.5", "02:42:0a:4d:00:05"), ("10.77.0.6", "02:42:0a:4d:00:06")):
        _ip(host, "neigh", "replace", address, "lladdr", mac, "dev", "br0", "nud", "stale")
    links.take_place(host, "scwspare1", "sctnew1", "br0", 1400, address="10.77.0.5")
    assert not links.link_exists(host, "scwspare1")
    shown = _link(host, "sctnew1")
    assert " mtu 1400 " in shown and " master br0 " in shown and "hairpin on" in shown
    assert "UP" in _flags(host, "sctnew1")
    # the address's previous entry went; a neighbour's stayed
    assert "10.77.0.5 " not in _neighbours(host) and "10.77.0.6 " in _neighbours(host)
    # no entry to delete is no error
    links.take_place(host, "sctnew1", "sctnew2", "", 1400)  # (renaming needs it down)
    links.delete_link(host, "sctnew2")
    links.create_tap(host, "scwspare2")
    links.take_place(host, "scwspare2", "sctnew3", "br0", 1500, address="10.77.0.9")
    assert " master br0 " in _link(host, "sctnew3")


def test_on_no_bridge_only_its_name_and_mtu(host: Host) -> None:
    links.create_tap(host, "scwspare1")
    links.take_place(host, "scwspare1", "scn0123", "", 1450)
    shown = _link(host, "scn0123")
    assert " mtu 1450 " in shown and "master" not in shown
    assert "UP" not in _flags(host, "scn0123")


def test_a_failed_placement_leaves_the_spare_as_it_was(host: Host) -> None:
    links.create_tap(host, "scwspare1")
    with pytest.raises(LinkError, match="missing0"):
        links.take_place(host, "scwspare1", "sctnew1", "missing0", 1500)
    assert links.link_exists(host, "scwspare1") and not links.link_exists(host, "sctnew1")
    # the name of another link is taken: the kernel refuses the whole request
    links.create_tap(host, "sctnew1")
    with pytest.raises(LinkError, match="exists"):
        links.take_place(host, "scwspare1", "sctnew1", "br0", 1500)
    shown = _link(host, "scwspare1")
    assert "master" not in shown and "UP" not in _flags(host, "scwspare1")
    with pytest.raises(LinkError, match="does not exist"):
        links.take_place(host, "scwgone", "sctnew2", "br0", 1500)


def test_ensure_tap_makes_a_missing_tap_and_deleting_a_missing_link_is_fine(host: Host) -> None:
    links.ensure_tap(host, "sctmade", "br0", 1500)
    assert " master br0 " in _link(host, "sctmade")
    links.ensure_tap(host, "sctmade", "br0", 1500)  # there already: placed again
    links.delete_link(host, "sctmade")
    links.delete_link(host, "sctmade")
    assert not links.link_exists(host, "sctmade")


def test_bad_names_are_refused_before_any_request() -> None:
    with pytest.raises(LinkError, match="bad interface name"):
        links.take_place(Host(), "scwspare1", "sct1", "a bridge", 1500)
    with pytest.raises(LinkError, match="bad interface name"):
        links.take_place(Host(), "scw/1", "sct1", "br0", 1500)
    with pytest.raises(ValueError):  # nothing but an address reaches the request
        rtnl.delete_neighbour_request(3, "10.0.0.1\nlink del dev br0", 1)


def _body(request: bytes) -> tuple[tuple[int, ...], dict[int, bytes]]:
    head = struct.unpack_from("=BxHiII", request, netlink.HEADER_BYTES)
    return head, netlink.parse_attrs(request[netlink.HEADER_BYTES + 16:])


def test_what_is_not_asked_for_is_not_in_the_request() -> None:
    (_, _, index, flags, change), attrs = _body(rtnl.set_link_request(7, 1, mtu=1500))
    assert index == 7 and (flags, change) == (0, 0) and set(attrs) == {rtnl.IFLA_MTU}
    (_, _, _, flags, change), attrs = _body(rtnl.set_link_request(7, 1, master=0, up=False))
    assert attrs == {rtnl.IFLA_MASTER: b"\0\0\0\0"}  # 0: off the bridge, said explicitly
    assert (flags, change) == (0, rtnl.IFF_UP)  # down, said explicitly
    (_, _, _, flags, change), attrs = _body(
        rtnl.set_link_request(7, 1, name="sct1", master=3, up=True))
    assert attrs[rtnl.IFLA_IFNAME] == b"sct1\0" and (flags, change) == (1, 1)
