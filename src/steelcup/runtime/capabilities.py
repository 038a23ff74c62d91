"""Docker's capability rules: default set + CapAdd - CapDrop, or all of them when privileged.

Pure: names in, a 64-bit mask out (bit n = capability n), the mask the init applies to a
process (docs/guest-protocol.md, `CAPS`). Follows moby's `oci/caps` (`TweakCapabilities`,
`NormalizeLegacyCapabilities`) so a request means here what it means to dockerd.
"""

from __future__ import annotations

from collections.abc import Iterable

from steelcup.errors import InvalidArgument

# Linux capability numbers 0..40 (uapi/linux/capability.h, as of 5.9; the guest kernel is 6.1).
NAMES: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK",
    "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)
_NUMBER = {name: n for n, name in enumerate(NAMES)}

# moby's oci/caps DefaultCapabilities: what every container gets unless told otherwise.
DEFAULT_NAMES: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)
ALL = "ALL"  # in CapAdd or CapDrop: every capability


def mask_of(names: Iterable[str]) -> int:
    """Normalized names (`CAP_...`) to a mask."""
    mask = 0
    for name in names:
        mask |= 1 << _NUMBER[name]
    return mask


def names_of(mask: int) -> list[str]:
    """A mask back to names, in number order (bits past the table are left out)."""
    return [name for n, name in enumerate(NAMES) if mask >> n & 1]


DEFAULT_CAPS = mask_of(DEFAULT_NAMES)
ALL_CAPS = mask_of(NAMES)


def normalize(names: Iterable[str], field: str) -> list[str]:
    """Upper-case, add the `CAP_` prefix, keep `ALL`; an unknown name is InvalidArgument
    with dockerd's message (`invalid CapAdd: unknown capability: "CAP_FOO"`)."""
    out = []
    for raw in names:
        name = raw.upper()
        if name != ALL:
            if not name.startswith("CAP_"):
                name = "CAP_" + name
            if name not in _NUMBER:
                raise InvalidArgument(f'invalid {field}: unknown capability: "{name}"')
        out.append(name)
    return out


def capability_set(cap_add: Iterable[str], cap_drop: Iterable[str], privileged: bool) -> int:
    """The mask a container (or exec) process runs with, by dockerd's rules:
    privileged: everything, CapAdd/CapDrop ignored; `ALL` in CapAdd: everything except CapDrop;
    `ALL` in CapDrop: only CapAdd; otherwise the default set minus CapDrop plus CapAdd (so a
    name in both lists is kept). Names are validated even when privileged, as dockerd does."""
    add = normalize(cap_add, "CapAdd")
    drop = normalize(cap_drop, "CapDrop")
    if privileged:
        return ALL_CAPS
    if ALL in add:
        return ALL_CAPS & ~mask_of(n for n in drop if n != ALL)
    if ALL in drop:
        return mask_of(add)
    return (DEFAULT_CAPS & ~mask_of(drop)) | mask_of(add)
