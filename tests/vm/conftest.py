"""VM-tier fixtures: a real daemon (real QEMU guests under TCG here) and the steelcup CLI.

One daemon serves the whole session (its VMs are per container, so sharing it does not weaken
the tests); at teardown it is stopped and no QEMU process of ours may remain.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from tests.vm.support import (
    BUSYBOX_TAR,
    Daemon,
    delete_netns,
    need_assets,
    new_netns,
    our_qemus,
    start_daemon,
    stop_daemon,
)


@pytest.fixture(scope="session")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    need_assets()
    base = tmp_path_factory.mktemp("sc")
    netns = new_netns("main")
    d = start_daemon(base / "root", base / "run" / "steelcup.sock", netns)
    try:
        d.cli("load", "-i", str(BUSYBOX_TAR), check=True)
        yield d
    finally:
        stop_daemon(d)
        problems = []
        leftovers = our_qemus(str(base))
        for line in leftovers:
            os.kill(int(line.split(":")[0]), signal.SIGKILL)
        if leftovers:
            problems.append("QEMU processes left behind:\n" + "\n".join(leftovers))
        with open("/proc/mounts") as f:
            mounts = [line for line in f.read().splitlines() if str(base) in line]
        if mounts:
            problems.append("mounts left behind:\n" + "\n".join(mounts))
        delete_netns(netns)
        assert not problems, "after daemon shutdown: " + "\n".join(problems)
