"""Entering a named network namespace (`ip netns add NAME`: /run/netns/NAME) from Python:
for a thread that makes sockets there, or a forked child before it execs QEMU."""

from __future__ import annotations

import os

from steelcup.libc import SETNS, last_error

CLONE_NEWNET = 0x40000000


def enter_netns(name: str) -> None:
    """Move the calling thread into /run/netns/<name> (needs CAP_SYS_ADMIN); OSError if not."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        enter_netns_fd(fd, name)
    finally:
        os.close(fd)


def enter_netns_fd(fd: int, name: str = "") -> None:
    """Move the calling thread into the network namespace `fd` refers to (a /proc/.../ns/net
    or /run/netns file); OSError if not."""
    if SETNS(fd, CLONE_NEWNET) != 0:
        raise last_error(f"setns {name or fd}")
