"""Start a local daemon in the background when the CLI finds no one listening."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from steelcup.cli.client import ApiClient
from steelcup.errors import DaemonUnavailable

START_DEADLINE_S = 30.0


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def start_daemon(socket_path: str, root_dir: str, *, deadline_s: float = START_DEADLINE_S,
                 extra_args: tuple[str, ...] = ()) -> int:
    """Spawn `python -m steelcup daemon` detached (with `extra_args`); return its pid once
    /_ping answers."""
    root = Path(root_dir)
    log_path = root / "daemon.log"
    try:
        root.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "ab")  # handed to the child
    except OSError as exc:
        raise DaemonUnavailable(
            f"no daemon at {socket_path} and cannot start one: {exc}. Run as root, or pass "
            "--root DIR and -H SOCKET to places you can write, or start `steelcup daemon`."
        ) from exc
    argv = [sys.executable, "-m", "steelcup", "daemon", "--root", str(root)]
    argv += ["--socket", str(socket_path), *extra_args]
    try:
        with log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
    except OSError as exc:
        raise DaemonUnavailable(f"cannot start a daemon ({argv[0]}): {exc}") from exc
    print(
        f"steelcup: no daemon at {socket_path}; started a local one "
        f"(pid {proc.pid}, log {log_path})",
        file=sys.stderr,
    )
    probe = ApiClient(socket_path, timeout_s=5.0)
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            raise DaemonUnavailable(
                f"the daemon started for {socket_path} exited with code {code}; "
                f"see {log_path}:\n{_tail(log_path)}"
            )
        if probe.ping():
            return proc.pid
        time.sleep(0.05)  # polling the socket: the daemon has no other way to tell us
    raise DaemonUnavailable(
        f"the daemon started for {socket_path} (pid {proc.pid}) did not answer within "
        f"{deadline_s:.0f} s; see {log_path}:\n{_tail(log_path)}"
    )
