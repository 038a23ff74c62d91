"""An image's setuid bits and file capabilities never become real on the host, yet come out of
every tar writer (layer/commit, export, cp) and of `save` as the image declared them."""

from __future__ import annotations

import errno
import io
import os
import shutil
import sqlite3
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from steelcup.image import privileges
from steelcup.image.layers import apply_layer
from steelcup.image.store import ImageStore
from steelcup.runtime.fs_commit import write_export, write_layer
from steelcup.runtime.fs_paths import DIR_FLAGS

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="trusted.* xattrs and chown need root")
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]

# vfs_cap_data v2 (little endian): magic|EFFECTIVE, permitted = CAP_SETUID (bit 7), no inheritable
CAP_SETUID_EP = (0x02000001).to_bytes(4, "little") + (1 << 7).to_bytes(4, "little") + bytes(12)
CAT = Path("/bin/cat").read_bytes()


def _pax(value: bytes) -> str:
    return value.decode("utf-8", "surrogateescape")


def hostile_tar() -> bytes:
    """A layer with a cap_setuid+ep binary, a setuid-root binary and a setgid directory."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, mode, caps in (("bin/capcat", 0o755, True), ("bin/sucat", 0o4755, False),
                                 ("bin/sgcat", 0o2711, False)):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(CAT), mode, 1_600_000_000
            if caps:
                info.pax_headers = {"SCHILY.xattr.security.capability": _pax(CAP_SETUID_EP)}
            tar.addfile(info, io.BytesIO(CAT))
        info = tarfile.TarInfo("var/mail")
        info.type, info.mode, info.gid, info.mtime = tarfile.DIRTYPE, 0o2775, 8, 1_600_000_000
        tar.addfile(info)
    return buf.getvalue()


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory an unprivileged user can reach (pytest's tmp dirs are root-only)."""
    path = Path(tempfile.mkdtemp(prefix="steelcup-privs-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.fixture
def layer(public_dir: Path) -> Path:
    target = public_dir / "layer"
    target.mkdir(mode=0o755)
    apply_layer(io.BytesIO(hostile_tar()), target)
    return target


def _members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name.removeprefix("./"): m for m in tar.getmembers()}


def _as_nobody(argv: list[str]) -> subprocess.CompletedProcess[str]:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    return subprocess.run([*NOBODY, *argv], capture_output=True, text=True, timeout=30)


def _status_as_nobody(binary: Path) -> dict[str, str]:
    proc = _as_nobody([str(binary), "/proc/self/status"])
    assert proc.returncode == 0, proc.stderr
    return dict(line.split(":\t", 1) for line in proc.stdout.splitlines() if ":\t" in line)


@needs_root
def test_host_files_carry_no_capability_or_setid_bits(layer: Path) -> None:
    for name in ("bin/capcat", "bin/sucat", "bin/sgcat", "var/mail"):
        path = layer / name
        with pytest.raises(OSError) as info:
            os.getxattr(path, "security.capability")
        assert info.value.errno == errno.ENODATA
        assert not path.stat().st_mode & (stat.S_ISUID | stat.S_ISGID), name
    assert stat.S_IMODE((layer / "bin/sucat").stat().st_mode) == 0o755
    # the record exists, but only root can see it
    assert privileges.RECORD_XATTR in os.listxattr(layer / "bin/capcat")


@needs_root
def test_unprivileged_host_user_gains_nothing(layer: Path, public_dir: Path) -> None:
    # control: the same binary with a real capability and setuid bit does grant them here
    control = public_dir / "control"
    control.write_bytes(CAT)
    control.chmod(0o4755)
    os.setxattr(control, "security.capability", CAP_SETUID_EP)
    real = _status_as_nobody(control)
    if int(real["CapEff"], 16) == 0 or real["Uid"].split()[1] != "0":
        pytest.skip("exec does not grant file capabilities/setuid here (no_new_privs or nosuid)")
    assert "cap_setuid" in _as_nobody(["getcap", str(control)]).stdout

    for name in ("bin/capcat", "bin/sucat", "bin/sgcat"):
        path = layer / name
        got = _status_as_nobody(path)
        assert int(got["CapEff"], 16) == 0 and int(got["CapPrm"], 16) == 0, name
        assert got["Uid"].split() == ["65534"] * 4 and got["Gid"].split() == ["65534"] * 4
        shown = _as_nobody(["getcap", str(path)])
        assert shown.returncode == 0 and shown.stdout.strip() == "", shown.stdout
        listed = _as_nobody(["/bin/ls", "-l", str(path)]).stdout
        assert listed.startswith("-rwx"), listed  # no s/S in the mode string
    # nobody cannot read (or list) the inert record either
    if Path("/usr/bin/python3").exists():
        script = f"import os; print(os.listxattr({str(layer / 'bin/capcat')!r}))"
        listed = _as_nobody(["/usr/bin/python3", "-c", script])
        assert listed.stdout.strip() == "[]", listed


def _layer_tar(upper: Path) -> dict[str, tarfile.TarInfo]:
    out = io.BytesIO()
    write_layer(upper, out)
    return _members(out.getvalue())


@needs_root
def test_writers_emit_what_the_image_declared(layer: Path, public_dir: Path) -> None:
    for members in (_layer_tar(layer), _export(layer)):
        cap = members["bin/capcat"]
        assert cap.pax_headers["SCHILY.xattr.security.capability"] == _pax(CAP_SETUID_EP)
        assert cap.mode == 0o755
        assert members["bin/sucat"].mode == 0o4755
        assert members["bin/sgcat"].mode == 0o2711
        assert members["var/mail"].mode == 0o2775 and members["var/mail"].gid == 8
        assert not any(k.startswith("SCHILY.xattr.trusted") for m in members.values()
                       for k in m.pax_headers)
    # applying the written tar again gives the same inert files (a commit/load round trip)
    again = public_dir / "again"
    again.mkdir()
    out = io.BytesIO()
    write_layer(layer, out)
    apply_layer(io.BytesIO(out.getvalue()), again)
    assert not (again / "bin/sucat").stat().st_mode & stat.S_ISUID
    assert _layer_tar(again)["bin/sucat"].mode == 0o4755
    assert _layer_tar(again)["bin/capcat"].pax_headers["SCHILY.xattr.security.capability"] == (
        _pax(CAP_SETUID_EP))


def _export(root: Path) -> dict[str, tarfile.TarInfo]:
    fd = os.open(root, DIR_FLAGS)
    try:
        out = io.BytesIO()
        write_export(fd, out)
        return _members(out.getvalue())
    finally:
        os.close(fd)


@needs_root
def test_record_void_after_chmod_chown_or_write(layer: Path) -> None:
    (layer / "bin/sucat").chmod(0o750)  # chmod sets the bits explicitly: set-id is gone
    os.chown(layer / "bin/sgcat", 1000, 0)  # chown drops set-id bits in Linux
    with open(layer / "bin/capcat", "r+b") as f:  # a write drops capabilities in Linux
        f.seek(100)
        f.write(b"changed")
    (layer / "var/mail").chmod(0o770)
    members = _layer_tar(layer)
    assert members["bin/sucat"].mode == 0o750
    assert members["bin/sgcat"].mode == 0o711
    assert "SCHILY.xattr.security.capability" not in members["bin/capcat"].pax_headers
    assert members["var/mail"].mode == 0o770


@needs_root
def test_forged_or_malformed_records_grant_nothing(public_dir: Path) -> None:
    target = public_dir / "forged"
    target.mkdir()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("f")
        info.mode = 0o755
        info.pax_headers = {  # a layer cannot write the record itself
            "SCHILY.xattr." + privileges.RECORD_XATTR: "v1 mode=4755 uid=0 gid=0 sha256=-",
            "SCHILY.xattr." + privileges.STASHED_CAPABILITY_XATTR: _pax(CAP_SETUID_EP),
        }
        tar.addfile(info, io.BytesIO(b""))
    apply_layer(io.BytesIO(buf.getvalue()), target)
    assert os.listxattr(target / "f") == []
    assert _layer_tar(target)["f"].mode == 0o755
    for raw in (b"", b"v2 mode=4755 uid=0 gid=0 sha256=-", b"v1 mode=99999 uid=0 gid=0 sha256=-",
                b"v1 mode=4755 uid=-1 gid=0 sha256=-", b"v1 mode=4755 uid=0 gid=0",
                b"v1 mode=4755 uid=0 gid=0 nope"):
        assert privileges.decode(raw) is None, raw
    os.setxattr(target / "f", privileges.RECORD_XATTR, b"v1 mode=4755 uid=0 gid=0 sha256=ab")
    assert _layer_tar(target)["f"].mode == 0o755  # digest does not match the (empty) content


@needs_root
def test_save_keeps_the_declared_layer(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "root", sqlite3.connect(tmp_path / "state.db"))
    image = store.import_rootfs(io.BytesIO(hostile_tar()), "caps:1")
    (layer_dir,) = store.layer_dirs(image)
    assert not (layer_dir / "bin/sucat").stat().st_mode & stat.S_ISUID
    out = io.BytesIO()
    store.save(["caps:1"], out)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as outer:
        member = outer.extractfile(f"blobs/sha256/{image.diff_ids[0][7:]}")
        assert member is not None
        inner = _members(member.read())
    assert inner["bin/sucat"].mode == 0o4755
    assert inner["bin/capcat"].pax_headers["SCHILY.xattr.security.capability"] == (
        _pax(CAP_SETUID_EP))
