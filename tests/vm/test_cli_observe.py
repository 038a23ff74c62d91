"""steelcup top, port, stats and events against a real daemon and VM."""

from __future__ import annotations

import time

import pytest

from tests.vm.support import Daemon

pytestmark = pytest.mark.vm
IMG = "steelcup/busybox"


def test_top_port_stats_and_events(daemon: Daemon) -> None:
    since = f"{time.time() - 1:.3f}"
    cid = daemon.out("run", "-d", "--name", "watched", "-p", "127.0.0.1:18390:80", IMG,
                     "sleep", "600").strip()
    try:
        top = daemon.out("top", "watched").splitlines()
        assert top[0].split()[:2] == ["PID", "USER"] or "PID" in top[0]
        assert any("sleep 600" in line for line in top[1:]), top
        assert daemon.out("port", "watched") == "80/tcp -> 127.0.0.1:18390\n"
        assert daemon.out("port", "watched", "80") == "127.0.0.1:18390\n"
        missing = daemon.cli("port", "watched", "81")
        assert missing.returncode == 1 and b"No public port '81/tcp'" in missing.stderr
        stats = daemon.out("stats", "--no-stream", "watched").splitlines()
        assert stats[0].split()[:3] == ["CONTAINER", "ID", "NAME"]
        row = stats[1].split()
        assert row[:2] == [cid[:12], "watched"] and row[2].endswith("%")
        assert "MiB" in stats[1]
        events = daemon.out("events", "--since", since, "--until", f"{time.time():.3f}",
                            "--filter", "container=watched").splitlines()
        assert any(" container create " in e and "name=watched" in e for e in events), events
        assert any(" container start " in e for e in events), events
    finally:
        daemon.out("rm", "-f", cid)
