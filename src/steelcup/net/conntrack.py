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

from steelcup.net.netns import socket_in

NETLINK_NETFILTER = 12
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_NEW = 0
IPCTNL_MSG_CT_GET = 1
IPCTNL_MSG_CT_DELETE = 2
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NLM_F_DUMP = 0x300
NLA_F_NESTED = 0x8000
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


class ConntrackError(OSError):
    """The kernel's answer was an error (errno), or not one this module can read."""


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _tuple(src: Address, dst: Address, proto: int) -> bytes:
    ip = (_attr(CTA_IP_V4_SRC, socket.inet_aton(src[0]))
          + _attr(CTA_IP_V4_DST, socket.inet_aton(dst[0])))
    ports = (_attr(CTA_PROTO_NUM, struct.pack("=B", proto))
             + _attr(CTA_PROTO_SRC_PORT, struct.pack("!H", src[1]))
             + _attr(CTA_PROTO_DST_PORT, struct.pack("!H", dst[1])))
    return (_attr(CTA_TUPLE_IP | NLA_F_NESTED, ip)
            + _attr(CTA_TUPLE_PROTO | NLA_F_NESTED, ports))


def get_request(reply_src: Address, reply_dst: Address, proto: int, seq: int) -> bytes:
    """An IPCTNL_MSG_CT_GET for the entry whose reply tuple is `reply_src` -> `reply_dst`."""
    return _message(IPCTNL_MSG_CT_GET, NLM_F_REQUEST, seq,
                    _attr(CTA_TUPLE_REPLY | NLA_F_NESTED, _tuple(reply_src, reply_dst, proto)))


def _attrs(data: bytes) -> dict[int, bytes]:
    out = {}
    offset = 0
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4 or offset + length > len(data):
            raise ConntrackError(errno.EPROTO, "a truncated ctnetlink attribute")
        out[kind & ~NLA_F_NESTED] = data[offset + 4:offset + length]
        offset += length + (-length % 4)
    return out


def parse_original_destination(message: bytes) -> Address:
    """The original destination (address, port) in the kernel's answer to `get_request`;
    ConntrackError for an error answer (ENOENT: no such flow) or one without it."""
    if len(message) < 16:
        raise ConntrackError(errno.EPROTO, "a short netlink message")
    length, kind = struct.unpack_from("=IH", message)
    if kind == NLMSG_ERROR:
        code = _error_code(message)
        raise ConntrackError(code, os.strerror(code))
    if kind != (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW:
        raise ConntrackError(errno.EPROTO, f"an unexpected netlink message (type {kind})")
    try:
        original = _attrs(_attrs(message[20:length])[CTA_TUPLE_ORIG])
        ip = _attrs(original[CTA_TUPLE_IP])
        ports = _attrs(original[CTA_TUPLE_PROTO])
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
    kind = (NFNL_SUBSYS_CTNETLINK << 8) | msg_type
    head = struct.pack("!BBH", socket.AF_INET, 0, 0)
    return struct.pack("=IHHII", 16 + len(head) + len(body), kind, flags, seq, 0) + head + body


def dump_request(seq: int) -> bytes:
    """An IPCTNL_MSG_CT_GET dump of every IPv4 entry."""
    return _message(IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP, seq, b"")


def delete_request(original: bytes, seq: int) -> bytes:
    """An IPCTNL_MSG_CT_DELETE of the entry whose original tuple's attributes are `original`
    (as a dump gave them), asking for an acknowledgement."""
    return _message(IPCTNL_MSG_CT_DELETE, NLM_F_REQUEST | NLM_F_ACK, seq,
                    _attr(CTA_TUPLE_ORIG | NLA_F_NESTED, original))


def split_messages(data: bytes) -> list[bytes]:
    """The netlink messages of one read, each whole. Pure."""
    out = []
    offset = 0
    while offset + 16 <= len(data):
        (length,) = struct.unpack_from("=I", data, offset)
        if length < 16 or offset + length > len(data):
            raise ConntrackError(errno.EPROTO, "a truncated netlink message")
        out.append(data[offset:offset + length])
        offset += length + (-length % 4)
    return out


def _error_code(message: bytes) -> int:
    """0 for an acknowledgement, else the (positive) errno of an NLMSG_ERROR."""
    if len(message) < 20:
        raise ConntrackError(errno.EPROTO, "a short netlink error message")
    code: int = struct.unpack_from("=i", message, 16)[0]
    return -code


def answered_by(message: bytes, address: str, proto: int = socket.IPPROTO_UDP) -> bytes | None:
    """For one entry of a dump: its original tuple's attributes if its reply comes from
    `address` (the flow's answerer: a container, after DNAT) over `proto`, else None.
    ConntrackError for a message that is not an entry. Pure."""
    (kind,) = struct.unpack_from("=H", message, 4)
    if kind != (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW:
        raise ConntrackError(errno.EPROTO, f"an unexpected netlink message (type {kind})")
    try:
        attrs = _attrs(message[20:])
        reply = _attrs(attrs[CTA_TUPLE_REPLY])
        ip = _attrs(reply[CTA_TUPLE_IP])
        (number,) = struct.unpack("=B", _attrs(reply[CTA_TUPLE_PROTO])[CTA_PROTO_NUM])
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
                    code = _error_code(message)
                    raise ConntrackError(code, os.strerror(code))
                original = answered_by(message, address)
                if original is not None:
                    doomed.append(original)
        forgotten = 0
        for seq, original in enumerate(doomed, start=2):
            sock.send(delete_request(original, seq))
            [ack] = split_messages(sock.recv(1 << 16))[:1]
            code = _error_code(ack)
            if code == 0:
                forgotten += 1
            elif code != errno.ENOENT:
                raise ConntrackError(code, os.strerror(code))
        return forgotten
