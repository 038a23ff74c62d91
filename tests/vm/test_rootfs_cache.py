"""--rootfs-cache loose on real guests: the root is mounted cache=loose, and the daemon keeps
the host's view and the guest's coherent around cp (both ways), diff, commit and export; and
the guest kernel's patches for that root (guest/kernel/patches), each tested here."""

from __future__ import annotations

import contextlib
import hashlib
import io
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
    static_helper,
    stop_daemon,
    wait_until,
)

IMG = "steelcup/busybox"


@pytest.fixture(scope="module")
def loose(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    need_assets()
    base = tmp_path_factory.mktemp("loose")
    netns = new_netns("loose")
    d = start_daemon(base / "root", base / "run" / "steelcup.sock", netns,
                     ("--rootfs-cache", "loose"))
    try:
        d.cli("load", "-i", str(BUSYBOX_TAR), check=True)
        yield d
    finally:
        stop_daemon(d)
        problems = leftovers_of(base / "root", netns=netns)
        delete_netns(netns)
        assert not problems, "after daemon shutdown: " + "\n".join(problems)


def _root_options(daemon: Daemon, cid: str) -> list[str]:
    """The root's mount options as the guest kernel shows them (6.1: "loose", not
    "cache=loose")."""
    mounts = daemon.out("exec", cid, "cat", "/proc/mounts").splitlines()
    return next(line for line in mounts if line.split()[1] == "/").split()[3].split(",")


@pytest.fixture(scope="module")
def patched(loose: Daemon) -> bool:
    """Whether the guest runs our kernel build, with guest/kernel/patches applied (a
    GUEST_KERNEL=debian build has neither): what the patches' tests expect differs."""
    return loose.out("run", "--rm", IMG, "uname", "-r").strip().endswith("-steelcup")


@contextlib.contextmanager
def _container(daemon: Daemon, *run_args: str) -> Iterator[str]:
    """A container started with `run -d *run_args`, removed on the way out."""
    cid = daemon.out("run", "-d", *run_args).strip()
    try:
        yield cid
    finally:
        daemon.cli("rm", "-f", cid)


@contextlib.contextmanager
def _fsops_container(daemon: Daemon, tmp_path: Path, *run_args: str) -> Iterator[str]:
    """`_container` with tests/vm/helpers/fsops.c copied in as /fsops."""
    helper = static_helper("fsops", tmp_path)
    with _container(daemon, *run_args) as cid:
        daemon.out("cp", str(helper), f"{cid}:/fsops")
        yield cid


def _wait_for(daemon: Daemon, cid: str, want: bytes, *argv: str) -> None:
    """Until `exec cid argv` prints `want` (the container's main process made it)."""
    wait_until(lambda: daemon.cli("exec", cid, *argv).stdout == want,
               f"{' '.join(argv)} printing {want!r}")


def _on_host(daemon: Daemon, cid: str, path: str) -> Path:
    """`path` in the container's root as the host sees it (the root is mounted in the
    daemon's mount namespace)."""
    return Path(f"/proc/{daemon.proc.pid}/root{daemon.root}/containers/{cid}/rootfs{path}")


def _cp_text(daemon: Daemon, cid: str, tmp_path: Path, text: str, dest: str) -> None:
    """cp a host file holding `text` to `dest` in the container."""
    src = tmp_path / "cp-src"
    src.write_text(text)
    daemon.out("cp", str(src), f"{cid}:{dest}")


def test_cp_in_replaces_what_the_guest_has_cached(loose: Daemon, tmp_path: Path) -> None:
    with _container(loose, IMG, "sleep", "300") as cid:
        assert "loose" in _root_options(loose, cid)
        # the guest reads (and caches) the old file and a lookup of a missing one
        assert loose.out("exec", cid, "sh", "-c",
                         "echo old > /tmp/f; cat /tmp/f; cat /tmp/new 2>/dev/null; true"
                         ) == "old\n"
        src = tmp_path / "f"
        src.write_text("new and longer content from the host\n")
        loose.out("cp", str(src), f"{cid}:/tmp/f")
        loose.out("cp", str(src), f"{cid}:/tmp/new")
        assert loose.out("exec", cid, "cat", "/tmp/f", "/tmp/new") == src.read_text() * 2


def test_names_looked_up_in_vain_stay_cached_until_cp_writes_one(loose: Daemon, patched: bool,
                                                                 tmp_path: Path) -> None:
    """The guest kernel's 9p patch (guest/kernel/patches): a cached root keeps negative
    dentries (6.1 dropped each at its last use, so every lookup of a missing name was a host
    round trip), and the cache drop after a cp still lets the guest see what cp made."""
    with _container(loose, IMG, "sleep", "300") as cid:
        negative = "awk '{print $5}' /proc/sys/fs/dentry-state"
        before, after = loose.out("exec", cid, "sh", "-c",
                                  f"{negative}; for i in $(seq 300); do test -e /nope$i; done; "
                                  f"{negative}").split()
        assert (int(after) - int(before) >= 300) is patched
        _cp_text(loose, cid, tmp_path, "made by the host\n", "/nope7")
        assert loose.out("exec", cid, "cat", "/nope7") == "made by the host\n"


def test_cp_replacing_a_file_held_open_in_the_guest_is_read_afresh(loose: Daemon,
                                                                    tmp_path: Path) -> None:
    """The guest kernel's read fids (guest/kernel/patches): read-only opens of a file share
    one open on the host, kept while the guest's inode lives. cp replaces a file with a new
    one on the host; the sync before it ends every shared open, so a file the guest holds
    open (its inode stays cached) is read afresh, not through the old file's open."""
    with _container(loose, IMG, "sh", "-c",
                    "echo old-content > /tmp/held; exec sleep 300 < /tmp/held") as cid:
        _wait_for(loose, cid, b"old-content\n", "cat", "/tmp/held")
        # the same size: a held file keeps its cached size
        _cp_text(loose, cid, tmp_path, "new-content\n", "/tmp/held")
        assert loose.out("exec", cid, "cat", "/tmp/held") == "new-content\n"


def test_a_symlink_is_read_from_the_host_once_and_cp_replaces_it(loose: Daemon, patched: bool,
                                                                  tmp_path: Path) -> None:
    """The guest kernel's symlink patch (guest/kernel/patches): a cached root keeps a link's
    target after its first read. Changed on the host behind the daemon's back (which only
    this test does: the daemon writes into a running root through cp, which drops the
    guest's caches), the guest still follows the old target; replaced by cp, the new one."""
    with _container(loose, IMG, "sh", "-c", "ln -s first /tmp/ln; exec sleep 300") as cid:
        _wait_for(loose, cid, b"first\n", "readlink", "/tmp/ln")
        on_host = _on_host(loose, cid, "/tmp/ln")
        on_host.unlink()
        on_host.symlink_to("second")
        assert loose.out("exec", cid, "readlink", "/tmp/ln") == ("first\n" if patched
                                                                 else "second\n")
        (tmp_path / "ln").symlink_to("third")
        loose.out("cp", str(tmp_path / "ln"), f"{cid}:/tmp/")
        assert loose.out("exec", cid, "readlink", "/tmp/ln") == "third\n"


def test_a_directory_listing_follows_every_change_but_one_behind_the_daemons_back(
        loose: Daemon, patched: bool, tmp_path: Path) -> None:
    """The guest kernel's listing patch (guest/kernel/patches): a cached root keeps a
    directory's listing once read to its end. Every change the guest makes shows in the next
    listing, as does what cp writes; a file made on the host behind the daemon's back (which
    only this test does) does not, until a cp drops the guest's caches."""
    with _container(loose, IMG, "sleep", "300") as cid:
        steps = ("mkdir /tmp/d; touch /tmp/d/a", "", "touch /tmp/d/b", "mv /tmp/d/a /tmp/d/c",
                 "rm /tmp/d/b", "mkdir /tmp/d/e; ln -s x /tmp/d/f; ln /tmp/d/c /tmp/d/g",
                 "rmdir /tmp/d/e; mv /tmp/d/g /tmp/g; echo > /tmp/d/p")
        script = "; ".join(f"{step}{'; ' if step else ''}ls /tmp/d | tr '\\n' ' '; echo"
                           for step in steps)
        listings = loose.out("exec", cid, "sh", "-c", script).splitlines()
        assert listings == ["a ", "a ", "a b ", "b c ", "c ", "c e f g ", "c f p "]
        # a listing longer than one 9p reply (msize 256 KiB), kept and read again
        many = tmp_path / "many"
        many.mkdir()
        names = sorted(f"{i:05d}{'x' * 75}" for i in range(3000))
        for name in names:
            (many / name).write_text("")
        loose.out("cp", str(many), f"{cid}:/tmp/")
        want = hashlib.md5("".join(f"{n}\n" for n in [".", "..", *names]).encode()).hexdigest()
        sums = loose.out("exec", cid, "sh", "-c", "for i in 1 2 3; do ls -a /tmp/many | md5sum; "
                         "done").split()
        assert sums == [want, "-"] * 3
        # behind the daemon's back: the guest's listing of /tmp/d stays as it was
        assert loose.out("exec", cid, "ls", "/tmp/d").split() == ["c", "f", "p"]
        on_host = _on_host(loose, cid, "/tmp/d")
        (on_host / "h").write_text("")
        assert loose.out("exec", cid, "ls", "/tmp/d").split() == (["c", "f", "p"] if patched
                                                                  else ["c", "f", "h", "p"])
        src = tmp_path / "k"
        src.write_text("")
        loose.out("cp", str(src), f"{cid}:/tmp/d/")
        assert loose.out("exec", cid, "ls", "/tmp/d").split() == ["c", "f", "h", "k", "p"]


def test_guest_writes_reach_cp_diff_commit_and_export(loose: Daemon, tmp_path: Path) -> None:
    with _container(loose, IMG, "sleep", "300") as cid:
        # written and closed by the guest, still in its page cache (write-back)
        loose.out("exec", cid, "sh", "-c", "echo from-guest > /root/made-in-vm")
        loose.out("cp", f"{cid}:/root/made-in-vm", str(tmp_path / "back"))
        assert (tmp_path / "back").read_text() == "from-guest\n"
        loose.out("exec", cid, "sh", "-c", "echo second > /root/second")
        assert "A /root/second" in loose.out("diff", cid).splitlines()
        exported = loose.cli("export", cid, check=True).stdout
        with tarfile.open(fileobj=io.BytesIO(exported)) as tar:
            member = tar.extractfile("root/second")
            assert member is not None and member.read() == b"second\n"
        loose.out("exec", cid, "sh", "-c", "echo third > /root/third")
        loose.out("commit", cid, "loose-committed:1")
    out = loose.out("run", "--rm", "loose-committed:1", "cat", "/root/made-in-vm",
                    "/root/second", "/root/third")
    assert out == "from-guest\nsecond\nthird\n"
    loose.out("rmi", "loose-committed:1")


# A FIFO passed through and a unix socket bound (syslogd's /dev/log, chrooted into the 9p root
# since the container's /dev is the guest's own devtmpfs), then both looked up afresh after a
# chmod and a cache drop (the stand-in keeps its mark; the FIFO's inode was evicted).
_SPECIAL_NODES = """
set -e
mkfifo -m 640 /tmp/fifo
(echo through the fifo > /tmp/fifo &)
cat /tmp/fifo
j=/tmp/jail; mkdir -p $j/bin $j/dev $j/var/log; cp /bin/busybox $j/bin/
chroot $j /bin/busybox syslogd -O /var/log/messages
for i in $(seq 50); do test -S $j/dev/log && break; sleep 0.1; done
chroot $j /bin/busybox logger -t t over-a-socket
chmod 600 /tmp/fifo
echo 3 > /proc/sys/vm/drop_caches
stat -c '%F %a' /tmp/fifo $j/dev/log
"""


def test_fifos_and_sockets_can_be_made_in_the_root(loose: Daemon, patched: bool) -> None:
    """QEMU's 9p server will not make a FIFO or socket (mkfifo, or bind of a unix socket,
    failed with ENXIO): the guest kernel keeps each as a marked stand-in file
    (guest/kernel/patches/05-9p-stand-ins.patch), shown for what it is in the guest and by
    export and commit on the host."""
    if not patched:
        pytest.skip("a guest without guest/kernel/patches cannot make FIFOs or sockets here")
    with _container(loose, IMG, "sleep", "300") as cid:
        assert loose.out("exec", cid, "sh", "-c", _SPECIAL_NODES).splitlines() == [
            "through the fifo", "fifo 600", "socket 666"]
        _wait_for(loose, cid, b"over-a-socket\n",
                  "grep", "-o", "over-a-socket", "/tmp/jail/var/log/messages")
        exported = loose.cli("export", cid, check=True).stdout
        with tarfile.open(fileobj=io.BytesIO(exported)) as tar:
            assert tar.getmember("tmp/fifo").isfifo() and tar.getmember("tmp/fifo").mode == 0o600
            assert "tmp/jail/dev/log" not in tar.getnames()  # sockets are not archived
        loose.out("commit", cid, "loose-nodes:1")
    try:
        assert loose.out("run", "--rm", "loose-nodes:1", "sh", "-c",
                         "(echo again > /tmp/fifo &); cat /tmp/fifo") == "again\n"
    finally:
        loose.out("rmi", "loose-nodes:1")


def test_shared_writable_maps_of_volume_files_reach_the_host(loose: Daemon,
                                                            tmp_path: Path) -> None:
    """A volume's 9p share was mounted uncached, where mmap(MAP_SHARED, PROT_WRITE) is
    EINVAL: SQLite in WAL mode failed with "disk I/O error" on a volume. Shares are mounted
    `cache=mmap` now (guest/init/mounts.h), which caches only the mapped pages."""
    with _fsops_container(loose, tmp_path, "-v", "mapped-vol:/vol", IMG, "sleep", "300") as cid:
        assert loose.out("exec", cid, "/fsops", "mmap", "/vol/m", "through-a-map") == "mapped\n"
    try:
        assert loose.out("run", "--rm", "-v", "mapped-vol:/vol", IMG,
                         "head", "-c", "13", "/vol/m") == "through-a-map"
    finally:
        loose.cli("volume", "rm", "mapped-vol")


def test_renameat2_exchanges_and_refuses_to_replace_in_the_root(loose: Daemon, patched: bool,
                                                                tmp_path: Path) -> None:
    """9p's Trenameat has no flags, and 6.1's client refused every renameat2 flag (EINVAL);
    the guest kernel emulates RENAME_EXCHANGE with three renames and lets the VFS check
    RENAME_NOREPLACE (guest/kernel/patches/06-9p-rename-flags.patch)."""
    if not patched:
        pytest.skip("a guest without guest/kernel/patches refuses renameat2's flags on 9p")
    with _fsops_container(loose, tmp_path, IMG, "sleep", "300") as cid:
        script = ("mkdir /tmp/x; echo file > /tmp/x/a; mkdir /tmp/x/b; "
                  "/fsops exchange /tmp/x/a /tmp/x/b; test -d /tmp/x/a; cat /tmp/x/b; "
                  "/fsops noreplace /tmp/x/b /tmp/x/a; /fsops noreplace /tmp/x/b /tmp/x/c; "
                  "ls /tmp/x")
        assert loose.cli("exec", cid, "sh", "-c", script).stdout.decode().splitlines() == [
            "exchanged", "file", "renameat2: File exists", "renamed", "a", "c"]
        with tarfile.open(fileobj=io.BytesIO(loose.cli("export", cid, check=True).stdout)
                          ) as tar:
            assert tar.getmember("tmp/x/a").isdir() and tar.getmember("tmp/x/c").isfile()
            assert not any(n.startswith("tmp/x/.steelcup") for n in tar.getnames())


def test_a_directory_opened_without_the_server_lists_syncs_and_fails_as_a_local_one(
        loose: Daemon, patched: bool, tmp_path: Path) -> None:
    """A cached root's directory is opened on the server only when its listing must be asked
    for (guest/kernel/patches/09-9p-loose-dir-opens.patch): an fsync still reaches it, a
    listing never read before is asked for, a directory removed while open lists as ENOENT
    (as on a local filesystem), and a user's open is still checked against the mode."""
    if not patched:
        pytest.skip("a guest without guest/kernel/patches opens every directory on the server")
    with _fsops_container(loose, tmp_path, IMG, "sleep", "300") as cid:
        script = ("mkdir -p /tmp/d/sub; touch /tmp/d/a /tmp/d/b; /fsops dirsync /tmp/d; "
                  "ls /tmp/d | tr '\\n' ' '; echo; mkdir /tmp/gone; touch /tmp/gone/x; "
                  "rm /tmp/gone/x; /fsops listgone /tmp/gone; mkdir -m 700 /tmp/private")
        out = loose.out("exec", cid, "sh", "-c", script).splitlines()
        assert out == ["synced", "a b sub ", "list: No such file or directory"], out
        denied = loose.cli("exec", "-u", "nobody", cid, "ls", "/tmp/private")
        assert denied.returncode != 0 and b"Permission denied" in denied.stderr, denied


_OVERLAY_ON_A_VOLUME = """
set -e
mkdir -p /lo /m /vol/u /vol/w
mount -t tmpfs lo /lo
mkdir -p /lo/d/sub /lo/e; echo a > /lo/f; echo b > /lo/g; echo c > /lo/d/sub/x
options=lowerdir=/lo,upperdir=/vol/u,workdir=/vol/w,userxattr
mount -t overlay ov -o $options /m
rm /m/f
rm -r /m/d
mkdir /m/d
mv /m/g /m/g2
echo new > /m/d/n
umount /m
mount -t overlay ov -o $options /m
echo $(ls -A /m) / $(ls -A /m/d) / $(cat /m/g2 /m/d/n)
stat -c '%F %t:%T' /vol/u/f
"""


def test_an_overlay_in_the_guest_can_keep_its_upper_on_a_volume(loose: Daemon,
                                                                patched: bool) -> None:
    """overlayfs needs of its upper what QEMU's 9p server does not do: whiteouts (a
    character device 0:0, which it refuses to make), RENAME_EXCHANGE and RENAME_WHITEOUT.
    The guest kernel stands in for whiteouts (patch 05), emulates the rename flags (06) and
    has overlayfs look up a 9p upper's regular files that may be stand-ins (07), so a
    privileged container's overlay can write to a volume (and the container root can later
    be an image's layers on a block device under a 9p upper)."""
    if not patched:
        pytest.skip("a guest without guest/kernel/patches cannot make whiteouts on 9p")
    with _container(loose, "--privileged", "-v", "overlay-upper:/vol", IMG,
                    "sleep", "300") as cid:
        assert loose.out("exec", cid, "sh", "-c", _OVERLAY_ON_A_VOLUME).splitlines() == [
            "d e g2 / n / b new", "character special file 0:0"]
    loose.cli("volume", "rm", "overlay-upper")
