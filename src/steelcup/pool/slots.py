"""The host side of a pooled VM's rootfs slot: what its QEMU exports before any container exists.

A warm-cache VM is restored with its rootfs 9p device on a slot directory (exported with
`multidevs=remap`: another filesystem is bound below it later). The slot holds
- `warm`: a copy of a small static program the VM runs once while it waits (cache.py), and
- `root/`: empty until hand-out, when the container's rootfs (its overlay mount) is bound there.
The guest then binds `root/` as the container root (SETUP_ROOT with SUBDIR) and detaches the
rest of the share, so the container never sees the slot itself.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from steelcup import sysmount

ROOT_SUBDIR = "root"
WARM_NAME = "warm"


@dataclass
class Slot:
    directory: Path
    has_warm: bool = False
    bound: bool = False

    @property
    def root(self) -> Path:
        return self.directory / ROOT_SUBDIR

    @property
    def warm(self) -> Path:
        return self.directory / WARM_NAME


def create(parent: Path, warm_program: Path | None, owner: int | None = None) -> Slot:
    """A new slot under `parent` with an empty `root/` and, if given, the warm-up program;
    owned by `owner` (QEMU's uid, which opens the slot itself) when given."""
    parent.mkdir(parents=True, exist_ok=True)
    slot = Slot(Path(tempfile.mkdtemp(prefix="s", dir=parent)))
    try:
        slot.root.mkdir(mode=0o755)
        if warm_program is not None:
            shutil.copyfile(warm_program, slot.warm)
            os.chmod(slot.warm, 0o755)
            slot.has_warm = True
        if owner is not None:
            for path in (slot.directory, slot.root, *([slot.warm] if slot.has_warm else [])):
                os.chown(path, owner, owner)
    except BaseException:
        shutil.rmtree(slot.directory, ignore_errors=True)
        raise
    return slot


def bind_root(slot: Slot, rootfs: Path) -> None:
    """Bind the container's rootfs on the slot's `root/` (OSError if it cannot)."""
    if slot.bound:
        raise OSError(f"slot {slot.directory} already holds a root")
    sysmount.bind(rootfs, slot.root)
    slot.bound = True


def release_dir(directory: Path) -> None:
    """`release` for a slot known only by its directory (a VM adopted after a daemon restart),
    whose root is bound."""
    release(Slot(directory, bound=True))


def release(slot: Slot) -> None:
    """Unbind the root (lazily: QEMU may still hold files) and delete the slot. Idempotent."""
    if slot.bound:
        with contextlib.suppress(OSError):
            sysmount.umount(slot.root, sysmount.MNT_DETACH)
        slot.bound = False
    # Never rmtree through a root that is still bound (the container's files).
    if not sysmount.is_mountpoint(slot.root):
        shutil.rmtree(slot.directory, ignore_errors=True)

