"""Volume snapshots with a real guest writing to the volume (issue 22)."""

from __future__ import annotations

import pytest

from tests.vm.support import Daemon, wait_until

pytestmark = pytest.mark.vm
IMG = "steelcup/busybox"
WRITER = ("i=0; while true; do i=$((i+1)); echo $i > /data/n.tmp; mv /data/n.tmp /data/n; "
          "done")


def test_a_snapshot_taken_while_a_guest_writes_restores_into_a_new_volume(
        daemon: Daemon) -> None:
    cid = daemon.out("run", "-d", "-v", "snapvol:/data", IMG, "sh", "-c", WRITER).strip()
    try:
        wait_until(lambda: daemon.cli("exec", cid, "cat", "/data/n").returncode == 0,
                   "the guest writes", timeout_s=60)
        assert daemon.out("snapshot", "create", "-v", "snapvol", "--name", "snap1").strip() \
            == "snap1"
        assert "snapvol" in daemon.out("snapshot", "ls")
        assert daemon.out("volume", "create", "--snapshot", "snap1", "restored").strip() \
            == "restored"
        restored = int(daemon.out("run", "--rm", "-v", "restored:/r", IMG, "cat", "/r/n"))
        later = int(daemon.out("exec", cid, "cat", "/data/n"))
        assert 0 < restored <= later  # a whole number the guest wrote: no torn state
    finally:
        daemon.cli("rm", "-f", cid)
    refused = daemon.cli("volume", "rm", "snapvol")
    assert refused.returncode != 0 and b"has snapshots" in refused.stderr
    daemon.out("snapshot", "rm", "snap1")
    daemon.out("volume", "rm", "snapvol", "restored")
