"""An image's files as one erofs filesystem image: the read-only lower layer a VM mounts from a
virtio-blk disk when its container's root is a block device (docs/architecture.md, "The root as
a block device").

One file per image, made from the image's layers merged (a read-only overlay of the unpacked
layer directories, so whiteouts and opaque directories are already applied) with `mkfs.erofs`:
uncompressed (a TCG guest would pay for every decompression), each file's owner, mode, mtime and
xattrs as in the layers (the image's own ids: the guest sees them as the image has them, as it
does through 9p). The file is then extended, sparsely, to `CAPACITY_BYTES`: every image and the
pooled VMs' empty placeholder have the same apparent size, so a disk whose backing file changes
at hand-out never changes capacity in the guest.

The host builds the image from files it unpacked itself; the guest only ever reads it (the disk
is read-only), so the guest kernel parses nothing a container wrote.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

from steelcup import sysmount
from steelcup.errors import ImageError, SteelcupError
from steelcup.image.erofs_files import Layout, drop_cached, hot_paths, read_layout_quietly
from steelcup.image.fair_queue import FairQueue

log = logging.getLogger(__name__)

# The apparent size of every erofs image and of the placeholder: larger than any image.
CAPACITY_BYTES = 1 << 40
MKFS_TIMEOUT_S = 1800.0
BUILD_NICE = 10
LAYOUTS_KEPT = 8  # images whose layout (ErofsImages.hot_paths) stays in memory
SUFFIX = ".erofs"
# Bump when the mkfs options change: images of an older format are made again.
FORMAT = "v1"
# Defaults otherwise: no compression, each file's own mtime (an inode whose mtime is not the
# build time is stored extended), xattrs kept (security.capability, ACLs, user.*; an overlay
# shows none of its own trusted.overlay.* ones).
_MKFS = ("mkfs.erofs", "--quiet", "--preserve-mtime", "-x", "2")


def image_path(store_dir: Path, image_id: str) -> Path:
    """Where the erofs image of `image_id` ("sha256:...") lives in `store_dir`."""
    return store_dir / f"{image_id.removeprefix('sha256:')}-{FORMAT}{SUFFIX}"


def build(layer_dirs: list[Path], out: Path, scratch: Path) -> None:
    """Make `out` from `layer_dirs` (lowest first), merged; blocking (seconds for a large
    image). Written to a temporary name first: `out` is either whole or absent."""
    if not layer_dirs:
        raise ImageError("an image without layers has no erofs image")
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch, prefix="erofs-") as tmp:
        merged = Path(tmp) / "merged"
        merged.mkdir()
        empty = Path(tmp) / "empty"
        empty.mkdir()
        # Two lowers at least (an overlay without an upper needs them): an empty one below.
        lowers = ":".join(str(d) for d in [*reversed(layer_dirs), empty])
        try:
            sysmount.mount("overlay", merged, "overlay",
                           sysmount.MS_RDONLY | sysmount.MS_NOSUID | sysmount.MS_NODEV,
                           f"lowerdir={lowers}")
        except OSError as exc:
            raise ImageError(f"merging the image's layers failed: {exc.strerror or exc}"
                             ) from exc
        partial = out.with_name(f".{out.name}.partial")
        try:
            _mkfs(merged, partial)
            with open(partial, "r+b") as f:
                f.truncate(max(CAPACITY_BYTES, os.fstat(f.fileno()).st_size))
                os.fsync(f.fileno())
                # what the host caches of it from now on is what guests read (erofs_files)
                drop_cached(f.fileno())
            os.chmod(partial, 0o600)
            os.rename(partial, out)
        finally:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
            sysmount.umount(merged, sysmount.MNT_DETACH)


def _mkfs(source: Path, out: Path) -> None:
    try:
        proc = subprocess.run([*_MKFS, str(out), str(source)], capture_output=True, text=True,
                              timeout=MKFS_TIMEOUT_S)
    except FileNotFoundError as exc:
        raise ImageError("mkfs.erofs is not installed (apt-get install erofs-utils)") from exc
    except subprocess.TimeoutExpired as exc:
        raise ImageError(f"mkfs.erofs took longer than {MKFS_TIMEOUT_S:.0f} s") from exc
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise ImageError(f"mkfs.erofs failed ({proc.returncode}): {' / '.join(tail)}")


def make_placeholder(path: Path) -> Path:
    """An empty file of `CAPACITY_BYTES` (sparse) at `path`, made once: the disk a pooled VM
    boots with until hand-out gives it an image."""
    if path.exists() and path.stat().st_size == CAPACITY_BYTES:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    with open(partial, "wb") as f:
        f.truncate(CAPACITY_BYTES)
    os.rename(partial, path)
    return path


class ErofsImages:
    """The erofs images of a daemon's images, in `directory`: made in the background, one at
    a time, when asked (`ensure`: an image arrived, or a container of an image that has none
    was created); a container created before its image's is ready keeps its root over 9p.
    Builds are done in a fair order (`FairQueue`): one a create waits for first, then the
    tenants' in turn. Deleted with their image (`forget`). Thread-safe."""

    def __init__(self, directory: Path, scratch: Path) -> None:
        self.directory = directory
        self.scratch = scratch
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue = FairQueue()  # image ids to make, not yet begun
        self._sources: dict[str, Callable[[], list[Path]]] = {}  # their layer_dirs
        self._building: dict[str, Future[None]] = {}  # queued or being made
        self._failed: set[str] = set()  # image ids whose build failed (logged, not retried)
        self._forgotten: set[str] = set()  # removed while being made: deleted once made
        self._closed = False
        self._layouts: OrderedDict[tuple[str, int, int], Layout] = OrderedDict()
        directory.mkdir(parents=True, exist_ok=True)
        for leftover in directory.glob(".*.partial"):  # from a crash mid-build
            leftover.unlink(missing_ok=True)
        self._worker = threading.Thread(target=self._work, name="erofs", daemon=True)
        self._worker.start()

    def ready(self, image_id: str) -> Path | None:
        """The erofs image of `image_id` if it is made."""
        path = image_path(self.directory, image_id)
        return path if path.exists() else None

    def disk_bytes(self, image_id: str) -> int:
        """The disk space `image_id`'s erofs image takes (0 if it is not made)."""
        try:
            return image_path(self.directory, image_id).stat().st_blocks * 512
        except FileNotFoundError:
            return 0

    def ensure(self, image_id: str, layer_dirs: Callable[[], list[Path]], *, owner: str = "",
               urgent: bool = False) -> Future[None] | None:
        """Queue the making of the erofs image of `image_id` from its layers (`layer_dirs()`,
        lowest first, read in the builder's thread) for tenant `owner`, unless it is made or
        failed before; `urgent`: somebody waits for it (it goes first). The future of its
        build (this one or the one queued or under way; it never raises; cancelled if the
        daemon stops first), or None."""
        with self._lock:
            if self.ready(image_id) is not None or image_id in self._failed or self._closed:
                return None
            under_way = self._building.get(image_id)
            if under_way is not None:
                self._forgotten.discard(image_id)  # removed, and back: its build is kept
                if urgent:
                    self._queue.promote(image_id)
                return under_way
            future: Future[None] = Future()
            self._building[image_id] = future
            self._sources[image_id] = layer_dirs
            self._queue.add(image_id, owner, urgent=urgent)
            self._wake.notify()
            return future

    def _work(self) -> None:
        # this thread (and its mkfs) makes way for running containers
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BUILD_NICE)
        while True:
            with self._lock:
                while not self._closed and not self._queue:
                    self._wake.wait()
                if self._closed:
                    return
                image_id = self._queue.take()
                assert image_id is not None
                layer_dirs = self._sources.pop(image_id)
                future = self._building[image_id]
            if not future.set_running_or_notify_cancel():  # cancelled while it waited
                with self._lock:
                    self._building.pop(image_id, None)
                continue
            try:
                self._build(image_id, layer_dirs)
            except Exception:  # a bug: the next images are still made
                log.exception("image %s: making its erofs failed", image_id)
                with self._lock:
                    self._failed.add(image_id)
            finally:
                future.set_result(None)

    def _build(self, image_id: str, layer_dirs: Callable[[], list[Path]]) -> None:
        began = time.monotonic()
        try:
            build(layer_dirs(), image_path(self.directory, image_id), self.scratch)
        except (SteelcupError, OSError) as exc:
            with self._lock:
                self._failed.add(image_id)
            log.warning("image %s: no erofs image, its containers' roots stay on 9p: %s",
                        image_id.removeprefix("sha256:")[:12], exc)
        else:
            log.info("image %s: erofs image made in %.1f s",
                     image_id.removeprefix("sha256:")[:12], time.monotonic() - began)
        finally:
            with self._lock:
                self._building.pop(image_id, None)
                if image_id in self._forgotten:
                    self._forgotten.discard(image_id)
                    image_path(self.directory, image_id).unlink(missing_ok=True)

    def hot_paths(self, image: Path, max_bytes: int) -> list[str]:
        """The files of the erofs image `image` (one of this store's) that guests have read
        lately (`erofs_files.hot_paths`: the host's page cache of it), at most `max_bytes` of
        them. Its layout is read once and kept (the last `LAYOUTS_KEPT` images). Blocking;
        OSError or ImageError if the image is gone or unreadable."""
        st = image.stat()
        key = (str(image), st.st_ino, st.st_mtime_ns)
        with self._lock:
            layout = self._layouts.get(key)
            if layout is not None:
                self._layouts.move_to_end(key)
        if layout is None:
            layout = read_layout_quietly(image)
            with self._lock:
                self._layouts[key] = layout
                while len(self._layouts) > LAYOUTS_KEPT:
                    self._layouts.popitem(last=False)
        fd = os.open(image, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return hot_paths(layout, fd, max_bytes)
        finally:
            os.close(fd)

    def forget(self, image_id: str) -> None:
        """`image_id` was removed: its erofs goes now, or once made if it is being made (a VM
        that has it open keeps reading it)."""
        with self._lock:
            self._failed.discard(image_id)
            if image_id in self._queue:  # not begun: it never will be
                self._queue.discard(image_id)
                self._drop_queued(image_id)
                return
            if image_id in self._building:
                self._forgotten.add(image_id)
                return
            image_path(self.directory, image_id).unlink(missing_ok=True)

    def prune(self, image_ids: set[str]) -> None:
        """Delete the erofs images of images not in `image_ids` (removed ones)."""
        keep = {image_path(self.directory, i).name for i in image_ids}
        for path in self.directory.glob(f"*{SUFFIX}"):
            if path.name not in keep:
                path.unlink(missing_ok=True)

    def close(self) -> None:
        """Stop: the builds not begun are cancelled; the one under way is waited for."""
        with self._lock:
            self._closed = True
            while (image_id := self._queue.take()) is not None:
                self._drop_queued(image_id)
            self._wake.notify_all()
        self._worker.join()

    def _drop_queued(self, image_id: str) -> None:
        """Forget the making of `image_id`, taken out of the queue before it began (the lock
        held): its waiters see its future cancelled."""
        del self._sources[image_id]
        self._building.pop(image_id).cancel()
