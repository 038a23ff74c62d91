"""The process's own C library, for the system calls Python's `os` lacks (mount, setns,
unshare, prctl, the new mount API through `syscall`, mincore).

One handle for every module, taken without a search (`dlopen(NULL)`: the running program and
what it loaded; `ctypes.util.find_library` would run `ldconfig`), with the signatures that
differ from ctypes' defaults set once. A function a forked child calls before it execs
(`prctl`, `setns`, `unshare`) is resolved in the parent at import (`PRCTL`, `SETNS`,
`UNSHARE`), so the child never enters the dynamic loader, whose lock another thread may have
held at the fork."""

from __future__ import annotations

import ctypes
import os

LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.syscall.restype = ctypes.c_long
LIBC.mmap.restype = ctypes.c_void_p
LIBC.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]
LIBC.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
LIBC.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]

PRCTL = LIBC.prctl
SETNS = LIBC.setns
UNSHARE = LIBC.unshare


def last_error(what: str, path: object = None) -> OSError:
    """The OSError of the C call that just failed (its errno), naming `what` (and `path`)."""
    err = ctypes.get_errno()
    message = f"{what}: {os.strerror(err)}"
    return OSError(err, message) if path is None else OSError(err, message, str(path))
