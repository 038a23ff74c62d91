"""The TUNSETIFF request the daemon attaches taps with (pure part)."""

from __future__ import annotations

import struct

import pytest

from steelcup.vm.tap import ifreq


def test_ifreq_is_a_tap_without_packet_info_and_with_vnet_headers_when_asked() -> None:
    raw = ifreq("sctap0", vnet_hdr=True)
    assert len(raw) == 40  # sizeof(struct ifreq) on x86_64
    name, flags = struct.unpack_from("16sH", raw)
    assert name.rstrip(b"\0") == b"sctap0"
    assert flags == 0x0002 | 0x1000 | 0x4000
    assert struct.unpack_from("16sH", ifreq("sctap0", vnet_hdr=False))[1] == 0x0002 | 0x1000


@pytest.mark.parametrize("name", ["", "x" * 16])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        ifreq(name, vnet_hdr=False)
