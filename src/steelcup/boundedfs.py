"""Filesystems of bounded size: a sparse ext4 image file, loop-mounted while in use. A
container's writable layer (image.rootfs) and a named volume (volume.manager) each live in one.

The host filesystem need not support quotas: a guest that writes past the size gets ENOSPC
from the ext4 inside the image, whatever the host's filesystem is. The image costs host space
only for what is written (mounted with `discard`: deleted files give it back). Images of the
daemon's default size are sparse copies of one template made once (mkfs costs more than the
copy); other sizes are made by mkfs directly, so clients asking for many sizes cannot fill the
host with templates. A maker with `spares` keeps that many default-size images made ahead and
written back to disk and attached to a loop device (a background thread makes them): taking
one is a rename and an ext4 mount of its loop device. A copy costs ~2 ms, attaching a
just-written image to a loop device waits ~8 ms for the kernel to write it back
(LOOP_CONFIGURE syncs its backing file), and LOOP_CONFIGURE freezes the device's queue, which
waits for an RCU grace period: 0.2 ms on a quiet host, 89-279 ms in 4 of 18 traced starts
on a busy one (docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import secrets
import struct
import subprocess
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

from steelcup import sysmount
from steelcup.errors import InvalidArgument, SteelcupError

MIB = 1 << 20
GIB = 1 << 30
MIN_BYTES = 16 * MIB
MAX_BYTES = 16 * (1 << 40)  # ext4's largest file on a 4 KiB-block host filesystem
TOOL_TIMEOUT_S = 60.0
# Bump when the mkfs options change: cached templates of an older format are not reused.
_FORMAT = "v1"
# -m 0: no blocks reserved for root (the guest's writes arrive as root's through QEMU anyway).
# lazy_itable_init + the `noinit_itable` mount option: inode tables are never zeroed, neither
# by mkfs nor by the kernel's lazyinit thread (which would write ~16 MiB per GiB of size into
# every container's image); the kernel does not read inodes of unused groups.
_MKFS = ("mkfs.ext4", "-q", "-F", "-m", "0",
         "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard,root_owner=0:0")
# An empty root has no lost+found: a volume's root is what the container sees at its mount
# point, and programs refuse a non-empty data dir (postgres' initdb) or seed only an empty one
# (docker's copy-up). e2fsck makes lost+found again should it ever need one.
_EMPTY_ROOT = ("debugfs", "-w", "-R", "rmdir lost+found")
# nosuid,nodev: nothing written in a container becomes privileged on the host. `discard`: a
# file the guest deletes gives its blocks back to the host (holes punched in the image).
MOUNT_FLAGS = sysmount.MS_NOSUID | sysmount.MS_NODEV
MOUNT_DATA = "noinit_itable,discard"
_LOOP_CTL_GET_FREE = 0x4C82
_LOOP_CONFIGURE = 0x4C0A  # Linux 5.8
_LO_FLAGS_AUTOCLEAR = 4
_LOOP_ATTEMPTS = 16  # another process may take the free device between query and configure
# How long a mount waits for an earlier, lazily detached mount of the same image to go.
RELEASE_DEADLINE_S = 30.0
_RELEASE_POLL_S = 0.01
SPARE_DIR = "spares"
SPARE_NICE = 10  # making spares yields the CPU to the runs that take them
# A spare is made once no start took one for this long: its write-back commits the host
# filesystem's journal, and a start's LOOP_CONFIGURE waits for the commit under way (~10 ms).
SPARE_QUIET_S = 0.2

log = logging.getLogger(__name__)


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_size(text: str) -> int:
    """Docker's RAMInBytes, as `--storage-opt size=` takes it: '20G', '512m', '1.5g', '4096'."""
    match = _SIZE.match(text)
    if match is None:
        raise InvalidArgument(f"invalid size: {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def format_size(size_bytes: int) -> str:
    """The shortest exact text `parse_size` reads back: 10737418240 -> '10G'."""
    for unit in "ptgmk":
        if size_bytes and size_bytes % _UNITS[unit] == 0:
            return f"{size_bytes // _UNITS[unit]}{unit.upper()}"
    return str(size_bytes)


def check_size(size_bytes: int, what: str = "storage size") -> int:
    if not MIN_BYTES <= size_bytes <= MAX_BYTES:
        raise InvalidArgument(
            f"{what} must be between {MIN_BYTES // MIB} MiB and {MAX_BYTES // GIB} GiB, "
            f"got {size_bytes} bytes")
    return size_bytes


@dataclass(frozen=True)
class Loop:
    """A loop device bound to an image (autoclear) and the open fd that keeps it bound: it is
    let go when the fd is closed, unless a mount of it holds it by then."""

    device: str
    fd: int


def _let_go(*held: dict[Path, Loop | None]) -> None:
    for loops in held:
        for loop in loops.values():
            if loop is not None:
                with contextlib.suppress(OSError):
                    os.close(loop.fd)
        loops.clear()


class DiskMaker:
    """Makes filesystem images labelled `label`; keeps the template of `default_bytes` in
    `cache_dir` (one maker, and one cache dir, per kind of image). With `empty_root`, the root
    directory of each image is empty (no lost+found). With `spares`, that many default-size
    images are kept made, each bound to a loop device the maker holds open (`close`, or the
    maker's end, lets them go)."""

    def __init__(self, cache_dir: Path, default_bytes: int, *, label: str = "steelcup-rw",
                 empty_root: bool = False, spares: int = 0) -> None:
        self.cache_dir = cache_dir
        self.default_bytes = check_size(default_bytes)
        self.label = label
        self.empty_root = empty_root
        self.spares = spares
        self._lock = threading.Lock()
        self._spare_lock = threading.Lock()
        self._filling: threading.Thread | None = None
        self._last_take = 0.0  # time.monotonic()
        # This maker's ready spares and their loop devices (None: it could not bind one); a
        # taken spare's moves to `_taken`, by the image it became, until `take_loop`.
        self._loops: dict[Path, Loop | None] = {}
        self._taken: dict[Path, Loop | None] = {}
        self._closed = False
        self._finalizer = weakref.finalize(self, _let_go, self._loops, self._taken)

    def template(self) -> Path:
        """The default-size template, made on first use (thread-safe)."""
        path = self._template_path()
        with self._lock:
            if not path.exists():
                self.cache_dir.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(path.name + ".part")
                self._mkfs(tmp, self.default_bytes)
                os.replace(tmp, path)
        return path

    def _template_path(self) -> Path:
        return self.cache_dir / f"ext4-{_FORMAT}-{self.default_bytes}.img"

    def make(self, image: Path, size_bytes: int) -> bool:
        """Create `image` (an empty filesystem of `size_bytes`) unless it exists; whether it
        did (a new image has never been mounted). A default-size image is a spare when there
        is one, and the spares are made up again in the background."""
        if image.exists():
            return False
        if size_bytes == self.default_bytes and self.spares > 0:
            taken = self._take_spare(image)
            self.fill_spares()
            if taken:
                return True
        tmp = image.with_name(image.name + ".part")
        if size_bytes == self.default_bytes:
            sparse_copy(self.template(), tmp)
        else:
            self._mkfs(tmp, check_size(size_bytes))
        os.replace(tmp, image)
        return True

    def take_loop(self, image: Path) -> Loop | None:
        """The loop device bound to `image` if `make` made it of a spare (for `mount`), once."""
        with self._spare_lock:
            return self._taken.pop(image, None)

    def close(self) -> None:
        """Make no more spares and let the spares' loop devices go (the images stay)."""
        with self._spare_lock:
            self._closed = True
            _let_go(self._loops, self._taken)

    # -- spares --------------------------------------------------------------------------------

    def fill_spares(self) -> threading.Thread | None:
        """Make spares up to `spares` in a background thread (one at a time); that thread, or
        None when there is nothing to do or one is already at it."""
        with self._spare_lock:
            if self.spares <= 0 or self._filling is not None or self._closed:
                return None
            self._filling = threading.Thread(target=self._fill, name="spare-disks", daemon=True)
            self._filling.start()
            return self._filling

    def _spare_dir(self) -> Path:
        return self.cache_dir / SPARE_DIR

    def _ready_spares(self) -> list[Path]:
        prefix = self._template_path().name + "."
        try:
            names = os.listdir(self._spare_dir())
        except FileNotFoundError:
            return []
        return [self._spare_dir() / n for n in sorted(names)
                if n.startswith(prefix) and n.endswith(".spare")]

    def _take_spare(self, image: Path) -> bool:
        with self._spare_lock:  # a spare and its loop device change hands together
            for spare in self._ready_spares():
                try:
                    os.replace(spare, image)  # the same filesystem: the daemon's state root
                except FileNotFoundError:  # another start took it meanwhile
                    continue
                self._last_take = time.monotonic()
                self._taken[image] = self._loops.pop(spare, None)
                return True
        return False

    def _fill(self) -> None:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), SPARE_NICE)
        try:
            self._forget_stale_spares()
            while True:
                with self._spare_lock:
                    if len(self._ready_spares()) >= self.spares or self._closed:
                        self._filling = None
                        return
                while (quiet := self._last_take + SPARE_QUIET_S - time.monotonic()) > 0:
                    time.sleep(quiet)
                self._make_spare()
        except (OSError, SteelcupError) as exc:
            log.warning("making spare disk images in %s failed: %s", self._spare_dir(), exc)
        with self._spare_lock:
            self._filling = None

    def _make_spare(self) -> None:
        """One default-size image, written back to disk and bound to a loop device (where the
        kernel lets this process have one), under a name no start takes until it is both."""
        self._spare_dir().mkdir(parents=True, exist_ok=True)
        tmp = self._spare_dir() / f"{self._template_path().name}.{secrets.token_hex(8)}.part"
        loop = None
        try:
            sparse_copy(self.template(), tmp)
            fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                device, loop_fd = _attach_loop(tmp)
                loop = Loop(device, loop_fd)
            except OSError as exc:  # no loop devices here: a start attaches one itself
                log.debug("spare %s: no loop device: %s", tmp.name, exc)
            with self._spare_lock:
                if not self._closed:
                    spare = tmp.with_suffix(".spare")
                    os.replace(tmp, spare)
                    self._loops[spare], loop = loop, None
        finally:
            if loop is not None:
                os.close(loop.fd)
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def _forget_stale_spares(self) -> None:
        """Delete what is not a spare this maker made: half-made ones of a daemon that stopped
        while making them, those of an earlier default size or format, and an earlier
        daemon's ready ones (their loop devices went with it)."""
        with self._spare_lock:
            ready = set(self._loops)
        try:
            entries = list(self._spare_dir().iterdir())
        except FileNotFoundError:
            return
        for entry in entries:
            if entry not in ready:
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()

    def _mkfs(self, path: Path, size_bytes: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        _run([*_MKFS, "-L", self.label, str(path), f"{size_bytes // 1024}k"],
             f"making a filesystem of {size_bytes} bytes")
        if self.empty_root:
            # debugfs exits 0 whatever its request did: what it says beyond its banner is
            # the failure.
            said = _run([*_EMPTY_ROOT, str(path)], "emptying the new filesystem's root")
            errors = [line for line in said.splitlines() if not line.startswith("debugfs ")]
            if errors:
                raise SteelcupError(f"emptying the new filesystem's root failed: {errors[0]}")


def sparse_copy(src: Path, dst: Path) -> None:
    """Copy `src` to `dst` copying only its data extents (SEEK_DATA/SEEK_HOLE); holes stay
    holes. An ext4 image of any size has a few MiB of data."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        size = os.fstat(fin.fileno()).st_size
        offset = 0
        while offset < size:
            try:
                start = os.lseek(fin.fileno(), offset, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # only a hole remains
                    break
                raise
            end = os.lseek(fin.fileno(), start, os.SEEK_HOLE)
            pos = start
            while pos < end:
                copied = os.copy_file_range(fin.fileno(), fout.fileno(), end - pos, pos, pos)
                if copied == 0:
                    raise SteelcupError(f"{src} shrank while being copied")
                pos += copied
            offset = end
        fout.truncate(size)


def mount(image: Path, target: Path, *, fresh: bool = False, loop: Loop | None = None) -> None:
    """Loop-mount `image` on `target`; the loop device goes away with the mount (autoclear).
    `fresh`: the image was just made and never mounted, so no earlier mount of it can still
    be going (`wait_released` reads every loop device's backing file: ~400 files on a host
    that has run 400 containers at once). `loop`: the image's loop device, bound already (a
    spare's, `DiskMaker.take_loop`); its fd is closed here.

    Through ioctls and mount(2), ~1 ms, where spawning mount(8) costs ~9 ms of every start;
    mount(8) remains the fallback for kernels without LOOP_CONFIGURE.
    """
    target.mkdir(exist_ok=True)
    if loop is not None:
        device, loop_fd = loop.device, loop.fd
    else:
        if not fresh:
            wait_released(image)
        try:
            device, loop_fd = _attach_loop(image)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOTTY, errno.ENOENT):
                raise SteelcupError(f"attaching {image} to a loop device failed: {exc}"
                                    ) from exc
            _run(["mount", "-t", "ext4", "-o", f"loop,nosuid,nodev,{MOUNT_DATA}", str(image),
                  str(target)], f"mounting {image}")
            return
    try:
        sysmount.mount(device, target, "ext4", MOUNT_FLAGS, MOUNT_DATA)
    except OSError as exc:
        raise SteelcupError(f"mounting {image} failed: {exc}") from exc
    finally:
        os.close(loop_fd)  # autoclear: unconfigured now if the mount failed, else at unmount


def wait_released(image: Path, deadline_s: float = RELEASE_DEADLINE_S) -> None:
    """Wait until no loop device is backed by `image` any more.

    An unmount that found the filesystem busy detached it lazily. Its superblock, with data
    not yet written back, lives until the last user goes (a VM that has just exited, the
    kernel's deferred release), and the loop device is cleared after that. Mounting the image
    again before then would make a second ext4 of the same disk. That mount would read what
    the first had not yet written (a container's fresh files missing at a commit right after
    its run), and both would then write. SteelcupError if the device is still bound at
    `deadline_s`."""
    deadline = time.monotonic() + deadline_s
    while _loops_backed_by(image):
        if time.monotonic() > deadline:
            raise SteelcupError(f"{image} is still in use by an earlier mount")
        time.sleep(_RELEASE_POLL_S)  # the kernel tells no one when it is done


def _loops_backed_by(image: Path) -> list[str]:
    """The bound loop devices whose backing file is `image`."""
    want = os.path.realpath(image)
    found = []
    try:
        entries = os.listdir("/sys/block")
    except OSError:
        return []
    for name in entries:
        if not name.startswith("loop"):
            continue
        try:
            with open(f"/sys/block/{name}/loop/backing_file", encoding="utf-8") as f:
                backing = f.read().strip()
        except OSError:  # not bound (no loop/ dir), or gone meanwhile
            continue
        if backing == want:
            found.append(name)
    return found


def _attach_loop(image: Path) -> tuple[str, int]:
    """A free loop device backed by `image` (autoclear): its path and an open fd of it."""
    backing = os.open(image, os.O_RDWR | os.O_CLOEXEC)
    try:
        control = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
        try:
            for _ in range(_LOOP_ATTEMPTS):
                device = f"/dev/loop{fcntl.ioctl(control, _LOOP_CTL_GET_FREE)}"
                loop_fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
                # struct loop_config: fd, block_size, struct loop_info64 (lo_flags set), reserved
                info = struct.pack("=5Q4I64s64s32s2Q", 0, 0, 0, 0, 0, 0, 0, 0,
                                   _LO_FLAGS_AUTOCLEAR, b"", b"", b"", 0, 0)
                config = struct.pack("=II", backing, 0) + info + bytes(64)
                try:
                    fcntl.ioctl(loop_fd, _LOOP_CONFIGURE, config)
                except OSError as exc:
                    os.close(loop_fd)
                    if exc.errno != errno.EBUSY:
                        raise
                    continue
                return device, loop_fd
        finally:
            os.close(control)
    finally:
        os.close(backing)
    raise OSError(errno.EBUSY, "no free loop device")


def unmount(target: Path) -> None:
    """Unmount `target` (every mount stacked there, lazily if busy). Idempotent."""
    try:
        sysmount.unmount_all(target)
    except OSError as exc:
        raise SteelcupError(f"unmounting {target} failed: {exc.strerror}") from exc


def _run(argv: list[str], what: str) -> str:
    """Run a tool to completion; its stderr."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SteelcupError(f"{what} failed: {exc}") from exc
    if proc.returncode != 0:
        raise SteelcupError(f"{what} failed: {proc.stderr.strip() or proc.returncode}")
    return proc.stderr
