"""Memory limits enforced from the host: one memory cgroup per QEMU, cgroup v2 or v1.

A guest's balloon driver is the guest's to unbind: the size a clone was given (`-m`) holds only
while the host enforces it. Each VM's QEMU runs in a cgroup of its own whose limit is the
guest's size plus a measured per-VM overhead (`limit_bytes`, docs/security.md); past it the
host's OOM killer ends that QEMU, and the cgroup's OOM-kill counter tells the runtime so.

Pure parts (which hierarchy, where, which files and values) are functions of text; the few
effects (mkdir, writes, rmdir) are `MemoryCgroups` and `VmCgroup` methods.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from enum import Enum
from pathlib import Path, PurePosixPath

from steelcup import sysmount
from steelcup.cgroups.paths import cgroup_mounts
from steelcup.cgroups.place import write_file

log = logging.getLogger(__name__)

MIB = 1 << 20
# QEMU's own memory per VM beyond guest RAM and the TCG translation cache: heap, device and 9p
# buffers, thread stacks, page tables of the guest RAM mapping. Measured with
# tools/measure_vm_memory.py: 20 MiB for a busy clone (docs/security.md); the rest is headroom.
QEMU_OVERHEAD_MIB = 32
GROUP_NAME = "steelcup"  # the parent of every VM cgroup, next to the daemon's own cgroup
PROCS_FILE = "cgroup.procs"
STALE_KILL_DEADLINE_S = 2.0


class Layout(Enum):
    V2 = "v2"  # unified: memory.max, memory.events, memory.oom.group
    V1 = "v1"  # the memory controller on a hierarchy of its own (hybrid hosts)


@dataclass(frozen=True)
class Hierarchy:
    """Where the memory controller is and where the daemon sits in it."""

    layout: Layout
    mount: Path  # the hierarchy's mount point
    own: PurePosixPath  # the daemon's cgroup, relative to the mount ("/" = its root)


def own_cgroups(proc_cgroup: str) -> tuple[PurePosixPath | None, PurePosixPath | None]:
    """(v2 path, v1 memory path) of a process from its /proc/PID/cgroup text."""
    v2 = v1 = None
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, controllers, path = parts
        if hid == "0" and controllers == "":
            v2 = PurePosixPath(path)
        elif "memory" in controllers.split(","):
            v1 = PurePosixPath(path)
    return v2, v1


def _relative_to_mount(path: PurePosixPath, mount_root: PurePosixPath) -> PurePosixPath:
    if mount_root == PurePosixPath("/"):
        return path
    try:
        return PurePosixPath("/") / path.relative_to(mount_root)
    except ValueError:  # outside what the mount shows (another namespace): use its top
        return PurePosixPath("/")


def find_hierarchy(
    mountinfo: str, proc_cgroup: str, v2_controllers: Callable[[Path], str]
) -> Hierarchy | None:
    """The hierarchy holding the memory controller: cgroup v2 if its mount offers `memory`
    (`v2_controllers(mount)` reads its cgroup.controllers), else a v1 `memory` mount (hybrid
    layouts), else None."""
    v2_own, v1_own = own_cgroups(proc_cgroup)
    mounts = cgroup_mounts(mountinfo)
    for m in mounts:
        if m.fstype == "cgroup2" and v2_own is not None:
            if "memory" in v2_controllers(Path(m.point)).split():
                return Hierarchy(Layout.V2, Path(m.point), _relative_to_mount(v2_own, m.root))
    for m in mounts:
        if m.fstype == "cgroup" and "memory" in m.super_options and v1_own is not None:
            return Hierarchy(Layout.V1, Path(m.point), _relative_to_mount(v1_own, m.root))
    return None


def mount_args(proc_cgroup: str) -> tuple[str, str] | None:
    """(fstype, options) that mount our memory hierarchy where none is visible (e.g. under
    `ip netns exec`, which mounts a fresh /sys without /sys/fs/cgroup)."""
    v2, v1 = own_cgroups(proc_cgroup)
    if v1 is not None:
        return "cgroup", "memory"
    if v2 is not None:
        return "cgroup2", ""
    return None


def vm_parent(hierarchy: Hierarchy, instance: str) -> Path:
    """Where one daemon's VM cgroups go: `steelcup/<instance>` next to the daemon's own cgroup
    (a sibling, not a child: cgroup v2 lets no cgroup with processes have children with
    controllers), so that two daemons (state roots) never clean up each other's VMs."""
    own = hierarchy.own
    base = own.parent if own != PurePosixPath("/") else own
    return hierarchy.mount / base.relative_to("/") / GROUP_NAME / instance


def overhead_mib(accel: str, tcg_tb_mib: int) -> int:
    """The default per-VM overhead: QEMU's own memory, and under TCG its translation cache
    (which a busy guest fills up to `tcg_tb_mib`)."""
    return QEMU_OVERHEAD_MIB + (tcg_tb_mib if accel == "tcg" else 0)


def limit_bytes(mem_mib: int, overhead_mib: int) -> int:
    """A VM's limit: its guest RAM, all of which the guest may make private (copy-on-write
    copies of template pages, or anonymous RAM), plus QEMU's own memory."""
    return (mem_mib + overhead_mib) * MIB


@dataclass(frozen=True)
class Write:
    file: str
    value: str
    optional: bool = False  # absent (no swap accounting) or refused for ordering: go on


def limit_writes(layout: Layout, limit: int) -> tuple[Write, ...]:
    """The writes that set a VM cgroup's limit to `limit` bytes, in order.

    v2: memory.max; no swap (memory.swap.max 0), or a VM could page its guest out past the
    limit; memory.oom.group so the kill takes QEMU with its helpers.
    v1: memory.limit_in_bytes, and memory+swap (memsw) at the same value. The kernel keeps
    memsw >= memory at every step, so memsw is written first (succeeds when raising) and again
    last (succeeds when lowering)."""
    value = str(limit)
    if layout is Layout.V2:
        return (Write("memory.max", value), Write("memory.swap.max", "0", optional=True),
                Write("memory.oom.group", "1", optional=True))
    memsw = "memory.memsw.limit_in_bytes"
    return (Write(memsw, value, optional=True), Write("memory.limit_in_bytes", value),
            Write(memsw, value, optional=True))


def events_file(layout: Layout) -> str:
    """The file whose `oom_kill N` line counts OOM kills in the cgroup."""
    return "memory.events" if layout is Layout.V2 else "memory.oom_control"


def usage_file(layout: Layout) -> str:
    return "memory.current" if layout is Layout.V2 else "memory.usage_in_bytes"


def peak_file(layout: Layout) -> str:
    return "memory.peak" if layout is Layout.V2 else "memory.max_usage_in_bytes"


def oom_kills(text: str) -> int:
    """The `oom_kill` count of memory.events (v2) or memory.oom_control (v1)."""
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            with contextlib.suppress(ValueError):
                return int(value)
    return 0


def join(procs_file: str) -> None:
    """Move the calling process into a cgroup (a forked child, before it execs QEMU)."""
    write_file(Path(procs_file), str(os.getpid()))


class CgroupError(OSError):
    pass


class VmCgroup:
    """One VM's cgroup: created before its QEMU starts, removed after it is reaped."""

    def __init__(self, path: Path, layout: Layout, overhead_mib: int,
                 borrowed: bool = False) -> None:
        self.path = path
        self.layout = layout
        self.overhead_mib = overhead_mib
        self.mem_mib = 0
        self._oom_kills_at_remove = 0
        # A cgroup that is not the daemon's (a container's host cgroup, HostConfig.
        # SteelcupCgroup): the VM's limit is set there, but its owner removes it.
        self.borrowed = borrowed

    def lend_to(self, path: Path) -> Path:
        """Make `path` (a container's cgroup, which QEMU joins next) this VM's memory cgroup,
        with the VM's limit; returns the cgroup it had, to remove once QEMU has left it
        (CgroupError if the limit cannot be set there)."""
        old, old_borrowed = self.path, self.borrowed
        self.path, self.borrowed = path, True
        try:
            self.set_limit(self.mem_mib)
        except CgroupError:
            self.path, self.borrowed = old, old_borrowed
            raise
        return old

    def take_back(self, path: Path, borrowed: bool = False) -> None:
        """Undo `lend_to` (QEMU could not join the container's cgroup)."""
        self.path, self.borrowed = path, borrowed

    def __repr__(self) -> str:
        return f"<VmCgroup {self.path} {self.mem_mib}+{self.overhead_mib} MiB>"

    @property
    def procs_file(self) -> str:
        return str(self.path / PROCS_FILE)

    def create(self, mem_mib: int) -> None:
        """Make the cgroup (again, after a failed boot attempt) with the limit for `mem_mib`."""
        with contextlib.suppress(FileExistsError):
            self.path.mkdir()
        self.set_limit(mem_mib)

    def set_limit(self, mem_mib: int) -> None:
        """Limit the VM to `mem_mib` of guest RAM plus the overhead (before the guest grows to
        it: at hand-out the limit is raised first, then the balloon deflated)."""
        for w in limit_writes(self.layout, limit_bytes(mem_mib, self.overhead_mib)):
            try:
                write_file(self.path / w.file, w.value)
            except OSError as exc:
                if not w.optional or exc.errno not in (errno.ENOENT, errno.EINVAL):
                    raise CgroupError(exc.errno, f"cannot set {w.file} of {self.path} to "
                                                 f"{w.value}: {exc.strerror}") from exc
        self.mem_mib = mem_mib

    def _read(self, name: str) -> str:
        return (self.path / name).read_text()

    def oom_kills(self) -> int:
        """OOM kills in this cgroup so far (also after `remove`: counted before it)."""
        try:
            return oom_kills(self._read(events_file(self.layout)))
        except OSError:
            return self._oom_kills_at_remove

    def usage_bytes(self) -> int:
        return int(self._read(usage_file(self.layout)))

    def peak_bytes(self) -> int:
        return int(self._read(peak_file(self.layout)))

    def stat(self) -> dict[str, int]:
        out = {}
        for line in self._read("memory.stat").splitlines():
            key, _, value = line.partition(" ")
            with contextlib.suppress(ValueError):
                out[key] = int(value)
        return out

    def remove(self) -> bool:
        """rmdir the cgroup; False while a process is still in it (EBUSY). Pages it charged
        (page cache) stay accounted to the parent's hierarchy until they are freed."""
        with contextlib.suppress(OSError):
            self._oom_kills_at_remove = oom_kills(self._read(events_file(self.layout)))
        if self.borrowed:  # its owner's to remove (steelcup-runtime's delete)
            return True
        try:
            self.path.rmdir()
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                return False
            raise
        return True


@dataclass(frozen=True)
class MemoryCgroups:
    """The daemon's VM cgroups: one parent directory, the per-VM overhead (a setting)."""

    layout: Layout
    parent: Path
    overhead_mib: int
    mounted: Path | None = None  # a hierarchy mount of our own (unmounted by close)

    @classmethod
    def discover(cls, instance: str, overhead_mib: int, mount_at: Path | None = None
                 ) -> MemoryCgroups | None:
        """This host's memory hierarchy (v2, or v1 on a hybrid host) with the parent for
        `instance` next to our own cgroup; None if there is no memory controller. With
        `mount_at`, a hierarchy our mount namespace does not show is mounted there."""

        def controllers(mount: Path) -> str:
            try:
                return (mount / "cgroup.controllers").read_text()
            except OSError:
                return ""

        try:
            proc_cgroup = Path("/proc/self/cgroup").read_text()
            hierarchy = find_hierarchy(Path("/proc/self/mountinfo").read_text(), proc_cgroup,
                                       controllers)
            mounted = None
            args = mount_args(proc_cgroup)
            if hierarchy is None and mount_at is not None and args is not None:
                mount_at.mkdir(parents=True, exist_ok=True)
                sysmount.mount_kernel_fs(args[0], mount_at, args[1])
                mounted = mount_at
                hierarchy = find_hierarchy(Path("/proc/self/mountinfo").read_text(),
                                           proc_cgroup, controllers)
        except OSError as exc:
            log.warning("cannot find or mount the memory cgroup hierarchy: %s", exc)
            return None
        if hierarchy is None:
            return None
        return cls(hierarchy.layout, vm_parent(hierarchy, instance), overhead_mib, mounted)

    def setup(self, keep: Collection[str] = ()) -> None:
        """Create the parent, removing what a previous daemon with the same instance left
        (its QEMUs, if any survived it, are killed: they were ours), except the VM cgroups
        named in `keep` (live restore). CgroupError if the parent cannot be made (read-only
        cgroupfs, no permission)."""
        try:
            self.parent.mkdir(parents=True, exist_ok=True)
            if self.layout is Layout.V2:
                # Children of steelcup/ and of steelcup/<instance> need the controller.
                for d in (self.parent.parent, self.parent):
                    write_file(d / "cgroup.subtree_control", "+memory")
        except OSError as exc:
            raise CgroupError(exc.errno, f"cannot create memory cgroup {self.parent}: "
                                         f"{exc.strerror}") from exc
        self.remove_stale(keep)

    def remove_stale(self, keep: Collection[str] = ()) -> list[str]:
        """Remove every VM cgroup under the parent (a previous daemon's) but those named in
        `keep`; returns their names."""
        removed = []
        for child in sorted(p for p in self.parent.iterdir()
                            if p.is_dir() and p.name not in keep):
            deadline = time.monotonic() + STALE_KILL_DEADLINE_S
            while True:
                try:
                    pids = (child / PROCS_FILE).read_text().split()
                except OSError:
                    pids = []
                if not pids or time.monotonic() > deadline:
                    break
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(pid), signal.SIGKILL)
                time.sleep(0.02)  # until the killed have exited (startup only)
            try:
                child.rmdir()
                removed.append(child.name)
            except OSError as exc:
                log.warning("stale VM cgroup %s not removed: %s", child, exc)
        if removed:
            log.info("removed %d stale VM cgroup(s) under %s", len(removed), self.parent)
        return removed

    def vm(self, name: str) -> VmCgroup:
        """The cgroup (not yet created) for the VM `name` (unique under the parent)."""
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"bad VM cgroup name {name!r}")
        return VmCgroup(self.parent / name, self.layout, self.overhead_mib)

    def close(self) -> None:
        """Remove the (then empty) parent, and steelcup/ if no other daemon uses it."""
        for d in (self.parent, self.parent.parent):
            with contextlib.suppress(OSError):
                d.rmdir()
        if self.mounted is not None:
            with contextlib.suppress(OSError):
                sysmount.umount(self.mounted, sysmount.MNT_DETACH)
                self.mounted.rmdir()
