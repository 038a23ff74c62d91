"""The nftables ruleset renders to the golden text (tests/golden/nft_ruleset.txt)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from steelcup.net import nft
from steelcup.net.links import LinkError
from steelcup.net.model import NetworkRecord

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "nft_ruleset.txt"

NETS = [
    NetworkRecord("a" * 64, "bridge", "10.213.0.0/24", "10.213.0.1", "steelcup0"),
    NetworkRecord("b" * 64, "back", "10.213.1.0/24", "10.213.1.1", "sc-bbbbbbbbbbbb",
                  internal=True),
]
PORTS = [
    nft.PublishedPort("", 8080, "10.213.0.2", 80),
    nft.PublishedPort("192.0.2.5", 5353, "10.213.0.2", 53, "udp"),
]


def test_golden_ruleset() -> None:
    text = nft.render(list(reversed(NETS)), PORTS)  # input order does not matter
    if os.environ.get("STEELCUP_UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


def test_empty_ruleset_still_replaces_the_table() -> None:
    text = nft.render([])
    assert text.startswith("table ip steelcup {}\ndelete table ip steelcup\n"
                           "table inet steelcup {}\ndelete table inet steelcup\n")
    assert "masquerade" not in text and "dnat" not in text


def test_bad_bridge_name_rejected() -> None:
    bad = NetworkRecord("c" * 64, "x", "10.1.0.0/24", "10.1.0.1", 'br"; drop')
    with pytest.raises(LinkError):
        nft.render([bad])


def test_the_table_filters_ipv6_too() -> None:
    """Issue 10 #4: an `ip` table let containers reach host services on `::` over a bridge's
    link-local address; the `inet` table's final drops match both families."""
    text = nft.render(NETS)
    assert "table inet steelcup {" in text and "table ip steelcup {\n" not in text
    assert '\t\tiifname "steelcup0" drop' in text  # in the input chain: any family


@pytest.mark.skipif(os.geteuid() != 0, reason="loads the ruleset into a namespace: needs root")
def test_nft_accepts_the_ruleset_in_a_scratch_namespace() -> None:
    import subprocess
    import uuid

    ns = f"sct-nft-{uuid.uuid4().hex[:8]}"
    if subprocess.run(["ip", "netns", "add", ns], capture_output=True).returncode != 0:
        pytest.skip("cannot create a network namespace")
    try:
        run = subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"],
                             input=nft.render(NETS, PORTS) + nft.render_delete(),
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
    finally:
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True)
