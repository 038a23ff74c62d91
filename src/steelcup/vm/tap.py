"""Attaching to an existing tap from the daemon (TUNSETIFF), so QEMU gets a ready fd: it needs
neither CAP_NET_ADMIN nor access to /dev/net/tun, and cannot open any other tap by name."""

from __future__ import annotations

import fcntl
import os
import struct
import threading

from steelcup import namespaces

TUN_DEVICE = "/dev/net/tun"
_TUNSETIFF = 0x400454CA
_IFF_TAP = 0x0002
_IFF_NO_PI = 0x1000
_IFF_VNET_HDR = 0x4000
_IFNAMSIZ = 16


def ifreq(name: str, vnet_hdr: bool) -> bytes:
    """The `struct ifreq` TUNSETIFF takes for tap `name` (pure)."""
    raw = name.encode()
    if not raw or len(raw) >= _IFNAMSIZ:
        raise ValueError(f"bad interface name {name!r}")
    flags = _IFF_TAP | _IFF_NO_PI | (_IFF_VNET_HDR if vnet_hdr else 0)
    return struct.pack("16sH22x", raw, flags)


def _attach_here(name: str, vnet_hdr: bool) -> int:
    fd = os.open(TUN_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, _TUNSETIFF, ifreq(name, vnet_hdr))
    except OSError as exc:
        os.close(fd)
        raise OSError(exc.errno, f"attaching to tap {name}: {exc.strerror}") from None
    return fd


def attach(name: str, *, vnet_hdr: bool, netns: str | None = None) -> int:
    """An fd attached to the existing tap `name` (in the named network namespace `netns`, or
    ours); OSError if it cannot be."""
    if netns is None:
        return _attach_here(name, vnet_hdr)
    result: list[int] = []
    error: list[BaseException] = []

    def run() -> None:  # a thread of its own: entering a netns changes only the thread
        try:
            namespaces.enter_netns(netns)
            result.append(_attach_here(name, vnet_hdr))
        except BaseException as exc:  # handed to the caller
            error.append(exc)

    thread = threading.Thread(target=run, name=f"tap-{name}")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]
