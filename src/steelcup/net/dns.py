"""The embedded DNS resolver of a network: A records for the containers and aliases on it,
everything else forwarded upstream or refused (per network). One asyncio UDP endpoint per
network on its gateway address, port 53.

The packet codec (`parse_query`, `build_answer`, `build_error`) is pure and tested alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import cast

log = logging.getLogger(__name__)

TYPE_A = 1
TYPE_AAAA = 28
CLASS_IN = 1
RCODE_OK = 0
RCODE_FORMERR = 1
RCODE_SERVFAIL = 2
RCODE_NXDOMAIN = 3
RCODE_REFUSED = 5
TTL_S = 600
FORWARD_TIMEOUT_S = 2.0
MAX_PACKET = 4096
_HEADER = struct.Struct("!HHHHHH")


class DnsFormatError(ValueError):
    """A packet that is not a single-question standard query."""


@dataclass(frozen=True)
class Query:
    id: int
    flags: int
    name: str  # lower case, no trailing dot
    qtype: int
    qclass: int
    question: bytes  # the raw question section (echoed in the answer)


def parse_query(packet: bytes) -> Query:
    """Decode a standard query with exactly one question; DnsFormatError otherwise."""
    if len(packet) < _HEADER.size:
        raise DnsFormatError("short header")
    id_, flags, qd, _an, _ns, _ar = _HEADER.unpack_from(packet)
    if flags & 0x8000:
        raise DnsFormatError("not a query")
    if (flags >> 11) & 0xF != 0:
        raise DnsFormatError("not a standard query")
    if qd != 1:
        raise DnsFormatError(f"{qd} questions")
    pos = _HEADER.size
    labels: list[str] = []
    total = 0
    while True:
        if pos >= len(packet):
            raise DnsFormatError("name runs past the end")
        n = packet[pos]
        pos += 1
        if n == 0:
            break
        if n & 0xC0:
            raise DnsFormatError("compressed or extended label in a question")
        label = packet[pos : pos + n]
        if len(label) != n:
            raise DnsFormatError("label runs past the end")
        total += n + 1
        if total > 255:
            raise DnsFormatError("name over 255 bytes")
        labels.append(label.decode("ascii", errors="replace").lower())
        pos += n
    if pos + 4 > len(packet):
        raise DnsFormatError("question truncated")
    qtype, qclass = struct.unpack_from("!HH", packet, pos)
    pos += 4
    return Query(id_, flags, ".".join(labels), qtype, qclass, packet[_HEADER.size : pos])


def _reply_flags(query: Query, rcode: int, recursion_available: bool) -> int:
    rd = query.flags & 0x0100
    ra = 0x0080 if recursion_available else 0
    return 0x8000 | 0x0400 | rd | ra | rcode  # QR, AA


def build_answer(query: Query, addresses: Sequence[IPv4Address], *,
                 recursion_available: bool = False) -> bytes:
    """NOERROR with one A record per address (none for other types: the name exists)."""
    answers = b""
    count = 0
    if query.qtype == TYPE_A and query.qclass == CLASS_IN:
        for addr in addresses:
            answers += struct.pack("!HHHIH", 0xC00C, TYPE_A, CLASS_IN, TTL_S, 4) + addr.packed
            count += 1
    header = _HEADER.pack(query.id, _reply_flags(query, RCODE_OK, recursion_available),
                          1, count, 0, 0)
    return header + query.question + answers


def build_error(query: Query, rcode: int, *, recursion_available: bool = False) -> bytes:
    header = _HEADER.pack(query.id, _reply_flags(query, rcode, recursion_available) & ~0x0400,
                          1, 0, 0, 0)
    return header + query.question


def build_formerr(packet: bytes) -> bytes | None:
    """FORMERR for an undecodable packet that still has an id; None for garbage/responses."""
    if len(packet) < _HEADER.size:
        return None
    id_, flags = struct.unpack_from("!HH", packet)
    if flags & 0x8000:
        return None
    return _HEADER.pack(id_, 0x8000 | RCODE_FORMERR, 0, 0, 0, 0)


def build_query(name: str, qtype: int = TYPE_A, id_: int = 0x1234) -> bytes:
    """A standard recursive query (tests and health checks)."""
    qname = b"".join(bytes([len(p)]) + p.encode("ascii") for p in name.split(".") if p) + b"\0"
    return _HEADER.pack(id_, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", qtype, CLASS_IN)


def parse_answer_addresses(packet: bytes) -> tuple[int, list[IPv4Address]]:
    """(rcode, A addresses) of a response built by `build_answer` (tests)."""
    _id, flags, qd, an, _ns, _ar = _HEADER.unpack_from(packet)
    pos = _HEADER.size
    for _ in range(qd):
        while packet[pos] != 0:
            pos += packet[pos] + 1
        pos += 5
    out: list[IPv4Address] = []
    for _ in range(an):
        pos += 2  # name pointer
        rtype, _cls, _ttl, rdlen = struct.unpack_from("!HHIH", packet, pos)
        pos += 10
        if rtype == TYPE_A and rdlen == 4:
            out.append(IPv4Address(packet[pos : pos + 4]))
        pos += rdlen
    return flags & 0xF, out


def read_resolv_conf(text: str) -> list[str]:
    """Nameserver addresses of a resolv.conf (IPv4 only)."""
    out = []
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver" and ":" not in words[1]:
            out.append(words[1])
    return out


# (name, the asking client's address) -> its addresses, or None (not ours)
Resolver = Callable[[str, str], list[IPv4Address] | None]


class DnsServer(asyncio.DatagramProtocol):
    """Answers one network's queries. `resolve(name, client)` gives addresses or None (not
    ours); the client's address matters for names only it may see (legacy links)."""

    def __init__(self, resolve: Resolver, *, forward: bool,
                 upstreams: Sequence[tuple[str, int]] = ()) -> None:
        self.resolve = resolve
        self.forward = forward and bool(upstreams)
        self.upstreams = list(upstreams)
        self.transport: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # selector transports are not DatagramTransport subclasses in 3.11
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = self.answer(data, addr[0])
        if reply is not None:
            self._send(reply, addr)
            return
        task = asyncio.get_running_loop().create_task(self._forward(data, addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def answer(self, data: bytes, client: str = "") -> bytes | None:
        """The reply to `client`, or None when the query must be forwarded."""
        try:
            query = parse_query(data)
        except DnsFormatError:
            return build_formerr(data)
        addresses = self.resolve(query.name, client)
        if addresses is not None:
            return build_answer(query, addresses, recursion_available=self.forward)
        if self.forward:
            return None
        return build_error(query, RCODE_REFUSED)

    def _send(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.transport is not None:
            self.transport.sendto(data, addr)

    async def _forward(self, data: bytes, addr: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        for host, port in self.upstreams:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)
                try:
                    await loop.sock_connect(sock, (host, port))
                    await loop.sock_sendall(sock, data)
                    async with asyncio.timeout(FORWARD_TIMEOUT_S):
                        reply = await loop.sock_recv(sock, MAX_PACKET)
                except (OSError, TimeoutError):
                    continue
            if reply[:2] == data[:2]:
                self._send(reply, addr)
                return
        with contextlib.suppress(DnsFormatError):
            self._send(build_error(parse_query(data), RCODE_SERVFAIL), addr)

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.transport is not None:
            self.transport.close()
