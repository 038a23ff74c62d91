"""The wake listener's reading of where a DNATed connection was going (SO_ORIGINAL_DST's
`struct sockaddr_in`)."""

from __future__ import annotations

import socket
import struct

import pytest

from steelcup.net.proxy import parse_sockaddr_in


def test_a_sockaddr_in_is_read_as_address_and_port() -> None:
    raw = struct.pack("=HH", socket.AF_INET, socket.htons(18080)) + socket.inet_aton(
        "10.213.0.100") + b"\0" * 8
    assert parse_sockaddr_in(raw) == ("10.213.0.100", 18080)


def test_anything_else_is_refused() -> None:
    with pytest.raises(ValueError, match="8 bytes"):
        parse_sockaddr_in(b"\2\0")
    raw = struct.pack("=HH", socket.AF_INET6, 80) + b"\0" * 12
    with pytest.raises(ValueError, match="not an IPv4"):
        parse_sockaddr_in(raw)
