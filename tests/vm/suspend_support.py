"""What the checkpoint and suspend VM tests read of a container: its ticks (a shell loop
counting in memory and logging `tick N`), its State, the QEMUs of its restored VMs; the
docker CLI pointed at a test's daemon; and the UDP wake tests' echo image and client."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.vm.support import Daemon, in_netns, static_helper


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


# Sends PREFIX0..PREFIX{COUNT-1} from one socket, then prints the replies as JSON: up to
# WANT of them, the first within 90 s (a resume under TCG), the others within 5 s each.
_UDP_CLIENT = """
import json, socket, sys
host, port, want, prefix, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \\
    sys.argv[4], int(sys.argv[5])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(count):
    s.sendto(f"{prefix}{i}".encode(), (host, port))
replies = []
s.settimeout(90)
try:
    while len(replies) < want:
        replies.append(s.recv(4096).decode())
        s.settimeout(5)
except socket.timeout:
    pass
print(json.dumps(replies))
"""


def udp_exchange(netns: str, host: str, port: int, prefix: str, count: int,
                 want: int | None = None) -> list[str]:
    """From `netns`, `count` datagrams to host:port from one socket; the replies (up to
    `want`, all by default), in the order they came."""
    done = in_netns(netns, "python3", "-c", _UDP_CLIENT, host, str(port),
                    str(count if want is None else want), prefix, str(count), timeout=180)
    assert done.returncode == 0, done.stderr.decode()
    replies: list[str] = json.loads(done.stdout)
    return replies


def udp_echo_image(daemon: Daemon, tmp: Path, image: str, base: str) -> None:
    """`image`: `base` with tests/vm/helpers/udp_echo.c's program at /udp_echo (a service's
    replicas cannot be `cp`ed into before they start)."""
    echo = static_helper("udp_echo", tmp)
    cid = daemon.out("create", base, "true").strip()
    daemon.out("cp", str(echo), f"{cid}:/udp_echo")
    daemon.out("commit", cid, image)
    daemon.out("rm", cid)


# One socket for the session's life: each line of stdin is sent as a datagram to HOST:PORT,
# and the reply (within 90 s: a resume under TCG) or "timeout" is printed as a line.
_UDP_SESSION = """
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(90)
for line in sys.stdin:
    s.sendto(line.strip().encode(), (host, port))
    try:
        print(s.recv(4096).decode(), flush=True)
    except socket.timeout:
        print("timeout", flush=True)
"""


class UdpSession:
    """A UDP client in `netns` keeping one socket (one conntrack flow) across `ask`s."""

    def __init__(self, netns: str, host: str, port: int) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, "python3", "-c", _UDP_SESSION, host, str(port)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, payload: str) -> str:
        """The reply to `payload`, or "timeout"."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(payload + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
