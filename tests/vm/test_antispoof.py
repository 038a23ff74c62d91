"""Anti-spoofing (issue 15, docs/security.md): a guest that takes a neighbour's IPv4 address or
a MAC that is not its own, with real containers in real VMs on one network of the session
daemon (inside the tests' own network namespace).

Three containers on `spoofnet`: `victim` serves HTTP, `other` is a bystander, `mallory` has
CAP_NET_ADMIN. Mallory reaches the victim as itself; with the bystander's address or a forged
MAC nothing it sends arrives (and the guard table's counters say it was dropped there); its
claim to the victim's address (ARP answers, packets from it), or frames with the victim's MAC,
do not divert the victim's traffic; back on its own addresses it reaches the victim again.
"""

from __future__ import annotations

import json
import re

import pytest

from steelcup.net import antispoof
from tests.vm.support import Daemon, in_netns

pytestmark = pytest.mark.vm
IMG = "steelcup/busybox"
NET = "spoofnet"
FORGED = "02:42:de:ad:be:ef"
FETCH = "for i in $(seq 30); do timeout 5 wget -qO- http://{ip}/ && exit 0; sleep 0.3; done; exit 1"


def _address(daemon: Daemon, name: str) -> str:
    info = json.loads(daemon.out("inspect", name))[0]
    return str(info["NetworkSettings"]["Networks"][NET]["IPAddress"])


def _mac(daemon: Daemon, name: str) -> str:
    info = json.loads(daemon.out("inspect", name))[0]
    return str(info["NetworkSettings"]["Networks"][NET]["MacAddress"])


def _mallory(daemon: Daemon, script: str) -> tuple[int, str]:
    run = daemon.cli("exec", "mallory", "sh", "-c", script, timeout=120)
    return run.returncode, (run.stdout + run.stderr).decode(errors="replace")


def _guard_drops(daemon: Daemon) -> int:
    assert daemon.netns
    out = in_netns(daemon.netns, "nft", "list", "table", "bridge", antispoof.TABLE)
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    return sum(int(n) for n in re.findall(r"counter packets (\d+) bytes \d+ drop", text))


@pytest.fixture(scope="module")
def spoofnet(daemon: Daemon) -> dict[str, str]:
    daemon.out("network", "create", NET)
    try:
        daemon.out("run", "-d", "--name", "victim", "--network", NET, IMG, "sh", "-c",
                   "mkdir -p /www && echo hello from victim > /www/index.html && "
                   "exec httpd -f -p 80 -h /www")
        daemon.out("run", "-d", "--name", "other", "--network", NET, "--cap-add", "NET_ADMIN",
                   IMG, "sleep", "600")  # to flush its ARP cache
        daemon.out("run", "-d", "--name", "mallory", "--network", NET, "--cap-add", "NET_ADMIN",
                   IMG, "sleep", "600")
        yield {name: _address(daemon, name) for name in ("victim", "other", "mallory")}
    finally:
        daemon.cli("rm", "-f", "victim", "other", "mallory")
        daemon.cli("network", "rm", NET)


def test_own_addresses_reach_the_neighbour(daemon: Daemon, spoofnet: dict[str, str]) -> None:
    code, out = _mallory(daemon, FETCH.format(ip=spoofnet["victim"]))
    assert code == 0 and "hello from victim" in out, out


def test_a_neighbours_ip_sends_nothing(daemon: Daemon, spoofnet: dict[str, str]) -> None:
    before = _guard_drops(daemon)
    own, theirs = spoofnet["mallory"], spoofnet["other"]
    code, out = _mallory(
        daemon,
        f"ip addr del {own}/24 dev eth0 && ip addr add {theirs}/24 dev eth0 && "
        f"timeout 5 wget -qO- http://{spoofnet['victim']}/; rc=$?; "
        f"ip addr del {theirs}/24 dev eth0; ip addr add {own}/24 dev eth0; "
        "exit $rc")
    assert code != 0 and "hello from victim" not in out, out
    assert _guard_drops(daemon) > before
    code, out = _mallory(daemon, FETCH.format(ip=spoofnet["victim"]))  # itself again: fine
    assert code == 0 and "hello from victim" in out, out


def test_a_forged_mac_sends_nothing(daemon: Daemon, spoofnet: dict[str, str]) -> None:
    before = _guard_drops(daemon)
    own = _mac(daemon, "mallory")
    code, out = _mallory(
        daemon,
        # virtio-net takes a new MAC only while the link is down; busybox `ip` would need
        # AF_PACKET, which the guest kernel lacks: ifconfig's ioctl
        f"ifconfig eth0 down && ifconfig eth0 hw ether {FORGED} && ifconfig eth0 up && "
        f"ip link show eth0 && timeout 5 wget -qO- http://{spoofnet['victim']}/; rc=$?; "
        f"ifconfig eth0 down; ifconfig eth0 hw ether {own}; ifconfig eth0 up; exit $rc")
    assert FORGED in out, out  # the guest did send with it
    assert code != 0 and "hello from victim" not in out, out
    assert _guard_drops(daemon) > before, out
    code, out = _mallory(daemon, FETCH.format(ip=spoofnet["victim"]))
    assert code == 0 and "hello from victim" in out, out


def test_claiming_the_victims_address_diverts_nothing(daemon: Daemon,
                                                      spoofnet: dict[str, str]) -> None:
    """Mallory holds the victim's address too, so its kernel answers ARP for it and sends from
    it: dropped. The bystander, its ARP cache flushed so that it must ask, still reaches the
    victim. (busybox arping needs AF_PACKET, which the guest kernel lacks.)"""
    victim = spoofnet["victim"]
    before = _guard_drops(daemon)
    code, out = _mallory(
        daemon, f"ip addr add {victim}/32 dev eth0 && "
                f"ping -c 2 -W 1 -I {victim} {spoofnet['other']}; exit 0")
    assert code == 0, out
    try:
        assert _guard_drops(daemon) > before
        got = daemon.cli("exec", "other", "sh", "-c",
                         "ip neigh flush dev eth0 && " + FETCH.format(ip=victim), timeout=120)
        assert got.returncode == 0 and b"hello from victim" in got.stdout, got.stderr
    finally:
        _mallory(daemon, f"ip addr del {victim}/32 dev eth0")


def test_taking_the_victims_mac_diverts_nothing(daemon: Daemon, spoofnet: dict[str, str]) -> None:
    """Mallory sends with the victim's MAC (so the bridge would learn the victim on Mallory's
    port): dropped on its tap, and the bystander's requests still reach the victim."""
    victim, own = _mac(daemon, "victim"), _mac(daemon, "mallory")
    before = _guard_drops(daemon)
    code, out = _mallory(
        daemon,
        f"ifconfig eth0 down && ifconfig eth0 hw ether {victim} && ifconfig eth0 up && "
        f"ping -c 3 -W 1 {spoofnet['other']}; "
        f"ifconfig eth0 down; ifconfig eth0 hw ether {own}; ifconfig eth0 up; exit 0")
    assert code == 0, out
    assert _guard_drops(daemon) > before
    got = daemon.cli("exec", "other", "sh", "-c", FETCH.format(ip=spoofnet["victim"]),
                     timeout=120)
    assert got.returncode == 0 and b"hello from victim" in got.stdout, got.stderr
