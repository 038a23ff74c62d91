"""A pod member's volumes and binds: its sandbox's VM takes no new 9p devices once it runs, so
each mount source is bound on the host below the sandbox's `pod` share, at
pod/<member id>.mounts/<n>, and the guest binds it from there onto the member's target (MOUNT
with FSTYPE `bind`, docs/guest-protocol.md), as the member's root is bound at pod/<member id>.

The guest's root can write in the `pod` share (the members' roots are in it), so nothing
below it is trusted: entries are made with O_EXCL, walked by fd without following symlinks,
and a read-only mount is read-only on the host's bind, not only in the guest.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from steelcup import sysmount
from steelcup.errors import SteelcupError
from steelcup.guest.ops import GuestMount
from steelcup.vm.qemu_args import Share

log = logging.getLogger(__name__)
MOUNTS_SUFFIX = ".mounts"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class MemberMount:
    """One of a member's mounts as its sandbox's guest gets it: `request` (container number
    0: the caller sets it), and the host file or directory to bind at `entry` of the member's
    mounts dir first (None: a tmpfs, nothing on the host)."""

    request: GuestMount
    source: Path | None = None
    entry: str = ""


def mounts_dir(pod_dir: Path, member_id: str) -> Path:
    """Where a member's mount sources are bound in its sandbox's share."""
    return pod_dir / f"{member_id}{MOUNTS_SUFFIX}"


def is_mounts_dir(entry: Path) -> bool:
    return entry.name.endswith(MOUNTS_SUFFIX)


def plan(mounts: Sequence[GuestMount], shares: Sequence[Share], member_id: str,
         pod_tag: str) -> list[MemberMount]:
    """Each of a run's mounts (which name the 9p shares a VM of its own would have had) as
    binds from the member's mounts dir in the `pod_tag` share; a tmpfs stays as it is."""
    by_tag = {share.tag: share for share in shares}
    out = []
    for n, mount in enumerate(mounts):
        if mount.fstype == "tmpfs":
            out.append(MemberMount(mount))
            continue
        share = by_tag.get(mount.source)
        if share is None or mount.fstype not in ("9p", "bind"):
            raise SteelcupError(f"mount on {mount.target}: no share {mount.source!r} for it "
                                f"({mount.fstype})")
        source = share.host_path / mount.subdir if mount.fstype == "bind" else share.host_path
        entry = str(n)
        request = GuestMount(target=mount.target, fstype="bind", source=pod_tag,
                             subdir=f"{member_id}{MOUNTS_SUFFIX}/{entry}",
                             readonly=mount.readonly or share.readonly)
        out.append(MemberMount(request, source, entry))
    return out


def bind(directory: Path, planned: Sequence[MemberMount]) -> list[GuestMount]:
    """Make the member's mounts dir afresh and bind each planned source in it; the guest
    requests, in order. Undo with `unbind(directory)` (done here if this fails)."""
    try:
        unbind(directory)  # a run cut short (or the guest) left one
        os.mkdir(directory, 0o755)
        dir_fd = os.open(directory, _DIR_FLAGS)
        try:
            for m in planned:
                if m.source is not None:
                    _bind_one(dir_fd, m)
        finally:
            os.close(dir_fd)
    except BaseException:
        unbind(directory)
        raise
    return [m.request for m in planned]


def _bind_one(dir_fd: int, m: MemberMount) -> None:
    assert m.source is not None
    is_dir = m.source.is_dir()
    try:
        if is_dir:
            os.mkdir(m.entry, 0o755, dir_fd=dir_fd)
        else:
            os.close(os.open(m.entry, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o600, dir_fd=dir_fd))
        # a directory with what is mounted below it: what a 9p share of it would export
        sysmount.bind_at(m.source, dir_fd, m.entry, readonly=m.request.readonly,
                         recursive=is_dir)
    except OSError as exc:
        raise SteelcupError(f"cannot bind {m.source} into the pod's VM for "
                            f"{m.request.target}: {exc}") from exc


def unbind(directory: Path) -> None:
    """Unbind and remove a member's mounts dir (lazily: the guest may still hold files);
    never follows a symlink, deletes nothing recursively. Idempotent; what it cannot undo is
    logged (a run's end goes on)."""
    try:
        dir_fd = os.open(directory, _DIR_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return
        try:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            os.unlink(directory)  # not ours: the guest made it
        except OSError as err:
            log.warning("pod mounts dir %s not removed: %s", directory, err)
        return
    try:
        for entry in os.scandir(dir_fd):
            # through the dir's fd: the entry (a mount point) is the one in this very dir
            with contextlib.suppress(OSError):
                sysmount.umount(Path(f"/proc/self/fd/{dir_fd}/{entry.name}"),
                                sysmount.MNT_DETACH | sysmount.UMOUNT_NOFOLLOW)
            try:
                if entry.is_dir(follow_symlinks=False):
                    os.rmdir(entry.name, dir_fd=dir_fd)
                else:
                    os.unlink(entry.name, dir_fd=dir_fd)
            except OSError as exc:
                log.warning("pod mount point %s/%s not removed: %s", directory, entry.name,
                            exc)
    finally:
        os.close(dir_fd)
    try:
        os.rmdir(directory)
    except OSError as exc:
        log.warning("pod mounts dir %s not removed: %s", directory, exc)


def with_container(requests: Sequence[GuestMount], index: int) -> list[GuestMount]:
    """The requests for pod member `index`."""
    return [replace(r, container=index) for r in requests]
