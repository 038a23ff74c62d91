"""A pod member's root, volumes and binds: its sandbox's VM takes no new 9p devices once it
runs, so the member's root is bound on the host below the sandbox's `pod` share, at
pod/<member id>, and each mount source at pod/<member id>.mounts/<n>; the guest binds them from
there (SETUP_ROOT with SUBDIR, MOUNT with FSTYPE `bind`, docs/guest-protocol.md).

The guest's root can write in the `pod` share (the members' roots are in it), so nothing
below it is trusted: entries are made with O_EXCL (or mkdir), bound, unmounted and removed
through the directory's fd without following symlinks (a symlink the guest put where a mount
point was is removed, never what it points at), and a read-only mount is read-only on the
host's bind, not only in the guest.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
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
            _unbind_entry(dir_fd, directory, entry.name)
    finally:
        os.close(dir_fd)
    try:
        os.rmdir(directory)
    except OSError as exc:
        log.warning("pod mounts dir %s not removed: %s", directory, exc)


def bind_root(root: Path, pod_dir: Path, member_id: str) -> None:
    """Bind a member's root directory at pod_dir/<member id> (nosuid, nodev, not recursive),
    made afresh: what a run cut short or the guest left there is removed first, never
    followed. Undo with `unbind_root`."""
    try:
        dir_fd = os.open(pod_dir, _DIR_FLAGS)
    except OSError as exc:
        raise SteelcupError(f"cannot bind the pod member's root into its sandbox: {exc}") from exc
    try:
        _unbind_entry(dir_fd, pod_dir, member_id)
        try:
            os.mkdir(member_id, 0o755, dir_fd=dir_fd)
            sysmount.bind_at(root, dir_fd, member_id)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.rmdir(member_id, dir_fd=dir_fd)
            raise SteelcupError(
                f"cannot bind the pod member's root into its sandbox: {exc}") from exc
    finally:
        os.close(dir_fd)


def unbind_root(pod_dir: Path, member_id: str) -> None:
    """Undo `bind_root` (lazily: the guest may still hold its files), never following what is
    at pod_dir/<member id>. Idempotent; what it cannot undo is logged."""
    try:
        dir_fd = os.open(pod_dir, _DIR_FLAGS)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            log.warning("pod share %s not opened to unbind %s: %s", pod_dir, member_id, exc)
        return
    try:
        _unbind_entry(dir_fd, pod_dir, member_id)
    finally:
        os.close(dir_fd)


def unbind_all(pod_dir: Path) -> None:
    """Unbind and remove every member root and mounts dir in a sandbox's share, whatever
    the guest made of them (nothing if there is no share)."""
    try:
        dir_fd = os.open(pod_dir, _DIR_FLAGS)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            log.warning("pod share %s not opened to unbind its members: %s", pod_dir, exc)
        return
    try:
        for entry in os.scandir(dir_fd):
            if is_mounts_dir(Path(entry.name)):
                unbind(pod_dir / entry.name)
            else:
                _unbind_entry(dir_fd, pod_dir, entry.name)
    finally:
        os.close(dir_fd)


def _unbind_entry(dir_fd: int, directory: Path, name: str) -> None:
    """Unmount (lazily) and remove the entry `name` of the directory `dir_fd`; never follows
    it. Nothing there is fine; what stays is logged."""
    # through the dir's fd: the entry is the one in this very dir, and not followed
    with contextlib.suppress(OSError):  # EINVAL: nothing is mounted there
        sysmount.umount(Path(f"/proc/self/fd/{dir_fd}/{name}"),
                        sysmount.MNT_DETACH | sysmount.UMOUNT_NOFOLLOW)
    try:
        if stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            os.rmdir(name, dir_fd=dir_fd)
        else:
            os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("pod share entry %s/%s not removed: %s", directory, name, exc)


def with_container(requests: Sequence[GuestMount], index: int) -> list[GuestMount]:
    """The requests for pod member `index`."""
    return [replace(r, container=index) for r in requests]
