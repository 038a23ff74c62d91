"""A seccomp filter that keeps a template clone's QEMU from changing the template's RAM file.

QEMU 7.2 maps a clone's RAM from the template's file (`memory-backend-file,share=off`) through a
read-write fd, and when the guest gives pages back (its balloon inflates, or free page
reporting hands over free memory) QEMU discards them in two steps: it punches holes in the
file itself (`fallocate(PUNCH_HOLE|KEEP_SIZE)`), i.e. in the memory of every other clone, and
then drops its own copies of the pages (`madvise(MADV_DONTNEED)`). QEMU 8.2's `rom=off` would
let the file be opened read-only; 7.2 cannot, so clones run under a filter that answers that
hole punch as done without running it: the file is untouched, and QEMU goes on to drop the
clone's private copy-on-write pages, which is all a clone's discard should do (the guest page
reads as the template's again, a page the clone had at its start anyway). Every other
fallocate is refused (EPERM): nothing a clone's QEMU does needs one (its RAM is the mapping,
its logs are appended, 9p has no fallocate operation, its only disk is read-only).

`program()` is pure (the classic-BPF bytes); `install()` is the effect, for a forked child
before it execs QEMU (filters survive execve).
"""

from __future__ import annotations

import ctypes
import errno
import platform
import struct

from steelcup.libc import PRCTL, last_error

# linux/filter.h, linux/seccomp.h, linux/audit.h
_BPF_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_BPF_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_BPF_RET_K = 0x06  # BPF_RET | BPF_K
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
_OFFSET_NR = 0  # struct seccomp_data: int nr; __u32 arch; __u64 ip; __u64 args[6]
_OFFSET_ARCH = 4
_OFFSET_ARG1_LOW = 24  # args[1]'s low word (little-endian hosts only, as _ARCHES)
# SECCOMP_RET_ERRNO with errno 0: the call returns 0 without being made.
SECCOMP_RET_SUCCESS = SECCOMP_RET_ERRNO | 0
# linux/falloc.h: what QEMU's ram_block_discard_range asks
DISCARD_MODE = 0x02 | 0x01  # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
_X32_SYSCALL_BIT = 0x40000000
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2

# machine -> (AUDIT_ARCH_*, __NR_fallocate)
_ARCHES = {
    "x86_64": (0xC000003E, 285),
    "aarch64": (0xC00000B7, 47),
}


class SeccompUnsupported(Exception):
    """This host's architecture has no filter here (the caller decides whether that is fatal)."""


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def program(machine: str | None = None) -> bytes:
    """The filter for `machine` (default: this host's): fallocate with QEMU's discard mode
    returns 0 unmade, any other fallocate EPERM, the rest allowed.

    Syscalls of another ABI than the host's native one (i386 on x86_64) are refused too: QEMU
    makes none, and a compromised one would otherwise find fallocate under another number. x32's
    fallocate on x86_64 is the same call with the x32 bit set. The mode is an int: its
    argument's low word is what the kernel reads.
    """
    machine = machine or platform.machine()
    if machine not in _ARCHES:
        raise SeccompUnsupported(f"no seccomp filter for {machine}")
    arch, nr = _ARCHES[machine]
    deny = SECCOMP_RET_ERRNO | errno.EPERM
    x32_nr = nr | _X32_SYSCALL_BIT if machine == "x86_64" else nr
    insns = [
        _insn(_BPF_LD_W_ABS, 0, 0, _OFFSET_ARCH),  # 0
        _insn(_BPF_JEQ_K, 0, 7, arch),  # 1: another ABI -> 9
        _insn(_BPF_LD_W_ABS, 0, 0, _OFFSET_NR),  # 2
        _insn(_BPF_JEQ_K, 2, 0, nr),  # 3: fallocate -> 6
        _insn(_BPF_JEQ_K, 1, 0, x32_nr),  # 4: fallocate -> 6
        _insn(_BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),  # 5
        _insn(_BPF_LD_W_ABS, 0, 0, _OFFSET_ARG1_LOW),  # 6: its mode
        _insn(_BPF_JEQ_K, 0, 1, DISCARD_MODE),  # 7: another mode -> 9
        _insn(_BPF_RET_K, 0, 0, SECCOMP_RET_SUCCESS),  # 8
        _insn(_BPF_RET_K, 0, 0, deny),  # 9
    ]
    return b"".join(insns)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install(prog: bytes) -> None:
    """Load `prog` into the calling thread (and what it execs). OSError if the kernel refuses.

    Meant for a forked child's pre-exec hook: allocate `prog` before forking, this only makes
    two prctl calls.
    """
    buf = ctypes.create_string_buffer(prog, len(prog))
    fprog = _SockFprog(len(prog) // 8, ctypes.cast(buf, ctypes.c_void_p))
    # No new privileges: QEMU needs none, and it lets the filter load without CAP_SYS_ADMIN.
    if PRCTL(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise last_error("PR_SET_NO_NEW_PRIVS")
    if PRCTL(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise last_error("PR_SET_SECCOMP")
