"""The `ip -batch` input that places a tap: on a bridge (hairpin on, up) or, for a NIC that
goes into an engine's netns, on none (name and MTU only: moving it brings it down anyway)."""

from __future__ import annotations

import pytest

from steelcup.net.links import LinkError, _placement


def test_on_a_bridge_with_hairpin_and_up() -> None:
    assert _placement("sct1", "steelcup0", 1500).splitlines() == [
        "link set dev sct1 mtu 1500 master steelcup0 up",
        "link set dev sct1 type bridge_slave hairpin on"]


def test_a_spare_renamed_onto_no_bridge() -> None:
    assert _placement("scn0123", "", 1450, rename_from="scw1a2b3c4d0") == (
        "link set dev scw1a2b3c4d0 name scn0123 mtu 1450\n")


def test_a_bad_bridge_name_is_refused() -> None:
    with pytest.raises(LinkError, match="bad interface name"):
        _placement("sct1", "a bridge", 1500)


def test_the_nics_old_neighbour_entry_goes_with_the_placement() -> None:
    assert _placement("sct1", "steelcup0", 1500, address="10.213.0.2").splitlines()[-1] == (
        "neigh flush to 10.213.0.2 dev steelcup0")
    with pytest.raises(ValueError):  # nothing but an address reaches the batch
        _placement("sct1", "steelcup0", 1500, address="10.0.0.1\nlink del dev steelcup0")
