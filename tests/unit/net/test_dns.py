"""The embedded resolver's packet codec and answer policy (no sockets except loopback)."""

from __future__ import annotations

import asyncio
import struct
from ipaddress import IPv4Address
from typing import cast

import pytest

from steelcup.net import dns

ADDR = IPv4Address("10.213.0.2")


def resolver(name: str, client: str) -> list[IPv4Address] | None:
    if name == "linked" and client == "10.0.0.9":  # a name one client alone may see
        return [ADDR]
    return [ADDR] if name in ("web", "db-alias") else None


def test_parse_and_answer_a_record() -> None:
    q = dns.parse_query(dns.build_query("Web.", id_=0xBEEF))
    assert (q.id, q.name, q.qtype) == (0xBEEF, "web", dns.TYPE_A)
    reply = dns.build_answer(q, [ADDR])
    ident, flags, qd, an, ns, ar = struct.unpack_from("!HHHHHH", reply)
    assert ident == 0xBEEF and flags & 0x8000 and flags & 0x0100  # QR, RD echoed
    assert (qd, an, ns, ar) == (1, 1, 0, 0)
    assert dns.parse_answer_addresses(reply) == (0, [ADDR])
    # the answer's TTL and rdata sit right after the echoed question
    assert reply.endswith(struct.pack("!HHHIH", 0xC00C, 1, 1, dns.TTL_S, 4) + ADDR.packed)


def test_aaaa_for_known_name_is_empty_noerror() -> None:
    q = dns.parse_query(dns.build_query("web", dns.TYPE_AAAA))
    assert dns.parse_answer_addresses(dns.build_answer(q, [ADDR])) == (0, [])


@pytest.mark.parametrize("packet", [
    b"\x00\x01",
    struct.pack("!HHHHHH", 1, 0x8000, 1, 0, 0, 0),  # a response
    struct.pack("!HHHHHH", 1, 0x0100, 2, 0, 0, 0),  # two questions
    struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\x05ab",  # label past end
    struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01",  # pointer
    struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\x01a\x00\x00",  # short qtype
])
def test_malformed_rejected(packet: bytes) -> None:
    with pytest.raises(dns.DnsFormatError):
        dns.parse_query(packet)


def test_policy_refuse_or_forward() -> None:
    refusing = dns.DnsServer(resolver, forward=False)
    reply = refusing.answer(dns.build_query("example.com"))
    assert reply is not None and dns.parse_answer_addresses(reply)[0] == dns.RCODE_REFUSED
    hit = refusing.answer(dns.build_query("db-alias"))
    assert hit is not None and dns.parse_answer_addresses(hit) == (0, [ADDR])
    only_for = refusing.answer(dns.build_query("linked"), "10.0.0.9")
    assert only_for is not None and dns.parse_answer_addresses(only_for) == (0, [ADDR])
    others = refusing.answer(dns.build_query("linked"), "10.0.0.8")
    assert others is not None and dns.parse_answer_addresses(others)[0] == dns.RCODE_REFUSED
    forwarding = dns.DnsServer(resolver, forward=True, upstreams=[("127.0.0.1", 9)])
    assert forwarding.answer(dns.build_query("example.com")) is None
    formerr = refusing.answer(struct.pack("!HHHHHH", 7, 0x0100, 2, 0, 0, 0))
    assert formerr is not None and formerr[3] & 0xF == dns.RCODE_FORMERR
    assert refusing.answer(b"\x01") is None


def test_read_resolv_conf() -> None:
    text = "# x\nnameserver 192.0.2.53\nnameserver fe80::1\nsearch lan\nnameserver 127.0.0.53\n"
    assert dns.read_resolv_conf(text) == ["192.0.2.53", "127.0.0.53"]


def test_server_answers_and_forwards_over_loopback() -> None:
    async def scenario() -> tuple[bytes, bytes]:
        loop = asyncio.get_running_loop()

        class Upstream(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                # selector transports are not DatagramTransport subclasses in 3.11
                self.t = cast(asyncio.DatagramTransport, transport)

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                q = dns.parse_query(data)
                self.t.sendto(dns.build_answer(q, [IPv4Address("192.0.2.7")]), addr)

        up_t, _ = await loop.create_datagram_endpoint(Upstream, local_addr=("127.0.0.1", 0))
        up_port = up_t.get_extra_info("sockname")[1]
        server = dns.DnsServer(resolver, forward=True, upstreams=[("127.0.0.1", up_port)])
        srv_t, _ = await loop.create_datagram_endpoint(lambda: server,
                                                       local_addr=("127.0.0.1", 0))
        port = srv_t.get_extra_info("sockname")[1]
        replies: asyncio.Queue[bytes] = asyncio.Queue()

        class Client(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                replies.put_nowait(data)

        cl_t, _ = await loop.create_datagram_endpoint(Client, remote_addr=("127.0.0.1", port))
        cl_t.sendto(dns.build_query("web", id_=1))
        first = await asyncio.wait_for(replies.get(), 5)
        cl_t.sendto(dns.build_query("elsewhere.example", id_=2))
        second = await asyncio.wait_for(replies.get(), 5)
        for t in (cl_t, srv_t, up_t):
            t.close()
        server.close()
        return first, second

    first, second = asyncio.run(scenario())
    assert dns.parse_answer_addresses(first) == (0, [ADDR])
    assert dns.parse_answer_addresses(second) == (0, [IPv4Address("192.0.2.7")])
