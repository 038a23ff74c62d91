"""The anti-spoofing table renders to the golden text and nft accepts it."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
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
    assert '"sctaaaaaaaaaaaa" . 02:42:0a:d5:00:02 . 10.213.0.2' in text
    assert '"sctaaaaaaaaaaaa" . 10.213.0.2' in text
    assert '"sctaaaaaaaaaaaa" . 02:42:0a:d5:00:02,' in text
    assert '"sctaaaaaaaaaaaa" . 02:42:0a:d5:00:03' not in text
    assert '"sctaaaaaaaaaaaa" . 10.213.0.3' not in text


def test_the_rules_are_the_same_for_any_number_of_taps() -> None:
    """Only the sets' elements grow with the containers: loading costs no chain per tap."""
    many = [TapGuard(f"sct{i:012x}", f"02:42:0a:d5:{i >> 8:02x}:{i & 255:02x}",
                     f"10.213.{i >> 8}.{i & 255}") for i in range(2, 402)]
    rules = [line for line in antispoof.render(many, "sct").splitlines()
             if "elements" not in line]
    assert rules == [line for line in antispoof.render(GUARDS, "sct").splitlines()
                     if "elements" not in line]


def test_no_container_still_drops_unknown_taps() -> None:
    text = antispoof.render([], "sct")
    assert text.startswith("table bridge steelcup_guard {}\ndelete table bridge steelcup_guard\n")
    assert "elements" not in text
    assert 'iifname != "sct*" accept' in text and "iifname . ether saddr != @macs" in text


A = TapGuard("scta", "02:42:0a:09:00:02", "10.9.0.2")
B = TapGuard("sctb", "02:42:0a:09:00:03", "10.9.0.3")
C = TapGuard("sctc", "02:42:0a:09:00:04", "10.9.0.4")


def test_a_new_endpoints_guard_is_added_not_reloaded() -> None:
    text = antispoof.update({A, B}, {A, B, C}, {"scta", "sctb", "sctc"})
    assert text == (
        'add element bridge steelcup_guard macs { "sctc" . 02:42:0a:09:00:04 }\n'
        'add element bridge steelcup_guard addresses { "sctc" . 10.9.0.4 }\n'
        'add element bridge steelcup_guard arp_senders { "sctc" . 02:42:0a:09:00:04 . '
        '10.9.0.4 }\n')
    assert antispoof.update({A, B}, {A, B}, {"scta"}) == ""


def test_guards_of_gone_taps_stay_until_a_full_load() -> None:
    text = antispoof.update({A, B}, {B, C}, {"sctb", "sctc"})
    assert text is not None and "scta" not in text and "sctc" in text
    many = {TapGuard(f"sctx{i}", A.mac, A.address) for i in range(antispoof.STALE_MAX + 1)}
    assert antispoof.update(many, {C}, set()) is None


def test_a_stale_guard_of_a_running_tap_needs_a_full_load() -> None:
    """A running container disconnected with --force: its tap may no longer send as the
    address it had, which may be another container's next."""
    assert antispoof.update({A, B}, {B}, {"scta", "sctb"}) is None


def test_a_tap_back_with_other_addresses_needs_a_full_load() -> None:
    moved = TapGuard("scta", "02:42:0a:09:00:09", "10.9.0.9")
    assert antispoof.update({A, B}, {moved, B}, set()) is None


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



class Lan:
    """A bridge in namespace `h` with three veths `scta`..`sctc` standing for the VMs' taps,
    whose peers are `eth0` in namespaces `a`..`c` (10.9.0.2-4); IPv6 off (its multicast
    reaches every port anyway and would blur the counts)."""

    def __init__(self, tag: str) -> None:
        self.names = {k: f"sct-fl{k}-{tag}" for k in ("h", "a", "b", "c")}
        self.made: list[str] = []
        self.guards: list[TapGuard] = []

    def ip(self, *argv: str, ns: str = "h") -> None:
        subprocess.run(["ip", "-n", self.names[ns], *argv], check=True, capture_output=True)

    def run(self, ns: str, *argv: str, text: str | None = None
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.names[ns], *argv], input=text,
                              capture_output=True, text=True)

    def build(self) -> None:
        for key, ns in self.names.items():
            subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
            self.made.append(ns)
            self.ip("link", "set", "lo", "up", ns=key)
            self.run(key, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                     "net.ipv6.conf.default.disable_ipv6=1")
        self.ip("link", "add", "br0", "type", "bridge")
        self.ip("link", "set", "br0", "up")
        for i, key in enumerate(("a", "b", "c")):
            tap, mac, addr = f"sct{key}", f"02:42:0a:09:00:0{i + 2}", f"10.9.0.{i + 2}"
            self.ip("link", "add", tap, "type", "veth", "peer", "name", "eth0", "netns",
                    self.names[key])
            self.ip("link", "set", tap, "master", "br0", "up")
            self.ip("link", "set", "eth0", "address", mac, "up", ns=key)
            self.ip("addr", "add", f"{addr}/24", "dev", "eth0", ns=key)
            self.guards.append(TapGuard(tap, mac, addr))

    def guard(self, on: bool) -> None:
        text = (antispoof.render(self.guards, "sct") if on
                else "\n".join(antispoof.delete_lines()) + "\n")
        load = self.run("h", "nft", "-f", "-", text=text)
        assert load.returncode == 0, load.stderr

    def count_at(self, ns: str, what: str) -> None:
        """Count frames matching `what` (an nft expression) that reach `ns`'s NIC (ingress
        sees frames for other MACs too)."""
        table = ("table netdev seen {\n chain in {\n  type filter hook ingress device "
                 f'"eth0" priority 0; policy accept;\n  {what} counter\n }}\n}}\n')
        assert self.run(ns, "nft", "-f", "-", text=table).returncode == 0

    def seen(self, ns: str) -> int:
        out = self.run(ns, "nft", "list", "table", "netdev", "seen").stdout
        return int(out.split("counter packets ", 1)[1].split()[0])

    def ping(self, ns: str, address: str, count: int = 5) -> int:
        return subprocess.run(["ip", "netns", "exec", self.names[ns], "busybox", "ping",
                               "-c", str(count), "-i", "0.2", "-W", "1", address],
                              capture_output=True).returncode

    def remove(self) -> None:
        for ns in self.made:
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True)


@pytest.fixture
def lan() -> Iterator[Lan]:
    if os.geteuid() != 0 or shutil.which("busybox") is None:
        pytest.skip("builds a bridge in namespaces (root), pings with busybox")
    made = Lan(uuid.uuid4().hex[:6])
    try:
        made.build()
        yield made
    finally:
        made.remove()


def test_flooded_unicast_reaches_no_other_tap(lan: Lan) -> None:
    """The bridge floods a frame for a MAC it has not learnt to every port: with the guard, no
    port but the addressee's takes it in (a promiscuous guest sees no neighbour's unicast);
    without it, a third port does."""
    # a believes b's address is at a MAC nobody has: the bridge floods it
    lan.ip("neigh", "replace", "10.9.0.3", "lladdr", "02:42:0a:09:00:99", "dev", "eth0",
           ns="a")
    lan.count_at("c", "icmp type echo-request")

    def requests_c_sees_after_pings() -> int:
        before = lan.seen("c")
        lan.ping("a", "10.9.0.3")
        return lan.seen("c") - before

    lan.guard(True)
    assert requests_c_sees_after_pings() == 0
    listed = lan.run("h", "nft", "list", "chain", "bridge", antispoof.TABLE, "to_guests").stdout
    assert "oifname . ether daddr != @macs counter packets 0 " not in listed, listed
    lan.guard(False)  # the control: without the guard, flooding does bring them to c
    assert requests_c_sees_after_pings() == 5


def test_an_arp_request_reaches_only_the_addresss_owner(lan: Lan) -> None:
    """a asks for b's MAC (a broadcast): b takes it in and answers, c is not woken by it;
    without the guard c takes in every request of its LAN."""
    lan.count_at("b", "arp operation request")
    lan.count_at("c", "arp operation request")

    def requests_seen_after_asking() -> tuple[int, int]:
        before = lan.seen("b"), lan.seen("c")
        lan.ip("neigh", "flush", "dev", "eth0", ns="a")
        assert lan.ping("a", "10.9.0.3", count=1) == 0  # resolved, and b answers
        return lan.seen("b") - before[0], lan.seen("c") - before[1]

    lan.guard(True)
    to_b, to_c = requests_seen_after_asking()
    assert to_b >= 1 and to_c == 0
    lan.guard(False)
    to_b, to_c = requests_seen_after_asking()
    assert to_b >= 1 and to_c >= 1


def test_a_forged_or_unknown_sender_reaches_nobody(lan: Lan) -> None:
    """a sends as c (its address; a knows b's MAC, so no ARP of its own is involved), then
    with a forged MAC: nothing reaches b. A port of no endpoint sends nothing. a, as itself,
    reaches b."""
    lan.guard(True)
    assert lan.ping("a", "10.9.0.3", count=2) == 0
    lan.count_at("b", "icmp type echo-request")

    def readdress(old: str, new: str) -> None:
        lan.ip("addr", "del", f"{old}/24", "dev", "eth0", ns="a")
        lan.ip("addr", "add", f"{new}/24", "dev", "eth0", ns="a")

    def ping_b_knowing_its_mac() -> None:
        lan.ip("neigh", "replace", "10.9.0.3", "lladdr", "02:42:0a:09:00:03", "dev", "eth0",
               ns="a")
        lan.ping("a", "10.9.0.3", count=2)

    readdress("10.9.0.2", "10.9.0.4")
    ping_b_knowing_its_mac()
    assert lan.seen("b") == 0
    readdress("10.9.0.4", "10.9.0.2")
    lan.ip("link", "set", "eth0", "address", "02:42:de:ad:be:ef", ns="a")
    ping_b_knowing_its_mac()
    assert lan.seen("b") == 0
    lan.ip("link", "set", "eth0", "address", "02:42:0a:09:00:02", ns="a")
    assert lan.ping("a", "10.9.0.3", count=2) == 0
    assert lan.seen("b") == 2
    lan.guards = [g for g in lan.guards if g.tap != "scta"]  # a's endpoint is gone
    lan.guard(True)
    lan.ping("a", "10.9.0.3", count=2)
    assert lan.seen("b") == 2


def test_an_added_guard_lets_its_tap_send(lan: Lan) -> None:
    """The table loaded for a and b; c's guard comes by `update`, as a new endpoint's does."""
    a, b, c = lan.guards
    lan.guards = [a, b]
    lan.guard(True)
    assert lan.ping("c", "10.9.0.3", count=2) != 0
    text = antispoof.update({a, b}, {a, b, c}, {"scta", "sctb", "sctc"})
    assert text
    load = lan.run("h", "nft", "-f", "-", text=text)
    assert load.returncode == 0, load.stderr
    assert lan.ping("c", "10.9.0.3", count=2) == 0
