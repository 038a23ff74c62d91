"""A container's terminal as runc gives it: a pty whose master goes to the engine's console
socket (SCM_RIGHTS, with the pty's name as the message, as runc sends it), whose slave is the
keeper's stdio (raw: the guest has its own terminal; this one only carries its bytes)."""

from __future__ import annotations

import os
import socket
import tty

from steelcup.errors import SteelcupError

SEND_TIMEOUT_S = 10.0


def open_console(console_socket: str) -> int:
    """Make the pty, hand its master to `console_socket`; the slave fd (the caller's to close)."""
    master, slave = os.openpty()
    try:
        tty.setraw(slave)
        name = os.ttyname(slave)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(SEND_TIMEOUT_S)
            sock.connect(console_socket)
            socket.send_fds(sock, [name.encode()], [master])
    except OSError as exc:
        os.close(slave)
        raise SteelcupError(f"cannot hand the terminal to the console socket "
                            f"{console_socket}: {exc}") from exc
    finally:
        os.close(master)
    return slave
