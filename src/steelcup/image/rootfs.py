"""A container's rootfs on the host: an overlayfs of the image layers plus a private upper dir.

Layout of `container_dir`: `l/<n>` short symlinks to the layer dirs (keeps the mount option
string short for images with many layers), `upper/`, `work/`, `empty/` (zero-layer images) and
the mount point `rootfs/`.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

from steelcup import sysmount
from steelcup.errors import ImageError, SteelcupError

MOUNT_TIMEOUT_S = 30.0
_MAX_OPTIONS_BYTES = 4000  # the kernel copies at most one page of mount data


def prepare(layer_dirs: list[Path], container_dir: Path) -> Path:
    """Mount the overlay (lowest layer first in `layer_dirs`) at `container_dir/rootfs`."""
    rootfs = container_dir / "rootfs"
    if sysmount.is_mountpoint(rootfs):
        return rootfs
    links = container_dir / "l"
    if links.exists():
        shutil.rmtree(links)
    for name in ("upper", "work", "rootfs", "l"):
        (container_dir / name).mkdir(parents=True, exist_ok=True)
    lowers = [Path(d).resolve() for d in layer_dirs]
    if not lowers:
        empty = container_dir / "empty"
        empty.mkdir(exist_ok=True)
        lowers = [empty.resolve()]
    for d in lowers:
        if not d.is_dir():
            raise ImageError(f"layer directory {d} is missing")
    # topmost first; relative short names, resolved against the mount's cwd
    names = []
    for i, d in enumerate(reversed(lowers)):
        os.symlink(d, links / str(i))
        names.append(f"l/{i}")
    # nosuid,nodev: whatever a guest or an image made of its files, executing or opening them
    # through this mount grants nothing on the host.
    options = f"nosuid,nodev,lowerdir={':'.join(names)},upperdir=upper,workdir=work"
    if len(options) > _MAX_OPTIONS_BYTES:
        raise ImageError(f"image has too many layers ({len(lowers)}) for one overlay mount")
    argv = ["mount", "-t", "overlay", "overlay", "-o", options, "rootfs"]
    try:
        proc = subprocess.run(
            argv, cwd=container_dir, capture_output=True, text=True, timeout=MOUNT_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SteelcupError(f"mounting the container rootfs failed: {exc}") from exc
    if proc.returncode != 0:
        raise SteelcupError(
            f"mounting the container rootfs failed: {proc.stderr.strip() or proc.returncode}"
        )
    return rootfs


def release(container_dir: Path) -> None:
    """Unmount `container_dir/rootfs` (lazily if busy). Idempotent."""
    rootfs = container_dir / "rootfs"
    while sysmount.is_mountpoint(rootfs):  # stacked mounts: peel them all
        try:
            sysmount.umount(rootfs, 0)
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise SteelcupError(f"unmounting {rootfs} failed: {exc.strerror}") from exc
            sysmount.umount(rootfs, sysmount.MNT_DETACH)


def remove(container_dir: Path) -> None:
    """Release the rootfs and delete the whole container dir (upper layer included)."""
    release(container_dir)
    if container_dir.exists():
        shutil.rmtree(container_dir)
