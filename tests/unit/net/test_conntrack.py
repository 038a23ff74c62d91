"""The ctnetlink codec of net/conntrack.py: the request names the reply tuple, the answer's
original destination is read (errors and malformed answers raise ConntrackError); and, as
root, a real lookup of a DNATed udp flow in a scratch namespace."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from steelcup.net import conntrack
from steelcup.net.conntrack import (
    ConntrackError,
    answered_by,
    delete_request,
    dump_request,
    get_request,
    parse_original_destination,
    split_messages,
)

SRC = Path(__file__).resolve().parents[3] / "src"


def attr(kind: int, payload: bytes, nested: bool = False) -> bytes:
    length = 4 + len(payload)
    kind |= conntrack.NLA_F_NESTED if nested else 0
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def tuple_attr(kind: int, src: tuple[str, int], dst: tuple[str, int]) -> bytes:
    ip = attr(1, socket.inet_aton(src[0])) + attr(2, socket.inet_aton(dst[0]))
    ports = (attr(1, bytes([17])) + attr(2, struct.pack("!H", src[1]))
             + attr(3, struct.pack("!H", dst[1])))
    return attr(kind, attr(1, ip, True) + attr(2, ports, True), True)


def answer(body: bytes, kind: int = (1 << 8) | 0) -> bytes:
    payload = struct.pack("!BBH", socket.AF_INET, 0, 0) + body
    return struct.pack("=IHHII", 16 + len(payload), kind, 0, 1, 0) + payload


def test_the_request_asks_for_the_entry_by_its_reply_tuple() -> None:
    request = get_request(("10.0.0.100", 41000), ("10.0.0.7", 5000), 17, 9)
    length, kind, flags, seq, _pid = struct.unpack_from("=IHHII", request)
    assert (length, kind, flags, seq) == (len(request), (1 << 8) | 1, 1, 9)
    assert request[16:20] == struct.pack("!BBH", socket.AF_INET, 0, 0)
    assert request[20:] == tuple_attr(2, ("10.0.0.100", 41000), ("10.0.0.7", 5000))


def test_the_answer_gives_the_original_destination() -> None:
    body = (tuple_attr(1, ("10.0.0.7", 5000), ("10.0.0.100", 53))
            + tuple_attr(2, ("10.0.0.100", 41000), ("10.0.0.7", 5000)))
    assert parse_original_destination(answer(body)) == ("10.0.0.100", 53)


def test_errors_and_malformed_answers_raise() -> None:
    error = struct.pack("=IHHII", 36, conntrack.NLMSG_ERROR, 0, 1, 0) + struct.pack(
        "=i", -2) + b"\0" * 16
    with pytest.raises(ConntrackError) as info:
        parse_original_destination(error)
    assert info.value.errno == 2  # ENOENT: no such flow
    with pytest.raises(ConntrackError, match="no original destination"):
        parse_original_destination(answer(tuple_attr(2, ("10.0.0.1", 1), ("10.0.0.2", 2))))
    with pytest.raises(ConntrackError, match="unexpected"):
        parse_original_destination(answer(b"", kind=3))
    with pytest.raises(ConntrackError, match="truncated"):
        parse_original_destination(answer(struct.pack("=HH", 40, 1)))
    with pytest.raises(ConntrackError, match="short"):
        parse_original_destination(b"\0" * 8)


PROBE = """
import socket, sys
from steelcup.net import conntrack
listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
listener.bind(("10.9.9.9", 4000))
listener.settimeout(5)
sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sender.sendto(b"x", ("10.9.9.9", 53))
_, client = listener.recvfrom(16)
print(conntrack.lookup(None, ("10.9.9.9", 4000), client))
try:
    conntrack.lookup(None, ("10.9.9.9", 4000), ("10.9.9.8", 1))
except conntrack.ConntrackError as exc:
    print(exc.errno)
# forgotten by its answerer's address (none of another's), then looked up in vain
print(conntrack.forget_udp_flows(None, "10.9.9.7"), conntrack.forget_udp_flows(None, "10.9.9.9"))
try:
    conntrack.lookup(None, ("10.9.9.9", 4000), client)
except conntrack.ConntrackError as exc:
    print(exc.errno)
"""
RULES = """table ip t {
\tchain out {
\t\ttype nat hook output priority -100; policy accept;
\t\tip daddr 10.9.9.9 udp dport 53 dnat ip to 10.9.9.9:4000
\t}
}
"""


def test_a_dump_entry_is_matched_by_its_answerer_and_deleted_by_its_original_tuple() -> None:
    original = tuple_attr(1, ("192.0.2.7", 5000), ("198.51.100.2", 53))
    reply = tuple_attr(2, ("10.213.0.5", 53), ("192.0.2.7", 5000))
    entry = answer(original + reply)
    assert split_messages(entry + entry) == [entry, entry]
    assert answered_by(entry, "10.213.0.5") == original[4:]
    assert answered_by(entry, "10.213.0.6") is None
    assert answered_by(entry, "10.213.0.5", proto=6) is None  # a udp entry is no tcp one
    request = delete_request(original[4:], 9)
    assert struct.unpack_from("=HH", request, 4) == ((1 << 8) | 2, 1 | 4)
    assert request[20:] == original
    assert dump_request(1)[6:8] == struct.pack("=H", 1 | 0x300)
    with pytest.raises(ConntrackError, match="truncated"):
        split_messages(entry[:-4])
    with pytest.raises(ConntrackError, match="without its tuples"):
        answered_by(answer(original), "10.213.0.5")


@pytest.mark.skipif(os.geteuid() != 0, reason="DNAT in a namespace of its own: needs root")
def test_a_real_dnated_flow_is_found_by_its_reply_tuple() -> None:
    ns = f"sct-ct-{uuid.uuid4().hex[:8]}"
    if subprocess.run(["ip", "netns", "add", ns], capture_output=True).returncode != 0:
        pytest.skip("cannot create a network namespace")
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "-n", ns, "addr", "add", "10.9.9.9/32", "dev", "lo"], check=True)
        subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=RULES, text=True,
                       check=True)
        run = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", PROBE],
                             capture_output=True, text=True, timeout=30,
                             env={**os.environ, "PYTHONPATH": str(SRC)})
        assert run.returncode == 0, run.stderr
        assert run.stdout.split("\n")[:4] == ["('10.9.9.9', 53)", "2", "0 1", "2"]
    finally:
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True)
