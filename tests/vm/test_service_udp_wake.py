"""A sleeping UDP service woken by a datagram, with real VMs (docs/services.md,
"Auto-suspend"): a 1-replica echo service (tests/vm/helpers/udp_echo.c in an image of the
test's own) with --auto-suspend and a published udp port. Asleep, a datagram from a container
on another network to its virtual IP gets nothing and wakes nothing; one from a container on
its own network is held while the replica resumes, delivered, and the reply reaches the
sender; asleep again, datagrams to the published port are delivered in order with their
replies; the service keeps its one task."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.vm.support import (
    BUSYBOX_TAR,
    Daemon,
    delete_netns,
    leftovers_of,
    need_assets,
    new_netns,
    start_daemon,
    stop_daemon,
    wait_pool_ready,
    wait_until,
)
from tests.vm.suspend_support import qemus_of, udp_echo_image, udp_exchange

pytestmark = pytest.mark.vm
IMG = "steelcup/busybox"
ECHO_IMG = "udpecho:1"
PORT = 18397
SERVICE_PORT = 5353

def _suspended(daemon: Daemon, cid: str) -> bool:
    return bool(json.loads(daemon.out("inspect", cid))[0]["State"]["SteelcupSuspended"])


def _asleep(daemon: Daemon, cid: str, times: int, vips: int) -> None:
    """The replica suspended for the `times`th time, its QEMU gone, and the waker listening
    on its `vips` VIPs (from the start of the suspend: docs/services.md)."""
    wait_until(lambda: daemon.log.read_text().count(
        "service echo: every replica is suspended") >= times * vips
        and _suspended(daemon, cid) and qemus_of(cid) == 0,
        "the idle replica suspended and the VIP's wake listener up", timeout_s=180)


def _received(daemon: Daemon, cid: str) -> list[str]:
    return re.findall(r"^got (\S+) from ", daemon.out("logs", cid), re.M)


def _resumes(daemon: Daemon, cid: str) -> int:
    return daemon.log.read_text().count(
        f"container {cid[:12]}: resumed by a connection to its service")


def _send(daemon: Daemon, network: str, vip: str, payload: str,
          timeout_s: int) -> subprocess.CompletedProcess[bytes]:
    """From a new container on `network`: the echo's reply to `payload`, sent to the VIP."""
    return daemon.cli("run", "--rm", "--network", network, ECHO_IMG, "/udp_echo", "send", vip,
                      str(SERVICE_PORT), payload, str(timeout_s), timeout=240)


def test_a_datagram_wakes_a_sleeping_udp_service(tmp_path: Path) -> None:
    need_assets()
    netns = new_netns("svcudp")
    root, sock = tmp_path / "root", tmp_path / "run" / "steelcup.sock"
    daemon = start_daemon(root, sock, netns)
    try:
        daemon.cli("load", "-i", str(BUSYBOX_TAR), check=True)
        udp_echo_image(daemon, tmp_path, ECHO_IMG, IMG)
        wait_pool_ready(daemon)
        daemon.out("swarm", "init")
        daemon.out("network", "create", "other")
        daemon.out("service", "create", "-d", "--name", "echo", "--checkpointable",
                   "--auto-suspend", "3s", "-p", f"{PORT}:{SERVICE_PORT}/udp", ECHO_IMG,
                   "/udp_echo", str(SERVICE_PORT))
        wait_until(lambda: len(daemon.out("ps", "-q").split()) == 1, "the replica runs",
                   timeout_s=120)
        [cid] = daemon.out("ps", "-q", "--no-trunc").split()
        wait_until(lambda: "listening on" in daemon.out("logs", cid), "the echo up", 60)
        tasks = daemon.out("service", "ps", "-q", "--no-trunc", "echo").split()
        spec = json.loads(daemon.out("service", "inspect", "echo"))[0]
        vip = spec["Endpoint"]["VirtualIPs"][0]["Addr"].split("/")[0]
        network = spec["Endpoint"]["VirtualIPs"][0]["NetworkID"]
        vips = len([v for v in spec["Endpoint"]["VirtualIPs"] if v.get("Addr")])

        _asleep(daemon, cid, 1, vips)
        # Another network's container cannot reach the VIP, nor wake the service.
        probe = _send(daemon, "other", vip, "intruder", 5)
        assert probe.returncode != 0 and b"echo:" not in probe.stdout
        assert _suspended(daemon, cid) and _resumes(daemon, cid) == 0

        # One on its network: held while the replica resumes, delivered, answered.
        sent = _send(daemon, network, vip, "hello", 90)
        assert sent.returncode == 0, sent.stderr.decode()
        assert sent.stdout.decode().strip() == "echo:hello"
        assert not _suspended(daemon, cid) and _resumes(daemon, cid) == 1
        wait_until(lambda: "hello" in _received(daemon, cid), "the datagram in the log", 30)
        assert "intruder" not in _received(daemon, cid)

        # Asleep again: datagrams to the published port, on the host's loopback.
        _asleep(daemon, cid, 2, vips)
        assert udp_exchange(netns, "127.0.0.1", PORT, "p", 3) == ["echo:p0", "echo:p1",
                                                                  "echo:p2"]
        assert _resumes(daemon, cid) == 2
        assert daemon.out("service", "ps", "-q", "--no-trunc", "echo").split() == tasks

        daemon.out("service", "rm", "echo")
        wait_until(lambda: not daemon.out("ps", "-aq").split(), "the replica removed", 60)
        daemon.out("network", "rm", "other")
    finally:
        stop_daemon(daemon)
        delete_netns(netns)
    assert leftovers_of(root, netns=netns) == []
