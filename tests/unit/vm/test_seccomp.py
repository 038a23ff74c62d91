"""The clone filter: fallocate refused with EPERM, everything else QEMU does allowed."""

from __future__ import annotations

import errno
import os
import struct
from pathlib import Path

import pytest

from steelcup.vm import seccomp


def _run_filtered(fn_name: str, path: Path) -> int:
    """Fork, install the filter, run one file operation; the child's exit code is its errno."""
    prog = seccomp.program()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 0
        try:
            seccomp.install(prog)
            fd = os.open(path, os.O_RDWR)
            if fn_name == "punch":
                # posix_fallocate would fall back to writing; call fallocate(2) itself.
                import ctypes

                libc = ctypes.CDLL(None, use_errno=True)
                punch_hole_keep_size = 0x02 | 0x01
                if libc.fallocate(fd, punch_hole_keep_size, ctypes.c_long(0),
                                  ctypes.c_long(4096)) != 0:
                    code = ctypes.get_errno()
            else:
                os.pwrite(fd, b"y", 0)
        except OSError as exc:
            code = exc.errno or 255
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_fallocate_is_refused_other_writes_are_not(tmp_path: Path) -> None:
    f = tmp_path / "ram"
    f.write_bytes(b"x" * 16384)
    assert _run_filtered("punch", f) == errno.EPERM
    assert os.stat(f).st_blocks * 512 >= 16384  # no hole was punched
    assert _run_filtered("write", f) == 0


def test_program_shape() -> None:
    prog = seccomp.program("x86_64")
    insns = [struct.unpack("=HBBI", prog[i:i + 8]) for i in range(0, len(prog), 8)]
    assert insns[0] == (0x20, 0, 0, 4)  # load arch
    assert insns[1][3] == 0xC000003E
    assert (0x15, 2, 0, 285) in insns and (0x15, 1, 0, 285 | 0x40000000) in insns
    ret_allow, ret_deny = insns[-2], insns[-1]
    assert ret_allow == (0x06, 0, 0, seccomp.SECCOMP_RET_ALLOW)
    assert ret_deny == (0x06, 0, 0, seccomp.SECCOMP_RET_ERRNO | errno.EPERM)
    # another ABI jumps to the deny return
    assert 1 + 1 + insns[1][2] == len(insns) - 1
    assert seccomp.program("aarch64") != prog
    with pytest.raises(seccomp.SeccompUnsupported):
        seccomp.program("mips")
