"""Unit tests never touch the kernel state of the machine they run on: the network layer's
tests use dry hosts (tests/unit/net/dry.py) or namespaces of their own. Checked for the
host's nftables over the whole session (root only; nothing to compare without `nft`)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest


def _host_tables() -> set[str]:
    listed = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True,
                            check=False)
    return set(listed.stdout.splitlines()) if listed.returncode == 0 else set()


@pytest.fixture(scope="session", autouse=True)
def host_nftables_untouched() -> Iterator[None]:
    if os.geteuid() != 0 or shutil.which("nft") is None:
        yield
        return
    before = _host_tables()
    yield
    added = _host_tables() - before
    assert not added, f"unit tests left nftables tables on the host: {sorted(added)}"
