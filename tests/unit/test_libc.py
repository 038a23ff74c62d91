"""The one C library handle (steelcup.libc): no other module opens its own, so a forked
child's pre-exec hook (vm/jail.py, userns.py) calls functions resolved before the fork and
never enters the dynamic loader."""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

import pytest

import steelcup
from steelcup.libc import LIBC, PRCTL, last_error

SRC = Path(steelcup.__file__).parent


def test_only_the_libc_module_opens_a_c_library() -> None:
    openers = sorted(str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
                     if "ctypes.CDLL(" in p.read_text() or "find_library" in p.read_text())
    # libnftables is another library, loaded once by its own module
    assert openers == ["libc.py", "net/nftlib.py"]


def test_a_failed_call_names_itself_and_its_errno(tmp_path: Path) -> None:
    if LIBC.umount2(os.fsencode(tmp_path), 0) == 0:  # pragma: no cover - not a mount point
        pytest.fail("umount2 of a plain directory succeeded")
    err = last_error("umount2", tmp_path)
    assert err.errno in (errno.EINVAL, errno.EPERM)
    assert str(err).endswith(f"umount2: {os.strerror(err.errno)}: '{tmp_path}'")
    assert PRCTL(3, 0, 0, 0, 0) in (0, 1)  # PR_GET_DUMPABLE
    assert isinstance(LIBC, ctypes.CDLL)
