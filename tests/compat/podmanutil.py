"""podman pointed at steelcup-runtime: the tests' and the benchmark's way to drive it.

podman's storage, run dir and tmp dir live under `base` (overlay driver, podman's default: the
runtime's root is then an overlay mount, which the daemon takes apart into layers), with
the peer tool's settings (cgroupfs, explicit rlimits), and containers use `--network none`:
podman's own networks would touch the host's.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.vm.support import REPO, Daemon

IMG = "localhost/steelcup/busybox:latest"
PODMAN = shutil.which("podman") or "podman"


@dataclass
class Podman:
    daemon: Daemon
    base: Path
    runtime: Path  # the wrapper podman runs as its OCI runtime
    runtime_root: Path
    # podman run in this network namespace of the test's (its networks and firewall rules
    # then live there, not on the host): tests/compat/test_podman_net.py
    netns: str | None = None

    def argv(self, *args: str) -> list[str]:
        # nsenter, not `ip netns exec`: podman's netns files must be in the host's mounts,
        # where the daemon sees them
        prefix = ["nsenter", f"--net=/run/netns/{self.netns}"] if self.netns else []
        return [*prefix, PODMAN, "--root", str(self.base / "storage"), "--runroot",
                str(self.base / "run"), "--tmpdir", str(self.base / "libpod"),
                "--storage-driver", "overlay", "--cgroup-manager", "cgroupfs",
                "--events-backend", "file", "--runtime", str(self.runtime), *args]

    def run(self, *args: str, input: bytes | None = None, timeout: float = 180,
            check: bool = False) -> subprocess.CompletedProcess[bytes]:
        result = subprocess.run(self.argv(*args), input=input, capture_output=True,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(
                f"podman {' '.join(args)} -> {result.returncode}\n"
                f"stdout: {result.stdout[-2000:]!r}\nstderr: {result.stderr[-2000:]!r}\n"
                f"daemon log tail:\n{self.daemon.log.read_text()[-3000:]}")
        return result

    def container(self, *args: str, **kw: object) -> subprocess.CompletedProcess[bytes]:
        """`podman run` with the peer tool's settings and no network."""
        return self.run("run", "--network", "none", "--ulimit", "nofile=1024:1024",
                        "--ulimit", "nproc=1024:1024", *args, **kw)  # type: ignore[arg-type]

    def oci(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        """steelcup-runtime itself, as podman calls it."""
        return subprocess.run([str(self.runtime), *args], capture_output=True, timeout=60)

    def oci_json(self, *args: str) -> object:
        result = self.oci(*args)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


def write_runtime_wrapper(path: Path, socket: Path, root: Path) -> Path:
    """An executable that runs this worktree's steelcup-runtime against the test's daemon."""
    path.write_text(
        "#!/bin/sh\n"
        f"PYTHONPATH={REPO / 'src'} exec {sys.executable} -m steelcup.oci "
        f"--host {socket} --root {root} \"$@\"\n")
    path.chmod(0o755)
    return path


def keepers_of(root: Path) -> list[int]:
    """Keeper processes serving the runtime state root `root`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"_keeper" in argv and str(root).encode() in argv:
            found.append(int(entry.name))
    return found
