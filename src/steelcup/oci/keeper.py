"""The keeper: the host process steelcup-runtime reports as a container's (or an exec's) pid.

It attaches to the container through the daemon before `start` (so no output is lost), relays
its stdio (the engine's pipes, or a pty's slave with --console-socket), forwards the signals it
gets, and exits with the process's exit status once it ends: the engine reaps it for that.
A daemon restart (live restore keeps the VM running) does not end it: it waits for the daemon
to come back and attaches again with the log replayed, dropping of each stream as many bytes
as it already relayed, so what the container printed meanwhile arrives too, once.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import termios
import threading
import time
from collections.abc import Callable

from steelcup.cli.attach import pump
from steelcup.cli.client import ApiClient, HijackedSocket, path_quote
from steelcup.errors import NotFound, SteelcupError
from steelcup.stdcopy import STDERR, STDOUT

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2)
EXEC_EXIT_DEADLINE_S = 30.0
RESIZE_RETRY_S = 10.0
DAEMON_BACK_S = 120.0  # how long a restarting daemon may take to answer again
EXIT_REMOVED = 128 + signal.SIGKILL  # the container was removed under it (delete --force)
EXIT_DAEMON_LOST = 255  # the daemon did not come back


def _window(fd: int) -> tuple[int, int] | None:
    try:
        packed = fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)
    except OSError:
        return None
    rows, cols = int.from_bytes(packed[0:2], "little"), int.from_bytes(packed[2:4], "little")
    return (rows, cols) if rows and cols else None


class Relayed:
    """How many bytes of each stream the keeper wrote out, and how many of a replay of the
    log it still drops (what it wrote before the daemon went away)."""

    def __init__(self) -> None:
        self.written = {STDOUT: 0, STDERR: 0}
        self.skip = {STDOUT: 0, STDERR: 0}

    def replaying(self) -> None:
        """The next bytes are the log from the run's start: drop what was written."""
        self.skip = dict(self.written)

    def take(self, stream: int, data: bytes) -> bytes:
        drop = min(self.skip.get(stream, 0), len(data))
        if drop:
            self.skip[stream] -= drop
            data = data[drop:]
        self.written[stream] = self.written.get(stream, 0) + len(data)
        return data


class Keeper:
    """One attached process: a container's main process or one exec."""

    def __init__(self, client: ApiClient, container: str, exec_id: str = "",
                 tty: bool = False) -> None:
        self.client = client
        self.container = container
        self.exec_id = exec_id
        self.tty = tty
        self.relayed = Relayed()

    def attach(self, replay: bool = False, stream: bool = True) -> HijackedSocket:
        """The process's stream; with `replay` (a container's) the log first, from which
        `relayed` drops what was already written, and without `stream` only that."""
        if self.exec_id:
            return self.client.hijack("POST", f"/exec/{self.exec_id}/start",
                                      json_body={"Detach": False, "Tty": self.tty})
        query = {"stream": stream, "stdin": stream, "stdout": True, "stderr": True}
        if replay:
            query["logs"] = True
            self.relayed.replaying()
        return self.client.hijack("POST", f"/containers/{path_quote(self.container)}/attach",
                                  query)

    def exit_code(self) -> int:
        if not self.exec_id:
            result = self.client.post_json(f"/containers/{path_quote(self.container)}/wait")
            return int(result.get("StatusCode", 255)) if isinstance(result, dict) else 255
        deadline = time.monotonic() + EXEC_EXIT_DEADLINE_S
        while True:  # the stream ends as the exec ends; its record follows at once
            info = self.client.get_json(f"/exec/{self.exec_id}/json")
            if not info.get("Running") and info.get("ExitCode") is not None:
                return int(info["ExitCode"])
            if time.monotonic() > deadline:
                return 255
            time.sleep(0.05)

    def forward(self, signo: int) -> None:
        """A signal sent to the keeper goes to the container's process."""
        if self.exec_id:
            return  # the API has no signal for an exec; the keeper just keeps relaying
        try:
            self.client.post(f"/containers/{path_quote(self.container)}/kill",
                             {"signal": str(signo)})
        except SteelcupError:
            pass  # not running (any more): nothing to forward to

    def resize(self, fd: int) -> bool:
        size = _window(fd)
        if size is None:
            return True
        path = (f"/exec/{self.exec_id}/resize" if self.exec_id
                else f"/containers/{path_quote(self.container)}/resize")
        try:
            self.client.post(path, {"h": size[0], "w": size[1]})
            return True
        except SteelcupError:
            return False  # not started yet: retried

    def _resize_soon(self, fd: int) -> None:
        def retry() -> None:
            deadline = time.monotonic() + RESIZE_RETRY_S
            while not self.resize(fd) and time.monotonic() < deadline:
                time.sleep(0.2)
        threading.Thread(target=retry, daemon=True).start()

    def _run_started(self) -> str | None:
        """The start time of the container's current run; None if it does not run."""
        info = self.client.get_json(f"/containers/{path_quote(self.container)}/json")
        state = info.get("State") if isinstance(info, dict) else None
        if isinstance(state, dict) and state.get("Running"):
            return str(state.get("StartedAt", ""))
        return None

    def _back(self) -> HijackedSocket | None:
        """After the daemon went away: once it answers again, the log replayed from where the
        keeper's relay stopped, then, if the run still goes, its stream (None: the container
        is gone, or the daemon did not come back). An attach made just after the run ended
        would wait for the container's next run, so the run is checked again once attached:
        the same run still going means the stream will end with it."""
        deadline = time.monotonic() + DAEMON_BACK_S
        while time.monotonic() < deadline:
            try:
                started = self._run_started()
                conn = self.attach(replay=True, stream=started is not None)
                if started is None:
                    return conn  # the log only: it ends after the replay
                try:
                    same = self._run_started() == started
                except BaseException:
                    conn.close()
                    raise
                if same:
                    return conn
                conn.close()
                return self.attach(replay=True, stream=False)
            except NotFound:
                return None
            except (SteelcupError, OSError):
                time.sleep(0.5)  # not back yet
        return None

    def run(self, ready: Callable[[], None]) -> int:
        """Attach, call `ready`, relay until the process ends; its exit status."""
        conn = self.attach()
        for signo in FORWARDED:
            signal.signal(signo, lambda n, _f: self.forward(n))
        if self.tty:
            signal.signal(signal.SIGWINCH, lambda _n, _f: self._resize_soon(0))
            self._resize_soon(0)
        ready()
        stdin = True  # through the first attach only: a daemon restart ends its stdin
        while True:
            pump(conn, tty=self.tty, stdin=stdin, take=self.relayed.take)
            stdin = False
            try:
                return self.exit_code()
            except NotFound:
                return EXIT_REMOVED
            except (SteelcupError, OSError):
                if self.exec_id:
                    return EXIT_DAEMON_LOST  # an exec's stream cannot be attached again
            again = self._back()
            if again is None:
                try:
                    return self.exit_code()
                except NotFound:
                    return EXIT_REMOVED
                except (SteelcupError, OSError):
                    return EXIT_DAEMON_LOST
            conn = again  # relayed; then the exit status (at once if the run has ended)


def make_controlling_tty(fd: int) -> None:
    """The pty slave on `fd` becomes the keeper's terminal, so the engine's resizes of the
    master reach it as SIGWINCH (the keeper leads a session of its own)."""
    try:
        fcntl.ioctl(fd, termios.TIOCSCTTY, 0)
    except OSError:
        pass  # then no resizes; the output still flows


def ready_writer(fd: int) -> Callable[[], None]:
    def ready() -> None:
        try:
            os.write(fd, json.dumps({"pid": os.getpid()}).encode())
        finally:
            os.close(fd)
    return ready
