"""Safe layer application: a hostile corpus that must never touch anything outside the target."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import stat
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from steelcup.errors import ImageError
from steelcup.image.layers import OPAQUE_XATTR, LayerLimits, apply_layer

from .tarutil import END, Entry, make_tar, member, patched, pax_record, special

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="whiteouts/ownership need root")


def snapshot(base: Path, skip: Path) -> dict[str, Any]:
    """Everything under `base` except `skip`: type, mode, owner, content, xattrs, mtime."""
    result: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        here = Path(dirpath)
        if here == skip:
            dirnames.clear()
            continue
        for name in sorted(dirnames + filenames):
            p = here / name
            if p == skip:
                continue
            st = p.lstat()
            content: Any = None
            if stat.S_ISREG(st.st_mode):
                content = p.read_bytes()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(p)
            xattrs = {}
            if not stat.S_ISLNK(st.st_mode):
                xattrs = {k: os.getxattr(p, k) for k in os.listxattr(p)}
            result[str(p.relative_to(base))] = (
                st.st_mode, st.st_uid, st.st_gid, st.st_nlink, content, xattrs, st.st_mtime_ns,
            )
    return result


@pytest.fixture
def arena(tmp_path: Path) -> tuple[Path, Path]:
    """(target, sentinel): sentinel is a directory beside the target that must stay untouched."""
    target = tmp_path / "target"
    target.mkdir()
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    (sentinel / "file").write_bytes(b"precious")
    (sentinel / "sub").mkdir()
    os.chmod(sentinel, 0o755)
    os.chmod(sentinel / "file", 0o644)
    return target, sentinel


Layers = Callable[[Path], list[list[Entry]]]

# Each case: layers built from the sentinel path; "error" = must raise ImageError.
HOSTILE: list[tuple[str, Layers, str]] = [
    ("dotdot-file", lambda s: [[("file", "../sentinel/file", b"pwn")]], "error"),
    ("dotdot-new-file", lambda s: [[("file", "../evil", b"pwn")]], "error"),
    ("dotdot-nested", lambda s: [[("file", "a/../../sentinel/file", b"pwn")]], "error"),
    ("dotdot-deep", lambda s: [[("file", "a/b/../../../sentinel/x", b"pwn")]], "error"),
    ("absolute-dotdot", lambda s: [[("file", "/../../sentinel/file", b"pwn")]], "error"),
    ("absolute-name-confined", lambda s: [[("file", f"{s}/file", b"pwn")]], "ok"),
    ("dotdot-dir", lambda s: [[("dir", "../sentinel/sub", 0o777)]], "error"),
    ("dotdot-symlink-name", lambda s: [[("sym", "../sentinel/lnk", "/etc")]], "error"),
    ("through-rel-symlink", lambda s: [[("sym", "l", "../sentinel"), ("file", "l/pwn", b"x")]],
     "error"),
    ("through-abs-symlink", lambda s: [[("sym", "l", str(s)), ("file", "l/file", b"x")]],
     "error"),
    ("through-symlink-dir-entry",
     lambda s: [[("sym", "l", str(s)), ("dir", "l/sub", 0o777)]], "error"),
    ("through-chained-symlinks",
     lambda s: [[("sym", "a", "b"), ("sym", "b", str(s)), ("file", "a/pwn", b"x")]], "error"),
    ("through-symlink-deep",
     lambda s: [[("dir", "d"), ("sym", "d/up", "../.."), ("file", "d/up/sentinel/file", b"x")]],
     "error"),
    ("through-symlink-earlier-layer",
     lambda s: [[("sym", "etc", str(s))], [("file", "etc/file", b"x")]], "error"),
    ("through-symlink-earlier-layer-rel",
     lambda s: [[("sym", "etc", "../sentinel")], [("dir", "etc/sub", 0o777)]], "error"),
    ("overwrite-symlink-with-file",
     lambda s: [[("sym", "f", f"{s}/file"), ("file", "f", b"replaced")]], "ok"),
    ("overwrite-symlink-next-layer",
     lambda s: [[("sym", "f", f"{s}/file")], [("file", "f", b"replaced", 0o777)]], "ok"),
    ("dir-entry-over-symlink",
     lambda s: [[("sym", "d", str(s)), ("dir", "d", 0o777)]], "ok"),
    ("hardlink-dotdot", lambda s: [[("link", "h", "../sentinel/file")]], "error"),
    ("hardlink-absolute-outside", lambda s: [[("link", "h", f"{s}/file")]], "error"),
    ("hardlink-through-symlink",
     lambda s: [[("sym", "d", str(s)), ("link", "h", "d/file")]], "error"),
    ("hardlink-to-symlink-stays-symlink",
     lambda s: [[("sym", "l", f"{s}/file"), ("link", "h", "l"), ("file", "h2", b"x")]], "ok"),
    ("hardlink-then-write-through",
     lambda s: [[("sym", "l", f"{s}/file"), ("link", "h", "l"), ("file", "h/x", b"x")]],
     "error"),
    ("hardlink-to-dir", lambda s: [[("dir", "d"), ("link", "h", "d")]], "error"),
    ("hardlink-missing-target", lambda s: [[("link", "h", "nope")]], "error"),
    ("whiteout-through-symlink",
     lambda s: [[("sym", "l", str(s)), ("file", "l/.wh.file", b"")]], "error"),
    ("opaque-through-symlink",
     lambda s: [[("sym", "l", str(s)), ("file", "l/.wh..wh..opq", b"")]], "error"),
    ("whiteout-dotdot-name", lambda s: [[("dir", "d"), ("file", "d/.wh...", b"")]], "ok"),
    ("whiteout-dot-name", lambda s: [[("file", ".wh..", b"")]], "ok"),
    ("whiteout-escape-dir", lambda s: [[("file", "../sentinel/.wh.file", b"")]], "error"),
    ("char-device-skipped", lambda s: [[("chr", "mem", 1, 1)]], "ok"),
    ("block-device-skipped", lambda s: [[("blk", "vda", 253, 0)]], "ok"),
    ("fifo-over-symlink",
     lambda s: [[("sym", "p", f"{s}/file"), ("fifo", "p")]], "ok"),
    ("symlink-over-dir-with-contents",
     lambda s: [[("dir", "d"), ("file", "d/a", b"1"), ("sym", "d", str(s))]], "ok"),
    ("file-over-dir-containing-outward-symlink",
     lambda s: [[("dir", "d"), ("sym", "d/out", str(s)), ("file", "d", b"x")]], "ok"),
]


@pytest.mark.parametrize("name,build,expect", HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_corpus(
    arena: tuple[Path, Path], name: str, build: Layers, expect: str
) -> None:
    target, sentinel = arena
    base = target.parent
    before = snapshot(base, skip=target)
    raised = False
    for layer in build(sentinel):
        try:
            apply_layer(io.BytesIO(make_tar(layer)), target)
        except ImageError:
            raised = True
            break
    assert snapshot(base, skip=target) == before, "something outside the target changed"
    assert (sentinel / "file").read_bytes() == b"precious"
    assert raised == (expect == "error")


def test_corpus_is_big_enough() -> None:
    assert len(HOSTILE) >= 25


def test_devices_skipped_unless_allowed(tmp_path: Path) -> None:
    data = make_tar([("chr", "null", 1, 3), ("file", "ok", b"1")])
    stats = apply_layer(io.BytesIO(data), tmp_path)
    assert not (tmp_path / "null").exists() and stats.skipped == 1
    if ROOT:
        other = tmp_path / "other"
        other.mkdir()
        apply_layer(io.BytesIO(data), other, LayerLimits(allow_devices=True))
        st = (other / "null").lstat()
        assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1


def test_setid_bits_stripped(tmp_path: Path) -> None:
    """Set-id bits never reach the host file (test_privileges.py: they are recorded inert)."""
    data = make_tar([("file", "su", b"x", 0o4755), ("dir", "sg", 0o2775), ("dir", "t", 0o1777)])
    apply_layer(io.BytesIO(data), tmp_path)
    assert stat.S_IMODE((tmp_path / "su").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "sg").stat().st_mode) == 0o775
    assert stat.S_IMODE((tmp_path / "t").stat().st_mode) == 0o1777  # sticky is fine


def test_size_limit(tmp_path: Path) -> None:
    data = make_tar([("file", "big", b"\0" * 100_000)])
    with pytest.raises(ImageError, match="than the limit of"):
        apply_layer(io.BytesIO(data), tmp_path, LayerLimits(max_bytes=50_000))


def test_gzip_bomb_limited(tmp_path: Path) -> None:
    data = gzip.compress(make_tar([("file", "big", b"\0" * 5_000_000)]))
    assert len(data) < 20_000
    with pytest.raises(ImageError, match="than the limit of"):
        apply_layer(io.BytesIO(data), tmp_path, LayerLimits(max_bytes=1_000_000))


def test_entry_limit(tmp_path: Path) -> None:
    data = make_tar([("file", f"f{i}", b"") for i in range(20)])
    with pytest.raises(ImageError, match="more than 10 entries"):
        apply_layer(io.BytesIO(data), tmp_path, LayerLimits(max_entries=10))


def test_path_length_limits(tmp_path: Path) -> None:
    long_path = "/".join(["d" * 50] * 100)
    with pytest.raises(ImageError, match="longer than"):
        apply_layer(io.BytesIO(make_tar([("file", long_path, b"")])), tmp_path)
    with pytest.raises(ImageError, match="too long"):
        apply_layer(io.BytesIO(make_tar([("file", "x" * 300, b"")])), tmp_path)
    with pytest.raises(ImageError, match="longer than"):
        apply_layer(io.BytesIO(make_tar([("sym", "s", "y" * 5000)])), tmp_path)


def test_corrupt_and_truncated(tmp_path: Path) -> None:
    data = make_tar([("file", "a", b"1" * 2000), ("file", "b", b"2")])
    with pytest.raises(ImageError):
        apply_layer(io.BytesIO(data[:1200]), tmp_path)
    bad = bytearray(data)
    bad[3000:3100] = b"\xff" * 100  # smash the second header
    t2 = tmp_path / "t2"
    t2.mkdir()
    with pytest.raises(ImageError):
        apply_layer(io.BytesIO(bytes(bad)), t2)
    with pytest.raises(ImageError):
        apply_layer(io.BytesIO(b"\x1f\x8bnot gzip at all" * 10), t2)


def _sparse(real_size: int) -> bytes:
    """A GNU sparse member: one 512-byte data chunk claiming a `real_size`-byte file."""
    data = b"a" * 512
    block = patched("sparse", 386, b"%011o\0%011o\0" % (0, 512), type_=b"S", data=data)
    return patched("sparse", 483, tarfile.itn(real_size, 12, tarfile.GNU_FORMAT), type_=b"S",
                   data=data)[:512] + block[512:]


# header fields os calls would crash on, and headers tarfile would read whole into memory
HEADER_ABUSE: list[tuple[str, bytes, str]] = [
    ("pax-header-2mib", special(b"x", pax_record("comment", "a" * (2 << 20))) + member("f")
     + END, "extended header"),
    ("pax-header-chain", special(b"x", pax_record("comment", "a")) * 3000 + member("f") + END,
     "more than 16 extended headers"),
    ("gnu-longname-2mib", special(b"L", b"a" * (2 << 20)) + member("f") + END,
     "extended header"),
    # 64 MiB against a 4 MiB limit (a real attack claims terabytes: keep the test harmless
    # when the defence is missing)
    ("sparse-claims-64mib", _sparse(64 << 20) + END, "unpacks to more than"),
    ("negative-size", patched("f", 124, b"\xff" * 12) + END, "negative size"),
    ("pax-negative-size", member("f", b"abc", pax={"size": "-1"}) + END, "negative size"),
    ("uid-over-32-bits", member("f", pax={"uid": str(1 << 40)}) + END, "invalid uid"),
    ("uid-minus-one", patched("f", 108, b"\xff" * 8) + END, "invalid uid"),
    ("gid-over-32-bits", member("f", pax={"gid": str(1 << 40)}) + END, "invalid gid"),
    ("symlink-target-nul", member("l", type=tarfile.SYMTYPE, pax={"linkpath": "a\0b"}) + END,
     "containing NUL"),
    ("hardlink-target-nul", member("f") + member("h", type=tarfile.LNKTYPE,
                                                 pax={"linkpath": "f\0x"}) + END,
     "containing NUL"),
]


@pytest.mark.parametrize("name,data,message", HEADER_ABUSE, ids=[c[0] for c in HEADER_ABUSE])
def test_header_abuse_refused(tmp_path: Path, name: str, data: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        apply_layer(io.BytesIO(data), tmp_path, LayerLimits(max_bytes=4 << 20))


def test_out_of_range_mtime_clamped(tmp_path: Path) -> None:
    data = member("f", b"x", pax={"mtime": "1e300"}) + member("g", pax={"mtime": "nan"}) + END
    apply_layer(io.BytesIO(data), tmp_path)
    assert (tmp_path / "f").stat().st_mtime == 1 << 33
    assert (tmp_path / "g").stat().st_mtime == 0


def test_target_symlink_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(ImageError, match="not a directory"):
        apply_layer(io.BytesIO(make_tar([("file", "a", b"1")])), tmp_path / "link")
    assert list(real.iterdir()) == []


# --- benign controls -------------------------------------------------------------------------


def test_absolute_symlink_kept_verbatim(tmp_path: Path) -> None:
    data = make_tar([("dir", "bin"), ("sym", "bin/sh", "/bin/busybox"), ("sym", "r", "../..")])
    apply_layer(io.BytesIO(data), tmp_path)
    assert os.readlink(tmp_path / "bin" / "sh") == "/bin/busybox"
    assert os.readlink(tmp_path / "r") == "../.."


def test_regular_content_modes_and_diff_id(tmp_path: Path) -> None:
    data = make_tar([("dir", "etc", 0o755), ("file", "etc/hosts", b"127.0.0.1 x\n", 0o600),
                     ("file", "./dup", b"first"), ("file", "dup", b"second")])
    stats = apply_layer(io.BytesIO(data), tmp_path)
    assert (tmp_path / "etc/hosts").read_bytes() == b"127.0.0.1 x\n"
    assert stat.S_IMODE((tmp_path / "etc/hosts").stat().st_mode) == 0o600
    assert (tmp_path / "dup").read_bytes() == b"second"
    assert stats.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    assert stats.size_bytes == len(data)
    assert (tmp_path / "etc").stat().st_mtime == 1_600_000_000


def test_gzip_layer_same_diff_id(tmp_path: Path) -> None:
    data = make_tar([("file", "a", b"hello")])
    stats = apply_layer(io.BytesIO(gzip.compress(data)), tmp_path)
    assert stats.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    assert (tmp_path / "a").read_bytes() == b"hello"


@pytest.mark.skipif(shutil.which("zstd") is None, reason="zstd tool not installed")
def test_zstd_layer(tmp_path: Path) -> None:
    data = make_tar([("file", "a", b"zzz" * 1000)])
    comp = subprocess.run(["zstd", "-c", "-q"], input=data, capture_output=True, check=True)
    stats = apply_layer(io.BytesIO(comp.stdout), tmp_path)
    assert (tmp_path / "a").read_bytes() == b"zzz" * 1000
    assert stats.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()


def test_hard_links_within_layer(tmp_path: Path) -> None:
    data = make_tar([("dir", "bin"), ("file", "bin/a", b"same"), ("link", "bin/b", "bin/a"),
                     ("link", "c", "./bin/a")])
    apply_layer(io.BytesIO(data), tmp_path)
    a, b, c = (tmp_path / "bin/a").stat(), (tmp_path / "bin/b").stat(), (tmp_path / "c").stat()
    assert a.st_ino == b.st_ino == c.st_ino and a.st_nlink == 3


def test_implicit_parents_and_root_entry(tmp_path: Path) -> None:
    data = make_tar([("dir", "./", 0o755), ("file", "x/y/z", b"deep")])
    apply_layer(io.BytesIO(data), tmp_path)
    assert (tmp_path / "x/y/z").read_bytes() == b"deep"


@needs_root
def test_whiteouts_become_overlay_char_devices(tmp_path: Path) -> None:
    data = make_tar([("dir", "etc"), ("file", "etc/.wh.motd", b""), ("file", ".wh.gone", b""),
                     ("file", ".wh..wh.plnk", b"")])
    stats = apply_layer(io.BytesIO(data), tmp_path)
    for p in (tmp_path / "etc/motd", tmp_path / "gone"):
        st = p.lstat()
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert not (tmp_path / "etc/.wh.motd").exists()
    assert not (tmp_path / ".wh..wh.plnk").exists()
    assert stats.whiteouts == 3


@needs_root
def test_whiteout_does_not_hide_same_layer_file_and_is_replaced_later(tmp_path: Path) -> None:
    data = make_tar([("file", "keep", b"mine"), ("file", ".wh.keep", b""),
                     ("file", ".wh.back", b""), ("file", "back", b"again")])
    apply_layer(io.BytesIO(data), tmp_path)
    assert (tmp_path / "keep").read_bytes() == b"mine"
    assert (tmp_path / "back").read_bytes() == b"again"


@needs_root
def test_opaque_dir_xattr(tmp_path: Path) -> None:
    data = make_tar([("dir", "var/cache", 0o755), ("file", "var/cache/.wh..wh..opq", b""),
                     ("file", "var/cache/new", b"n")])
    apply_layer(io.BytesIO(data), tmp_path)
    assert os.getxattr(tmp_path / "var/cache", OPAQUE_XATTR) == b"y"
    assert not (tmp_path / "var/cache/.wh..wh..opq").exists()
    assert (tmp_path / "var/cache/new").read_bytes() == b"n"


@needs_root
def test_ownership_applied(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("owned")
        info.uid, info.gid, info.size = 1234, 5678, 1
        tar.addfile(info, io.BytesIO(b"x"))
    apply_layer(io.BytesIO(buf.getvalue()), tmp_path)
    st = (tmp_path / "owned").stat()
    assert (st.st_uid, st.st_gid) == (1234, 5678)


def test_gnu_longname_format(tmp_path: Path) -> None:
    name = "a" * 120 + "/" + "b" * 120
    data = make_tar([("file", name, b"long")], fmt=tarfile.GNU_FORMAT)
    apply_layer(io.BytesIO(data), tmp_path)
    assert (tmp_path / name).read_bytes() == b"long"
