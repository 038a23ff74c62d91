"""A container's rootfs on the host: an overlayfs of the image layers plus a private upper dir.

Layout of `container_dir`: `l/<n>` short symlinks to the layer dirs (keeps the mount option
string short for images with many layers), `empty/` (zero-layer images), the mount point
`rootfs/`, and the writable layer: `rw.img`, a filesystem of bounded size (steelcup.boundedfs)
mounted on `rw/` with `rw/upper/` and `rw/work/` inside. Containers created before layers had
a size keep `upper/` and `work/` directly in `container_dir` (unbounded).

With a VM id range (steelcup.idmap) the layers come in idmapped and the writable layer holds
shifted ids; `ids` records which range it holds (none: unshifted, a container made before),
and a writable layer made under another range is shifted to the new one before mounting.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from steelcup import boundedfs, sysmount, userns
from steelcup.errors import ImageError, SteelcupError
from steelcup.idmap import IdRange

MOUNT_TIMEOUT_S = 30.0
_MAX_OPTIONS_BYTES = 4000  # the kernel copies at most one page of mount data


DISK_IMAGE = "rw.img"
DISK_MOUNT = "rw"
IDS_FILE = "ids"
# --rootfs-cache block: the host's overlay work dir (the guest's overlay has `work/`), and the
# host overlay's options over a writable layer the guest wrote: the guest's xattrs, and no
# redirect, metacopy or index xattr of its making followed.
HOST_WORK = "hwork"
GUEST_OVERLAY = "userxattr,redirect_dir=nofollow,index=off,metacopy=off,xino=off"


def ids_of(container_dir: Path) -> IdRange | None:
    """The id range the container's writable layer is stored with (None: guest ids)."""
    try:
        base, count = (container_dir / IDS_FILE).read_text().split()
        return IdRange(int(base), int(count))
    except (OSError, ValueError):
        return None


def _store_ids(container_dir: Path, upper: Path, ids: IdRange | None) -> None:
    """Make the writable layer hold `ids` (shifting what it has) and record that."""
    old = ids_of(container_dir)
    if old == ids:
        return
    userns.shift_tree(upper, old, ids)
    marker = container_dir / IDS_FILE
    if ids is None:
        marker.unlink(missing_ok=True)
    else:
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(f"{ids.base} {ids.count}\n")
        tmp.replace(marker)


def _bounded(container_dir: Path) -> bool:
    """Whether the writable layer lives in a disk image (not a legacy plain upper dir)."""
    return (container_dir / DISK_IMAGE).exists() or not (container_dir / "upper").is_dir()


def guest_layer(container_dir: Path) -> Path:
    """The directory holding the writable layer's `upper/` and `work/`, once mounted: the
    share of a container whose guest overlays its root (`prepare(guest_overlay=True)`)."""
    return container_dir / DISK_MOUNT


def upper_dir(container_dir: Path) -> Path:
    """Where the container's writable layer (the overlay's upper dir) is, once mounted."""
    if _bounded(container_dir):
        return container_dir / DISK_MOUNT / "upper"
    return container_dir / "upper"


def mount_layer(container_dir: Path, *, fresh: bool = False,
                loop: boundedfs.Loop | None = None) -> Path:
    """Mount the writable layer if it has a disk image that is not mounted; its upper dir (which
    does not exist for a container that never ran). `fresh`: its image was made just now;
    `loop`: the loop device bound to it already (a spare's), let go here if not used.
    Undo with `release`."""
    image = container_dir / DISK_IMAGE
    if image.exists() and not sysmount.is_mountpoint(container_dir / DISK_MOUNT):
        boundedfs.mount(image, container_dir / DISK_MOUNT, fresh=fresh, loop=loop)
    elif loop is not None:
        os.close(loop.fd)
    return upper_dir(container_dir)


def prepare(
    layer_dirs: list[Path],
    container_dir: Path,
    disks: boundedfs.DiskMaker | None = None,
    size_bytes: int = 0,
    ids: IdRange | None = None,
    guest_overlay: bool = False,
) -> Path:
    """Mount the overlay (lowest layer first in `layer_dirs`) at `container_dir/rootfs`.

    With `disks` and a `size_bytes`, the writable layer is a filesystem of that size (made on
    first use); without, or for a container made before layers had a size, a plain directory.
    With `ids`, `layer_dirs` are the idmapped view of the layers for that range
    (ImageStore.layer_dirs) and the writable layer holds ids shifted to it.

    `guest_overlay` (--rootfs-cache block): the guest overlays the writable layer's `upper/`
    and `work/` itself (`guest_layer` is its share), so the host's view of the root is an
    overlay of its own with the guest's xattrs (`user.overlay.*`), a work dir of its own
    (`hwork/`) and nothing a guest could have written that it would follow (`GUEST_OVERLAY`).
    """
    rootfs = container_dir / "rootfs"
    if sysmount.is_mountpoint(rootfs):
        return rootfs
    links = container_dir / "l"
    if links.exists():
        shutil.rmtree(links)
    for name in ("rootfs", "l"):
        (container_dir / name).mkdir(parents=True, exist_ok=True)
    if disks is not None and size_bytes and _bounded(container_dir):
        made = disks.make(container_dir / DISK_IMAGE, size_bytes)
        mount_layer(container_dir, fresh=made, loop=disks.take_loop(container_dir / DISK_IMAGE))
        rw = container_dir / DISK_MOUNT
    else:
        rw = container_dir
    if guest_overlay and rw == container_dir:
        raise SteelcupError("a root the guest overlays needs a writable layer of its own size")
    fresh = not (rw / "upper").exists()
    for name in ("upper", "work", *((HOST_WORK,) if guest_overlay else ())):
        (rw / name).mkdir(exist_ok=True)
    if fresh and ids is not None:
        os.chown(rw / "upper", ids.base, ids.base)  # the root dir, as the guest's root's
        if guest_overlay:  # the guest's overlay works in it (through QEMU)
            os.chown(rw / "work", ids.base, ids.base)
        (container_dir / IDS_FILE).write_text(f"{ids.base} {ids.count}\n")
    try:
        _store_ids(container_dir, rw / "upper", ids)
    except OSError as exc:
        release(container_dir)
        raise SteelcupError(f"re-storing the container's files for its VM failed: {exc}"
                            ) from exc
    upper = os.path.relpath(rw / "upper", container_dir)
    work = os.path.relpath(rw / (HOST_WORK if guest_overlay else "work"), container_dir)
    extra = f",{GUEST_OVERLAY}" if guest_overlay else ""
    lowers = [Path(d).resolve() for d in layer_dirs]
    if not lowers:
        empty = container_dir / "empty"
        empty.mkdir(exist_ok=True)
        lowers = [empty.resolve()]
    for d in lowers:
        if not d.is_dir():
            raise ImageError(f"layer directory {d} is missing")
    # nosuid,nodev: whatever a guest or an image made of its files, executing or opening them
    # through this mount grants nothing on the host.
    direct = _direct_options(lowers, Path(os.path.abspath(container_dir / upper)),
                             Path(os.path.abspath(container_dir / work)))
    if direct is not None:
        direct += extra
        try:
            sysmount.mount("overlay", rootfs, "overlay", sysmount.MS_NOSUID | sysmount.MS_NODEV,
                           direct)
        except OSError as exc:
            release(container_dir)
            raise SteelcupError(f"mounting the container rootfs failed: {exc.strerror or exc}"
                                ) from exc
        return rootfs
    # topmost first; relative short names, resolved against the mount's cwd
    names = []
    for i, d in enumerate(reversed(lowers)):
        os.symlink(d, links / str(i))
        names.append(f"l/{i}")
    options = f"nosuid,nodev,lowerdir={':'.join(names)},upperdir={upper},workdir={work}{extra}"
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
        release(container_dir)
        raise SteelcupError(
            f"mounting the container rootfs failed: {proc.stderr.strip() or proc.returncode}"
        )
    return rootfs


def _direct_options(lowers: list[Path], upper: Path, work: Path) -> str | None:
    """The overlay's mount data with absolute paths, for mount(2) from this process: no
    `mount` process, which costs a fork and an exec and reads the whole mount table (0.74 vs
    2.98 ms a mount with 22 mounts on the host). None when a path holds a character the
    overlay's option parser treats specially, or the data would not fit in the one page the
    kernel copies (many layers): then `mount` runs in the container's directory with short
    relative names."""
    paths = [str(d) for d in reversed(lowers)] + [str(upper), str(work)]
    if any(c in path for path in paths for c in ",:\\="):
        return None
    options = f"lowerdir={':'.join(paths[:-2])},upperdir={paths[-2]},workdir={paths[-1]}"
    return options if len(options) <= _MAX_OPTIONS_BYTES else None


HOST_LAYER = "host-root"


def overlay_layers(options: str) -> list[str]:
    """The directories of an overlay mount, topmost first (upper, then the lowers), from its
    super options as mountinfo shows them. InvalidArgument for what cannot be taken apart:
    relative or escaped paths, data-only layers."""
    upper: list[str] = []
    lowers: list[str] = []
    for option in options.split(","):
        key, _, value = option.partition("=")
        if key == "upperdir":
            upper = [value]
        elif key == "lowerdir":
            lowers += value.split(":")
        elif key == "lowerdir+":
            lowers.append(value)
        elif key == "datadir+":
            raise ImageError("an overlay with data-only layers cannot be a container's root")
    layers = upper + lowers
    if not lowers or any(not d.startswith("/") or "\\" in d for d in layers):
        raise ImageError(f"cannot take the overlay apart into its layers ({options})")
    return layers


def host_dir_layers(source: Path, container_dir: Path, ids: IdRange | None = None
                    ) -> list[Path]:
    """An existing host directory (an OCI bundle's rootfs, which its engine mounted) as the
    read-only layers of the container's overlay, lowest first, in place of an image's layers.

    Without `ids`, the directory itself. With `ids`, idmapped views under
    `container_dir/host-root/N`, so that the VM's root owns what host root owns there, as the
    same container under runc would (an operator's choice: tenants cannot ask for it). An
    overlay cannot be idmapped, so an overlay mounted there (podman's overlay driver) is
    taken apart: its upper and lower directories, each mapped. The container's writes go to
    its own writable layer, never to `source`."""
    if not source.is_absolute() or not source.is_dir():
        raise ImageError(f"the container's root directory {source} does not exist")
    if ids is None:
        return [source]
    mounted = sysmount.filesystem_at(source)
    parts = ([Path(d) for d in overlay_layers(mounted[1])]
             if mounted is not None and mounted[0] == "overlay" else [source])
    views = []
    for n, part in enumerate(parts):
        view = container_dir / HOST_LAYER / str(n)
        views.append(view)
        if sysmount.is_mountpoint(view):
            continue
        view.mkdir(parents=True, exist_ok=True)
        try:
            userns.idmapped_bind(Path(os.path.realpath(part)), view, ids.ns_map())
        except OSError as exc:
            release(container_dir)
            raise SteelcupError(f"mapping {part} (of the container's root directory {source}) "
                                f"into the VMs' user namespace failed: {exc.strerror or exc}"
                                ) from exc
    return list(reversed(views))


def _host_views(container_dir: Path) -> list[Path]:
    base = container_dir / HOST_LAYER
    return sorted(base.iterdir()) if base.is_dir() else []


def release(container_dir: Path) -> None:
    """Unmount `container_dir/rootfs`, then the writable layer (lazily if busy). Idempotent."""
    boundedfs.unmount(container_dir / "rootfs")
    boundedfs.unmount(container_dir / DISK_MOUNT)
    for view in _host_views(container_dir):
        boundedfs.unmount(view)


def remove(container_dir: Path) -> None:
    """Release the rootfs and delete the whole container dir (upper layer included)."""
    release(container_dir)
    for view in _host_views(container_dir):
        if sysmount.is_mountpoint(view):
            # Never delete through a mount of a host directory (host_dir_layers)
            raise SteelcupError(f"{view} is still mounted; not deleting the container's files")
    if container_dir.exists():
        shutil.rmtree(container_dir)
