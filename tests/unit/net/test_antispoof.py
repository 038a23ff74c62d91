"""The anti-spoofing table renders to the golden text and nft accepts it."""

from __future__ import annotations

import os
import shutil
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


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("busybox") is None,
                    reason="builds a bridge in namespaces (root), pings with busybox")
def test_flooded_unicast_reaches_no_other_tap() -> None:
    """The bridge floods a frame for a MAC it has not learnt to every port: with the guard, no
    port but the addressee's takes it in (a promiscuous guest sees no neighbour's unicast);
    without it, a third port does. Veths in namespaces stand for the VMs' taps."""
    tag = uuid.uuid4().hex[:6]
    names = {k: f"sct-fl{k}-{tag}" for k in ("h", "a", "b", "c")}
    made: list[str] = []

    def ip(*argv: str, ns: str = "h") -> None:
        subprocess.run(["ip", "-n", names[ns], *argv], check=True, capture_output=True)

    try:
        for key, ns in names.items():
            subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
            made.append(ns)
            ip("link", "set", "lo", "up", ns=key)
            # no IPv6 chatter (multicast, which reaches every port anyway) in the counts
            subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w",
                            "net.ipv6.conf.all.disable_ipv6=1",
                            "net.ipv6.conf.default.disable_ipv6=1"], check=True)
        ip("link", "add", "br0", "type", "bridge")
        ip("link", "set", "br0", "up")
        guards = []
        for i, key in enumerate(("a", "b", "c")):
            tap, mac, addr = f"sct{key}", f"02:42:0a:09:00:0{i + 2}", f"10.9.0.{i + 2}"
            ip("link", "add", tap, "type", "veth", "peer", "name", "eth0", "netns", names[key])
            ip("link", "set", tap, "master", "br0", "up")
            ip("link", "set", "eth0", "address", mac, "up", ns=key)
            ip("addr", "add", f"{addr}/24", "dev", "eth0", ns=key)
            guards.append(TapGuard(tap, mac, addr))
        # a believes b's address is at a MAC nobody has: the bridge floods it
        ip("neigh", "replace", "10.9.0.3", "lladdr", "02:42:0a:09:00:99", "dev", "eth0", ns="a")

        # c counts the echo requests that reach its NIC (ingress sees frames for other MACs)
        counting = ("table netdev seen {\n chain in {\n  type filter hook ingress device "
                    '"eth0" priority 0; policy accept;\n  icmp type echo-request counter\n'
                    " }\n}\n")
        subprocess.run(["ip", "netns", "exec", names["c"], "nft", "-f", "-"], input=counting,
                       check=True, text=True)

        def requests_c_sees_after_pings() -> int:
            def seen() -> int:
                out = subprocess.run(["ip", "netns", "exec", names["c"], "nft", "list", "table",
                                      "netdev", "seen"], check=True, capture_output=True,
                                     text=True).stdout
                return int(out.split("counter packets ", 1)[1].split()[0])
            before = seen()
            subprocess.run(["ip", "netns", "exec", names["a"], "busybox", "ping", "-c", "5",
                            "-i", "0.2", "-W", "1", "10.9.0.3"], capture_output=True)
            return seen() - before

        load = subprocess.run(["ip", "netns", "exec", names["h"], "nft", "-f", "-"],
                              input=antispoof.render(guards, "sct"), capture_output=True,
                              text=True)
        assert load.returncode == 0, load.stderr
        assert requests_c_sees_after_pings() == 0
        listed = subprocess.run(["ip", "netns", "exec", names["h"], "nft", "list", "chain",
                                 "bridge", antispoof.TABLE, "to_sctc"],
                                capture_output=True, text=True).stdout
        assert "counter packets 0 " not in listed, listed
        subprocess.run(["ip", "netns", "exec", names["h"], "nft", "-f", "-"],
                       input="\n".join(antispoof.delete_lines()) + "\n", check=True, text=True)
        # the control: without the guard, flooding does bring them to c
        assert requests_c_sees_after_pings() == 5
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True)
