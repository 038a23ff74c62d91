"""Links and neighbours over rtnetlink (NETLINK_ROUTE), in the daemon's network namespace or a
named one (tests).

What a container's start asks of the host's network (its tap's name, MTU, bridge, hairpin and
state; the stale neighbour entry of its address) as requests of one socket: an `ip` process
costs ~3 ms to start, and `ip neigh flush` reads the bridge's whole neighbour table to find
one entry (~7 ms with 400 containers on it), where deleting the entry by its key costs the
same for any number. The requests are built by pure functions; `Rtnl` sends them.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address

from steelcup.net.netlink import (
    HEADER_BYTES,
    NLM_F_ACK,
    NLM_F_REQUEST,
    NLMSG_ERROR,
    NetlinkError,
    attr,
    error_code,
    kind_of,
    message,
    nested,
    seq_of,
)
from steelcup.net.netns import socket_in

NETLINK_ROUTE = 0
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_DELNEIGH = 29
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_MASTER = 10
IFLA_LINKINFO = 18
IFLA_INFO_SLAVE_KIND = 4
IFLA_INFO_SLAVE_DATA = 5
IFLA_BRPORT_MODE = 4  # hairpin
NDA_DST = 1
IFF_UP = 0x1
TIMEOUT_S = 5.0
_IFINFOMSG = "=BxHiII"  # family, type, index, flags, change
_NDMSG = "=BxxxiHBB"  # family, ifindex, state, flags, type
_Build = Callable[[int], bytes]  # a request, given its sequence number


def _ifinfo(index: int, flags: int = 0, change: int = 0) -> bytes:
    return struct.pack(_IFINFOMSG, socket.AF_UNSPEC, 0, index, flags, change)


def _name(name: str) -> bytes:
    return name.encode() + b"\0"


def get_link_request(name: str, seq: int) -> bytes:
    """RTM_GETLINK of the link called `name`."""
    return message(RTM_GETLINK, NLM_F_REQUEST, seq, _ifinfo(0) + attr(IFLA_IFNAME, _name(name)))


def set_link_request(index: int, seq: int, *, name: str = "", mtu: int = 0,
                     master: int | None = None, up: bool | None = None) -> bytes:
    """RTM_NEWLINK changing link `index`: its name (the link must be down), MTU, master (a
    bridge's index; 0: none), and state; what is not given stays. One request does them all,
    in that order (as `ip link set` does)."""
    attrs = b""
    if name:
        attrs += attr(IFLA_IFNAME, _name(name))
    if mtu:
        attrs += attr(IFLA_MTU, struct.pack("=I", mtu))
    if master is not None:
        attrs += attr(IFLA_MASTER, struct.pack("=I", master))
    flags = IFF_UP if up else 0
    change = IFF_UP if up is not None else 0
    return message(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq,
                   _ifinfo(index, flags, change) + attrs)


def hairpin_request(index: int, seq: int) -> bytes:
    """RTM_NEWLINK turning hairpin on for the bridge port `index` (the bridge may send a frame
    back out of the port it came in on). Only for a link already on a bridge: the kernel
    hands the port's settings to its master's driver."""
    info = nested(IFLA_LINKINFO, attr(IFLA_INFO_SLAVE_KIND, _name("bridge")),
                  nested(IFLA_INFO_SLAVE_DATA, attr(IFLA_BRPORT_MODE, b"\x01")))
    return message(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq, _ifinfo(index) + info)


def delete_link_request(name: str, seq: int) -> bytes:
    return message(RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK, seq,
                   _ifinfo(0) + attr(IFLA_IFNAME, _name(name)))


def delete_neighbour_request(index: int, address: str, seq: int) -> bytes:
    """RTM_DELNEIGH of the IPv4 neighbour `address` on link `index`."""
    body = struct.pack(_NDMSG, socket.AF_INET, index, 0, 0, 0)
    return message(RTM_DELNEIGH, NLM_F_REQUEST | NLM_F_ACK, seq,
                   body + attr(NDA_DST, IPv4Address(address).packed))


def link_index(answer: bytes) -> int:
    """The index of the link in an RTM_NEWLINK answer to `get_link_request`."""
    if kind_of(answer) == NLMSG_ERROR:
        code = error_code(answer)
        raise NetlinkError(code, os.strerror(code))
    if kind_of(answer) != RTM_NEWLINK or len(answer) < HEADER_BYTES + struct.calcsize(_IFINFOMSG):
        raise NetlinkError(errno.EPROTO, f"an unexpected rtnetlink answer (type "
                                         f"{kind_of(answer)})")
    return int(struct.unpack_from(_IFINFOMSG, answer, HEADER_BYTES)[2])


class Rtnl:
    """A route netlink socket in `netns` (None: the daemon's); blocking requests, each
    answered before the next. Use as a context manager (`open_rtnl`)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._seq = 0

    def index(self, name: str) -> int | None:
        """The index of the link `name`; None if there is none."""
        try:
            return link_index(self._ask(lambda seq: get_link_request(name, seq)))
        except NetlinkError as exc:
            if exc.errno == errno.ENODEV:
                return None
            raise

    def set_link(self, index: int, *, name: str = "", mtu: int = 0, master: int | None = None,
                 up: bool | None = None) -> None:
        self._ack(lambda seq: set_link_request(index, seq, name=name, mtu=mtu, master=master,
                                               up=up))

    def hairpin(self, index: int) -> None:
        self._ack(lambda seq: hairpin_request(index, seq))

    def delete_link(self, name: str) -> bool:
        """Delete the link `name`; False if there was none."""
        return self._ack(lambda seq: delete_link_request(name, seq), missing=errno.ENODEV)

    def delete_neighbour(self, index: int, address: str) -> bool:
        """Delete the neighbour entry of `address` on link `index`; False if there was none."""
        return self._ack(lambda seq: delete_neighbour_request(index, address, seq),
                         missing=errno.ENOENT)

    def _ack(self, build: _Build, missing: int = 0) -> bool:
        code = error_code(self._ask(build))
        if code == 0:
            return True
        if code == missing:
            return False
        raise NetlinkError(code, os.strerror(code))

    def _ask(self, build: _Build) -> bytes:
        """Send one request; its answer (other sequence numbers' answers are skipped)."""
        self._seq += 1
        self._sock.send(build(self._seq))
        while True:
            answer = self._sock.recv(1 << 16)
            if len(answer) >= HEADER_BYTES and seq_of(answer) == self._seq:
                return answer


@contextmanager
def open_rtnl(netns: str | None) -> Iterator[Rtnl]:
    """A route netlink socket in `netns`, reads bounded by TIMEOUT_S."""
    sock = socket_in(netns, socket.AF_NETLINK, socket.SOCK_RAW, proto=NETLINK_ROUTE)
    try:
        sock.settimeout(TIMEOUT_S)
        sock.bind((0, 0))
        yield Rtnl(sock)
    finally:
        sock.close()
