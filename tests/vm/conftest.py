"""VM-tier fixtures: a real daemon (real QEMU guests under TCG here) and the steelcup CLI.

One daemon serves the whole session (its VMs are per container, so sharing it does not weaken
the tests); at teardown it is stopped and no QEMU process of ours may remain.
"""

from __future__ import annotations

from collections.abc import Iterator

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
        problems = leftovers_of(base / "root", netns=netns)
        delete_netns(netns)
        assert not problems, "after daemon shutdown: " + "\n".join(problems)
