"""A seccomp filter that keeps a template clone's QEMU from changing the template's RAM file.

QEMU 7.2 maps a clone's RAM from the template's file (`memory-backend-file,share=off`) through a
read-write fd, and when the guest inflates its balloon it discards those pages by punching holes
in the file itself (`fallocate(PUNCH_HOLE)`), i.e. in the memory of every other clone. QEMU 8.2's
`rom=off` would let the file be opened read-only; 7.2 cannot, so clones run under a filter that
answers `fallocate` with EPERM (the balloon then keeps its pages: the guest still cannot use
them, the host just does not get them back). Nothing else a clone's QEMU does needs fallocate:
its RAM is the mapping, its logs are appended, 9p has no fallocate operation.

`program()` is pure (the classic-BPF bytes); `install()` is the effect, for a forked child
before it execs QEMU (filters survive execve).
"""

from __future__ import annotations

import ctypes
import errno
import platform
import struct

# linux/filter.h, linux/seccomp.h, linux/audit.h
_BPF_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_BPF_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_BPF_RET_K = 0x06  # BPF_RET | BPF_K
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
_OFFSET_NR = 0  # struct seccomp_data: int nr; __u32 arch; ...
_OFFSET_ARCH = 4
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
    """The filter for `machine` (default: this host's): fallocate -> EPERM, the rest allowed.

    Syscalls of another ABI than the host's native one (i386 on x86_64) are refused too: QEMU
    makes none, and a compromised one would otherwise find fallocate under another number. x32's
    fallocate on x86_64 is the same call with the x32 bit set.
    """
    machine = machine or platform.machine()
    if machine not in _ARCHES:
        raise SeccompUnsupported(f"no seccomp filter for {machine}")
    arch, nr = _ARCHES[machine]
    deny = SECCOMP_RET_ERRNO | errno.EPERM
    insns = [
        _insn(_BPF_LD_W_ABS, 0, 0, _OFFSET_ARCH),
        _insn(_BPF_JEQ_K, 0, 4, arch),  # another ABI: deny
        _insn(_BPF_LD_W_ABS, 0, 0, _OFFSET_NR),
        _insn(_BPF_JEQ_K, 2, 0, nr),
        _insn(_BPF_JEQ_K, 1, 0, nr | _X32_SYSCALL_BIT if machine == "x86_64" else nr),
        _insn(_BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
        _insn(_BPF_RET_K, 0, 0, deny),
    ]
    return b"".join(insns)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install(prog: bytes) -> None:
    """Load `prog` into the calling thread (and what it execs). OSError if the kernel refuses.

    Meant for a forked child's pre-exec hook: allocate `prog` before forking, this only makes
    two prctl calls.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(prog, len(prog))
    fprog = _SockFprog(len(prog) // 8, ctypes.cast(buf, ctypes.c_void_p))
    # No new privileges: QEMU needs none, and it lets the filter load without CAP_SYS_ADMIN.
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"PR_SET_NO_NEW_PRIVS: {errno.errorcode.get(err, err)}")
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"PR_SET_SECCOMP: {errno.errorcode.get(err, err)}")
