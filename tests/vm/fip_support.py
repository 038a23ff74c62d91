"""What the floating IP VM tests share: an "outside" network namespace joined to the daemon's
by a veth pair (the daemon's side `HOST_IP`/24, the outside's `OUTSIDE_IP`/24), a daemon
serving a FIP pool on its side of it, and one HTTP GET from outside."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.vm.support import Daemon, in_netns, start_daemon

OUTSIDE_IP = "198.51.100.1"
HOST_IP = "198.51.100.2"


def wire_outside(inner: str, outside: str, daemon_if: str, outside_if: str) -> None:
    """The veth pair between the daemon's namespace `inner` and `outside`, addressed and up."""
    ip = ["ip", "-n", inner]
    subprocess.run([*ip, "link", "add", daemon_if, "type", "veth", "peer", "name",
                    outside_if, "netns", outside], check=True)
    subprocess.run([*ip, "addr", "add", f"{HOST_IP}/24", "dev", daemon_if], check=True)
    subprocess.run([*ip, "link", "set", daemon_if, "up"], check=True)
    out = ["ip", "-n", outside]
    subprocess.run([*out, "addr", "add", f"{OUTSIDE_IP}/24", "dev", outside_if], check=True)
    subprocess.run([*out, "link", "set", outside_if, "up"], check=True)


def start_fip_daemon(root: Path, sock: Path, inner: str, pool: str, daemon_if: str) -> Daemon:
    """A daemon in `inner` whose floating IPs come from `pool`, answered on `daemon_if`."""
    return start_daemon(root, sock, inner, extra_args=("--fip-pool", pool, "--fip-interface",
                                                       daemon_if))


def fetch_from(netns: str, url: str, timeout_s: float = 90) -> str:
    """One HTTP GET from `netns` (a resume under TCG takes seconds: held that long); the body,
    asserting success."""
    probe = ("import urllib.request\n"
             f"print(urllib.request.urlopen('{url}', timeout={timeout_s}).read().decode(), "
             "end='')\n")
    run = in_netns(netns, "python3", "-c", probe, timeout=timeout_s + 30)
    assert run.returncode == 0, run.stderr.decode()
    return run.stdout.decode()
