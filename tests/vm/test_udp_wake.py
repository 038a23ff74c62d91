"""Auto-suspend with a UDP service and real VMs (docs/checkpoints.md, "Auto-suspend"): a
datagram to a suspended container's published UDP port resumes it, reaches the program
inside, in order with those sent meanwhile, and its replies reach the sender; on the host's
loopback (the port keeper's proxy after the wake) and on another local address (DNAT); a
flood wakes it once and the daemon runs on."""

from __future__ import annotations

import json
import re
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
    static_helper,
    stop_daemon,
    wait_pool_ready,
    wait_until,
)
from tests.vm.suspend_support import UdpSession, qemus_of, state_of, udp_exchange

pytestmark = pytest.mark.vm
IMG = "steelcup/busybox"
PORT = 18353
SERVICE_PORT = 5353

def _received(daemon: Daemon, cid: str, prefix: str) -> list[str]:
    """The datagrams with `prefix` the program in the container got, in order."""
    return re.findall(rf"^got ({prefix}\d+) from ", daemon.out("logs", cid), re.M)


def _logged(daemon: Daemon, cid: str, prefix: str, want: list[str]) -> None:
    """The program logged `want`, in this order (its log may trail its replies)."""
    wait_until(lambda: len(_received(daemon, cid, prefix)) >= len(want),
               f"{prefix} datagrams in the logs", timeout_s=30)
    assert _received(daemon, cid, prefix) == want


def _resumes(daemon: Daemon, cid: str) -> int:
    return daemon.log.read_text().count(f"container {cid[:12]}: resumed by a connection")


def _asleep(daemon: Daemon, cid: str, times: int) -> None:
    """Suspended for the `times`th time (its wake proxies listen from the start of the
    suspend: docs/checkpoints.md), its QEMU gone."""
    wait_until(lambda: daemon.log.read_text().count(
        f"container {cid[:12]}: suspended after") >= times,
        "the idle container suspended and its ports listening", timeout_s=120)
    assert state_of(daemon, cid)["SteelcupSuspended"] is True
    assert qemus_of(cid) == 0


def _suspends(daemon: Daemon, cid: str) -> int:
    return daemon.log.read_text().count(f"container {cid[:12]}: suspended after")


def _dnated_session(daemon: Daemon, cid: str, netns: str, host: str) -> UdpSession:
    """A client whose first datagram the running container answered through DNAT (one that
    came while it slept woke it through the wake proxy instead: then a new client)."""
    for _ in range(3):
        if state_of(daemon, cid)["SteelcupSuspended"]:
            udp_exchange(netns, "127.0.0.1", PORT, "wake", 1)
        resumes = _resumes(daemon, cid)
        session = UdpSession(netns, host, PORT)
        if session.ask("s0") == "echo:s0" and _resumes(daemon, cid) == resumes:
            return session
        session.close()
    raise AssertionError("no datagram reached the container awake in 3 tries")


def test_a_datagram_wakes_a_suspended_udp_service(tmp_path: Path) -> None:
    need_assets()
    echo = static_helper("udp_echo", tmp_path)
    netns = new_netns("udpwake")
    root, sock = tmp_path / "root", tmp_path / "run" / "steelcup.sock"
    daemon = start_daemon(root, sock, netns)
    try:
        daemon.cli("load", "-i", str(BUSYBOX_TAR), check=True)
        wait_pool_ready(daemon)
        cid = daemon.out("create", "--checkpointable", "--auto-suspend", "3s", "-p",
                         f"{PORT}:{SERVICE_PORT}/udp", IMG, "/udp_echo",
                         str(SERVICE_PORT)).strip()
        daemon.out("cp", str(echo), f"{cid}:/udp_echo")
        daemon.out("start", cid)
        wait_until(lambda: "listening on" in daemon.out("logs", cid), "the service up",
                   timeout_s=60)
        gateway = json.loads(daemon.out("inspect", cid))[0]["NetworkSettings"]["Gateway"]
        # Running: the port is served as usual.
        assert udp_exchange(netns, "127.0.0.1", PORT, "run", 1, 1) == ["echo:run0"]

        # Suspended: the first datagram wakes it; those sent meanwhile are held, then all
        # are delivered in order and each reply reaches the sender.
        _asleep(daemon, cid, 1)
        assert udp_exchange(netns, "127.0.0.1", PORT, "lo", 3, 3) == ["echo:lo0", "echo:lo1",
                                                             "echo:lo2"]
        _logged(daemon, cid, "lo", ["lo0", "lo1", "lo2"])
        assert state_of(daemon, cid)["SteelcupSuspended"] is False
        assert _resumes(daemon, cid) == 1

        # Idle again: asleep, and woken on another of the host's addresses, the one DNAT
        # serves once it runs.
        _asleep(daemon, cid, 2)
        assert udp_exchange(netns, gateway, PORT, "gw", 2, 2) == ["echo:gw0", "echo:gw1"]
        _logged(daemon, cid, "gw", ["gw0", "gw1"])
        assert _resumes(daemon, cid) == 2

        # A client whose flow was DNATed to the running container: suspended, its next
        # datagram (same socket, same conntrack flow) wakes it too, not lost on the way to
        # the VM that is gone (the suspend had conntrack forget the container's udp flows).
        session = _dnated_session(daemon, cid, netns, gateway)
        try:
            _asleep(daemon, cid, _suspends(daemon, cid) + 1)
            resumes = _resumes(daemon, cid)
            assert session.ask("s1") == "echo:s1"
        finally:
            session.close()
        assert _resumes(daemon, cid) == resumes + 1

        # A flood while it sleeps: one resume, what was held delivered in order, the rest
        # dropped; the daemon answers on.
        _asleep(daemon, cid, _suspends(daemon, cid) + 1)
        resumes = _resumes(daemon, cid)
        replies = udp_exchange(netns, "127.0.0.1", PORT, "flood", 3000, 3000)
        got = [int(r.removeprefix("echo:flood")) for r in replies]
        assert got and got[0] == 0 and got == sorted(got) and len(got) <= 256, got
        assert _resumes(daemon, cid) == resumes + 1  # (it may be asleep again: 3 s idle)
        assert daemon.proc.poll() is None
        assert udp_exchange(netns, "127.0.0.1", PORT, "after", 1, 1) == ["echo:after0"]
        daemon.out("rm", "-f", cid)
    finally:
        stop_daemon(daemon)
        delete_netns(netns)
    assert leftovers_of(root, netns=netns) == []
