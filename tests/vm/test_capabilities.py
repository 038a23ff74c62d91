"""--cap-add, --cap-drop and --privileged reach the container's processes, as with docker.

Each container prints its own /proc/self/status capability lines and tries what a capability
allows: `chown` (CAP_CHOWN), `ip link set lo mtu` (CAP_NET_ADMIN).
"""

from __future__ import annotations

import json

import pytest

from steelcup.runtime.capabilities import ALL_CAPS, DEFAULT_CAPS, mask_of
from tests.vm.support import Daemon

pytestmark = pytest.mark.vm
IMG = "steelcup/busybox"
PROBE = ("grep Cap /proc/self/status; "
         "touch /dev/shm/f && chown 1:1 /dev/shm/f 2>/dev/null; echo chown=$?; "
         "ip link set lo mtu 1000 2>/dev/null; echo mtu=$?")
SYS_PTRACE = mask_of(["CAP_SYS_PTRACE"])
NET_ADMIN = mask_of(["CAP_NET_ADMIN"])
CHOWN = mask_of(["CAP_CHOWN"])


def _report(out: str) -> dict[str, int]:
    """`CapEff:\t00000000a80425fb` lines as numbers, `chown=1` as numbers."""
    found: dict[str, int] = {}
    for line in out.splitlines():
        if line.startswith("Cap"):
            key, value = line.split(":")
            found[key] = int(value.strip(), 16)
        elif "=" in line:
            key, value = line.split("=", 1)
            found[key] = int(value)
    return found


def _run(daemon: Daemon, *flags: str, script: str = PROBE) -> dict[str, int]:
    return _report(daemon.out("run", "--rm", *flags, IMG, "sh", "-c", script))


def test_the_default_set_and_what_cap_add_and_cap_drop_change(daemon: Daemon) -> None:
    default = _run(daemon)
    assert default["CapEff"] == default["CapPrm"] == default["CapBnd"] == DEFAULT_CAPS, default
    assert default["CapInh"] == default["CapAmb"] == 0
    assert default["chown"] == 0 and default["mtu"] != 0, default  # no NET_ADMIN by default

    tuned = _run(daemon, "--cap-add", "SYS_PTRACE", "--cap-add", "net_admin",
                 "--cap-drop", "CAP_CHOWN")
    want = (DEFAULT_CAPS | SYS_PTRACE | NET_ADMIN) & ~CHOWN
    assert tuned["CapEff"] & SYS_PTRACE, tuned  # bit 19
    assert tuned["CapEff"] == tuned["CapBnd"] == want, tuned
    assert tuned["chown"] != 0 and tuned["mtu"] == 0, tuned


def test_privileged_has_every_capability(daemon: Daemon) -> None:
    full = _run(daemon, "--privileged")
    assert full["CapEff"] == full["CapBnd"] == ALL_CAPS, full
    assert full["chown"] == 0 and full["mtu"] == 0, full


def test_a_non_root_user_has_the_set_only_as_bounding_set(daemon: Daemon) -> None:
    """Docker (moby 23+, runc): a non-root process gets what execve gives it, nothing effective;
    the set bounds what a setuid or file-capability binary could raise. The uid change must
    work even when the set has no CAP_SETUID (the init drops the rest after setuid)."""
    user = _run(daemon, "--user", "65534:65534", "--cap-drop", "ALL", "--cap-add", "NET_ADMIN",
                script="grep Cap /proc/self/status; echo uid=$(id -u)")
    assert user["uid"] == 65534, user
    assert user["CapEff"] == user["CapPrm"] == 0 and user["CapBnd"] == NET_ADMIN, user


def test_exec_gets_the_containers_set_or_every_one_with_privileged(daemon: Daemon) -> None:
    cid = daemon.out("run", "-d", "--cap-drop", "KILL", "--cap-add", "SYS_PTRACE", IMG,
                     "sleep", "300").strip()
    try:
        want = (DEFAULT_CAPS | SYS_PTRACE) & ~mask_of(["CAP_KILL"])
        plain = _report(daemon.out("exec", cid, "grep", "Cap", "/proc/self/status"))
        assert plain["CapEff"] == plain["CapBnd"] == want, plain
        full = _report(daemon.out("exec", "--privileged", cid, "grep", "Cap",
                                  "/proc/self/status"))
        assert full["CapEff"] == full["CapBnd"] == ALL_CAPS, full
        host = json.loads(daemon.out("inspect", cid))[0]["HostConfig"]
        assert (host["CapAdd"], host["CapDrop"], host["Privileged"]) == (
            ["SYS_PTRACE"], ["KILL"], False)
        # a restart keeps the set (it is in the container record)
        daemon.out("restart", "-t", "0", cid)
        again = _report(daemon.out("exec", cid, "grep", "Cap", "/proc/self/status"))
        assert again["CapEff"] == want, again
    finally:
        daemon.cli("rm", "-f", cid)


def test_an_unknown_capability_is_refused_at_create(daemon: Daemon) -> None:
    result = daemon.cli("create", "--cap-add", "NOT_A_CAP", IMG)
    assert result.returncode != 0
    assert b'invalid CapAdd: unknown capability: "CAP_NOT_A_CAP"' in result.stderr, result
