"""Apply one layer tar stream (plain, gzip, zstd) to a directory without ever writing outside it.

Every path is walked component by component with directory fds opened `O_NOFOLLOW`, so no
symlink — from this layer, an earlier entry or whatever was already in the target — is followed.
Whiteouts are stored in overlayfs form (0/0 char device; opaque dir = `trusted.overlay.opaque`).
No host file gets a set-id bit or a file capability from a layer: what the layer declared is
recorded inert (see `privileges.py`) for the tar writers to emit again.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import io
import math
import os
import shutil
import stat
import subprocess
import tarfile
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO, Protocol, cast

from steelcup import defaults
from steelcup.errors import ImageError, Unsupported
from steelcup.image.privileges import CAPABILITY_XATTR, SETID_BITS, Declared, clear, stash

GIB = 1 << 30
MIB = 1 << 20
WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
_CHUNK = 1 << 20
_TAIL = 64 << 10
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# xattrs a layer may set on host files; security.capability is recorded inert (privileges.py),
# everything else (trusted.*, security.selinux, system.*, ...) is dropped.
_ALLOWED_XATTRS = ("user.",)
# user.* xattrs that are not a file's content but an overlay's bookkeeping (a `userxattr`
# overlay's opaque, redirect, metacopy, origin marks: the guest's own overlay of a block root
# writes them, and the host's view of such a root reads them) or steelcup's (stand-in marks):
# never taken from a layer, never written into one.
PRIVATE_XATTRS = ("user.overlay.", "user.steelcup.")
_XATTR_PAX = "SCHILY.xattr."
# pax and GNU long-name headers are read into memory whole, and each one recurses into the next
# header: cap both (Go's archive/tar also caps such headers at 1 MiB)
MAX_SPECIAL_HEADER_BYTES = 1 << 20
MAX_HEADER_CHAIN = 16
_SPECIAL_TYPES = (
    tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE,
    tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK,
)
_CHAIN_ATTR = "_steelcup_header_chain"
_MAX_ID = 0xFFFF_FFFE  # (uid_t)-1 means "unchanged" to chown
# mtimes are clamped into what filesystems store (like docker's Chtimes): 1901 .. 2242
_MIN_MTIME = -(1 << 31)
_MAX_MTIME = 1 << 33


@dataclass(frozen=True)
class LayerLimits:
    """Per-layer limits; exceeding one aborts the layer with ImageError.

    A compressed layer may expand at most `max_ratio` times (0: no ratio check) once it is
    past `ratio_floor_bytes`: a decompression bomb stops early, a small layer of zeros does not.
    """

    max_bytes: int = defaults.LAYER_MAX_GIB * GIB  # uncompressed tar bytes
    max_ratio: int = defaults.LAYER_MAX_RATIO  # uncompressed bytes per compressed byte
    ratio_floor_bytes: int = 64 * MIB
    max_entries: int = 1_000_000
    max_path_bytes: int = 4096
    max_name_bytes: int = 255
    allow_devices: bool = False


@dataclass(frozen=True)
class LayerStats:
    """What `apply_layer` did. `diff_id` is the sha256 of the uncompressed tar stream."""

    diff_id: str
    size_bytes: int
    entries: int
    whiteouts: int
    skipped: int


def apply_layer(
    stream: BinaryIO | IO[bytes], target: Path, limits: LayerLimits | None = None,
    extractor_class: type[_Extractor] | None = None, compressed: ByteCount | None = None,
) -> LayerStats:
    """Extract the layer tar in `stream` into the existing directory `target` (with
    `extractor_class`, a subclass with other rules for some entries: a build context's).
    `compressed`: what the expansion ratio is measured against when `stream` was already
    decompressed by the caller (a counter of the bytes it read); default: `stream`'s bytes."""
    limits = limits or LayerLimits()
    try:
        root_fd = os.open(target, _DIR_FLAGS)
    except OSError as exc:
        raise ImageError(f"layer target {target} is not a directory: {exc.strerror}") from exc
    source = SourceCounter(stream)
    try:
        with decompressed(cast(IO[bytes], source)) as raw:  # read() is all it uses
            counter = _CountingReader(raw, limits, compressed or source)
            extractor = (extractor_class or _Extractor)(root_fd, limits)
            try:
                tar = open_stream(counter)
                extractor.run(tar)
                counter.drain(end_offset=tar.offset)
            except (tarfile.TarError, EOFError, zlib.error, UnicodeError) as exc:
                raise ImageError(f"invalid layer archive: {exc}") from exc
            except gzip.BadGzipFile as exc:
                raise ImageError(f"invalid layer archive: {exc}") from exc
            extractor.finish()
            return LayerStats(
                diff_id="sha256:" + counter.sha256.hexdigest(),
                size_bytes=counter.count,
                entries=extractor.entries,
                whiteouts=extractor.whiteouts,
                skipped=extractor.skipped,
            )
    finally:
        os.close(root_fd)


def open_stream(fileobj: IO[bytes] | io.RawIOBase) -> tarfile.TarFile:
    """A streaming tar reader with the header limits of `_LimitedTarInfo`."""
    return tarfile.open(fileobj=fileobj, mode="r|", errorlevel=2, tarinfo=_LimitedTarInfo)


class _LimitedTarInfo(tarfile.TarInfo):
    """Refuses oversized pax/GNU long-name headers and over-long chains of them."""

    def _proc_member(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type not in _SPECIAL_TYPES:
            return super()._proc_member(tar)  # type: ignore[misc, no-any-return]
        if self.size > MAX_SPECIAL_HEADER_BYTES:
            raise ImageError(
                f"layer has a {self.size}-byte extended header "
                f"(limit {MAX_SPECIAL_HEADER_BYTES})"
            )
        depth: int = getattr(tar, _CHAIN_ATTR, 0)
        if depth >= MAX_HEADER_CHAIN:
            raise ImageError(f"layer entry has more than {MAX_HEADER_CHAIN} extended headers")
        setattr(tar, _CHAIN_ATTR, depth + 1)
        try:
            return super()._proc_member(tar)  # type: ignore[misc, no-any-return]
        finally:
            setattr(tar, _CHAIN_ATTR, depth)


class _Prefixed(io.RawIOBase):
    """A reader that replays bytes already peeked from `inner`."""

    def __init__(self, head: bytes, inner: IO[bytes]) -> None:
        self._head = head
        self._inner = inner

    def readable(self) -> bool:
        return True

    def readinto(self, buf: memoryview) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(buf), len(self._head))
            buf[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._inner.read(len(buf))
        buf[: len(data)] = data
        return len(data)


@contextlib.contextmanager
def decompressed(stream: IO[bytes]) -> Iterator[IO[bytes]]:
    """Yield a reader of `stream` with gzip or zstd compression (sniffed by magic) removed."""
    head = b""
    while len(head) < 4:
        more = stream.read(4 - len(head))
        if not more:
            break
        head += more
    reader = io.BufferedReader(_Prefixed(head, stream), _CHUNK)
    if head.startswith(_GZIP_MAGIC):
        yield gzip.GzipFile(fileobj=reader, mode="rb")  # type: ignore[misc]
    elif head.startswith(_ZSTD_MAGIC):
        with _zstd_reader(reader) as out:
            yield out
    else:
        yield reader


@contextlib.contextmanager
def _zstd_reader(source: IO[bytes]) -> Iterator[IO[bytes]]:
    """Decompress zstd through the `zstd` tool (the stdlib has no zstd before 3.14)."""
    zstd = shutil.which("zstd")
    if zstd is None:
        raise Unsupported("zstd-compressed layer, but the zstd tool is not installed")
    proc = subprocess.Popen(
        [zstd, "-d", "-c", "-q"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    stdin = proc.stdin

    def feed() -> None:
        try:
            while chunk := source.read(_CHUNK):
                stdin.write(chunk)
        except (BrokenPipeError, OSError, ValueError):
            pass
        finally:
            with contextlib.suppress(OSError):
                stdin.close()

    feeder = threading.Thread(target=feed, name="zstd-feed", daemon=True)
    feeder.start()
    ok = False
    try:
        yield proc.stdout
        ok = True
    finally:
        if not ok:
            proc.kill()
        proc.stdout.close()
        rc = proc.wait(timeout=60)
        feeder.join(timeout=60)
        err = proc.stderr.read().decode(errors="replace").strip()
        proc.stderr.close()
        if ok and rc != 0:
            raise ImageError(f"invalid zstd layer: {err or f'zstd exit code {rc}'}")


class ByteCount(Protocol):
    @property
    def count(self) -> int: ...


class SourceCounter(io.RawIOBase):
    """Counts the (compressed) bytes read from a layer stream."""

    def __init__(self, inner: IO[bytes]) -> None:
        self._inner = inner
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf: memoryview) -> int:  # type: ignore[override]
        data = self._inner.read(len(buf))
        buf[: len(data)] = data
        self.count += len(data)
        return len(data)


class _CountingReader(io.RawIOBase):
    """Counts and hashes uncompressed bytes; raises ImageError past the byte limit or when
    they outgrow the compressed bytes read from `source` by more than the allowed ratio."""

    def __init__(self, inner: IO[bytes], limits: LayerLimits, source: ByteCount) -> None:
        self._inner = inner
        self._limit = limits.max_bytes
        self._ratio = limits.max_ratio
        self._ratio_floor = limits.ratio_floor_bytes
        self._source = source
        self.count = 0
        self.sha256 = hashlib.sha256()
        self._tail = bytearray()  # the last bytes read, to inspect what follows the archive end

    def readable(self) -> bool:
        return True

    def readinto(self, buf: memoryview) -> int:  # type: ignore[override]
        data = self._inner.read(len(buf))
        n = len(data)
        self.count += n
        if self.count > self._limit:
            raise ImageError(f"layer is larger than the limit of {self._limit} bytes "
                             "uncompressed (daemon setting --layer-max-size)")
        compressed = self._source.count
        if self._ratio and self.count > self._ratio_floor and self.count > self._ratio * compressed:
            raise ImageError(
                f"layer expands more than {self._ratio} times ({compressed} compressed bytes "
                f"gave over {self.count} bytes): refused as a likely decompression bomb "
                "(daemon setting --layer-max-ratio)")
        self.sha256.update(data)
        self._tail += data
        if len(self._tail) > 2 * _TAIL:
            del self._tail[: len(self._tail) - _TAIL]
        buf[:n] = data
        return n

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = _CHUNK
        buf = bytearray(size)
        n = self.readinto(memoryview(buf))
        return bytes(buf[:n])

    def drain(self, end_offset: int) -> None:
        """Read to EOF so the digest covers the trailing zero blocks too.

        tarfile treats a corrupt header after the first as end-of-archive; real archives only
        have zero padding after the end, so anything else means a corrupt or truncated layer.
        """
        tail_start = self.count - len(self._tail)
        if end_offset >= tail_start:
            after = self._tail[end_offset - tail_start :]
            if after.count(0) != len(after):
                raise ImageError("invalid layer archive: corrupt header or data after the end")
        while chunk := self.read(_CHUNK):
            if chunk.count(0) != len(chunk):
                raise ImageError("invalid layer archive: corrupt header or data after the end")


class _Extractor:
    def __init__(self, root_fd: int, limits: LayerLimits) -> None:
        self.root_fd = root_fd
        self.limits = limits
        self.entries = 0
        self.whiteouts = 0
        self.skipped = 0
        self.file_bytes = 0  # declared sizes of regular files (sparse ones can exceed the tar)
        self._dir_times: dict[tuple[str, ...], int] = {}
        self._is_root = os.geteuid() == 0

    # --- driver -------------------------------------------------------------------------
    def run(self, tar: tarfile.TarFile) -> None:
        while True:
            member = tar.next()
            if member is None:
                break
            tar.members.clear()  # type: ignore[attr-defined]  # streaming: don't keep every header in memory
            self.entries += 1
            if self.entries > self.limits.max_entries:
                raise ImageError(f"layer has more than {self.limits.max_entries} entries")
            self._apply(tar, member)

    def finish(self) -> None:
        """Set directory mtimes last: creating children would have changed them."""
        for parts, mtime in self._dir_times.items():
            try:
                fd = self._open_path(parts, create=False)
            except (ImageError, OSError):
                continue
            try:
                os.utime(fd, (mtime, mtime))
            finally:
                os.close(fd)

    # --- one entry ----------------------------------------------------------------------
    def _apply(self, tar: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        parts = self._clean(m.name)
        self._check_fields(m)
        if not parts:
            if m.isdir():  # "./" itself: apply its metadata to the target root
                self._set_meta_fd(self.root_fd, m)
                self._dir_times[()] = _mtime(m)
            else:
                self.skipped += 1
            return
        *dir_parts, name = parts
        if name.startswith(WHITEOUT_PREFIX):
            self._whiteout(tuple(dir_parts), name)
            return
        if not (m.isreg() or m.isdir() or m.issym() or m.islnk() or m.isfifo() or m.isdev()):
            self.skipped += 1  # volume labels, unknown types
            return
        if (m.ischr() or m.isblk()) and not self.limits.allow_devices:
            self.skipped += 1  # (tarfile's isdev() covers fifos too; they carry no privilege)
            return
        parent = self._open_path(tuple(dir_parts), create=True)
        try:
            if m.isdir():
                self._make_dir(parent, name, m)
                self._dir_times[tuple(parts)] = _mtime(m)
                return
            self._dir_times.pop(tuple(parts), None)
            self._remove(parent, name)
            if m.isreg():
                self.file_bytes += max(m.size, 0)
                if self.file_bytes > self.limits.max_bytes:
                    raise ImageError(
                        f"layer unpacks to more than the limit of {self.limits.max_bytes} bytes"
                    )
                self._write_file(tar, parent, name, m)
            elif m.issym():
                self._check_link(m)
                os.symlink(m.linkname, name, dir_fd=parent)
                self._set_meta_path(parent, name, m, symlink=True)
            elif m.islnk():
                self._hard_link(parent, name, m)
            elif m.isfifo():
                os.mkfifo(name, self._mode(m), dir_fd=parent)
                self._set_meta_path(parent, name, m)
            else:
                kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
                dev = os.makedev(m.devmajor, m.devminor)
                os.mknod(name, kind | self._mode(m), dev, dir_fd=parent)
                self._set_meta_path(parent, name, m)
        finally:
            os.close(parent)

    def _clean(self, raw: str) -> tuple[str, ...]:
        """Lexically clean an archive path; absolute names are taken relative to the target."""
        self._check_len(raw, raw)
        if "\0" in raw:
            raise ImageError(f"layer entry name contains NUL: {raw!r}")
        out: list[str] = []
        for comp in raw.split("/"):
            if comp in ("", "."):
                continue
            if comp == "..":
                if not out:
                    raise ImageError(f"layer entry escapes the layer root: {raw!r}")
                out.pop()
                continue
            if len(os.fsencode(comp)) > self.limits.max_name_bytes:
                raise ImageError(f"layer entry name component too long: {raw[:80]!r}...")
            out.append(comp)
        return tuple(out)

    def _check_fields(self, m: tarfile.TarInfo) -> None:
        """Numbers os calls would reject (OverflowError) or misread (uid -1 = unchanged)."""
        if m.size < 0:
            raise ImageError(f"layer entry {m.name[:80]!r} has a negative size")
        for what, value in (("uid", m.uid), ("gid", m.gid)):
            if not 0 <= value <= _MAX_ID:
                raise ImageError(f"layer entry {m.name[:80]!r} has an invalid {what} {value}")

    def _check_link(self, m: tarfile.TarInfo) -> None:
        self._check_len(m.linkname, m.name)
        if "\0" in m.linkname:
            raise ImageError(f"layer entry {m.name[:80]!r} has a link target containing NUL")

    def _check_len(self, text: str, name: str) -> None:
        if len(os.fsencode(text)) > self.limits.max_path_bytes:
            raise ImageError(
                f"layer entry path longer than {self.limits.max_path_bytes} bytes: {name[:80]!r}..."
            )

    # --- confined path walking -------------------------------------------------------------
    def _open_path(self, parts: tuple[str, ...], *, create: bool) -> int:
        """Open directory `parts` below the root, never following a symlink."""
        fd = os.dup(self.root_fd)
        try:
            for comp in parts:
                try:
                    nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(comp, 0o755, dir_fd=fd)
                    nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise ImageError(
                            f"layer entry goes through a non-directory or symlink: "
                            f"{'/'.join(parts)!r}"
                        ) from exc
                    raise
                os.close(fd)
                fd = nfd
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _lstat(self, parent: int, name: str) -> os.stat_result | None:
        try:
            return os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def _remove(self, parent: int, name: str) -> None:
        st = self._lstat(parent, name)
        if st is None:
            return
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(name, dir_fd=parent)  # fd-based, does not follow symlinks
        else:
            os.unlink(name, dir_fd=parent)

    # --- entry kinds ------------------------------------------------------------------------
    def _make_dir(self, parent: int, name: str, m: tarfile.TarInfo) -> None:
        st = self._lstat(parent, name)
        if st is not None and not stat.S_ISDIR(st.st_mode):
            os.unlink(name, dir_fd=parent)
            st = None
        if st is None:
            os.mkdir(name, 0o700, dir_fd=parent)
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        try:
            if st is not None:
                clear(fd)  # declared again: what an earlier entry recorded no longer holds
            self._set_meta_fd(fd, m)
        finally:
            os.close(fd)

    def _write_file(self, tar: tarfile.TarFile, parent: int, name: str, m: tarfile.TarInfo) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(name, flags, 0o600, dir_fd=parent)
        # the digest ties a recorded privilege to this content (privileges.py)
        digest = hashlib.sha256() if self._declared(m).privileged else None
        try:
            src = tar.extractfile(m)
            if src is not None:
                while chunk := src.read(_CHUNK):
                    if digest is not None:
                        digest.update(chunk)
                    view = memoryview(chunk)
                    while view:
                        written = os.write(fd, view)
                        view = view[written:]
            self._set_meta_fd(fd, m, sha256=digest.hexdigest() if digest else "")
        finally:
            os.close(fd)

    def _hard_link(self, parent: int, name: str, m: tarfile.TarInfo) -> None:
        self._check_link(m)
        target = self._clean(m.linkname)
        if not target:
            raise ImageError(f"hard link {m.name!r} points at the layer root")
        *tdir, tname = target
        try:
            tparent = self._open_path(tuple(tdir), create=False)
        except FileNotFoundError as exc:
            raise ImageError(f"hard link {m.name!r} -> {m.linkname!r}: target missing") from exc
        try:
            st = self._lstat(tparent, tname)
            if st is None:
                raise ImageError(f"hard link {m.name!r} -> {m.linkname!r}: target missing")
            if stat.S_ISDIR(st.st_mode):
                raise ImageError(f"hard link {m.name!r} -> {m.linkname!r}: target is a directory")
            # linkat without AT_SYMLINK_FOLLOW: links the symlink itself, never its target
            os.link(tname, name, src_dir_fd=tparent, dst_dir_fd=parent, follow_symlinks=False)
        finally:
            os.close(tparent)

    def _whiteout(self, dir_parts: tuple[str, ...], name: str) -> None:
        self.whiteouts += 1
        if name == OPAQUE_MARKER:
            fd = self._open_path(dir_parts, create=True)
            try:
                self._setxattr(fd, OPAQUE_XATTR, b"y")
            finally:
                os.close(fd)
            return
        hidden = name[len(WHITEOUT_PREFIX) :]
        if hidden.startswith(WHITEOUT_PREFIX) or hidden in ("", ".", ".."):
            self.skipped += 1  # aufs metadata (.wh..wh.plnk, ...) or nonsense
            return
        parent = self._open_path(dir_parts, create=True)
        try:
            if self._lstat(parent, hidden) is not None:
                return  # a whiteout only hides lower layers, never this layer's own entries
            try:
                os.mknod(hidden, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=parent)
            except PermissionError as exc:
                raise ImageError("storing whiteouts needs CAP_MKNOD (run as root)") from exc
        finally:
            os.close(parent)

    def _setxattr(self, fd: int, key: str, value: bytes) -> None:
        try:
            os.setxattr(fd, key, value)
        except PermissionError as exc:
            raise ImageError(f"cannot set xattr {key} (needs root): {exc}") from exc

    # --- metadata ---------------------------------------------------------------------------
    def _mode(self, m: tarfile.TarInfo) -> int:
        return m.mode & 0o7777 & ~SETID_BITS

    def _xattrs(self, m: tarfile.TarInfo) -> list[tuple[str, bytes]]:
        out = []
        for key, value in m.pax_headers.items():
            if not key.startswith(_XATTR_PAX):
                continue
            name = key[len(_XATTR_PAX) :]
            if name.startswith(_ALLOWED_XATTRS) and not name.startswith(PRIVATE_XATTRS):
                out.append((name, value.encode("utf-8", "surrogateescape")))
        return out

    def _declared(self, m: tarfile.TarInfo, sha256: str = "") -> Declared:
        cap = m.pax_headers.get(_XATTR_PAX + CAPABILITY_XATTR)
        return Declared(
            mode=m.mode & 0o7777, uid=m.uid, gid=m.gid, sha256=sha256,
            capability=None if cap is None else cap.encode("utf-8", "surrogateescape"),
        )

    def _set_meta_fd(self, fd: int, m: tarfile.TarInfo, *, sha256: str = "") -> None:
        if self._is_root:
            os.fchown(fd, m.uid, m.gid)
        os.fchmod(fd, self._mode(m))
        for key, value in self._xattrs(m):
            with contextlib.suppress(OSError):
                os.setxattr(fd, key, value)
        declared = self._declared(m, sha256)
        if declared.privileged:
            try:
                stash(fd, declared)
            except OSError as exc:
                # without root the ownership is lost as well; with it, losing a declared
                # privilege silently would corrupt the image
                if self._is_root:
                    raise ImageError(
                        f"cannot record the set-id bits/capability of {m.name!r}: {exc.strerror}"
                    ) from exc
        os.utime(fd, (_mtime(m), _mtime(m)))

    def _set_meta_path(
        self, parent: int, name: str, m: tarfile.TarInfo, *, symlink: bool = False
    ) -> None:
        if self._is_root:
            os.chown(name, m.uid, m.gid, dir_fd=parent, follow_symlinks=False)
        if not symlink:  # symlink modes are meaningless; chmod would follow it
            os.chmod(name, self._mode(m), dir_fd=parent)
        os.utime(name, (_mtime(m), _mtime(m)), dir_fd=parent, follow_symlinks=False)


def _mtime(m: tarfile.TarInfo) -> int:
    value = m.mtime
    if not math.isfinite(value):
        return 0
    return min(max(int(value), _MIN_MTIME), _MAX_MTIME)
