"""Netlink framing shared by the route (net.rtnl) and conntrack (net.conntrack) requests:
message headers, attributes, a read split into messages, error answers. Pure."""

from __future__ import annotations

import errno
import struct

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NLM_F_DUMP = 0x300
NLA_F_NESTED = 0x8000
HEADER_BYTES = 16


class NetlinkError(OSError):
    """The kernel's answer was an error (errno), or not one that could be read."""


def message(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    """A netlink message: the header (length, type, flags, sequence, port 0) and `body`."""
    return struct.pack("=IHHII", HEADER_BYTES + len(body), kind, flags, seq, 0) + body


def attr(kind: int, payload: bytes) -> bytes:
    """One attribute, padded to 4 bytes."""
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def nested(kind: int, *attrs: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(attrs))


def parse_attrs(data: bytes) -> dict[int, bytes]:
    """The attributes of `data` by type (the nested flag cleared), each its payload."""
    out = {}
    offset = 0
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4 or offset + length > len(data):
            raise NetlinkError(errno.EPROTO, "a truncated netlink attribute")
        out[kind & ~NLA_F_NESTED] = data[offset + 4:offset + length]
        offset += length + (-length % 4)
    return out


def split_messages(data: bytes) -> list[bytes]:
    """The netlink messages of one read, each whole."""
    out = []
    offset = 0
    while offset + HEADER_BYTES <= len(data):
        (length,) = struct.unpack_from("=I", data, offset)
        if length < HEADER_BYTES or offset + length > len(data):
            raise NetlinkError(errno.EPROTO, "a truncated netlink message")
        out.append(data[offset:offset + length])
        offset += length + (-length % 4)
    return out


def kind_of(msg: bytes) -> int:
    (kind,) = struct.unpack_from("=H", msg, 4)
    return int(kind)


def seq_of(msg: bytes) -> int:
    (seq,) = struct.unpack_from("=I", msg, 8)
    return int(seq)


def error_code(msg: bytes) -> int:
    """0 for an acknowledgement, else the (positive) errno of an NLMSG_ERROR."""
    if len(msg) < HEADER_BYTES + 4:
        raise NetlinkError(errno.EPROTO, "a short netlink error message")
    code: int = struct.unpack_from("=i", msg, HEADER_BYTES)[0]
    return -code
