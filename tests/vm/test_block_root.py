"""--rootfs-cache block on real guests (issue 19): a container's root is its image's files as
erofs on a read-only disk under its writable layer over 9p, overlaid in the guest
(docs/architecture.md, "Guest kernel and boot", patches 05-07; docs/guest-protocol.md, CACHE 3).
An image's erofs is made when the image arrives (here, its load); the host's view of a block
root (cp, diff, commit, export) and a restart see what the guest did, deletions
included."""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.vm.support import (
    BUSYBOX_TAR,
    Daemon,
    delete_netns,
    leftovers_of,
    need_assets,
    new_netns,
    start_daemon,
    stop_daemon,
    wait_until,
)

IMG = "steelcup/busybox"


def _root_mount(daemon: Daemon, image: str = IMG) -> list[str]:
    """The root's line of /proc/mounts in a new container: [source, dir, type, options]."""
    mounts = daemon.out("run", "--rm", image, "cat", "/proc/mounts").splitlines()
    return next(line for line in mounts if line.split()[1] == "/").split()[:4]


def _block_root_options(daemon: Daemon, image: str = IMG) -> str:
    """A new container's root mount options, once checked to be an overlay on the erofs."""
    source, _, fstype, options = _root_mount(daemon, image)
    assert (source, fstype) == ("overlay", "overlay")
    assert "lowerdir=/run/steelcup/lower" in options
    return options


@pytest.fixture(scope="module")
def block(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A daemon with --rootfs-cache block whose busybox image has its erofs made (its load
    started the making; a container created before it is made keeps a 9p root:
    tests/unit/runtime/test_block_root_choice.py)."""
    need_assets()
    base = tmp_path_factory.mktemp("block")
    netns = new_netns("block")
    d = start_daemon(base / "root", base / "run" / "steelcup.sock", netns,
                     ("--rootfs-cache", "block"))
    try:
        d.cli("load", "-i", str(BUSYBOX_TAR), check=True)
        erofs_dir = base / "root" / "images" / "erofs"
        wait_until(lambda: any(erofs_dir.glob("*.erofs")), "the loaded image's erofs")
        yield d
    finally:
        stop_daemon(d)
        problems = leftovers_of(base / "root", netns=netns)
        delete_netns(netns)
        assert not problems, "after daemon shutdown: " + "\n".join(problems)


def test_later_containers_have_the_images_erofs_under_an_overlay(block: Daemon) -> None:
    """The root is an overlay whose lower is the erofs disk; neither the disk's mount nor the
    9p share of the writable layer is visible in the container."""
    assert "userxattr" in _block_root_options(block)
    mounts = block.out("run", "--rm", IMG, "cat", "/proc/mounts")
    assert "erofs" not in mounts and " 9p " not in mounts, mounts


def test_a_default_daemon_gives_block_roots(daemon: Daemon) -> None:
    """Block roots are the default (no --rootfs-cache): the shared daemon's busybox, loaded
    at its start, is under an overlay on its erofs."""
    _block_root_options(daemon)


def test_an_images_first_container_right_after_its_import_has_a_block_root(
        block: Daemon, tmp_path: Path) -> None:
    """An image imported and run at once: the create of its first container waits for the
    erofs the import started (Runtime.wait_for_root_disk; the wait itself, with a build that
    ends when the test says: tests/unit/runtime/test_block_root_choice.py) and the container
    has a block root, as the next ones will."""
    cid = block.out("create", IMG, "true").strip()
    try:
        rootfs = tmp_path / "rootfs.tar"
        rootfs.write_bytes(block.cli("export", cid, check=True).stdout)
    finally:
        block.cli("rm", "-f", cid)
    block.out("import", str(rootfs), "steelcup/reimported:1")
    try:
        _block_root_options(block, "steelcup/reimported:1")
    finally:
        block.cli("rmi", "steelcup/reimported:1")


def _cache_counts(daemon: Daemon) -> tuple[int, int]:
    """(ready VMs staged for an image, hand-outs of one to a container of its image)."""
    pool = json.loads(daemon.out("system", "info", "-f", "{{json .Steelcup.Pool}}"))
    cache = pool.get("Cache") or []
    return (sum(c.get("Staged", 0) for c in cache),
            sum(c.get("StagedHandOuts", 0) for c in cache))


def test_a_ready_vm_made_for_the_image_serves_its_next_container(block: Daemon) -> None:
    """After a block-root container, the warm cache's refill gives a ready VM that image and
    has its guest read the files the host saw read (pool/cache.py, STAGE_LOWER); the next
    container of the image gets that VM, whose mount is its root's lower (SETUP_ROOT
    STAGED): the image's files, its own writes, nothing of the erofs mount left in sight."""
    block.out("run", "--rm", IMG, "sh", "-c", "cat /etc/passwd >/dev/null")
    wait_until(lambda: _cache_counts(block)[0] >= 1, "a ready VM staged for the image")
    used = _cache_counts(block)[1]
    out = block.out("run", "--rm", IMG, "sh", "-c",
                    "grep -c root /etc/passwd; echo mine > /etc/new; cat /etc/new; "
                    "grep -c erofs /proc/mounts || true")
    assert out.split() == ["1", "mine", "0"], out
    assert _cache_counts(block)[1] == used + 1


def test_exec_finds_named_users_after_the_host_view_is_remounted(block: Daemon) -> None:
    """exec reads a named user from the host's view of the root, which diff (like every host
    access) remounts (the host's overlay would hold stale lookups): it stays mounted while
    the container runs; a name it does not know is looked up again in a view mounted
    afresh (a user added since)."""
    cid = block.out("run", "-d", IMG, "sleep", "300").strip()
    try:
        block.out("diff", cid)
        assert block.out("exec", "-u", "nobody", cid, "id", "-u") == "65534\n"
        # a user the container adds after the view was mounted: looked up in a fresh view
        block.out("exec", cid, "sh", "-c", "echo newbie:x:4321:4321::/:/bin/sh >> /etc/passwd")
        assert block.out("exec", "-u", "newbie", cid, "id", "-u") == "4321\n"
        missing = block.cli("exec", "-u", "nosuchuser", cid, "true")
        assert missing.returncode != 0 and b"unable to find user" in missing.stderr, missing
    finally:
        block.cli("rm", "-f", cid)


# Made once: the next run (after a restart) only shows what the first one left.
_CHANGES = ("[ -e /done ] || { echo hi > /etc/new; rm /etc/passwd; mkdir -p /var/d; "
            "rm -rf /usr; mkdir /usr; echo x > /usr/y; touch /done; }; exec sleep 300")


def test_a_block_roots_changes_reach_cp_diff_export_commit_and_a_restart(
        block: Daemon, tmp_path: Path) -> None:
    """Files written, an image file deleted (a whiteout the guest's 9p stands in for, made
    a real whiteout on the host before the host reads), an image directory replaced (opaque)
    and a file cp'd in by the host: each is seen alike by the guest, diff, cp, export,
    commit, and the container's next run."""
    cid = block.out("run", "-d", IMG, "sh", "-c", _CHANGES).strip()
    try:
        wait_until(lambda: block.cli("exec", cid, "ls", "/done").returncode == 0,
                   "the container's changes")
        diff = set(block.out("diff", cid).splitlines())
        assert {"A /etc/new", "D /etc/passwd", "A /usr/y", "A /var/d", "A /done"} <= diff, diff
        assert "D /usr/bin" in diff, diff  # the image's /usr is gone: its dir is opaque
        out = tmp_path / "new"
        block.out("cp", f"{cid}:/etc/new", str(out))
        assert out.read_text() == "hi\n"
        src = tmp_path / "fromhost"
        src.write_text("from the host\n")
        block.out("cp", str(src), f"{cid}:/etc/fromhost")
        assert block.out("exec", cid, "cat", "/etc/fromhost") == "from the host\n"
        assert block.cli("exec", cid, "ls", "/etc/passwd").returncode != 0
        with tarfile.open(fileobj=io.BytesIO(block.cli("export", cid, check=True).stdout)
                          ) as tar:
            names = set(tar.getnames())
        assert {"etc/new", "etc/fromhost", "usr/y"} <= names
        assert "etc/passwd" not in names and "usr/bin" not in names
        block.out("commit", cid, "block-changes:1")
        try:
            assert block.out("run", "--rm", "block-changes:1", "sh", "-c",
                             "cat /etc/new /etc/fromhost; ls /usr; ls /etc/passwd || true"
                             ) == "hi\nfrom the host\ny\n"
        finally:
            block.cli("rmi", "block-changes:1")
        block.out("stop", "-t", "1", cid)
        block.out("start", cid)
        assert block.out("exec", cid, "sh", "-c",
                         "cat /etc/new; ls /usr; ls /etc/passwd 2>/dev/null || echo gone"
                         ) == "hi\ny\ngone\n"
    finally:
        block.cli("rm", "-f", cid)


def test_overlay_marks_a_hostile_guest_plants_are_never_followed(block: Daemon,
                                                                  tmp_path: Path) -> None:
    """The attack: a guest whose kernel is its own writes `user.overlay.*` xattrs into its
    writable layer through 9p (planted here on the host, which is what such a guest's QEMU
    would do): a directory redirected to the image's /bin and a metacopy file whose data is
    the image's busybox. The host's view (cp, export, exec's user lookup) shows neither (its
    overlay follows no redirect or metacopy a guest wrote), errors stay the container's own,
    and a commit carries no mark into an image."""
    cid = block.out("run", "-d", IMG, "sleep", "300").strip()
    try:
        full = block.out("inspect", "-f", "{{.Id}}", cid).strip()
        # through the daemon's mount namespace (it runs under `ip netns exec`)
        upper = (Path(f"/proc/{block.proc.pid}/root") / str(block.root).lstrip("/")
                 / "containers" / full / "rw" / "upper")
        assert upper.is_dir(), upper
        (upper / "planted").mkdir()
        os.setxattr(upper / "planted", "user.overlay.redirect", b"/bin")
        (upper / "meta").write_bytes(b"")
        os.setxattr(upper / "meta", "user.overlay.metacopy", b"")
        os.setxattr(upper / "meta", "user.overlay.redirect", b"/bin/busybox")
        listed = block.cli("exec", cid, "ls", "/planted")  # the guest's overlay: its business
        copied = block.cli("cp", f"{cid}:/planted", str(tmp_path / "planted"))
        assert copied.returncode != 0 or not any((tmp_path / "planted").iterdir()), listed
        src = tmp_path / "in"
        src.write_text("x")
        into = block.cli("cp", str(src), f"{cid}:/planted/")
        assert into.returncode != 0 and b"not permitted" in into.stderr.lower(), into
        meta = block.cli("cp", f"{cid}:/meta", str(tmp_path / "meta"))
        assert meta.returncode != 0 or (tmp_path / "meta").read_bytes() == b"", meta
        if meta.returncode != 0:
            assert b"not permitted" in meta.stderr.lower(), meta.stderr
        exported = block.cli("export", cid)
        if exported.returncode == 0:
            with tarfile.open(fileobj=io.BytesIO(exported.stdout)) as tar:
                names = set(tar.getnames())
            assert not any(n.startswith("planted/") for n in names), names
        assert block.out("exec", "-u", "nobody", cid, "id", "-u") == "65534\n"
        block.out("commit", cid, "block-marks:1")
        try:
            saved = block.cli("save", "block-marks:1", check=True).stdout
            assert b"user.overlay" not in saved
        finally:
            block.cli("rmi", "block-marks:1")
        assert full in block.out("ps", "-q", "--no-trunc")  # the daemon and container carry on
    finally:
        block.cli("rm", "-f", cid)


def test_a_block_root_beside_a_volume(block: Daemon) -> None:
    """A volume is its own 9p mount beside the overlay root, written through to the host;
    with --read-only the overlay is read-only and the volume is not."""
    try:
        out = block.cli("run", "--rm", "--read-only", "-v", "block-vol:/data", IMG, "sh", "-c",
                        "echo kept > /data/f; echo no > /etc/x")
        assert out.returncode != 0 and b"Read-only file system" in out.stderr, out
        assert block.out("run", "--rm", "-v", "block-vol:/data", IMG, "cat", "/data/f"
                         ) == "kept\n"
    finally:
        block.cli("volume", "rm", "block-vol")



def test_system_df_counts_each_images_erofs(block: Daemon) -> None:
    """An image's disk usage is its layers and its erofs image: `system df` (the API's
    LayersSize and each image's Size) counts the erofs file's blocks and says how much of the
    images' size the root disks are."""
    du = json.loads(block.out("system", "df", "-f", "{{json .}}"))
    made = {p.name.split("-")[0]: p.stat().st_blocks * 512
            for p in (block.root / "images" / "erofs").glob("*.erofs")}
    row = next(i for i in du["Images"] if f"{IMG}:latest" in i["RepoTags"])
    root_disk = made[row["Id"].removeprefix("sha256:")]
    assert row["RootDiskSize"] == root_disk > 0
    layers = int(block.out("image", "inspect", "-f", "{{.Size}}", IMG))
    assert block.out("image", "inspect", "-f", "{{.ID}}", IMG).strip() == row["Id"]
    assert row["Size"] == layers + root_disk
    assert du["LayersSize"] == sum(i["Size"] for i in du["Images"])
    table = block.out("system", "df")
    assert table.splitlines()[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
    assert "is their block-root disks" in table
    assert "ROOT DISK" in block.out("system", "df", "-v")
