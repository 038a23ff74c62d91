"""What steelcup puts in a container's writable layer for each run (/dev, /proc, /sys mount
points, /etc/hosts, /etc/hostname, /etc/resolv.conf) is not the container's change: `diff`
hides it, the commit layer leaves it out and export has the /etc files empty, as dockerd
(its init layer). Nor are the overlay's own marks (the guest's overlay of a block root writes
`user.overlay.*` into the writable layer) or steelcup's stand-in marks: no tar carries them."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

from steelcup.runtime.fs_changes import compute_changes
from steelcup.runtime.fs_commit import write_export, write_layer
from steelcup.runtime.fs_paths import DIR_FLAGS


def _layers(tmp_path: Path) -> tuple[Path, Path]:
    lower = tmp_path / "lower"
    (lower / "etc").mkdir(parents=True)
    (lower / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (lower / "tmp").mkdir()
    upper = tmp_path / "upper"
    for d in ("dev", "proc", "sys", "etc", "tmp"):
        (upper / d).mkdir(parents=True)
    for name in ("hosts", "hostname", "resolv.conf"):
        (upper / "etc" / name).write_text("made by steelcup\n")
    os.utime(upper / "etc", (1, 1))  # /etc's mtime moved when those were written
    os.utime(upper / "tmp", (1, 1))
    (upper / "tmp" / "x").write_text("the container's\n")
    return lower, upper


def test_diff_hides_what_steelcup_made(tmp_path: Path) -> None:
    lower, upper = _layers(tmp_path)
    changes = [(c.kind.letter, c.path) for c in compute_changes(upper, [lower])]
    assert changes == [("C", "/tmp"), ("A", "/tmp/x")]
    (upper / "etc" / "motd").write_text("the container's\n")
    changes = [(c.kind.letter, c.path) for c in compute_changes(upper, [lower])]
    assert ("C", "/etc") in changes and ("A", "/etc/motd") in changes
    assert not any(p in ("/etc/hosts", "/dev", "/proc", "/sys") for _k, p in changes)


def _names(data: bytes) -> set[str]:
    return set(_sizes(data))


def _sizes(data: bytes) -> dict[str, int]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name.rstrip("/"): m.size for m in tar.getmembers()}


def test_commit_layer_and_export_leave_it_out(tmp_path: Path) -> None:
    _lower, upper = _layers(tmp_path)
    out = io.BytesIO()
    write_layer(upper, out)
    layer = _names(out.getvalue())
    assert {"etc", "tmp", "tmp/x"} <= layer
    assert not layer & {"dev", "proc", "sys", "etc/hosts", "etc/hostname", "etc/resolv.conf"}
    (upper / "proc" / "1").mkdir()  # the guest kernel's, under a mount point
    out = io.BytesIO()
    fd = os.open(upper, DIR_FLAGS)
    try:
        write_export(fd, out)
    finally:
        os.close(fd)
    exported = _sizes(out.getvalue())
    # as dockerd's export: the mount points, empty (steelcup's /etc files without their text)
    assert {"dev", "proc", "sys", "tmp/x"} <= set(exported) and "proc/1" not in exported
    assert [exported[f"etc/{n}"] for n in ("hosts", "hostname", "resolv.conf")] == [0, 0, 0]
    assert exported["tmp/x"] > 0


def test_no_tar_carries_an_overlays_or_steelcups_own_xattrs(tmp_path: Path) -> None:
    """A copy-up in a block root's guest leaves `user.overlay.origin` on the file; a hostile
    guest can write any `user.overlay.*` or stand-in mark there. A commit carrying them would
    make the new image's files redirects, metacopies or opaque dirs to the next block root."""
    _lower, upper = _layers(tmp_path)
    x = upper / "tmp" / "x"
    for key, value in (("user.overlay.origin", b"\0\xfb"), ("user.overlay.redirect", b"/etc"),
                       ("user.steelcup.node", b"whiteout"), ("user.mime", b"text/plain")):
        os.setxattr(x, key, value)
    os.setxattr(upper / "tmp", "user.overlay.impure", b"y")
    out = io.BytesIO()
    write_layer(upper, out)
    fd = os.open(upper, DIR_FLAGS)
    try:
        exported = io.BytesIO()
        write_export(fd, exported)
    finally:
        os.close(fd)
    for data in (out.getvalue(), exported.getvalue()):
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            headers = {m.name.rstrip("/"): m.pax_headers for m in tar.getmembers()}
        assert headers["tmp/x"] == {"SCHILY.xattr.user.mime": "text/plain"}
        assert not headers["tmp"]
