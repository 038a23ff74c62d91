"""Privileges an image declares (setuid/setgid bits, file capabilities), kept inert on the host.

A layer may ship a setuid-root binary or a `security.capability` xattr. Unpacked as declared,
that file would hand those privileges to every host user who can reach the image store or a
container's overlay. So the extractor never gives a host file a set-id bit or a capability;
it records what the image declared in two `trusted.steelcup.*` xattrs, which the kernel does
not interpret, and the tar writers (commit, export, cp) emit the declared mode bits and the
`SCHILY.xattr.security.capability` record again.

Why `trusted.` and not `user.`: only CAP_SYS_ADMIN may read or write the `trusted.` namespace,
so an unprivileged host user can neither see nor forge a record, and QEMU's 9p server
(security_model=passthrough) forwards only `user.` xattrs and POSIX ACLs, so a guest cannot
either. A `user.` record could be written by any guest user on a file they own and would come out
of `docker commit` as a real capability. (A v3 capability with a non-zero rootid is inert on the
host too, but getcap still shows it, it has no equivalent for set-id bits and the writers would
have to undo the conversion.)

What the guest sees: neither. QEMU 7.2's 9p server has xattr handlers only for `user.` and
POSIX ACLs (no `security.*`), so file capabilities never reached the guest even when they were
real on the host; and the set-id bits are not on the host file, so a setuid program of an image
(`su`, `passwd`, `ping` with caps) runs without its privileges in the guest. Giving them back
needs a 9p server that maps these records (e.g. a mapped security model), not a host change.

A record holds only while the file is as the image left it: the same permission bits, owner and
(for regular files) content. Linux drops set-id bits and capabilities on chown and on writes,
and chmod sets the bits explicitly; the same changes made through the guest void the record
(except a chmod to exactly the bits the host file already has, which leaves no trace).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from dataclasses import dataclass, replace

CAPABILITY_XATTR = "security.capability"
RECORD_XATTR = "trusted.steelcup.declared"
STASHED_CAPABILITY_XATTR = "trusted.steelcup.security.capability"
SETID_BITS = stat.S_ISUID | stat.S_ISGID
_VERSION = b"v1"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Declared:
    """What an archive entry declared: full mode bits (07777), owner, content digest, caps."""

    mode: int
    uid: int
    gid: int
    sha256: str = ""  # hex digest of a regular file's content; "" for other kinds
    capability: bytes | None = None  # the raw vfs_cap_data value

    @property
    def privileged(self) -> bool:
        return bool(self.mode & SETID_BITS) or self.capability is not None

    @property
    def host_mode(self) -> int:
        """The mode the host file gets: the declared one without set-id bits."""
        return self.mode & 0o7777 & ~SETID_BITS

    def encode(self) -> bytes:
        return b"%s mode=%o uid=%d gid=%d sha256=%s" % (
            _VERSION, self.mode & 0o7777, self.uid, self.gid, (self.sha256 or "-").encode()
        )


def decode(raw: bytes) -> Declared | None:
    """Parse a record; None for anything malformed (an unreadable record grants nothing)."""
    parts = raw.split(b" ")
    if len(parts) != 5 or parts[0] != _VERSION:
        return None
    fields: dict[str, str] = {}
    for part in parts[1:]:
        key, sep, value = part.decode("ascii", "replace").partition("=")
        if not sep:
            return None
        fields[key] = value
    try:
        mode = int(fields["mode"], 8)
        uid, gid = int(fields["uid"]), int(fields["gid"])
        digest = fields["sha256"]
    except (KeyError, ValueError):
        return None
    if not 0 <= mode <= 0o7777 or uid < 0 or gid < 0:
        return None
    return Declared(mode, uid, gid, "" if digest == "-" else digest)


def stash(fd: int, declared: Declared) -> None:
    """Record `declared` on the open file `fd` (the caller already set `host_mode`).

    Raises OSError (PermissionError without CAP_SYS_ADMIN).
    """
    if declared.capability is not None:
        os.setxattr(fd, STASHED_CAPABILITY_XATTR, declared.capability)
    os.setxattr(fd, RECORD_XATTR, declared.encode())


def clear(fd: int) -> None:
    """Remove any record from `fd` (an existing directory an archive declares again)."""
    for name in (RECORD_XATTR, STASHED_CAPABILITY_XATTR):
        with contextlib.suppress(OSError):
            os.removexattr(fd, name)


def declared_for(fd: int, st: os.stat_result) -> Declared | None:
    """The privileges recorded on the open file `fd` (whose stat is `st`), if still valid."""
    try:
        raw = os.getxattr(fd, RECORD_XATTR)
    except OSError:
        return None
    found = decode(raw)
    if found is None:
        return None
    if stat.S_IMODE(st.st_mode) != found.host_mode or (st.st_uid, st.st_gid) != (
        found.uid,
        found.gid,
    ):
        return None  # chmod or chown since the image declared it
    if stat.S_ISREG(st.st_mode) and found.sha256 != content_sha256(fd, st.st_size):
        return None  # written since
    capability = None
    with contextlib.suppress(OSError):
        capability = os.getxattr(fd, STASHED_CAPABILITY_XATTR)
    return replace(found, capability=capability)


def content_sha256(fd: int, size: int) -> str:
    """Hex sha256 of the first `size` bytes of `fd`, read without moving its offset."""
    digest = hashlib.sha256()
    offset = 0
    while offset < size:
        chunk = os.pread(fd, min(_CHUNK, size - offset), offset)
        if not chunk:
            return ""  # shrank meanwhile: never equal to a recorded digest
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()
