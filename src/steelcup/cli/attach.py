"""Pump a hijacked attach/exec stream: stdin to the socket, the socket to stdout/stderr."""

from __future__ import annotations

import os
from collections.abc import Callable

from steelcup.cli.client import HijackedSocket
from steelcup.stdcopy import STDOUT, Demuxer


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _pump_stdin(conn: HijackedSocket, stdin_fd: int) -> None:
    try:
        while True:
            data = os.read(stdin_fd, 32 * 1024)
            if not data:
                break
            conn.sendall(data)
    except OSError:
        return
    conn.close_write()  # the container sees EOF on its stdin; its output keeps coming


def pump(
    conn: HijackedSocket,
    *,
    tty: bool,
    stdin: bool,
    stdin_fd: int = 0,
    stdout_fd: int = 1,
    stderr_fd: int = 2,
    take: Callable[[int, bytes], bytes] | None = None,
) -> None:
    """Run until the daemon ends the stream. Raw copy with a TTY, stdcopy demux without.
    `take(stream, data)` sees each chunk first and returns what of it to write."""
    if stdin:
        import threading

        threading.Thread(target=_pump_stdin, args=(conn, stdin_fd), daemon=True).start()
    demux = None if tty else Demuxer()
    try:
        while True:
            data = conn.recv(64 * 1024)
            if not data:
                return
            chunks = [(STDOUT, data)] if demux is None else demux.feed(data)
            for stream, payload in chunks:
                if take is not None:
                    payload = take(stream, payload)
                write_all(stdout_fd if stream == STDOUT else stderr_fd, payload)
    except BrokenPipeError:
        return  # our stdout went away (e.g. `| head`)
    finally:
        conn.close()
