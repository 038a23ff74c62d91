"""Making a container's cgroup in every hierarchy below /sys/fs/cgroup, putting a process in
it and removing it (the effects; what and where is `steelcup.cgroups.paths`)."""

from __future__ import annotations

import contextlib
import errno
import os
from dataclasses import dataclass
from pathlib import Path

from steelcup.cgroups import paths
from steelcup.errors import SteelcupError

PROCS_FILE = "cgroup.procs"
MOUNTINFO = Path("/proc/self/mountinfo")


class CgroupPlaceError(SteelcupError):
    """The container's cgroup could not be made, entered or removed (errno kept)."""

    def __init__(self, message: str, errno_value: int = 0) -> None:
        super().__init__(message)
        self.errno_value = errno_value


@dataclass(frozen=True)
class Placed:
    """The cgroup's directory in one hierarchy."""

    hierarchy: paths.Hierarchy
    directory: Path


def host_hierarchies() -> tuple[paths.Hierarchy, ...]:
    try:
        found = paths.hierarchies(MOUNTINFO.read_text())
    except OSError as exc:
        raise CgroupPlaceError(f"cannot read {MOUNTINFO}: {exc}", exc.errno or 0) from exc
    if not found:
        raise CgroupPlaceError("no cgroup hierarchy is mounted below /sys/fs/cgroup in this "
                               "mount namespace: a container's cgroup cannot be placed")
    return found


def write_file(path: Path, value: str) -> None:
    """One write(2) of `value` to a cgroup file (no truncation, no buffering)."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _mkdir(hierarchy: paths.Hierarchy, directory: Path) -> None:
    """One level. A v1 cpuset cgroup takes no task until it has CPUs and memory nodes: copy
    its parent's, as runc does. A v2 parent hands its controllers down (best effort: a
    parent with processes of its own refuses, and the child then has fewer files)."""
    if hierarchy.version == 2:
        with contextlib.suppress(OSError):
            offered = (directory.parent / "cgroup.controllers").read_text().split()
            for name in offered:
                with contextlib.suppress(OSError):
                    write_file(directory.parent / "cgroup.subtree_control", f"+{name}")
    try:
        directory.mkdir()
    except FileExistsError:
        return
    if hierarchy.version == 1 and "cpuset" in hierarchy.controllers:
        for name in ("cpuset.cpus", "cpuset.mems"):
            with contextlib.suppress(OSError):
                if not (directory / name).read_text().strip():
                    write_file(directory / name, (directory.parent / name).read_text().strip())


def make(path: str, found: tuple[paths.Hierarchy, ...] | None = None) -> tuple[Placed, ...]:
    """Create the cgroup `path` (and missing parents) in every hierarchy; returns where."""
    out = []
    for hierarchy in found if found is not None else host_hierarchies():
        target = Path(paths.directory(hierarchy, path))
        mount = Path(hierarchy.mount)
        try:
            for level in reversed([target, *target.parents]):
                if level == mount or mount not in level.parents:
                    continue
                _mkdir(hierarchy, level)
        except OSError as exc:
            raise CgroupPlaceError(f"cannot create the cgroup {path} in {mount}: "
                                   f"{exc.strerror}", exc.errno or 0) from exc
        out.append(Placed(hierarchy, target))
    return tuple(out)


def enter(placed: tuple[Placed, ...], pid: int) -> None:
    """Move the process `pid` (all its threads) into the cgroup in every hierarchy."""
    for p in placed:
        try:
            write_file(p.directory / PROCS_FILE, str(pid))
        except OSError as exc:
            raise CgroupPlaceError(f"cannot move process {pid} into the cgroup "
                                   f"{p.directory}: {exc.strerror}", exc.errno or 0) from exc


def remove(path: str, found: tuple[paths.Hierarchy, ...] | None = None) -> list[str]:
    """rmdir the cgroup (not its parents: they are the engine's) in every hierarchy; what
    could not be removed (still busy, or an error), as messages."""
    left = []
    for hierarchy in found if found is not None else host_hierarchies():
        directory = Path(paths.directory(hierarchy, path))
        try:
            directory.rmdir()
        except FileNotFoundError:
            continue
        except OSError as exc:
            why = "a process is still in it" if exc.errno == errno.EBUSY else exc.strerror
            left.append(f"{directory}: {why}")
    return left
