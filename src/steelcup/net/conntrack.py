"""conntrack over ctnetlink, in the daemon's network namespace.

- Where a DNATed udp flow was going (a sleeping service's udp wake listener, net/udpwake.py:
  a datagram carries only its destination after the DNAT, and IP_RECVORIGDSTADDR reports that
  one, so the flow's original destination is looked up by its reply tuple: from the listener
  to the client): `lookup`.
- The udp flows a container answers, forgotten as its ports are unpublished for a suspend
  (net/manager.py): a client's flow DNATed to it would otherwise go on being DNATed to a VM
  that is gone until conntrack forgets it (up to 120 s); forgotten, its next datagram is a new
  flow and reaches the wake proxy on the port: `forget_udp_flows`.

The message codec is pure; `lookup` and `forget_udp_flows` ask the kernel.
"""

from __future__ import annotations

import errno
import os
import socket
import struct

from steelcup.net.netlink import NLA_F_NESTED as NLA_F_NESTED  # the tests read dumps with it
from steelcup.net.netlink import (
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    NetlinkError,
    attr,
    error_code,
    nested,
    parse_attrs,
    split_messages,
)
from steelcup.net.netlink import message as netlink_message
from steelcup.net.netns import socket_in

NETLINK_NETFILTER = 12
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_NEW = 0
IPCTNL_MSG_CT_GET = 1
IPCTNL_MSG_CT_DELETE = 2
CTA_TUPLE_ORIG = 1
CTA_TUPLE_REPLY = 2
CTA_TUPLE_IP = 1
CTA_TUPLE_PROTO = 2
CTA_IP_V4_SRC = 1
CTA_IP_V4_DST = 2
CTA_PROTO_NUM = 1
CTA_PROTO_SRC_PORT = 2
CTA_PROTO_DST_PORT = 3
TIMEOUT_S = 1.0

Address = tuple[str, int]


# The kernel's answer was an error (errno), or not one this module can read.
ConntrackError = NetlinkError


def _tuple(src: Address, dst: Address, proto: int) -> bytes:
    ip = (attr(CTA_IP_V4_SRC, socket.inet_aton(src[0]))
          + attr(CTA_IP_V4_DST, socket.inet_aton(dst[0])))
    ports = (attr(CTA_PROTO_NUM, struct.pack("=B", proto))
             + attr(CTA_PROTO_SRC_PORT, struct.pack("!H", src[1]))
             + attr(CTA_PROTO_DST_PORT, struct.pack("!H", dst[1])))
    return nested(CTA_TUPLE_IP, ip) + nested(CTA_TUPLE_PROTO, ports)


def get_request(reply_src: Address, reply_dst: Address, proto: int, seq: int) -> bytes:
    """An IPCTNL_MSG_CT_GET for the entry whose reply tuple is `reply_src` -> `reply_dst`."""
    return _message(IPCTNL_MSG_CT_GET, NLM_F_REQUEST, seq,
                    nested(CTA_TUPLE_REPLY, _tuple(reply_src, reply_dst, proto)))


def parse_original_destination(message: bytes) -> Address:
    """The original destination (address, port) in the kernel's answer to `get_request`;
    ConntrackError for an error answer (ENOENT: no such flow) or one without it."""
    if len(message) < 16:
        raise ConntrackError(errno.EPROTO, "a short netlink message")
    length, kind = struct.unpack_from("=IH", message)
    if kind == NLMSG_ERROR:
        code = error_code(message)
        raise ConntrackError(code, os.strerror(code))
    if kind != (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW:
        raise ConntrackError(errno.EPROTO, f"an unexpected netlink message (type {kind})")
    try:
        original = parse_attrs(parse_attrs(message[20:length])[CTA_TUPLE_ORIG])
        ip = parse_attrs(original[CTA_TUPLE_IP])
        ports = parse_attrs(original[CTA_TUPLE_PROTO])
        (port,) = struct.unpack("!H", ports[CTA_PROTO_DST_PORT])
        return socket.inet_ntoa(ip[CTA_IP_V4_DST]), port
    except (KeyError, struct.error, OSError) as exc:
        raise ConntrackError(errno.EPROTO, f"no original destination in the answer: {exc}"
                             ) from None


def lookup(netns: str | None, reply_src: Address, reply_dst: Address,
           proto: int = socket.IPPROTO_UDP) -> Address:
    """The original destination of the flow that `reply_src` answers to `reply_dst` (a
    listener and its client), from the kernel of `netns` (blocking, TIMEOUT_S at most)."""
    with _ctnetlink(netns) as sock:
        sock.send(get_request(reply_src, reply_dst, proto, 1))
        return parse_original_destination(sock.recv(65536))


def _ctnetlink(netns: str | None) -> socket.socket:
    """A netfilter netlink socket in `netns`, bound, reads bounded by TIMEOUT_S."""
    sock = socket_in(netns, socket.AF_NETLINK, socket.SOCK_RAW, proto=NETLINK_NETFILTER)
    sock.settimeout(TIMEOUT_S)
    sock.bind((0, 0))
    return sock


def _message(msg_type: int, flags: int, seq: int, body: bytes) -> bytes:
    head = struct.pack("!BBH", socket.AF_INET, 0, 0)
    return netlink_message((NFNL_SUBSYS_CTNETLINK << 8) | msg_type, flags, seq, head + body)


def dump_request(seq: int) -> bytes:
    """An IPCTNL_MSG_CT_GET dump of every IPv4 entry."""
    return _message(IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP, seq, b"")


def delete_request(original: bytes, seq: int) -> bytes:
    """An IPCTNL_MSG_CT_DELETE of the entry whose original tuple's attributes are `original`
    (as a dump gave them), asking for an acknowledgement."""
    return _message(IPCTNL_MSG_CT_DELETE, NLM_F_REQUEST | NLM_F_ACK, seq,
                    nested(CTA_TUPLE_ORIG, original))


def answered_by(message: bytes, address: str, proto: int = socket.IPPROTO_UDP) -> bytes | None:
    """For one entry of a dump: its original tuple's attributes if its reply comes from
    `address` (the flow's answerer: a container, after DNAT) over `proto`, else None.
    ConntrackError for a message that is not an entry. Pure."""
    (kind,) = struct.unpack_from("=H", message, 4)
    if kind != (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW:
        raise ConntrackError(errno.EPROTO, f"an unexpected netlink message (type {kind})")
    try:
        attrs = parse_attrs(message[20:])
        reply = parse_attrs(attrs[CTA_TUPLE_REPLY])
        ip = parse_attrs(reply[CTA_TUPLE_IP])
        (number,) = struct.unpack("=B", parse_attrs(reply[CTA_TUPLE_PROTO])[CTA_PROTO_NUM])
        source = socket.inet_ntoa(ip[CTA_IP_V4_SRC])
        original = attrs[CTA_TUPLE_ORIG]
    except (KeyError, struct.error, OSError) as exc:
        raise ConntrackError(errno.EPROTO, f"an entry without its tuples: {exc}") from None
    return original if number == proto and source == address else None


def forget_udp_flows(netns: str | None, address: str) -> int:
    """Delete the udp entries `address` answers (blocking); how many went. An entry that
    went meanwhile is no error."""
    with _ctnetlink(netns) as sock:
        sock.send(dump_request(1))
        doomed = []
        done = False
        while not done:
            for message in split_messages(sock.recv(1 << 16)):
                (kind,) = struct.unpack_from("=H", message, 4)
                if kind == NLMSG_DONE:
                    done = True
                    break
                if kind == NLMSG_ERROR:
                    code = error_code(message)
                    raise ConntrackError(code, os.strerror(code))
                original = answered_by(message, address)
                if original is not None:
                    doomed.append(original)
        forgotten = 0
        for seq, original in enumerate(doomed, start=2):
            sock.send(delete_request(original, seq))
            [ack] = split_messages(sock.recv(1 << 16))[:1]
            code = error_code(ack)
            if code == 0:
                forgotten += 1
            elif code != errno.ENOENT:
                raise ConntrackError(code, os.strerror(code))
        return forgotten
