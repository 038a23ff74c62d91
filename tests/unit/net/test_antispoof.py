"""The anti-spoofing table renders to the golden text and nft accepts it."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from steelcup.net import antispoof, nft
from steelcup.net.antispoof import TapGuard
from steelcup.net.links import LinkError

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "nft_antispoof.txt"

GUARDS = [
    TapGuard("sctbbbbbbbbbbbb", "02:42:0a:d5:00:03", "10.213.0.3"),
    TapGuard("sctaaaaaaaaaaaa", "02:42:0a:d5:00:02", "10.213.0.2"),
]


def test_golden_antispoof_table() -> None:
    text = antispoof.render(GUARDS, "sct")
    if os.environ.get("STEELCUP_UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


def test_each_tap_is_held_to_its_own_addresses() -> None:
    text = antispoof.render(GUARDS, "sct")
    chain = text.split("chain from_sctaaaaaaaaaaaa {", 1)[1].split("}", 1)[0]
    assert "ether saddr != 02:42:0a:d5:00:02 counter drop" in chain
    assert "arp saddr ip != 10.213.0.2 counter drop" in chain
    assert "ip saddr != 10.213.0.2 counter drop" in chain
    assert "10.213.0.3" not in chain


def test_a_known_taps_frames_never_reach_the_unknown_tap_drop() -> None:
    """`jump` would return after the tap's chain and fall through to `iifname "sct*" drop`."""
    text = antispoof.render(GUARDS, "sct")
    assert ": jump " not in text and '"sctaaaaaaaaaaaa" : goto from_sctaaaaaaaaaaaa' in text


def test_no_container_still_drops_unknown_taps() -> None:
    text = antispoof.render([], "sct")
    assert text.startswith("table bridge steelcup_guard {}\ndelete table bridge steelcup_guard\n")
    assert 'iifname "sct*" counter drop' in text and "vmap" not in text


def test_bad_tap_name_rejected() -> None:
    with pytest.raises(LinkError):
        antispoof.render([TapGuard('x" drop', "02:42:0a:d5:00:02", "10.213.0.2")], "sct")


@pytest.mark.skipif(os.geteuid() != 0, reason="loads the ruleset into a namespace: needs root")
def test_nft_accepts_it_with_the_main_table() -> None:
    ns = f"sct-as-{uuid.uuid4().hex[:8]}"
    if subprocess.run(["ip", "netns", "add", ns], capture_output=True).returncode != 0:
        pytest.skip("cannot create a network namespace")
    try:
        text = nft.render([]) + antispoof.render(GUARDS, "sct")
        for _ in range(2):  # the second load replaces the first
            run = subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=text,
                                 capture_output=True, text=True)
            assert run.returncode == 0, run.stderr
    finally:
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True)
