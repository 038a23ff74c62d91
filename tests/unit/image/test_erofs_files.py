"""Where an erofs image keeps each file (read back from images mkfs.erofs made, byte for byte)
and which files the host's page cache holds. Needs mkfs.erofs (erofs-utils); no root, no
mount."""

from __future__ import annotations

import os
import random
import shutil
import struct
from pathlib import Path

import pytest

from steelcup.errors import ImageError
from steelcup.image import erofs, erofs_files
from steelcup.image.erofs_files import (
    ErofsReader,
    FileExtents,
    cached_pages,
    drop_cached,
    hot_files,
    hot_paths,
    read_layout,
    read_layout_quietly,
)

pytestmark = pytest.mark.skipif(shutil.which("mkfs.erofs") is None,
                                reason="needs mkfs.erofs (erofs-utils)")


def _tree(base: Path) -> dict[str, bytes]:
    """Files of every size class around the block size, nested and crowded directories,
    xattrs (they move a file's inline tail), extended inodes (an mtime of their own, large
    ids), a symlink and a hard link. Returns the regular files' contents by path."""
    rnd = random.Random(19)
    files: dict[str, bytes] = {}

    def put(rel: str, size: int) -> Path:
        path = base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = rnd.randbytes(size)
        path.write_bytes(data)
        files[rel] = data
        return path

    for size in (0, 1, 100, 4095, 4096, 4097, 8192, 10_000, 70_001):
        put(f"sizes/f{size}", size)
    put("a/b/c/d/e/deep", 3000)
    for i in range(300):  # a directory of several blocks, long names
        put(f"many/{'n' * 60}{i:04d}", i * 7)
    with_xattrs = put("x/tagged", 5000)
    os.setxattr(with_xattrs, "user.one", b"1" * 40)
    os.setxattr(with_xattrs, "user.two", b"2" * 7)
    extended = put("x/old", 9000)
    os.utime(extended, (1_000_000_000, 1_000_000_000))
    os.chown(put("x/owned", 123), 100_000, 100_000)
    os.symlink("sizes/f100", base / "link")
    os.link(base / "sizes" / "f4097", base / "hard")
    return files


def _image(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    src = tmp_path / "src"
    src.mkdir()
    files = _tree(src)
    out = tmp_path / "image.erofs"
    erofs._mkfs(src, out)
    with open(out, "r+b") as f:  # sparse to the apparent size, as the daemon's are
        f.truncate(erofs.CAPACITY_BYTES)
    return out, files


def _content(image: Path, file: FileExtents) -> bytes:
    with open(image, "rb") as f:
        parts = []
        for offset, length in file.extents:
            f.seek(offset)
            parts.append(f.read(length))
    return b"".join(parts)


def test_every_file_is_found_where_its_bytes_are(tmp_path: Path) -> None:
    image, files = _image(tmp_path)
    with open(image, "rb") as f:
        found = {file.path: file for file in ErofsReader(f).files()}
    # the hard link's two names are one file, listed once under either
    hard = {"hard", "sizes/f4097"}
    assert len(hard & found.keys()) == 1
    expected = {*files} | hard
    assert found.keys() <= expected and expected - found.keys() <= hard
    for path, file in found.items():
        data = files[path] if path != "hard" else files["sizes/f4097"]
        assert file.size == len(data), path
        assert _content(image, file) == data, path


def test_what_is_not_erofs_or_is_cut_short_is_an_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"\0" * 8192)
    with open(junk, "rb") as f, pytest.raises(ImageError, match="not an erofs"):
        ErofsReader(f)
    image, _ = _image(tmp_path)
    cut = tmp_path / "cut"
    with open(image, "rb") as f:
        head = f.read(4096)
    cut.write_bytes(head)
    with open(cut, "rb") as f, pytest.raises(ImageError):
        list(ErofsReader(f).files())
    # a root directory whose size runs past the image's end
    with open(image, "rb") as f:
        reader = ErofsReader(f)
        root_at = reader._meta_blkaddr * reader.block_size + reader.root_nid * 32
        f.seek(0)
        broken = bytearray(f.read(reader.data_bytes))
    struct.pack_into("<I", broken, root_at + 8, 0xFFFF_FFF0)
    bad = tmp_path / "bad"
    bad.write_bytes(bytes(broken))
    with open(bad, "rb") as f, pytest.raises(ImageError):
        list(ErofsReader(f).files())


def test_hot_files_are_those_the_page_cache_holds(tmp_path: Path) -> None:
    image, _ = _image(tmp_path)
    with open(image, "rb") as f:
        layout = read_layout(f)
        drop_cached(f.fileno())  # as after a build: reading the layout cached its metadata
        assert hot_files(layout, f.fileno()) == []
        assert hot_files(layout, f.fileno()) == []  # asking reads nothing
        big = next(file for file in layout.files if file.path == "sizes/f70001")
    with open(image, "rb") as f:  # a guest reading one file through QEMU, no readahead
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_RANDOM)
        for offset, length in big.extents:
            os.pread(f.fileno(), length, offset)
    with open(image, "rb") as f:
        hot = [file.path for file in hot_files(layout, f.fileno())]
    assert "sizes/f70001" in hot
    assert "sizes/f10000" not in hot and "x/old" not in hot and "a/b/c/d/e/deep" not in hot


def _read_like_a_guest(image: Path, file: FileExtents) -> None:
    with open(image, "rb") as f:  # through QEMU: the host's page cache, no readahead
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_RANDOM)
        for offset, length in file.extents:
            os.pread(f.fileno(), length, offset)


def test_reading_the_layout_quietly_leaves_the_page_cache_as_it_was(tmp_path: Path) -> None:
    image, _ = _image(tmp_path)
    with open(image, "rb") as f:
        layout = read_layout(f)
        drop_cached(f.fileno())
    big = next(file for file in layout.files if file.path == "sizes/f70001")
    _read_like_a_guest(image, big)
    size = image.stat().st_size
    with open(image, "rb") as f:
        before = cached_pages(f.fileno(), size)
        hot_before = hot_files(layout, f.fileno())
    assert big in hot_before  # with the files whose inline tails share its tail's page
    assert read_layout_quietly(image) == layout
    with open(image, "rb") as f:
        assert cached_pages(f.fileno(), size) == before  # O_DIRECT: around the page cache
        assert hot_files(layout, f.fileno()) == hot_before
    # Where there is no O_DIRECT: what the read brought in is dropped again, nothing more stays.
    assert erofs_files._read_layout_dropping(image) == layout
    with open(image, "rb") as f:
        after = cached_pages(f.fileno(), size)
    assert not [i for i, (was, now) in enumerate(zip(before, after, strict=True))
                if now & 1 and not was & 1]


def test_hot_paths_lie_in_disk_order_and_fit_the_cap(tmp_path: Path) -> None:
    image, _ = _image(tmp_path)
    with open(image, "rb") as f:
        layout = read_layout(f)
        drop_cached(f.fileno())
    by_path = {file.path: file for file in layout.files}
    read = [by_path[name] for name in ("sizes/f70001", "sizes/f8192", "a/b/c/d/e/deep")]
    for file in reversed(read):
        _read_like_a_guest(image, file)
    with open(image, "rb") as f:
        every = hot_paths(layout, f.fileno(), 1 << 30)
        firsts = [by_path[path].extents[0][0] for path in every if by_path[path].extents]
        assert firsts == sorted(firsts)
        assert {file.path for file in read} <= set(every)
        # Too small for the 70001-byte file: the others still fit.
        capped = hot_paths(layout, f.fileno(), 70000)
        assert "sizes/f70001" not in capped
        assert {"sizes/f8192", "a/b/c/d/e/deep"} <= set(capped)
        assert sum(by_path[path].size for path in capped) <= 70000
        assert hot_paths(layout, f.fileno(), 0) == [p for p in every if by_path[p].size == 0]
