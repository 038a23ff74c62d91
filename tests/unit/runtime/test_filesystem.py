"""Container filesystem operations on real overlay mounts (root needed; skips otherwise):
changes, archive get/put with symlink-escape attempts, export, commit, rename, prune."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

from steelcup import sysmount
from steelcup.errors import Conflict, InvalidArgument, NotFound
from steelcup.image import rootfs
from steelcup.image.config import ImageConfig
from steelcup.image.store import ImageStore
from steelcup.pool.source import VmSource
from steelcup.runtime import fs_admin, fs_archive, fs_changes, fs_commit, fs_paths
from steelcup.runtime.containers import Runtime
from steelcup.runtime.events import EventBus
from steelcup.runtime.model import ContainerConfig
from steelcup.runtime.stand_ins import STAND_IN_XATTR
from steelcup.runtime.store import ContainerStore
from steelcup.state.db import open_db
from tests.unit.runtime.fakevm import FakeVms


def _make_tar(entries: list[tuple[Any, ...]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for kind, name, *rest in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_600_000_000
            data = b""
            if kind == "file":
                data = rest[0]
                info.size, info.mode = len(data), 0o644
            elif kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, rest[0]
            tar.addfile(info, io.BytesIO(data) if kind == "file" else None)
    return buf.getvalue()


BASE = _make_tar([
    ("dir", "etc"), ("file", "etc/passwd", b"root:x:0:0\n"), ("file", "etc/hosts", b"hosts\n"),
    ("dir", "tmp"), ("dir", "var"), ("dir", "var/cache"), ("file", "var/cache/a", b"a"),
    ("file", "var/cache/b", b"b"), ("file", "gone.txt", b"bye"), ("dir", "proc"),
    ("file", "proc/should-not-export", b"x"), ("dir", "data"), ("sym", "etclink", "/etc"),
    ("sym", "uplink", "../../../../../etc"),
])


def _can_mount(tmp: Path) -> bool:
    for d in ("l", "u", "w", "m"):
        (tmp / d).mkdir()
    proc = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o",
         f"lowerdir={tmp}/l,upperdir={tmp}/u,workdir={tmp}/w", str(tmp / "m")],
        capture_output=True,
    )
    if proc.returncode != 0:
        return False
    subprocess.run(["umount", str(tmp / "m")], check=True)
    return True


@dataclass
class Env:
    tmp: Path
    images: ImageStore
    runtime: Runtime
    events: EventBus

    def create(self, name: str, image: str = "base:1", **kw: Any) -> str:
        config = ContainerConfig(image=image, image_id="", cmd=("/bin/sh",), **kw)
        return self.runtime.create(config, name).id

    def mount(self, cid: str) -> Path:
        return self.runtime.prepare_rootfs(self.runtime.record(cid))

    def upper(self, cid: str) -> Path:
        """The upper dir, in the container's writable-layer filesystem (mounted for the test)."""
        return rootfs.mount_layer(self.runtime.container_dir(cid))

    def release(self, cid: str) -> None:
        rootfs.release(self.runtime.container_dir(cid))


@pytest.fixture
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    if os.geteuid() != 0 or not _can_mount(tmp_path_factory.mktemp("probe")):
        pytest.skip("mounting overlayfs is not permitted here")
    tmp = tmp_path_factory.mktemp("fs")
    db = open_db(tmp)
    images = ImageStore(tmp / "images", db)
    images.import_rootfs(io.BytesIO(BASE), "base:1",
                         ImageConfig(env=("PATH=/bin",), working_dir="/data"))
    events = EventBus()
    runtime = Runtime(tmp / "rt", ContainerStore(db), images, cast(VmSource, None), events)
    images.in_use = runtime.image_in_use
    yield Env(tmp, images, runtime, events)
    for cdir in (tmp / "rt" / "containers").iterdir():
        rootfs.release(cdir)


def _guest_writes(root: Path) -> None:
    """What a process in the container would do (through the overlay mount)."""
    (root / "tmp/x").write_text("new")
    with open(root / "etc/passwd", "a") as f:
        f.write("app:x:1000:1000\n")
    (root / "gone.txt").unlink()
    shutil.rmtree(root / "var/cache")
    (root / "var/cache").mkdir()
    (root / "var/cache/new").write_text("n")
    (root / "data/sub").mkdir()
    (root / "data/sub/f").write_text("f")


EXPECTED = [
    ("/data", 0), ("/data/sub", 1), ("/data/sub/f", 1), ("/etc", 0), ("/etc/passwd", 0),
    ("/gone.txt", 2), ("/tmp", 0), ("/tmp/x", 1), ("/var", 0), ("/var/cache", 0),
    ("/var/cache/a", 2), ("/var/cache/b", 2), ("/var/cache/new", 1),
]


def _changed(env: Env, cid: str) -> str:
    root = env.mount(cid)
    _guest_writes(root)
    env.release(cid)
    return cid


def test_changes_exact(env: Env) -> None:
    cid = env.create("c1")
    # never started: no upper dir
    assert asyncio.run(fs_changes.container_changes(env.runtime, "c1")) == []
    _changed(env, cid)
    found = asyncio.run(fs_changes.container_changes(env.runtime, "c1"))
    got = [(c.path, int(c.kind)) for c in found]
    assert got == EXPECTED


def test_changes_see_lower_whiteouts(env: Env) -> None:
    """A whiteout for a file an earlier layer already deleted is not a change."""
    cid = _changed(env, env.create("c1"))
    asyncio.run(fs_commit.commit(env.runtime, cid, repo_tag="next:1", spool_dir=env.tmp / "spool"))
    c2 = env.create("c2", image="next:1")
    root = env.mount(c2)
    assert not (root / "gone.txt").exists()
    (root / "gone.txt").write_text("back")  # re-added over a lower whiteout: an addition
    (root / "tmp/x").unlink()
    env.release(c2)
    found = asyncio.run(fs_changes.container_changes(env.runtime, c2))
    got = [(c.path, int(c.kind)) for c in found]
    assert got == [("/gone.txt", 1), ("/tmp", 0), ("/tmp/x", 2)]


def _tar_names(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: m for m in tar.getmembers()}


async def _get(env: Env, ref: str, path: str) -> tuple[fs_archive.Source, bytes]:
    async with fs_paths.mounted_tree(env.runtime, ref) as tree:
        source = fs_archive.locate(tree, path, ref)
        out = io.BytesIO()
        fs_archive.write_archive(tree, source, out)
    return source, out.getvalue()


async def _put(env: Env, ref: str, path: str, data: bytes, **kw: Any) -> None:
    async with fs_paths.mounted_tree(env.runtime, ref) as tree:
        fs_archive.extract_archive(tree, path, io.BytesIO(data), ref, **kw)


def test_archive_get_stat_and_names(env: Env) -> None:
    cid = _changed(env, env.create("c1"))
    source, data = asyncio.run(_get(env, "c1", "/etc"))
    assert source.stat.is_dir and source.stat.name == "etc"
    assert source.stat.mode == (1 << 31) | 0o755
    names = _tar_names(data)
    assert sorted(names) == ["etc", "etc/hosts", "etc/passwd"]
    passwd = names["etc/passwd"]
    assert passwd.size == len("root:x:0:0\napp:x:1000:1000\n")
    _, contents = asyncio.run(_get(env, "c1", "/etc/."))
    assert sorted(_tar_names(contents)) == [".", "./hosts", "./passwd"]
    # the last symlink is not followed: the archive holds the link; its target is resolved
    source, data = asyncio.run(_get(env, "c1", "/uplink"))
    assert source.stat.link_target == "/etc"
    assert _tar_names(data)["uplink"].linkname == "../../../../../etc"
    # symlinks in the middle resolve inside the container root, never to the host's /etc
    _, data = asyncio.run(_get(env, "c1", "/uplink/passwd"))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.extractfile("passwd")
        assert member is not None and member.read().startswith(b"root:x:0:0\napp:x:1000")
    with pytest.raises(NotFound, match="Could not find the file /nope in container c1"):
        asyncio.run(_get(env, "c1", "/nope"))
    with pytest.raises(NotFound):
        asyncio.run(_get(env, "c1", "/gone.txt"))  # deleted in the upper layer
    assert not sysmount.is_mountpoint(env.runtime.container_dir(cid) / "rootfs")


def test_archive_put_round_trip(env: Env) -> None:
    cid = _changed(env, env.create("c1"))
    _, data = asyncio.run(_get(env, "c1", "/etc"))
    asyncio.run(_put(env, "c1", "/tmp", data))
    assert (env.upper(cid) / "tmp/etc/passwd").read_text() == "root:x:0:0\napp:x:1000:1000\n"
    assert (env.upper(cid) / "tmp/etc/hosts").stat().st_uid == 0
    # through a symlink in the container: lands in the container's /etc
    asyncio.run(_put(env, "c1", "/etclink", _make_tar([("file", "added", b"1")])))
    assert (env.upper(cid) / "etc/added").read_text() == "1"
    with pytest.raises(InvalidArgument, match="not a directory"):
        asyncio.run(_put(env, "c1", "/etc/passwd", _make_tar([("file", "x", b"")])))
    with pytest.raises(NotFound, match="Could not find the file /nodir in container c1"):
        asyncio.run(_put(env, "c1", "/nodir", _make_tar([("file", "x", b"")])))
    with pytest.raises(InvalidArgument, match="cannot overwrite directory"):
        asyncio.run(_put(env, "c1", "/", _make_tar([("file", "etc", b"")]),
                         no_overwrite_dir_non_dir=True))
    assert (env.upper(cid) / "etc").is_dir()


@pytest.mark.parametrize("entries", [
    [("sym", "evil", "/"), ("file", "evil/steelcup-pwned", b"x")],
    [("sym", "evil", "../../../../../../"), ("file", "evil/steelcup-pwned", b"x")],
    [("file", "../../../../../../steelcup-pwned", b"x")],
])
def test_archive_put_refuses_symlink_escapes(env: Env, entries: list[tuple[Any, ...]]) -> None:
    cid = env.create("c1")
    host = env.runtime.container_dir(cid)
    with pytest.raises(InvalidArgument):
        asyncio.run(_put(env, "c1", "/tmp", _make_tar(entries)))
    assert not Path("/steelcup-pwned").exists()
    assert not (host / "steelcup-pwned").exists()
    assert not any(p.name == "steelcup-pwned" for p in env.tmp.rglob("*"))


def test_archive_put_through_absolute_link_stays_inside(env: Env) -> None:
    """An absolute symlink in the container is the container's path, not the host's."""
    cid = env.create("c1")
    root = env.mount(cid)
    os.symlink("/", root / "data/rootlink")
    env.release(cid)
    asyncio.run(_put(env, "c1", "/data/rootlink/etc", _make_tar([("file", "x-added", b"1")])))
    assert (env.upper(cid) / "etc/x-added").exists()
    assert not Path("/etc/x-added").exists()


def test_export_has_lower_and_upper_files(env: Env) -> None:
    _changed(env, env.create("c1"))

    async def run() -> bytes:
        async with fs_paths.mounted_root(env.runtime, "c1") as root_fd:
            out = io.BytesIO()
            fs_commit.write_export(root_fd, out)
            return out.getvalue()

    names = _tar_names(asyncio.run(run()))
    assert "etc/hosts" in names and "tmp/x" in names and "var/cache/new" in names
    assert "gone.txt" not in names and "var/cache/a" not in names
    assert "proc" in names and "proc/should-not-export" not in names
    assert names["etclink"].issym()


def _layer_members(env: Env, diff_id: str) -> dict[str, tarfile.TarInfo]:
    row = env.images._db.execute(
        "SELECT blob_digest FROM image_layers WHERE diff_id = ?", (diff_id,)).fetchone()
    return _tar_names(env.images.blob_path(row[0]).read_bytes())


def test_commit_layer_and_config(env: Env) -> None:
    _changed(env, env.create("c1", user="1000", labels=(("k", "v"),)))
    queue = env.events.subscribe()
    image = asyncio.run(fs_commit.commit(
        env.runtime, "c1", repo_tag="committed:v2", comment="msg", author="me",
        changes=['CMD ["echo", "hi"]', "ENV A=1 B=\"two words\"", "EXPOSE 8080"],
        spool_dir=env.tmp / "spool",
    ))
    base = env.images.get("base:1")
    assert image.repo_tags == ("committed:v2",)
    assert image.diff_ids[:-1] == base.diff_ids and len(image.diff_ids) == 2
    members = _layer_members(env, image.diff_ids[-1])
    assert ".wh.gone.txt" in members
    assert "var/cache/.wh..wh..opq" in members
    assert "var/cache/a" not in members and "var/cache/new" in members
    assert "tmp/x" in members and "etc/passwd" in members and "etc/hosts" not in members
    cfg = image.config
    assert cfg.cmd == ("echo", "hi") and cfg.entrypoint is None
    assert cfg.env == ("PATH=/bin", "A=1", "B=two words")
    assert cfg.working_dir == "/data" and cfg.user == "1000"
    assert cfg.labels == {"k": "v"} and cfg.exposed_ports == ("8080/tcp",)
    doc = json.loads(image.raw_config)
    assert doc["author"] == "me" and doc["history"][-1]["comment"] == "msg"
    assert queue.get_nowait()["Action"] == "commit"
    # a container of the new image sees the committed filesystem
    c2 = env.create("c2", image="committed:v2")
    root = env.mount(c2)
    try:
        assert (root / "tmp/x").read_text() == "new"
        assert not (root / "gone.txt").exists()
        assert sorted(p.name for p in (root / "var/cache").iterdir()) == ["new"]
    finally:
        env.release(c2)
    assert asyncio.run(fs_changes.container_changes(env.runtime, c2)) == []


# vfs_cap_data v2: cap_net_raw (bit 13) permitted + effective
_CAP = (0x02000001).to_bytes(4, "little") + (1 << 13).to_bytes(4, "little") + bytes(12)


def _privileged_tar(prefix: str = "") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, mode, caps in (("bin/ping", 0o755, True), ("bin/su", 0o4755, False)):
            info = tarfile.TarInfo(prefix + name)
            info.size, info.mode = 4, mode
            if caps:
                info.pax_headers = {
                    "SCHILY.xattr.security.capability": _CAP.decode("utf-8", "surrogateescape")}
            tar.addfile(info, io.BytesIO(b"\x7fELF"))
    return buf.getvalue()


def _declared(members: dict[str, tarfile.TarInfo], prefix: str = "") -> None:
    ping, su = members[prefix + "bin/ping"], members[prefix + "bin/su"]
    assert ping.pax_headers["SCHILY.xattr.security.capability"].encode(
        "utf-8", "surrogateescape") == _CAP
    assert su.mode == 0o4755


def test_declared_privileges_survive_commit_export_and_cp(env: Env) -> None:
    """Image caps/setuid are inert on the host (lower and upper dirs), but every tar writer
    emits them: export of the merged root, commit after an overlay copy-up, cp out and in."""
    env.images.import_rootfs(io.BytesIO(_privileged_tar()), "privs:1")
    cid = env.create("c1", image="privs:1")
    root = env.mount(cid)
    os.utime(root / "bin/ping", (1, 1))  # metadata change: copies both files up to upper/
    os.utime(root / "bin/su", (1, 1))
    env.release(cid)
    for name in ("bin/ping", "bin/su"):
        with pytest.raises(OSError):
            os.getxattr(env.upper(cid) / name, "security.capability")
        assert not (env.upper(cid) / name).stat().st_mode & 0o6000

    async def export() -> bytes:
        async with fs_paths.mounted_root(env.runtime, "c1") as root_fd:
            out = io.BytesIO()
            fs_commit.write_export(root_fd, out)
            return out.getvalue()

    _declared(_tar_names(asyncio.run(export())))
    _declared(_tar_names(asyncio.run(_get(env, "c1", "/bin"))[1]))
    image = asyncio.run(fs_commit.commit(env.runtime, "c1", repo_tag="privs:2",
                                         spool_dir=env.tmp / "spool"))
    _declared(_layer_members(env, image.diff_ids[-1]))
    for layer_dir in env.images.layer_dirs(image):
        for path in layer_dir.rglob("*"):
            assert not path.lstat().st_mode & 0o6000
            assert "security.capability" not in os.listxattr(path, follow_symlinks=False)
    # docker cp into the container: recorded inert in the upper dir, emitted by cp out
    asyncio.run(_put(env, "c1", "/", _privileged_tar("cp/")))
    assert not (env.upper(cid) / "cp/bin/su").stat().st_mode & 0o6000
    assert "security.capability" not in os.listxattr(env.upper(cid) / "cp/bin/ping")
    _declared(_tar_names(asyncio.run(_get(env, "c1", "/cp"))[1]), "cp/")


def _stand_in(path: Path, mode: int, kind: bytes, data: bytes = b"") -> None:
    """What the guest kernel leaves on the host for a FIFO or socket (runtime/stand_ins.py)."""
    path.write_bytes(data)
    path.chmod(mode)
    os.setxattr(path, STAND_IN_XATTR, kind)


def test_stand_ins_are_exported_and_committed_as_what_they_stand_for(env: Env) -> None:
    cid = env.create("c1")
    root = env.mount(cid)
    _stand_in(root / "tmp/fifo", 0o1640, b"fifo")
    _stand_in(root / "tmp/sock", 0o1755, b"socket")
    _stand_in(root / "tmp/not-empty", 0o1644, b"fifo", b"data")  # not a stand-in's shape
    _stand_in(root / "tmp/device", 0o1644, b"c 1:1")  # a mark that means nothing
    (root / "tmp/sticky").write_bytes(b"")
    (root / "tmp/sticky").chmod(0o1600)
    os.link(root / "tmp/fifo", root / "tmp/fifo-link")
    env.release(cid)

    async def export() -> bytes:
        async with fs_paths.mounted_root(env.runtime, "c1") as root_fd:
            out = io.BytesIO()
            fs_commit.write_export(root_fd, out)
            return out.getvalue()

    image = asyncio.run(fs_commit.commit(env.runtime, "c1", repo_tag="stood:1",
                                         spool_dir=env.tmp / "spool"))
    for members in (_tar_names(asyncio.run(export())), _layer_members(env, image.diff_ids[-1])):
        fifo = members["tmp/fifo"]
        assert fifo.isfifo() and fifo.mode == 0o640
        assert "SCHILY.xattr." + STAND_IN_XATTR not in fifo.pax_headers
        assert members["tmp/fifo-link"].islnk()
        assert members["tmp/fifo-link"].linkname == "tmp/fifo"
        assert "tmp/sock" not in members  # sockets are not archived (nor by docker)
        for name, mode in (("tmp/not-empty", 0o1644), ("tmp/device", 0o1644),
                           ("tmp/sticky", 0o1600)):
            assert members[name].isreg() and members[name].mode == mode
    # docker cp: the path-stat header and the archive
    fifo_source, data = asyncio.run(_get(env, "c1", "/tmp/fifo"))
    assert fifo_source.stat.mode == (1 << 25) | 0o640  # Go's ModeNamedPipe
    assert _tar_names(data)["fifo"].isfifo()
    sock_source, data = asyncio.run(_get(env, "c1", "/tmp/sock"))
    assert sock_source.stat.mode == (1 << 24) | 0o755 and _tar_names(data) == {}
    sticky_source, _ = asyncio.run(_get(env, "c1", "/tmp/sticky"))
    assert sticky_source.stat.mode == (1 << 20) | 0o600
    c2 = env.create("c2", image="stood:1")
    root = env.mount(c2)
    try:
        assert stat.S_ISFIFO((root / "tmp/fifo").lstat().st_mode)
    finally:
        env.release(c2)


def test_apply_changes() -> None:
    base = ImageConfig(cmd=("sh",), env=("A=0",), working_dir="/app")
    out = fs_commit.apply_changes(base, ["ENTRYPOINT /run.sh", "WORKDIR sub\nUSER nobody",
                                  "LABEL a=1 b=2", "ENV A 1 2", "STOPSIGNAL SIGINT",
                                  "VOLUME /v"])
    assert out.entrypoint == ("/bin/sh", "-c", "/run.sh") and out.cmd is None
    assert out.working_dir == "/app/sub" and out.user == "nobody"
    assert out.labels == {"a": "1", "b": "2"} and out.env == ("A=1 2",)
    assert out.stop_signal == "SIGINT" and out.volumes == ("/v",)
    assert fs_commit.apply_changes(base, ['CMD ["x"]', "ENTRYPOINT [\"e\"]"]).cmd == ("x",)
    with pytest.raises(InvalidArgument, match="RUN is not a valid change command"):
        fs_commit.apply_changes(base, ["RUN rm -rf /"])
    with pytest.raises(InvalidArgument):
        fs_commit.apply_changes(base, ["EXPOSE notaport"])


def test_rename(env: Env) -> None:
    a = env.create("alpha")
    env.create("beta")
    queue = env.events.subscribe()
    with pytest.raises(Conflict, match='"/beta" is already in use'):
        env.runtime.rename("alpha", "beta")
    with pytest.raises(InvalidArgument, match="Invalid container name"):
        env.runtime.rename("alpha", "no spaces")
    env.runtime.rename("alpha", "/gamma")
    assert env.runtime.record("gamma").id == a
    with pytest.raises(NotFound):
        env.runtime.record("alpha")
    assert [r.name for r in env.runtime.store.load_all()] == ["gamma", "beta"]
    event = queue.get_nowait()
    assert event["Action"] == "rename" and event["Actor"]["Attributes"]["oldName"] == "/alpha"


def test_prune(env: Env) -> None:
    keep = env.create("keep", labels=(("keep", "1"),))
    running = env.create("running")
    gone = env.create("gone")
    root = env.mount(gone)
    (root / "tmp/big").write_bytes(b"x" * 100_000)
    env.release(gone)
    runtime = env.runtime

    async def body() -> None:
        runtime.vms = FakeVms()
        await runtime.start(running)
        try:
            report = await fs_admin.prune(runtime, {"label!": ["keep"]})
            assert report.deleted == [gone]
            assert report.reclaimed_bytes >= 100_000
            assert not runtime.container_dir(gone).exists()
            assert {r.id for r in runtime.list()} == {keep, running}
            assert (await fs_admin.prune(runtime, {"until": ["1h"]})).deleted == []
            with pytest.raises(InvalidArgument):
                await fs_admin.prune(runtime, {"bogus": ["1"]})
            assert (await fs_admin.prune(runtime, {})).deleted == [keep]
        finally:
            await runtime.shutdown()

    asyncio.run(body())


def test_parse_until() -> None:
    assert fs_admin.parse_until("1h30m", 10_000.0) == 10_000.0 - 5400
    assert fs_admin.parse_until("1700000000", 0) == 1_700_000_000
    assert fs_admin.parse_until("2024-01-01T00:00:00Z", 0) == 1_704_067_200
    with pytest.raises(InvalidArgument):
        fs_admin.parse_until("yesterday", 0)


def test_http_and_cli_cp(env: Env, tmp_path: Path) -> None:
    """The routes behind a real server, driven by the CLI's cp/diff helpers."""
    from steelcup.api.fs_routes import register
    from steelcup.api.http import Router
    from steelcup.cli.client import ApiClient
    from steelcup.cli.commands import fs as cli_fs
    from tests.unit.api.conftest import ServerThread

    cid = _changed(env, env.create("web"))
    router = Router()
    register(router, env.runtime, env.images, env.events)
    server = ServerThread(router, tmp_path / "api.sock")
    server.start()
    try:
        client = ApiClient(tmp_path / "api.sock")
        info = cli_fs.stat_path(client, "web", "/etc/passwd")
        assert info is not None and info["name"] == "passwd" and info["size"] == 27
        assert cli_fs.stat_path(client, "web", "/nope") is None
        with pytest.raises(NotFound, match="Could not find the file /nope in container web"):
            client.request("GET", "/containers/web/archive", {"path": "/nope"})
        # container -> host: a dir, its contents (/.), a file renamed
        out = tmp_path / "out"
        out.mkdir()
        assert cli_fs.copy_from(client, "web", "/var/cache", str(out), follow=False) == 0
        assert (out / "cache/new").read_text() == "n"
        assert cli_fs.copy_from(client, "web", "/etc/.", str(out / "etc2"), follow=False) == 0
        assert sorted(os.listdir(out / "etc2")) == ["hosts", "passwd"]
        assert cli_fs.copy_from(client, "web", "/tmp/x", str(out / "renamed"), follow=False) == 0
        assert (out / "renamed").read_text() == "new"
        # host -> container, then back again
        src = tmp_path / "src"
        (src / "deep").mkdir(parents=True)
        (src / "deep/file").write_text("payload")
        os.symlink("/etc/shadow", src / "abs-link")
        assert cli_fs.copy_to(client, str(src), "web", "/data", follow=False,
                              keep_owner=False) == 0
        assert (env.upper(cid) / "data/src/deep/file").read_text() == "payload"
        assert os.readlink(env.upper(cid) / "data/src/abs-link") == "/etc/shadow"
        assert cli_fs.copy_to(client, str(src / "deep/file"), "web", "/data/new-name",
                              follow=False, keep_owner=False) == 0
        assert (env.upper(cid) / "data/new-name").read_text() == "payload"
        with pytest.raises(InvalidArgument, match="cannot copy a directory to a file"):
            cli_fs.copy_to(client, str(src), "web", "/etc/passwd", follow=False,
                           keep_owner=False)
        back = tmp_path / "back"
        assert cli_fs.copy_from(client, "web", "/data/src", str(back), follow=False) == 0
        assert (back / "deep/file").read_text() == "payload"
        # export, changes, commit, rename, prune through HTTP
        _, _, exported = client.request("GET", "/containers/web/export")
        assert "data/src/deep/file" in _tar_names(exported)
        changes = client.get_json("/containers/web/changes")
        assert {"Path": "/data/new-name", "Kind": 1} in changes
        reply = client.post_json("/commit", {"container": "web", "repo": "snap", "tag": "1",
                                             "changes": "CMD [\"true\"]\nENV X=1"})
        assert env.images.get("snap:1").id == reply["Id"]
        assert env.images.get("snap:1").config.cmd == ("true",)
        with pytest.raises(Conflict):
            env.create("other")
            client.post("/containers/web/rename", {"name": "other"})
        client.post("/containers/web/rename", {"name": "web2"})
        reply = client.post_json("/containers/prune", {"filters": '{"label":["none"]}'})
        assert reply == {"ContainersDeleted": None, "SpaceReclaimed": 0}
    finally:
        server.stop()
