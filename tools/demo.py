"""`make demo`: load the busybox image and run a container in its own VM, showing its output.

Runs against a private daemon root so it never disturbs a daemon already on the machine; the
CLI starts that daemon itself (the embedded default), and the demo stops it at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STEELCUP = [sys.executable, "-m", "steelcup"]


def say(text: str) -> None:
    print(f"\n\033[1m$ {text}\033[0m", flush=True)


def cli(env: dict[str, str], *args: str, check: bool = True) -> int:
    say("steelcup " + " ".join(args))
    rc = subprocess.run([*STEELCUP, *args], env=env).returncode
    if check and rc != 0:
        raise SystemExit(f"demo: `steelcup {' '.join(args)}` failed with exit code {rc}")
    return rc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, default=Path("/tmp/steelcup-demo"))
    args = parser.parse_args()
    root: Path = args.root
    socket_path = root / "steelcup.sock"
    env = dict(os.environ, STEELCUP_HOST=f"unix://{socket_path}", STEELCUP_ROOT=str(root))
    try:
        cli(env, "load", "-i", str(REPO / "build/images/busybox.tar"))
        cli(env, "images")
        cli(env, "run", "--rm", "steelcup/busybox", "sh", "-c",
            'echo "hello from a VM: kernel $(uname -r), host name $(hostname)"; '
            'echo "host kernel is ' + os.uname().release + '"')
        rc = cli(env, "run", "--rm", "-e", "A=1", "-w", "/tmp", "steelcup/busybox", "sh", "-c",
                 "echo A=$A; pwd; exit 7", check=False)
        print(f"(exit code {rc})")
        subprocess.run([*STEELCUP, "rm", "-f", "demo-sleeper"], env=env, capture_output=True)
        cli(env, "run", "-d", "--name", "demo-sleeper", "steelcup/busybox", "sleep", "300")
        cli(env, "exec", "demo-sleeper", "cat", "/proc/version")
        cli(env, "ps")
        cli(env, "rm", "-f", "demo-sleeper")
        cli(env, "pool", "ls")  # the template the VMs were cloned from, the warm cache
    finally:
        _stop_daemon(root)
    return 0


def _stop_daemon(root: Path) -> None:
    lock = root / "daemon.lock"
    try:
        pid = int(lock.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    print(f"demo: daemon {pid} did not stop; log in {root}/daemon.log", file=sys.stderr)
    shutil.copy(root / "daemon.log", "/dev/stderr") if (root / "daemon.log").exists() else None


if __name__ == "__main__":
    raise SystemExit(main())
