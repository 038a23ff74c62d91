"""A sleeping service reached through its floating IP, with real VMs (docs/services.md,
"Auto-suspend"; docs/fips.md): a daemon of the file's own with `--fip-pool 198.51.100.48/28
--fip-interface` the daemon side of a veth whose other end is an "outside" network namespace.

A service with --auto-suspend and a FIP, its one replica suspended: a container on another
network cannot reach the FIP (nor the service's wake listener through it) and wakes nothing;
an HTTP request from outside to the FIP is held while the replica resumes, then answered, by
the same task; once it runs the FIP is DNATed to the replica again, not to the listener.
A UDP echo service the same way: datagrams from outside to its FIP wake it and are answered.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.vm.fip_support import fetch_from, start_fip_daemon, wire_outside
from tests.vm.support import (
    BUSYBOX_TAR,
    Daemon,
    delete_netns,
    in_netns,
    leftovers_of,
    need_assets,
    new_netns,
    stop_daemon,
    wait_pool_ready,
    wait_until,
)
from tests.vm.suspend_support import qemus_of, udp_echo_image, udp_exchange

pytestmark = pytest.mark.vm
IMG = "steelcup/busybox"
POOL = "198.51.100.48/28"
DAEMON_IF = "fipwd0"
OUTSIDE_IF = "fipwo0"
SERVER = "mkdir -p /www && echo hello through a fip > /www/index.html && httpd -f -p 80 -h /www"
PAGE = "hello through a fip\n"
ECHO_IMG = "udpecho:1"
ECHO_PORT = 5353


class Setup:
    def __init__(self, tmp: Path) -> None:
        self.root, self.sock = tmp / "root", tmp / "run" / "steelcup.sock"
        self.inner = new_netns("fipwd")
        self.outside = new_netns("fipwo")
        self.daemon: Daemon | None = None

    def wire(self) -> None:
        wire_outside(self.inner, self.outside, DAEMON_IF, OUTSIDE_IF)

    def fips_chain(self) -> str:
        run = in_netns(self.inner, "nft", "list", "chain", "inet", "steelcup", "fips")
        assert run.returncode == 0, run.stderr.decode()
        return run.stdout.decode()

    def close(self) -> list[str]:
        problems = []
        if self.daemon is not None:
            stop_daemon(self.daemon)
            problems = leftovers_of(self.root, netns=self.inner)
        delete_netns(self.inner)
        delete_netns(self.outside)
        return problems


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    need_assets()
    s = Setup(tmp_path_factory.mktemp("fipwake"))
    try:
        s.wire()
        s.daemon = start_fip_daemon(s.root, s.sock, s.inner, POOL, DAEMON_IF)
        s.daemon.cli("load", "-i", str(BUSYBOX_TAR), check=True)
        wait_pool_ready(s.daemon)
        s.daemon.out("swarm", "init")
        yield s
    finally:
        problems = s.close()
        assert not problems, "\n".join(problems)


def _suspended(daemon: Daemon, cid: str) -> bool:
    return bool(json.loads(daemon.out("inspect", cid))[0]["State"]["SteelcupSuspended"])


def _resumes(daemon: Daemon, cid: str) -> int:
    return daemon.log.read_text().count(
        f"container {cid[:12]}: resumed by a connection to its service")


@dataclass(frozen=True)
class Sleeper:
    """A 1-replica --auto-suspend service with a FIP attached, as the tests start it."""

    cid: str  # its replica's container
    fip: str
    replica: str  # the replica's address
    vip: str


def _sleeper(daemon: Daemon, name: str, *image_and_cmd: str) -> Sleeper:
    daemon.out("service", "create", "-d", "--name", name, "--checkpointable",
               "--auto-suspend", "3s", *image_and_cmd)
    wait_until(lambda: len(daemon.out("ps", "-q").split()) == 1, "the replica runs",
               timeout_s=120)
    [cid] = daemon.out("ps", "-q", "--no-trunc").split()
    fip = daemon.out("fip", "allocate").strip()
    daemon.out("fip", "attach", fip, name)
    replica = json.loads(daemon.out("inspect", cid))[0]["NetworkSettings"]["IPAddress"]
    spec = json.loads(daemon.out("service", "inspect", name))[0]
    return Sleeper(cid, fip, replica, spec["Endpoint"]["VirtualIPs"][0]["Addr"].split("/")[0])


def test_a_sleeping_service_wakes_on_a_connection_to_its_fip(setup: Setup) -> None:
    daemon = setup.daemon
    assert daemon is not None
    daemon.out("network", "create", "other")
    web = _sleeper(daemon, "web", IMG, "sh", "-c", SERVER)
    cid, fip, replica, vip = web.cid, web.fip, web.replica, web.vip
    tasks = daemon.out("service", "ps", "-q", "--no-trunc", "web").split()

    wait_until(lambda: _suspended(daemon, cid), "the idle replica suspended", timeout_s=180)
    assert qemus_of(cid) == 0
    # its FIP's tcp goes to the service's wake listener on its VIP
    wait_until(lambda: f"dnat ip to {vip}:" in setup.fips_chain(),
               "the FIP DNATed to the wake listener", timeout_s=30)
    assert replica not in setup.fips_chain()

    # The attack: a container on another network sends to the FIP (its tcp, to the port the
    # service serves); the pool is not reachable from a bridge, and neither is the service's
    # wake listener through it: nothing answers and nothing wakes.
    probe = daemon.cli("run", "--rm", "--network", "other", IMG, "wget", "-T", "5", "-qO-",
                       f"http://{fip}/", timeout=180)
    assert probe.returncode != 0 and PAGE.encode() not in probe.stdout
    assert _suspended(daemon, cid) and _resumes(daemon, cid) == 0

    # From outside, the request is held while the replica resumes, then answered.
    assert fetch_from(setup.outside, f"http://{fip}/") == PAGE
    assert not _suspended(daemon, cid) and qemus_of(cid) == 1
    assert _resumes(daemon, cid) == 1
    assert daemon.out("service", "ps", "-q", "--no-trunc", "web").split() == tasks
    # The FIP goes to the replica again, not to the listener.
    wait_until(lambda: f"dnat ip to {replica}" in setup.fips_chain(),
               "the FIP DNATed to the running replica", timeout_s=30)

    daemon.out("service", "rm", "web")
    wait_until(lambda: not daemon.out("ps", "-aq").split(), "the replica removed",
               timeout_s=60)
    daemon.out("network", "rm", "other")


def test_a_sleeping_service_wakes_on_a_datagram_to_its_fip(setup: Setup, tmp_path: Path) -> None:
    """The FIP's udp goes to the VIP's udp wake listener while the service sleeps: the
    datagrams from outside are held while the replica resumes, delivered in order, and the
    replies reach the client (from the FIP)."""
    daemon = setup.daemon
    assert daemon is not None
    udp_echo_image(daemon, tmp_path, ECHO_IMG, IMG)
    echo = _sleeper(daemon, "echo", ECHO_IMG, "/udp_echo", str(ECHO_PORT))
    cid, fip, replica, vip = echo.cid, echo.fip, echo.replica, echo.vip
    wait_until(lambda: "listening on" in daemon.out("logs", cid), "the echo up", 60)

    wait_until(lambda: _suspended(daemon, cid), "the idle replica suspended", timeout_s=180)
    wait_until(lambda: f"meta l4proto udp dnat ip to {vip}:" in setup.fips_chain(),
               "the FIP's udp DNATed to the wake listener", timeout_s=30)
    # The attack: a container on another network sends udp to the FIP; the FIP's DNAT is
    # not taken from a bridge, so it reaches neither the replica nor the wake listener.
    daemon.out("network", "create", "udpother")
    probe = daemon.cli("run", "--rm", "--network", "udpother", ECHO_IMG, "/udp_echo", "send",
                       fip, str(ECHO_PORT), "intruder", "5", timeout=180)
    assert probe.returncode != 0 and b"echo:" not in probe.stdout
    assert _suspended(daemon, cid) and _resumes(daemon, cid) == 0
    daemon.out("network", "rm", "udpother")
    assert udp_exchange(setup.outside, fip, ECHO_PORT, "f", 3) == ["echo:f0", "echo:f1",
                                                                    "echo:f2"]
    assert not _suspended(daemon, cid) and _resumes(daemon, cid) == 1
    wait_until(lambda: f"dnat ip to {replica}" in setup.fips_chain(),
               "the FIP DNATed to the running replica", timeout_s=30)

    daemon.out("service", "rm", "echo")
    wait_until(lambda: not daemon.out("ps", "-aq").split(), "the replica removed",
               timeout_s=60)
    daemon.out("fip", "release", fip)
