"""The hostile layer corpus (one table, one test) and benign controls that must unpack exactly.

A hostile case either fails with an ImageError whose message names the defence, or is applied
with the offending entry neutralised (checked on the target); either way nothing outside the
target changes. A benign case's unpacked tree must equal what its tar declares, file by file.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import shutil
import stat
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from steelcup.errors import ImageError
from steelcup.image.layers import OPAQUE_XATTR, LayerLimits, apply_layer
from steelcup.image.privileges import CAPABILITY_XATTR, RECORD_XATTR, SETID_BITS, Declared

from .tarutil import END, Entry, make_tar, member, patched, pax_record, special

ROOT = os.geteuid() == 0
HAVE_ZSTD = shutil.which("zstd") is not None
CAP = (0x02000001).to_bytes(4, "little") + (1 << 7).to_bytes(4, "little") + bytes(12)
CAP_PAX = CAP.decode("utf-8", "surrogateescape")
SMALL = LayerLimits(max_bytes=4 << 20)  # bombs are measured against this, to stay harmless

Layers = Callable[[Path], list[bytes]]  # the layers to apply in order, given the sentinel dir
Check = Callable[[Path], None]  # assertions on the target after a neutralised case


@dataclass(frozen=True)
class Hostile:
    name: str
    layers: Layers
    error: str | None  # regex the ImageError must match; None: applied, entry neutralised
    check: Check = field(default=lambda _t: None)
    limits: LayerLimits = LayerLimits()


def tars(*layers: list[Entry]) -> Layers:
    return lambda _s: [make_tar(layer) for layer in layers]


def with_s(build: Callable[[Path], list[list[Entry]]]) -> Layers:
    """Layers whose entries mention the sentinel path."""
    return lambda s: [make_tar(layer) for layer in build(s)]


def raw(*layers: bytes) -> Layers:
    return lambda _s: list(layers)


# --- checks on the target --------------------------------------------------------------------
def is_file(rel: str, content: bytes) -> Check:
    def check(t: Path) -> None:
        assert stat.S_ISREG((t / rel).lstat().st_mode) and (t / rel).read_bytes() == content
    return check


def is_kind(rel: str, test: Callable[[int], bool]) -> Check:
    return lambda t: (
        None if test((t / rel).lstat().st_mode) else pytest.fail(f"{rel} has the wrong type"))


def absent(*rels: str) -> Check:
    def check(t: Path) -> None:
        for rel in rels:
            assert not os.path.lexists(t / rel), rel
    return check


def no_setid(rel: str) -> Check:
    return lambda t: None if not (t / rel).lstat().st_mode & SETID_BITS else pytest.fail(rel)


def xattrs_only(rel: str, allowed: tuple[str, ...] = ()) -> Check:
    """No xattr on `rel` except names starting with one of `allowed`."""
    def check(t: Path) -> None:
        names = os.listxattr(t / rel, follow_symlinks=False)
        assert [n for n in names if not n.startswith(allowed)] == [], names
    return check


def both(*checks: Check) -> Check:
    def check(t: Path) -> None:
        for c in checks:
            c(t)
    return check


def xattr_member(name: str, key: str, value: str, *, type_: bytes = tarfile.REGTYPE) -> bytes:
    return member(name, pax={"SCHILY.xattr." + key: value}, type=type_,
                  mode=0o755 if type_ == tarfile.DIRTYPE else 0o644)


def _sparse(real_size: int) -> bytes:
    """A GNU sparse member: one 512-byte data chunk claiming a `real_size`-byte file."""
    data = b"a" * 512
    block = patched("sparse", 386, b"%011o\0%011o\0" % (0, 512), type_=b"S", data=data)
    head = patched("sparse", 483, tarfile.itn(real_size, 12, tarfile.GNU_FORMAT), type_=b"S")
    merged = bytearray(block[:512])
    merged[483:495] = head[483:495]
    merged[148:156] = b" " * 8
    merged[148:156] = b"%06o\0 " % sum(merged)
    return bytes(merged) + block[512:]


def _zstd(data: bytes) -> bytes:
    if not HAVE_ZSTD:
        pytest.skip("zstd tool not installed")
    return subprocess.run(["zstd", "-c", "-q", "-19"], input=data, capture_output=True,
                          check=True).stdout


ESCAPE = "escapes the layer root"
THROUGH = "goes through a non-directory or symlink"
S_REG, S_DIR, S_LNK, S_FIFO = stat.S_ISREG, stat.S_ISDIR, stat.S_ISLNK, stat.S_ISFIFO
BIG = make_tar([("file", "big", b"\0" * 5_000_000)])
TWO = make_tar([("file", "a", b"1" * 2000), ("file", "b", b"2")])

HOSTILE: list[Hostile] = [
    # path traversal
    Hostile("dotdot-file", tars([("file", "../sentinel/file", b"pwn")]), ESCAPE),
    Hostile("dotdot-new-file", tars([("file", "../evil", b"pwn")]), ESCAPE),
    Hostile("dotdot-nested", tars([("file", "a/../../sentinel/file", b"pwn")]), ESCAPE),
    Hostile("dotdot-deep", tars([("file", "a/b/../../../sentinel/x", b"pwn")]), ESCAPE),
    Hostile("dotdot-back-into-target", tars([("file", "a/../../target/x", b"pwn")]), ESCAPE),
    Hostile("absolute-dotdot", tars([("file", "/../../sentinel/file", b"pwn")]), ESCAPE),
    Hostile("absolute-name-confined", with_s(lambda s: [[("file", f"{s}/file", b"pwn")]]),
            None, lambda t: is_file(str(t.parent / "sentinel/file")[1:], b"pwn")(t)),
    Hostile("backslash-dotdot-is-a-name", tars([("file", "..\\..\\sentinel", b"x")]), None,
            is_file("..\\..\\sentinel", b"x")),
    Hostile("dotdot-dir", tars([("dir", "../sentinel/sub", 0o777)]), ESCAPE),
    Hostile("dotdot-symlink-name", tars([("sym", "../sentinel/lnk", "/etc")]), ESCAPE),
    Hostile("dotdot-fifo", tars([("fifo", "../sentinel/p")]), ESCAPE),
    # symlinks, then something through them
    Hostile("through-rel-symlink", tars([("sym", "l", "../sentinel"), ("file", "l/pwn", b"x")]),
            THROUGH),
    Hostile("through-abs-symlink", with_s(lambda s: [[("sym", "l", str(s)),
                                                      ("file", "l/file", b"x")]]), THROUGH),
    Hostile("through-symlink-dir-entry", with_s(lambda s: [[("sym", "l", str(s)),
                                                            ("dir", "l/sub", 0o777)]]), THROUGH),
    Hostile("through-symlink-fifo", with_s(lambda s: [[("sym", "l", str(s)), ("fifo", "l/p")]]),
            THROUGH),
    Hostile("through-chained-symlinks", with_s(lambda s: [[
        ("sym", "a", "b"), ("sym", "b", str(s)), ("file", "a/pwn", b"x")]]), THROUGH),
    Hostile("through-symlink-loop", tars([("sym", "a", "a"), ("file", "a/x", b"x")]), THROUGH),
    Hostile("through-symlink-deep", tars([("dir", "d"), ("sym", "d/up", "../.."),
                                          ("file", "d/up/sentinel/file", b"x")]), THROUGH),
    Hostile("through-symlink-earlier-layer",
            with_s(lambda s: [[("sym", "etc", str(s))], [("file", "etc/file", b"x")]]), THROUGH),
    Hostile("through-symlink-earlier-layer-rel",
            tars([("sym", "etc", "../sentinel")], [("dir", "etc/sub", 0o777)]), THROUGH),
    Hostile("dir-replaced-by-symlink-then-file", with_s(lambda s: [[
        ("dir", "d"), ("sym", "d", str(s)), ("file", "d/file", b"x")]]), THROUGH),
    Hostile("dir-replaced-by-symlink-next-layer", with_s(lambda s: [
        [("dir", "etc")], [("sym", "etc", str(s))], [("file", "etc/file", b"x")]]), THROUGH),
    Hostile("file-used-as-dir", tars([("file", "f", b"x"), ("file", "f/x", b"y")]), THROUGH),
    Hostile("overwrite-symlink-with-file",
            with_s(lambda s: [[("sym", "f", f"{s}/file"), ("file", "f", b"replaced")]]), None,
            is_file("f", b"replaced")),
    Hostile("overwrite-symlink-next-layer",
            with_s(lambda s: [[("sym", "f", f"{s}/file")], [("file", "f", b"new", 0o777)]]), None,
            is_file("f", b"new")),
    Hostile("dir-entry-over-symlink", with_s(lambda s: [[("sym", "d", str(s)),
                                                         ("dir", "d", 0o777)]]), None,
            is_kind("d", S_DIR)),
    Hostile("fifo-over-symlink", with_s(lambda s: [[("sym", "p", f"{s}/file"), ("fifo", "p")]]),
            None, is_kind("p", S_FIFO)),
    Hostile("symlink-over-dir-with-contents", with_s(lambda s: [[
        ("dir", "d"), ("file", "d/a", b"1"), ("sym", "d", str(s))]]), None, is_kind("d", S_LNK)),
    Hostile("file-over-dir-containing-outward-symlink", with_s(lambda s: [[
        ("dir", "d"), ("sym", "d/out", str(s)), ("file", "d", b"x")]]), None,
            is_file("d", b"x")),
    Hostile("root-entry-as-symlink", with_s(lambda s: [[("sym", "./", str(s)),
                                                        ("file", "f", b"x")]]), None,
            is_file("f", b"x")),
    # hard links
    Hostile("hardlink-dotdot", tars([("link", "h", "../sentinel/file")]), ESCAPE),
    Hostile("hardlink-absolute-outside", with_s(lambda s: [[("link", "h", f"{s}/file")]]),
            "target missing"),
    Hostile("hardlink-through-symlink", with_s(lambda s: [[("sym", "d", str(s)),
                                                           ("link", "h", "d/file")]]), THROUGH),
    Hostile("hardlink-to-symlink-stays-symlink", with_s(lambda s: [[
        ("sym", "l", f"{s}/file"), ("link", "h", "l"), ("file", "h2", b"x")]]), None,
            is_kind("h", S_LNK)),
    Hostile("hardlink-to-outward-symlink-then-write-through", with_s(lambda s: [[
        ("sym", "l", f"{s}/file"), ("link", "h", "l"), ("file", "h/x", b"x")]]), THROUGH),
    Hostile("hardlink-to-dir", tars([("dir", "d"), ("link", "h", "d")]), "target is a directory"),
    Hostile("hardlink-to-root", tars([("link", "h", ".")]), "points at the layer root"),
    Hostile("hardlink-missing-target", tars([("link", "h", "nope")]), "target missing"),
    Hostile("hardlink-to-itself", tars([("file", "a", b"x"), ("link", "a", "a")]),
            "target missing"),
    Hostile("hardlink-to-whiteout", tars([("file", ".wh.x", b""), ("link", "h", ".wh.x")]),
            "target missing"),
    # whiteouts
    Hostile("whiteout-through-symlink", with_s(lambda s: [[("sym", "l", str(s)),
                                                           ("file", "l/.wh.file", b"")]]),
            THROUGH),
    Hostile("opaque-through-symlink", with_s(lambda s: [[("sym", "l", str(s)),
                                                         ("file", "l/.wh..wh..opq", b"")]]),
            THROUGH),
    Hostile("whiteout-dotdot-name", tars([("dir", "d"), ("file", "d/.wh...", b"")]), None,
            absent("d/.wh...")),
    Hostile("whiteout-dot-name", tars([("file", ".wh..", b"")]), None, absent(".wh..")),
    Hostile("whiteout-of-whiteout-prefix", tars([("file", ".wh..wh.plnk", b"")]), None,
            absent(".wh..wh.plnk", ".wh.plnk")),
    Hostile("whiteout-escape-dir", tars([("file", "../sentinel/.wh.file", b"")]), ESCAPE),
    Hostile("whiteout-absolute-escape", tars([("file", "/../sentinel/.wh.file", b"")]), ESCAPE),
    Hostile("opaque-escape-dir", tars([("file", "../.wh..wh..opq", b"")]), ESCAPE),
    Hostile("opaque-at-root-stays-inside", tars([("file", ".wh..wh..opq", b"")]), None,
            lambda t: None if not ROOT else (
                None if os.getxattr(t, OPAQUE_XATTR) == b"y" else pytest.fail("not opaque"))),
    # special files and privileges
    Hostile("char-device-skipped", tars([("chr", "mem", 1, 1)]), None, absent("mem")),
    Hostile("block-device-skipped", tars([("blk", "vda", 253, 0)]), None, absent("vda")),
    Hostile("char-device-0-0-skipped", tars([("chr", "fake-whiteout", 0, 0)]), None,
            absent("fake-whiteout")),
    Hostile("setuid-root-file", tars([("file", "su", b"x", 0o4755)]), None, no_setid("su")),
    Hostile("setgid-file", tars([("file", "sg", b"x", 0o2755)]), None, no_setid("sg")),
    Hostile("setgid-dir", tars([("dir", "d", 0o2777)]), None, no_setid("d")),
    Hostile("capability-xattr", raw(xattr_member("cap", CAPABILITY_XATTR, CAP_PAX) + END),
            None, xattrs_only("cap", ("trusted.steelcup.",))),
    Hostile("capability-on-dir", raw(xattr_member("d", CAPABILITY_XATTR, CAP_PAX,
                                                  type_=tarfile.DIRTYPE) + END),
            None, xattrs_only("d", ("trusted.steelcup.",))),
    Hostile("trusted-overlay-opaque-xattr",
            raw(xattr_member("d", OPAQUE_XATTR, "y", type_=tarfile.DIRTYPE) + END), None,
            xattrs_only("d")),
    Hostile("trusted-overlay-redirect-xattr",
            raw(xattr_member("d", "trusted.overlay.redirect", "/etc", type_=tarfile.DIRTYPE)
                + END), None, xattrs_only("d")),
    Hostile("trusted-overlay-metacopy-xattr",
            raw(xattr_member("f", "trusted.overlay.metacopy", "") + END), None, xattrs_only("f")),
    # a userxattr overlay's own marks (the host's view of a block root reads them) and
    # steelcup's stand-in mark are bookkeeping, never a layer's content
    Hostile("user-overlay-redirect-xattr",
            raw(xattr_member("d", "user.overlay.redirect", "/etc", type_=tarfile.DIRTYPE)
                + END), None, xattrs_only("d")),
    Hostile("user-overlay-opaque-xattr",
            raw(xattr_member("d", "user.overlay.opaque", "y", type_=tarfile.DIRTYPE) + END),
            None, xattrs_only("d")),
    Hostile("user-overlay-metacopy-xattr",
            raw(xattr_member("f", "user.overlay.metacopy", "") + END), None, xattrs_only("f")),
    Hostile("steelcup-stand-in-mark",
            raw(xattr_member("f", "user.steelcup.node", "whiteout") + END), None,
            xattrs_only("f")),
    Hostile("forged-steelcup-record",
            raw(xattr_member("f", RECORD_XATTR, "v1 mode=4755 uid=0 gid=0 sha256=-") + END),
            None, xattrs_only("f")),
    Hostile("security-selinux-xattr",
            raw(xattr_member("f", "security.selinux", "system_u:object_r:shadow_t:s0") + END),
            None, xattrs_only("f")),
    Hostile("security-ima-xattr", raw(xattr_member("f", "security.ima", "\x03\x02") + END),
            None, xattrs_only("f")),
    Hostile("posix-acl-xattr",
            raw(xattr_member("f", "system.posix_acl_access", "\x02\0\0\0\x01\0\x07\0") + END),
            None, xattrs_only("f")),
    # names and lengths
    Hostile("nul-in-pax-path", raw(member("ok", pax={"path": "a\0../../x"}) + END),
            "contains NUL"),
    Hostile("nul-in-symlink-target", raw(member("l", type=tarfile.SYMTYPE,
                                                pax={"linkpath": "a\0b"}) + END),
            "containing NUL"),
    Hostile("nul-in-hardlink-target", raw(member("f") + member(
        "h", type=tarfile.LNKTYPE, pax={"linkpath": "f\0x"}) + END), "containing NUL"),
    Hostile("name-component-over-255", tars([("file", "x" * 300, b"")]), "too long"),
    Hostile("path-over-4096", tars([("file", "/".join(["d" * 50] * 100), b"")]), "longer than"),
    Hostile("symlink-target-over-4096", tars([("sym", "s", "y" * 5000)]), "longer than"),
    # pax and GNU header abuse
    Hostile("pax-path-override-dotdot",
            raw(member("innocent", b"pwn", pax={"path": "../sentinel/file"}) + END), ESCAPE),
    Hostile("pax-linkpath-outside", raw(member(
        "h", type=tarfile.LNKTYPE, pax={"linkpath": "../sentinel/file"}) + END), ESCAPE),
    Hostile("pax-global-path-dotdot",
            raw(special(b"g", pax_record("path", "../sentinel/file")) + member("f", b"x") + END),
            ESCAPE),
    Hostile("pax-header-2mib",
            raw(special(b"x", pax_record("comment", "a" * (2 << 20))) + member("f") + END),
            "extended header", limits=SMALL),
    Hostile("pax-header-chain",
            raw(special(b"x", pax_record("comment", "a")) * 3000 + member("f") + END),
            "more than 16 extended headers"),
    Hostile("pax-size-negative", raw(member("f", b"abc", pax={"size": "-1"}) + END),
            "negative size"),
    Hostile("pax-size-beyond-limit", raw(member("f", b"abc", pax={"size": str(64 << 20)}) + END),
            "unpacks to more than", limits=SMALL),
    Hostile("pax-uid-over-32-bits", raw(member("f", pax={"uid": str(1 << 40)}) + END),
            "invalid uid"),
    Hostile("pax-gid-over-32-bits", raw(member("f", pax={"gid": str(1 << 40)}) + END),
            "invalid gid"),
    Hostile("uid-minus-one", raw(patched("f", 108, b"\xff" * 8) + END), "invalid uid"),
    Hostile("gnu-longname-dotdot",
            raw(special(b"L", b"../sentinel/file\0") + member("short", b"pwn") + END), ESCAPE),
    Hostile("gnu-longlink-outside", raw(special(b"K", b"../sentinel/file\0") + member(
        "h", type=tarfile.LNKTYPE, linkname="x") + END), ESCAPE),
    Hostile("gnu-longname-2mib", raw(special(b"L", b"a" * (2 << 20)) + member("f") + END),
            "extended header", limits=SMALL),
    Hostile("gnu-sparse-claims-64mib", raw(_sparse(64 << 20) + END), "unpacks to more than",
            limits=SMALL),
    Hostile("size-field-negative", raw(patched("f", 124, b"\xff" * 12) + END), "negative size"),
    Hostile("size-field-huge", raw(patched("f", 124, tarfile.itn(1 << 40, 12, tarfile.GNU_FORMAT))
                                   + END), "unpacks to more than", limits=SMALL),
    # bombs, limits and broken streams
    Hostile("uncompressed-over-limit", raw(make_tar([("file", "big", b"\0" * 100_000)])),
            "than the limit of", limits=LayerLimits(max_bytes=50_000)),
    Hostile("gzip-bomb", raw(gzip.compress(BIG)), "than the limit of",
            limits=LayerLimits(max_bytes=1_000_000)),
    Hostile("zstd-bomb", lambda _s: [_zstd(BIG)], "than the limit of",
            limits=LayerLimits(max_bytes=1_000_000)),
    Hostile("entry-count-limit", tars([("file", f"f{i}", b"") for i in range(20)]),
            "more than 10 entries", limits=LayerLimits(max_entries=10)),
    Hostile("truncated-stream", raw(TWO[:1200]), "invalid layer archive"),
    Hostile("corrupt-second-header", raw(TWO[:3000] + b"\xff" * 100 + TWO[3100:]),
            "invalid layer archive"),
    Hostile("data-after-end", raw(TWO + b"garbage" + bytes(505)), "data after the end"),
    Hostile("not-gzip-after-magic", raw(b"\x1f\x8bnot gzip at all" * 10),
            "invalid layer archive"),
    Hostile("truncated-gzip", raw(gzip.compress(TWO)[:-30]), "invalid layer archive"),
]


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


@pytest.mark.parametrize("case", HOSTILE, ids=[c.name for c in HOSTILE])
def test_hostile_layer(arena: tuple[Path, Path], case: Hostile) -> None:
    target, sentinel = arena
    base = target.parent
    before = snapshot(base, skip=target)
    error: ImageError | None = None
    for layer in case.layers(sentinel):
        try:
            apply_layer(io.BytesIO(layer), target, case.limits)
        except ImageError as exc:
            error = exc
            break
    assert snapshot(base, skip=target) == before, "something outside the target changed"
    assert (sentinel / "file").read_bytes() == b"precious"
    if case.error is None:
        assert error is None, f"refused instead of neutralised: {error}"
        case.check(target)
    else:
        assert error is not None, "applied instead of refused"
        assert re.search(case.error, str(error)), f"{error!s} does not match {case.error!r}"


def test_corpus_sizes() -> None:
    assert len(HOSTILE) >= 60
    assert len({c.name for c in HOSTILE}) == len(HOSTILE)
    assert len(BENIGN) >= 20
    assert len({c.name for c in BENIGN}) == len(BENIGN)


# --- benign controls -------------------------------------------------------------------------
@dataclass(frozen=True)
class Benign:
    name: str
    entries: list[tuple[Any, ...]]  # (kind, name, ...) as below; every parent dir listed
    compress: str = ""  # "", "gzip" or "zstd"


# entries: ("file", name, data, mode=0o644, uid=0, gid=0, xattrs={}), ("dir", name, mode, ...),
# ("sym", name, target), ("link", name, target), ("fifo", name, mode)
def _tar(entries: list[tuple[Any, ...]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for kind, name, *rest in entries:
            info = tarfile.TarInfo(name)
            info.mtime = MTIME
            data = None
            if kind == "file":
                payload, info.mode, info.uid, info.gid, pax = _fill(rest, b"", 0o644)
                info.size, data = len(payload), io.BytesIO(payload)
            elif kind == "dir":
                _, info.mode, info.uid, info.gid, pax = _fill([None, *rest], None, 0o755)
                info.type = tarfile.DIRTYPE
            elif kind == "fifo":
                _, info.mode, info.uid, info.gid, pax = _fill([None, *rest], None, 0o644)
                info.type = tarfile.FIFOTYPE
            else:
                info.type = tarfile.SYMTYPE if kind == "sym" else tarfile.LNKTYPE
                info.linkname, pax = rest[0], {}
            info.pax_headers = {"SCHILY.xattr." + k: v for k, v in pax.items()}
            tar.addfile(info, data)
    return buf.getvalue()


def _fill(rest: list[Any], data: Any, mode: int) -> tuple[Any, int, int, int, dict[str, str]]:
    defaults = [data, mode, 0, 0, {}]
    values = list(rest) + defaults[len(rest):]
    return values[0], values[1], values[2], values[3], values[4]


def _gnu(entries: list[tuple[Any, ...]]) -> bytes:
    return _tar(entries, tarfile.GNU_FORMAT)


LONG = "l" * 120 + "/" + "m" * 120
MTIME = 1_500_000_000
BENIGN: list[Benign] = [
    Benign("file-modes", [("file", n, n.encode(), m) for n, m in
                          (("a", 0o644), ("b", 0o600), ("c", 0o755), ("d", 0o400), ("e", 0o444))]),
    Benign("nested-dirs", [("dir", "usr"), ("dir", "usr/lib", 0o750), ("dir", "usr/lib/x"),
                           ("file", "usr/lib/x/f", b"deep")]),
    Benign("empty-file", [("file", "empty", b"")]),
    Benign("multi-chunk-file", [("file", "big", bytes(range(256)) * 12_289)]),
    Benign("binary-content", [("file", "bin", bytes(range(256)) * 3)]),
    Benign("absolute-symlink", [("dir", "bin"), ("sym", "bin/sh", "/bin/busybox")]),
    Benign("relative-symlink-up", [("dir", "a"), ("sym", "a/r", "../..")]),
    Benign("dangling-symlink", [("sym", "dangling", "/nowhere/at/all")]),
    Benign("hard-links", [("dir", "bin"), ("file", "bin/a", b"same"), ("link", "bin/b", "bin/a"),
                          ("link", "c", "./bin/a")]),
    Benign("hard-link-absolute-name", [("file", "a", b"x"), ("link", "b", "/a")]),
    Benign("hard-link-to-symlink", [("sym", "s", "target"), ("link", "h", "s")]),
    Benign("dot-slash-names", [("dir", "./etc"), ("file", "./etc/hosts", b"h")]),
    Benign("absolute-names", [("dir", "/etc"), ("file", "/etc/hosts", b"h")]),
    Benign("user-xattrs", [("file", "f", b"x", 0o644, 0, 0, {"user.mime": "text/plain",
                                                            "user.bin": "\x00\x01"}),
                           ("dir", "d", 0o755, 0, 0, {"user.d": "1"})]),
    Benign("fifo", [("fifo", "pipe", 0o620)]),
    Benign("sticky-dir", [("dir", "tmp", 0o1777)]),
    Benign("unicode-names", [("file", "caf\u00e9", b"1"), ("file", "\u65e5\u672c", b"2"),
                             ("file", "sp ace", b"3"), ("file", "new\nline", b"4")]),
    Benign("odd-but-legal-names", [("file", "...", b"1"), ("file", ".whatever", b"2"),
                                   ("file", "wh.x", b"3"), ("file", "-rf", b"4")]),
    Benign("owners", [("file", "u", b"1", 0o644, 1000, 1000), ("dir", "n", 0o755, 65534, 65534),
                      ("file", "g", b"2", 0o640, 0, 42)]),
    Benign("pax-long-path", [("dir", "p" * 200), ("file", "p" * 200 + "/" + "q" * 200, b"x")]),
    Benign("setuid-and-caps-declared", [("file", "su", b"s", 0o4755),
                                        ("file", "ping", b"p", 0o755, 0, 0, {CAPABILITY_XATTR:
                                                                             CAP_PAX}),
                                        ("dir", "mail", 0o2775, 0, 8)]),
    Benign("gzip-layer", [("dir", "etc"), ("file", "etc/os", b"gz")], compress="gzip"),
    Benign("zstd-layer", [("dir", "etc"), ("file", "etc/os", b"zst")], compress="zstd"),
    Benign("later-duplicate-wins", [("file", "dup", b"first", 0o600), ("file", "dup", b"second")]),
    Benign("dir-redeclared", [("dir", "d", 0o700), ("file", "d/f", b"x"), ("dir", "d", 0o755)]),
    Benign("symlink-replaced-by-file", [("sym", "x", "/etc/passwd"), ("file", "x", b"mine")]),
]


def _expected(entries: list[tuple[Any, ...]]) -> dict[str, Any]:
    """The tree a benign tar must unpack to: path -> (kind, mode, uid, gid, body, xattrs)."""
    tree: dict[str, Any] = {}
    links: dict[str, str] = {}
    for kind, name, *rest in entries:
        path = _clean(name)
        if kind == "link":
            target = _clean(rest[0])
            tree[path] = tree[target]
            links[path] = links.get(target, target)
            continue
        links.pop(path, None)
        if kind == "sym":
            tree[path] = ("sym", None, 0, 0, rest[0], {}, MTIME)
            continue
        body, mode, uid, gid, pax = _fill([None, *rest] if kind != "file" else rest,
                                          b"" if kind == "file" else None,
                                          0o644 if kind != "dir" else 0o755)
        xattrs = {k: v.encode("utf-8", "surrogateescape") for k, v in pax.items()
                  if k.startswith("user.")}
        cap = pax.get(CAPABILITY_XATTR)
        declared = Declared(mode, uid, gid, hashlib.sha256(body).hexdigest() if body is not None
                            else "", cap.encode("utf-8", "surrogateescape") if cap else None)
        if declared.privileged and ROOT:
            xattrs[RECORD_XATTR] = declared.encode()
            if declared.capability is not None:
                xattrs["trusted.steelcup.security.capability"] = declared.capability
        tree[path] = (kind, declared.host_mode, uid, gid, body, xattrs, MTIME)
    groups = {frozenset(p for p, t in links.items() if t == target) | {target}
              for target in links.values()}
    return {"tree": tree, "links": groups}


def _clean(name: str) -> str:
    return "/".join(c for c in name.split("/") if c not in ("", "."))


def _unpacked(root: Path) -> dict[str, Any]:
    """The same description, read from the unpacked tree."""
    tree: dict[str, Any] = {}
    inodes: dict[int, set[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = p.lstat()
            owner = (st.st_uid, st.st_gid) if ROOT else (0, 0)
            if stat.S_ISLNK(st.st_mode):
                tree[rel] = ("sym", None, *owner, os.readlink(p), {}, st.st_mtime)
            else:
                kind = ("dir" if stat.S_ISDIR(st.st_mode)
                        else "fifo" if stat.S_ISFIFO(st.st_mode) else "file")
                body = p.read_bytes() if kind == "file" else None
                xattrs = {k: os.getxattr(p, k) for k in os.listxattr(p)}
                tree[rel] = (kind, stat.S_IMODE(st.st_mode), *owner, body, xattrs, st.st_mtime)
            if not stat.S_ISDIR(st.st_mode):
                inodes.setdefault(st.st_ino, set()).add(rel)
    return {"tree": tree, "links": {frozenset(g) for g in inodes.values() if len(g) > 1}}


def _owned(entry: tuple[Any, ...]) -> bool:
    kind, _name, *rest = entry
    ids = rest[2:4] if kind == "file" else rest[1:3] if kind in ("dir", "fifo") else []
    return any(ids)


@pytest.mark.parametrize("case", BENIGN, ids=[c.name for c in BENIGN])
def test_benign_layer_unpacks_exactly(tmp_path: Path, case: Benign) -> None:
    if not ROOT and any(_owned(e) for e in case.entries):
        pytest.skip("ownership needs root")
    data = _tar(case.entries)
    if case.compress == "gzip":
        data = gzip.compress(data)
    elif case.compress == "zstd":
        data = _zstd(data)
    stats = apply_layer(io.BytesIO(data), tmp_path)
    assert stats.skipped == 0 and stats.whiteouts == 0
    assert _unpacked(tmp_path) == _expected(case.entries)


def test_benign_gnu_format_longname(tmp_path: Path) -> None:
    entries: list[tuple[Any, ...]] = [("dir", "l" * 120), ("file", LONG, b"long")]
    apply_layer(io.BytesIO(_gnu(entries)), tmp_path)
    assert _unpacked(tmp_path)["tree"] == _expected(entries)["tree"]
