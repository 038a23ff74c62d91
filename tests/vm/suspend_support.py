"""What the checkpoint and suspend VM tests read of a container: its ticks (a shell loop
counting in memory and logging `tick N`), its State, the QEMUs of its restored VMs; and the
docker CLI pointed at a test's daemon."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.vm.support import Daemon


def ticks_of(daemon: Daemon, cid: str) -> list[int]:
    return [int(m) for m in re.findall(r"^tick (\d+)$", daemon.out("logs", cid), re.M)]


def state_of(daemon: Daemon, cid: str) -> dict[str, object]:
    found: dict[str, object] = json.loads(daemon.out("inspect", cid))[0]["State"]
    return found


def qemus_of(cid: str) -> int:
    """QEMU processes of the container's restored VMs: their state directory (in the command
    line, or the cgroup named after it) starts with its short id. A VM of the warm cache it
    started in was named before it existed."""
    found = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cgroup = (entry / "cgroup").read_text()
        except OSError:
            continue
        if "qemu-system" in cmdline and (f"/{cid[:12]}-" in cmdline or f"/{cid[:12]}-" in cgroup):
            found += 1
    return found


def docker_cli_for(sock: Path, home: Path) -> Callable[..., str]:
    """The real docker CLI on the daemon at `sock`: its stdout, asserting success."""
    env = {"DOCKER_HOST": f"unix://{sock}", "PATH": "/usr/local/bin:/usr/bin:/bin",
           "HOME": str(home)}

    def docker_cli(*args: str) -> str:
        result = subprocess.run(["docker", *args], capture_output=True, env=env, timeout=180)
        assert result.returncode == 0, result.stderr.decode()
        return result.stdout.decode()
    return docker_cli
