"""A bridge's own MAC (net.links.bridge_mac): fixed, so ports joining never change it."""

from __future__ import annotations

from steelcup.net.links import bridge_mac


def test_a_bridge_mac_is_its_own_stable_local_unicast_address() -> None:
    mac = bridge_mac("steelcup0")
    first = int(mac.split(":")[0], 16)
    assert first & 0b10 and not first & 0b01  # locally administered, unicast
    assert mac == bridge_mac("steelcup0")  # the same after a daemon restart
    assert mac != bridge_mac("steelcup1")
    assert not mac.startswith("02:42:")  # never a container's (02:42 + its IPv4 address)
    assert len(mac.split(":")) == 6
