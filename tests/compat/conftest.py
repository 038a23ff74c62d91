"""Compat-tier fixtures: one real steelcup daemon per test module, driven by real clients.

`dockerd` starts the daemon (tests/vm/support.py), loads the busybox image through the docker
CLI and, at teardown, stops it and fails if any QEMU of ours is left behind.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
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
)

DOCKER = shutil.which("docker", path="/usr/local/bin") or shutil.which("docker") or "docker"
IMG = "steelcup/busybox"


class Docker:
    """The real docker CLI pointed at one steelcup daemon."""

    def __init__(self, daemon: Daemon, home: Path) -> None:
        self.daemon = daemon
        self.host = f"unix://{daemon.socket}"
        self.env = dict(os.environ, DOCKER_HOST=self.host, DOCKER_CONFIG=str(home),
                        DOCKER_CLI_HINTS="false")
        self.env.pop("DOCKER_API_VERSION", None)
        self.env.pop("DOCKER_CONTEXT", None)

    def run(self, *args: str, input: bytes | None = None, timeout: float = 180,
            check: bool = False) -> subprocess.CompletedProcess[bytes]:
        result = subprocess.run([DOCKER, *args], input=input, capture_output=True,
                                timeout=timeout, env=self.env)
        if check and result.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} -> {result.returncode}\n"
                f"stdout: {result.stdout[-2000:]!r}\nstderr: {result.stderr[-2000:]!r}\n"
                f"daemon log tail:\n{self.daemon.log.read_text()[-3000:]}")
        return result

    def out(self, *args: str, input: bytes | None = None, timeout: float = 180) -> str:
        return self.run(*args, input=input, timeout=timeout, check=True).stdout.decode()


@pytest.fixture(scope="module")
def dockerd(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Docker]:
    """A module sets `DAEMON_NETWORKING = True` to get a daemon with networks, which then runs
    in a namespace of its own (so it cannot reach registries on the host's loopback)."""
    need_assets()
    base = tmp_path_factory.mktemp("compat")
    netns = None
    if getattr(request.module, "DAEMON_NETWORKING", False):
        netns = new_netns(f"c{os.urandom(3).hex()}")
    daemon = start_daemon(base / "root", base / "run" / "steelcup.sock", netns)
    try:
        docker = Docker(daemon, base / "docker-config")
        docker.run("load", "-i", str(BUSYBOX_TAR), check=True)
        yield docker
    finally:
        stop_daemon(daemon)
        problems = leftovers_of(base / "root", netns=netns)
        if netns is not None:
            delete_netns(netns)
        assert not problems, "after daemon shutdown: " + "\n".join(problems)
