"""Sockets inside a named network namespace (tests run the daemon's networks in one).

setns(2) changes only the calling thread's namespace, so a short-lived thread enters the
namespace, creates the socket and exits; the socket stays in that namespace.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import TypeVar

from steelcup import namespaces

T = TypeVar("T")


def socket_in(netns: str | None, family: int, type_: int,
              bind: tuple[str, int] | None = None, reuse_port: bool = False,
              proto: int = 0) -> socket.socket:
    """A socket created (and bound) inside /run/netns/<netns>, or here when netns is None.
    `reuse_port`: SO_REUSEPORT, so that another such socket may listen on the port too."""

    def make() -> socket.socket:
        sock = socket.socket(family, type_, proto)
        if bind is not None:
            try:
                _bind(sock, bind, reuse_port)
            except OSError:
                sock.close()
                raise
        return sock

    return call_in(netns, make)


def call_in(netns: str | None, make: Callable[[], T]) -> T:
    """`make()` called inside /run/netns/<netns> (here when netns is None): what it makes
    there (a socket, a netlink context) stays in that namespace."""
    if netns is None:
        return make()
    result: list[T | BaseException] = []

    def work() -> None:
        try:
            namespaces.enter_netns(netns)
            result.append(make())
        except BaseException as exc:  # handed to the caller's thread
            result.append(exc)

    thread = threading.Thread(target=work, name=f"netns-{netns}")
    thread.start()
    thread.join()
    got = result[0]
    if isinstance(got, BaseException):
        raise got
    return got


def _bind(sock: socket.socket, addr: tuple[str, int], reuse_port: bool) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(addr)
