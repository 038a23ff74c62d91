"""Guest ids on the host: which host uid/gid a guest's id is stored as (pure).

QEMU runs as root of a user namespace whose ids 0..count-1 are the host ids base..base+count-1
(`IdRange`). Everything a guest can write (a container's upper dir, its volumes) holds shifted
ids on disk, so a guest's root owns host files as `base`: an unprivileged uid, and a setuid file
it makes is setuid to nobody who matters. Image layers stay as unpacked (guest ids) and reach
QEMU through an idmapped mount; host tools that read or write a container's files (diff, commit,
export, cp, the files the network layer writes) translate with `to_host`/`to_guest`.

Bind-mounted host directories are the host's own files: there guest ids 1..count-1 are the host's
same ids and only the guest's root is `base` (`bind_map`), so a guest's root can never make a
host-root file there (docker's userns-remap does the same; host-root files show as nobody).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

NOBODY = 65534  # what an id outside the range shows as (the kernel's overflow id)
DEFAULT_COUNT = 65536
# (uid_t)-1 is "unchanged" to chown; -2 stands in for host root in bind mounts (`bind_map`)
UNUSED_ID = 0xFFFF_FFFE
_MAX_ID = UNUSED_ID - 1


@dataclass(frozen=True)
class IdRange:
    """Guest ids 0..count-1 are host ids base..base+count-1."""

    base: int
    count: int = DEFAULT_COUNT

    def __post_init__(self) -> None:
        if self.count < 1 or self.base < 1 or self.base + self.count - 1 > _MAX_ID:
            raise ValueError(f"bad id range {self.base}+{self.count}")
        if self.base < self.count:
            # guest ids and host ids of the range must not overlap (bind_map needs both)
            raise ValueError(f"id range base {self.base} must be at least its size {self.count}")

    def to_host(self, guest_id: int) -> int:
        """The host id a guest id is stored as; ids the range lacks become the range's nobody."""
        if 0 <= guest_id < self.count:
            return self.base + guest_id
        return self.base + min(NOBODY, self.count - 1)

    def to_guest(self, host_id: int) -> int:
        """The guest id of a host id stored in the range; NOBODY for any other host id."""
        if self.base <= host_id < self.base + self.count:
            return host_id - self.base
        return NOBODY

    def contains(self, host_id: int) -> bool:
        return self.base <= host_id < self.base + self.count

    def ns_map(self) -> str:
        """/proc/PID/uid_map (and gid_map) text for QEMU's user namespace, and for the
        idmapped mount of image layers: guest id k is host id base+k."""
        return f"0 {self.base} {self.count}\n"

    def bind_map(self) -> str:
        """The idmapped mount of a bind-mounted host dir: a QEMU id base+k (k >= 1) reads and
        writes the host's own id k; QEMU's root (base) is the host's id base, never 0. Host
        root's files show as UNUSED_ID, which no QEMU has (the kernel refuses creating files
        under an idmapped mount whose map lacks id 0)."""
        return (f"0 {UNUSED_ID} 1\n1 {self.base + 1} {self.count - 1}\n"
                f"{self.base} {self.base} 1\n")


# A tenant's name ("" = the operator's) -> the id range its VMs run in (None: QEMU is host root).
IdsFor = Callable[[str], "IdRange | None"]


def one_range(ids: IdRange | None) -> IdsFor:
    """Every tenant in the same range (a daemon without tenants, tests)."""
    return lambda _tenant: ids


def host_root(_tenant: str) -> IdRange | None:
    """No user namespace for anyone: QEMU runs as (jailed) host root."""
    return None


def shift(host_id: int, old: IdRange | None, new: IdRange | None) -> int:
    """Re-store an id written under `old` (None: unshifted guest ids) for `new`."""
    guest = host_id if old is None else old.to_guest(host_id)
    return guest if new is None else new.to_host(guest)
