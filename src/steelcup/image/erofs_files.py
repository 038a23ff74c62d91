"""Where each file of an erofs image lies in it, and which files guests have read lately.

An image's erofs (`image/erofs.py`) is read by guests through QEMU, which reads the file
through the host's page cache; the host drops its pages once the image is made. So the pages
of it the host has cached are what guests read since (until memory pressure drops them), and
with the image's layout they name the files a container of the image reads: its hot files, the
ones a VM made ready for that image would read ahead of its hand-out.

The reader handles what `mkfs.erofs` makes of our images: uncompressed files stored flat
(`FLAT_PLAIN`) or flat with their last partial block inline after the inode (`FLAT_INLINE`),
compact and extended inodes, inline xattrs. Other layouts (compressed, chunk-based) have no
extents here. The image is the host's own (made from layers it unpacked), but it is parsed
defensively all the same: bounded depth, each directory once, reads within the file.
Format: the kernel's fs/erofs/erofs_fs.h.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import stat
import struct
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from steelcup.errors import ImageError
from steelcup.libc import LIBC, last_error

SUPER_OFFSET = 1024
MAGIC = 0xE0F5E1E2
COMPACT_INODE = 32
EXTENDED_INODE = 64
INODE_SLOT = 32  # a nid counts 32-byte slots from the metadata area's start
DIRENT = struct.Struct("<QHBB")  # nid, nameoff, file_type, reserved
XATTR_HEADER = 12
FLAT_PLAIN = 0
FLAT_INLINE = 2
MAX_DEPTH = 256


@dataclass(frozen=True)
class FileExtents:
    """A regular file of the image: its path ("usr/bin/python3"), size, and the byte ranges
    of the image file that hold its data, in order (empty for a layout read here as none)."""

    path: str
    size: int
    extents: tuple[tuple[int, int], ...]  # (offset, length)


@dataclass(frozen=True)
class _Inode:
    mode: int
    size: int
    layout: int
    blkaddr: int
    tail_at: int  # where inline data starts (after the inode and its xattrs)


class RandomAccess(Protocol):
    """What the reader needs of a file: a binary file object, or `_UncachedFile`."""

    def seek(self, offset: int, whence: int = ..., /) -> int: ...

    def tell(self) -> int: ...

    def read(self, n: int, /) -> bytes: ...


class ErofsReader:
    """Reads the layout of the erofs image open as `f` (any readable, seekable binary file)."""

    def __init__(self, f: RandomAccess) -> None:
        self._f = f
        f.seek(0, os.SEEK_END)
        self._limit = f.tell()
        sb = self._read(SUPER_OFFSET, 128)
        magic, _checksum, _compat, blkszbits, _ext, root_nid = struct.unpack_from("<IIIBBH", sb)
        if magic != MAGIC:
            raise ImageError("not an erofs image (bad magic)")
        if not 9 <= blkszbits <= 16:
            raise ImageError(f"erofs block size 2^{blkszbits} is not supported")
        self.block_size: int = 1 << blkszbits
        blocks, meta_blkaddr = struct.unpack_from("<II", sb, 36)
        self.blocks: int = blocks
        self._meta_blkaddr: int = meta_blkaddr
        self.root_nid = root_nid
        self._limit = min(self._limit, self.data_bytes)  # nothing is read past the filesystem

    @property
    def data_bytes(self) -> int:
        """How much of the file is the filesystem (the rest, up to the sparse size, is not)."""
        return self.blocks * self.block_size

    def files(self) -> Iterator[FileExtents]:
        """Every regular file, each path once (a hard link's other names are left out)."""
        seen_dirs: set[int] = set()
        seen_files: set[int] = set()
        stack: list[tuple[int, str, int]] = [(self.root_nid, "", 0)]
        while stack:
            nid, path, depth = stack.pop()
            if nid in seen_dirs or depth > MAX_DEPTH:
                continue
            seen_dirs.add(nid)
            directory = self._inode(nid)
            if not stat.S_ISDIR(directory.mode):
                raise ImageError(f"erofs: /{path} is not a directory")
            children = sorted(self._entries(directory), reverse=True)
            for name, child_nid in children:
                child_path = f"{path}/{name}" if path else name
                inode = self._inode(child_nid)
                if stat.S_ISDIR(inode.mode):
                    stack.append((child_nid, child_path, depth + 1))
                elif stat.S_ISREG(inode.mode) and child_nid not in seen_files:
                    seen_files.add(child_nid)
                    yield FileExtents(child_path, inode.size, self._extents(inode))

    # -- the on-disk format ---------------------------------------------------------------
    def _read(self, offset: int, length: int) -> bytes:
        if offset + length > self._limit:
            raise ImageError(f"erofs: {length} bytes at {offset} lie past the image's end")
        self._f.seek(offset)
        data = self._f.read(length)
        if len(data) != length:
            raise ImageError(f"erofs: short read at {offset} (a truncated image?)")
        return data

    def _inode(self, nid: int) -> _Inode:
        at = self._meta_blkaddr * self.block_size + nid * INODE_SLOT
        head = self._read(at, COMPACT_INODE)
        i_format, xattr_icount, mode = struct.unpack_from("<HHH", head)
        layout = (i_format >> 1) & 0x7
        if i_format & 1:  # extended
            raw = self._read(at, EXTENDED_INODE)
            size, blkaddr = struct.unpack_from("<QI", raw, 8)
            inode_size = EXTENDED_INODE
        else:
            size, _reserved, blkaddr = struct.unpack_from("<III", head, 8)
            inode_size = COMPACT_INODE
        xattrs = XATTR_HEADER + 4 * (xattr_icount - 1) if xattr_icount else 0
        return _Inode(mode, size, layout, blkaddr, at + inode_size + xattrs)

    def _extents(self, inode: _Inode) -> tuple[tuple[int, int], ...]:
        if inode.size == 0:
            return ()
        start = inode.blkaddr * self.block_size
        if inode.layout == FLAT_PLAIN:
            return ((start, inode.size),)
        if inode.layout == FLAT_INLINE:
            tail = inode.size % self.block_size
            full = inode.size - tail
            ranges = []
            if full:
                ranges.append((start, full))
            if tail:
                ranges.append((inode.tail_at, tail))
            return tuple(ranges)
        return ()

    def _data(self, inode: _Inode) -> bytes:
        parts = [self._read(offset, length) for offset, length in self._extents(inode)]
        if inode.size and not parts:
            raise ImageError(f"erofs: a directory with data layout {inode.layout}")
        return b"".join(parts)

    def _entries(self, directory: _Inode) -> Iterator[tuple[str, int]]:
        """(name, nid) of a directory's entries but "." and ".."."""
        data = self._data(directory)
        for block_at in range(0, len(data), self.block_size):
            block = data[block_at:block_at + self.block_size]
            if len(block) < DIRENT.size:
                raise ImageError("erofs: a directory block too short for an entry")
            count = DIRENT.unpack_from(block)[1] // DIRENT.size
            if count == 0 or count * DIRENT.size > len(block):
                raise ImageError("erofs: a malformed directory block")
            entries = [DIRENT.unpack_from(block, i * DIRENT.size) for i in range(count)]
            for i, (nid, nameoff, _type, _reserved) in enumerate(entries):
                end = entries[i + 1][1] if i + 1 < count else len(block)
                if not nameoff <= end <= len(block):
                    raise ImageError("erofs: a directory entry's name is out of its block")
                raw = block[nameoff:end]
                if i + 1 == count:
                    raw = raw.split(b"\0", 1)[0]  # the last name runs to the block's padding
                name = raw.decode("utf-8", "surrogateescape")
                if name in (".", ".."):
                    continue
                if not name or "/" in name:
                    raise ImageError(f"erofs: a directory entry named {name!r}")
                yield name, nid


# -- what the host has cached -----------------------------------------------------------------
_MAP_FAILED = ctypes.c_void_p(-1).value


def cached_pages(fd: int, length: int) -> bytes:
    """One byte per page of the first `length` bytes of `fd`'s file, bit 0 set where the
    host's page cache holds that page (mincore(2) of a shared read-only mapping, which asks
    the page cache and reads nothing)."""
    if length <= 0:
        return b""
    addr = LIBC.mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    if addr in (None, _MAP_FAILED):
        raise last_error("mmap")
    try:
        vec = ctypes.create_string_buffer((length + mmap.PAGESIZE - 1) // mmap.PAGESIZE)
        if LIBC.mincore(addr, length, vec) != 0:
            raise last_error("mincore")
        return vec.raw
    finally:
        LIBC.munmap(addr, length)


@dataclass(frozen=True)
class Layout:
    """An erofs image's regular files and where their bytes are: read once, right after the
    image is made, since reading it again would put its metadata (and the kernel's readahead
    around it) in the page cache that tells which files guests read."""

    data_bytes: int
    files: tuple[FileExtents, ...]


def read_layout(f: RandomAccess) -> Layout:
    reader = ErofsReader(f)
    return Layout(reader.data_bytes, tuple(reader.files()))


def read_layout_quietly(path: Path) -> Layout:
    """The layout of the erofs image at `path`, leaving the host's page cache of it as it was,
    so that what it holds goes on saying what guests read: read with O_DIRECT, around the page
    cache. Where the filesystem has no O_DIRECT (tmpfs), read without readahead and the pages
    that brings in dropped again (with the large folios they lie in: a neighbour may go too)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_DIRECT)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        return _read_layout_dropping(path)
    try:
        return read_layout(_UncachedFile(fd))
    finally:
        os.close(fd)


class _UncachedFile:
    """The seek/tell/read an ErofsReader needs, over an O_DIRECT file descriptor: aligned
    reads of `CHUNK` bytes into an aligned buffer, the last `CHUNKS_KEPT` kept (the metadata
    a layout walk reads lies close together)."""

    CHUNK = 64 * 1024
    CHUNKS_KEPT = 64

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._size = os.fstat(fd).st_size
        self._pos = 0
        self._buffer = mmap.mmap(-1, self.CHUNK)  # page-aligned, as O_DIRECT needs
        self._chunks: OrderedDict[int, bytes] = OrderedDict()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._size}[whence]
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, n: int) -> bytes:
        out = bytearray()
        while n > 0 and self._pos < self._size:
            start = self._pos - self._pos % self.CHUNK
            chunk = self._chunk(start)
            part = chunk[self._pos - start:self._pos - start + n]
            if not part:
                break
            out += part
            self._pos += len(part)
            n -= len(part)
        return bytes(out)

    def _chunk(self, start: int) -> bytes:
        chunk = self._chunks.get(start)
        if chunk is None:
            got = os.preadv(self._fd, [self._buffer], start)
            chunk = self._buffer[:got]
            self._chunks[start] = chunk
            if len(self._chunks) > self.CHUNKS_KEPT:
                self._chunks.popitem(last=False)
        else:
            self._chunks.move_to_end(start)
        return chunk


def _read_layout_dropping(path: Path) -> Layout:
    with open(path, "rb", buffering=0) as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        before = cached_pages(fd, size)
        layout = read_layout(f)
        after = cached_pages(fd, size)
        for first, count in _new_runs(before, after):
            os.posix_fadvise(fd, first * mmap.PAGESIZE, count * mmap.PAGESIZE,
                             os.POSIX_FADV_DONTNEED)
    return layout


def _new_runs(before: bytes, after: bytes) -> Iterator[tuple[int, int]]:
    """(first page, count) of each run of pages cached in `after` but not in `before`."""
    first = -1
    for i, (was, now) in enumerate(zip(before, after, strict=True)):
        new = bool(now & 1) and not was & 1
        if new and first < 0:
            first = i
        elif not new and first >= 0:
            yield first, i - first
            first = -1
    if first >= 0:
        yield first, len(after) - first


def hot_paths(layout: Layout, fd: int, max_bytes: int) -> list[str]:
    """The paths of `hot_files`, in the order their data lies in the image (a guest reading
    them reads the disk front to back), as many as fit in `max_bytes` of file data."""
    hot = sorted(hot_files(layout, fd), key=lambda f: f.extents[0][0] if f.extents else 0)
    paths: list[str] = []
    total = 0
    for file in hot:
        if total + file.size > max_bytes:
            continue  # a smaller one may still fit
        paths.append(file.path)
        total += file.size
    return paths


def hot_files(layout: Layout, fd: int) -> list[FileExtents]:
    """The files of `layout` (of the image open as `fd`) with at least one page in the host's
    page cache, in the layout's order. Reads nothing of the image."""
    pages = cached_pages(fd, min(layout.data_bytes, os.fstat(fd).st_size))
    return [file for file in layout.files if _touches(file, pages)]


def _touches(file: FileExtents, pages: bytes) -> bool:
    for offset, length in file.extents:
        first, last = offset // mmap.PAGESIZE, (offset + length - 1) // mmap.PAGESIZE
        if any(b & 1 for b in pages[first:last + 1]):
            return True
    return False


def drop_cached(fd: int) -> None:
    """Let the host's page cache drop what it holds of `fd`'s file (written back first), so
    that what it caches from now on is what guests read."""
    os.fdatasync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
