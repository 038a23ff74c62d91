"""The clone filter: QEMU's discard (a hole punch) answered as done without touching the file,
any other fallocate refused with EPERM, everything else QEMU does allowed."""

from __future__ import annotations

import errno
import os
import struct
from pathlib import Path

import pytest

from steelcup.vm import seccomp

# linux/falloc.h: KEEP_SIZE 0x01, PUNCH_HOLE 0x02, ZERO_RANGE 0x10
_MODES = {"punch": 0x02 | 0x01, "zero": 0x10, "allocate": 0}


def _run_filtered(fn_name: str, path: Path) -> int:
    """Fork, install the filter, run one file operation; the child's exit code is its errno."""
    prog = seccomp.program()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 0
        try:
            seccomp.install(prog)
            fd = os.open(path, os.O_RDWR)
            if fn_name in _MODES:
                # posix_fallocate would fall back to writing; call fallocate(2) itself.
                import ctypes

                libc = ctypes.CDLL(None, use_errno=True)
                if libc.fallocate(fd, _MODES[fn_name], ctypes.c_long(0),
                                  ctypes.c_long(4096)) != 0:
                    code = ctypes.get_errno()
            else:
                os.pwrite(fd, b"y", 0)
        except OSError as exc:
            code = exc.errno or 255
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_discard_succeeds_unmade_other_fallocates_are_refused_writes_are_not(
        tmp_path: Path) -> None:
    f = tmp_path / "ram"
    f.write_bytes(b"x" * 16384)
    assert _run_filtered("punch", f) == 0  # QEMU goes on to drop its own copies
    assert os.stat(f).st_blocks * 512 >= 16384  # no hole was punched
    assert f.read_bytes() == b"x" * 16384
    assert _run_filtered("zero", f) == errno.EPERM
    assert _run_filtered("allocate", f) == errno.EPERM
    assert f.read_bytes() == b"x" * 16384
    assert _run_filtered("write", f) == 0
    assert f.read_bytes()[:1] == b"y"


def test_program_shape() -> None:
    prog = seccomp.program("x86_64")
    insns = [struct.unpack("=HBBI", prog[i:i + 8]) for i in range(0, len(prog), 8)]
    assert insns[0] == (0x20, 0, 0, 4)  # load arch
    assert insns[1][3] == 0xC000003E
    assert insns[3] == (0x15, 2, 0, 285) and insns[4] == (0x15, 1, 0, 285 | 0x40000000)
    assert insns[5] == (0x06, 0, 0, seccomp.SECCOMP_RET_ALLOW)  # not fallocate
    assert insns[6] == (0x20, 0, 0, 24)  # fallocate: load its mode (args[1], low word)
    assert insns[7] == (0x15, 0, 1, 0x03)  # PUNCH_HOLE | KEEP_SIZE
    assert insns[8] == (0x06, 0, 0, seccomp.SECCOMP_RET_ERRNO | 0)  # returns 0, unmade
    assert insns[9] == (0x06, 0, 0, seccomp.SECCOMP_RET_ERRNO | errno.EPERM)
    # another ABI jumps to the deny return, fallocate to its mode check
    assert 1 + 1 + insns[1][2] == len(insns) - 1
    assert 3 + 1 + insns[3][1] == 6 and 4 + 1 + insns[4][1] == 6
    assert seccomp.program("aarch64") != prog
    with pytest.raises(seccomp.SeccompUnsupported):
        seccomp.program("mips")
