"""Attacks from inside a guest, each against the defence docs/security.md names for it.

The attacker is root in its VM; the victims are host users, the host's services and the other
containers. Every test performs the attack against the session's real daemon.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from steelcup import defaults
from steelcup.daemon import vm_run_dir
from steelcup.net.netns import socket_in
from tests.vm.support import Daemon, static_helper, wait_until

pytestmark = pytest.mark.vm
IMG = "steelcup/busybox"
NOBODY = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")


def _as_nobody(*argv: str, mount_ns_of: int | None = None) -> subprocess.CompletedProcess[str]:
    """Run `argv` as uid 65534, in the mount namespace of process `mount_ns_of` if given (the
    test daemon's: `ip netns exec` gives it one, where its containers' mounts are)."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    enter = ["nsenter", f"--mount=/proc/{mount_ns_of}/ns/mnt"] if mount_ns_of else []
    # Through a shell: setpriv itself execs while it still holds root's capabilities.
    return subprocess.run([*enter, *NOBODY, "/bin/sh", "-c", 'exec "$@"', "sh", *argv],
                          capture_output=True, text=True, timeout=30)


def _in_daemon_ns(daemon: Daemon, path: Path) -> Path:
    """`path` as the daemon sees it (a container's writable layer is mounted in its mount
    namespace only)."""
    return Path(f"/proc/{daemon.proc.pid}/root") / path.relative_to("/")


@contextlib.contextmanager
def _traversable_parents(path: Path) -> Iterator[None]:
    """Let every user traverse the directories above `path` (pytest makes its temporary
    directories 0700, which would hide the state root from host users whatever its mode)."""
    saved = [(p, p.stat().st_mode) for p in path.parents if p != Path("/")]
    try:
        for p, mode in saved:
            p.chmod(stat.S_IMODE(mode) | 0o111)
        yield
    finally:
        for p, mode in saved:
            p.chmod(stat.S_IMODE(mode))


def _mount_options(daemon: Daemon, path: Path) -> set[str]:
    """Per-mount options of `path` as the daemon sees it (`ip netns exec` gives it a mount
    namespace of its own)."""
    target = os.fsencode(os.path.realpath(path))
    for line in Path(f"/proc/{daemon.proc.pid}/mountinfo").read_bytes().splitlines():
        fields = line.split()
        if fields[4] == target:
            return set(fields[5].decode().split(","))
    raise AssertionError(f"{path} is not a mount point")


def test_a_guests_setuid_root_file_is_out_of_host_users_reach(daemon: Daemon) -> None:
    """Issue 10 #1: the guest's root makes a setuid-root copy of a shell; a host user must be
    unable to run it (the state root and the VM run dir are 0700; the container's rootfs and
    a ready VM's slot are mounted nosuid,nodev)."""
    cid = daemon.out("run", "-d", IMG, "sh", "-c",
                     "cp /bin/busybox /suid-sh && chmod 4755 /suid-sh && touch /planted && "
                     "sleep 300").strip()
    try:
        cdir = daemon.root / "containers" / cid
        planted_flag = _in_daemon_ns(daemon, cdir / "rw/upper/planted")
        wait_until(planted_flag.exists, f"{planted_flag} appears", timeout_s=60)
        planted = cdir / "rw/upper/suid-sh"
        # the guest did make one ...
        assert _in_daemon_ns(daemon, planted).stat().st_mode & stat.S_ISUID
        with _traversable_parents(daemon.root):
            for path in (planted, cdir / "rootfs" / "suid-sh"):
                run = _as_nobody(str(path), "id", "-u", mount_ns_of=daemon.proc.pid)
                assert run.returncode != 0 and "0" not in run.stdout.split(), run  # unreachable
                assert "Permission denied" in run.stderr
        assert {"nosuid", "nodev"} <= _mount_options(daemon, cdir / "rootfs")
        assert {"nosuid", "nodev"} <= _mount_options(daemon, cdir / "rw")
        for private in (daemon.root, vm_run_dir(daemon.root)):
            assert stat.S_IMODE(private.stat().st_mode) == 0o700, private
    finally:
        daemon.cli("rm", "-f", cid)


QEMU_ROOT = defaults.USERNS_BASE  # the host uid of a guest's root (the test daemon's default)


def _qemu_pids_of(daemon: Daemon) -> list[int]:
    """The test daemon's QEMU processes (its children named qemu-system-*)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            status = (entry / "status").read_text()
            fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
            if fields.get("Name", "").startswith("qemu-system") and \
                    int(fields["PPid"]) == daemon.proc.pid:
                out.append(int(entry.name))
    return out


def test_a_guests_root_is_an_unprivileged_host_uid_in_its_files_and_in_bind_mounts(
        daemon: Daemon, tmp_path: Path) -> None:
    """Issue 10 #1: QEMU ran as host root, so a guest's root made root-owned setuid files in
    a bind-mounted host directory (and its upper dir). Now QEMU is root of a user namespace:
    on the host, the guest's root is the unprivileged uid QEMU_ROOT. In a bind mount, host
    ids other than root are the guest's same ids (a user's files stay theirs and writable);
    host-root files show as nobody and the guest's root cannot change them."""
    share = tmp_path / "share"
    share.mkdir()
    share.chmod(0o777)
    (share / "users").write_text("u\n")
    os.chown(share / "users", 1000, 1000)
    (share / "roots").write_text("r\n")
    (share / "roots").chmod(0o644)
    script = ("mkdir /h/b && cp /bin/busybox /h/b/busybox && chmod 4755 /h/b/busybox && "
              "cp /bin/busybox /suid-sh && chmod 4755 /suid-sh && "
              "echo more >> /h/users && stat -c '%u:%g' /h/users /h/roots /suid-sh; "
              "echo x >> /h/roots 2>/dev/null; echo roots=$?; touch /planted; sleep 300")
    cid = daemon.out("run", "-d", "-v", f"{share}:/h", IMG, "sh", "-c", script).strip()
    try:
        cdir = daemon.root / "containers" / cid
        planted_flag = _in_daemon_ns(daemon, cdir / "rw/upper/planted")
        wait_until(planted_flag.exists, f"{planted_flag} appears", timeout_s=60)
        logs = daemon.out("logs", cid).split()
        # the guest sees the user's file as theirs, root's as nobody's, its own as root's
        assert logs[:3] == ["1000:1000", "65534:65534", "0:0"], logs
        assert "roots=1" in logs, logs  # and cannot write host root's file
        assert (share / "roots").read_text() == "r\n"
        assert (share / "users").read_text() == "u\nmore\n"
        assert (share / "users").stat().st_uid == 1000
        for planted in (share / "b/busybox", _in_daemon_ns(daemon, cdir / "rw/upper/suid-sh")):
            st = planted.stat()
            assert st.st_mode & stat.S_ISUID, planted  # the guest did make one ...
            assert (st.st_uid, st.st_gid) == (QEMU_ROOT, QEMU_ROOT), planted  # ... not root's
        pids = _qemu_pids_of(daemon)
        assert pids
        for pid in pids:
            uids = Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split("\n")[0]
            assert uids.split() == [str(QEMU_ROOT)] * 4, (pid, uids)
    finally:
        daemon.cli("rm", "-f", cid)


def _link_local(mac: str) -> str:
    """The EUI-64 link-local address the kernel gives an interface with this MAC."""
    b = [int(x, 16) for x in mac.split(":")]
    b[0] ^= 0x02
    words = [(b[0] << 8) | b[1], (b[2] << 8) | 0xFF, 0xFE00 | b[3], (b[4] << 8) | b[5]]
    return "fe80::" + ":".join(f"{w:x}" for w in words)


def test_host_services_on_ipv6_are_out_of_containers_reach(daemon: Daemon) -> None:
    """Issue 10 #4: the firewall was IPv4-only while bridges had link-local IPv6 addresses, so
    a host service listening on `::` answered containers through fe80::...%eth0."""
    assert daemon.netns is not None
    shown = json.loads(subprocess.run(
        ["ip", "-n", daemon.netns, "-j", "link", "show", "dev", "steelcup0"],
        capture_output=True, text=True, check=True).stdout)
    target = _link_local(shown[0]["address"])
    listener = socket_in(daemon.netns, socket.AF_INET6, socket.SOCK_STREAM, ("::", 2323))
    listener.listen(4)
    listener.settimeout(30)
    served: list[bytes] = []

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                conn.sendall(b"host-secret\n")
                served.append(b"x")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        # The NIC comes without IPv6 (as dockerd's on an IPv4-only network); root with
        # CAP_NET_ADMIN turns it on, and its link-local address needs its duplicate detection
        # done before it can be used.
        out = daemon.out("run", "--rm", "--cap-add", "NET_ADMIN", IMG, "sh", "-c",
                         "echo 0 > /proc/sys/net/ipv6/conf/eth0/disable_ipv6; "
                         "for i in $(seq 20); do ip -6 addr show dev eth0 | grep -q tentative "
                         "|| break; sleep 0.25; done; ip -6 addr show dev eth0; "
                         f"nc -w 3 {target}%eth0 2323 </dev/null; echo rc=$?; "
                         f"ping6 -c 1 -W 2 {target}%eth0 >/dev/null 2>&1; echo ping=$?")
        assert "inet6 fe80::" in out, out  # the attack ran from a link-local address
        assert "host-secret" not in out and not served, out
        assert "ping=0" not in out, out
    finally:
        listener.close()
        thread.join(5)
    addrs = subprocess.run(["ip", "-n", daemon.netns, "-6", "addr", "show", "dev", "steelcup0"],
                           capture_output=True, text=True).stdout
    assert "inet6" not in addrs, addrs


def _steal_report(out: str) -> tuple[set[int], list[str], str]:
    """The helper's output: (pids it tried, links of the fds it took, frames it forged)."""
    scanned = {int(line.split()[1]) for line in out.splitlines() if line.startswith("scanned ")}
    taken = [line.split()[4] for line in out.splitlines() if line.startswith("taken ")]
    forged = [line.split()[1] for line in out.splitlines() if line.startswith("forged ")]
    assert forged, f"the helper did not run to the end:\n{out}"
    return scanned, taken, forged[0]


def _run_steal(daemon: Daemon, helper: Path, *create_args: str) -> tuple[str, str]:
    """The helper as a container's main process: (exit code, output)."""
    cid = daemon.out("create", *create_args, IMG, "/steal").strip()
    try:
        daemon.out("cp", str(helper), f"{cid}:/steal")
        daemon.out("start", cid)
        code = daemon.out("wait", cid).strip()
        logs = daemon.cli("logs", cid, check=True)
        state = json.loads(daemon.out("inspect", cid))[0]["State"]
        assert (state["Status"], str(state["ExitCode"])) == ("exited", code), state
        return code, (logs.stdout + logs.stderr).decode()
    finally:
        daemon.cli("rm", "-f", cid)


def test_a_container_cannot_take_its_inits_control_channel(daemon: Daemon,
                                                           tmp_path: Path) -> None:
    """Issue #8: a container's root took PID 1's control-port fd (pidfd_getfd, /proc/1/fd/N)
    and wrote its own EXIT frames: forged exit codes, or a half frame that left it "Up". The
    helper tries every process the container can see; none holds the port, and the container's
    exit code is the one its process returned."""
    helper = static_helper("steal_ctl_fd", tmp_path)
    code, out = _run_steal(daemon, helper)
    scanned, taken, forged = _steal_report(out)
    assert code == "3", f"exit code {code}, not the process's own 3:\n{out}"
    assert not [link for link in taken if link.startswith("/dev/vport")], out
    assert forged == "0", out


def test_a_guest_that_unbinds_its_balloon_is_oom_killed_by_the_host(daemon: Daemon) -> None:
    """Issue finding #5: `-m` was the guest balloon driver's to keep. The container's root
    unbinds the driver (its guest gets the template's whole RAM) and eats memory: the host kills
    its VM at the limit, and the container ends like docker's OOM-killed ones."""
    script = ("cd /sys/bus/virtio/drivers/virtio_balloon && echo $(ls -d virtio*) > unbind && "
              "tail /dev/zero")
    result = daemon.cli("run", "--name", "unbind-balloon", "-m", "128m", IMG, "sh", "-c", script)
    try:
        assert result.returncode == 137, result
        state = json.loads(daemon.out("inspect", "-f", "{{json .State}}", "unbind-balloon"))
        assert state["OOMKilled"] is True and state["ExitCode"] == 137, state
    finally:
        daemon.cli("rm", "-f", "unbind-balloon")
    # A control container of the same size runs out of memory in its own guest only.
    result = daemon.cli("run", "--rm", "-m", "128m", IMG, "sh", "-c",
                        "tail /dev/zero; echo survived")
    assert result.returncode == 0 and b"survived" in result.stdout, result


def test_a_guest_filling_its_root_gets_enospc_and_nothing_else_suffers(daemon: Daemon) -> None:
    """Finding 6, the writable layer: a guest writes past its `--storage-opt size=`. It gets
    ENOSPC; the host file holding its layer stays within the size; the daemon, diff and the
    next container are fine; removal leaves no mount or file. Without the bounded layer the
    whole write lands on the host's disk and dd succeeds."""
    result = daemon.cli("run", "--name", "filler", "--storage-opt", "size=32m", IMG, "sh", "-c",
                        "dd if=/dev/zero of=/fill bs=1M count=64 conv=fsync; echo dd=$?; "
                        "rm /fill; echo kept > /after; cat /after")
    out, err = result.stdout.decode(), result.stderr.decode()
    assert "No space left on device" in err, (out, err)
    assert "dd=1" in out and out.endswith("kept\n"), (out, err)
    cid = daemon.out("inspect", "-f", "{{.Id}}", "filler").strip()
    cdir = daemon.root / "containers" / cid
    assert (cdir / "rw.img").stat().st_blocks * 512 <= 33 << 20
    assert "A /after" in daemon.out("diff", cid).splitlines()
    assert daemon.out("inspect", "-f", "{{json .HostConfig.StorageOpt}}", cid).strip() == \
        '{"size":"33554432"}'
    # the next container (the daemon's default size) writes as it likes
    assert daemon.out("run", "--rm", IMG, "sh", "-c",
                      "dd if=/dev/zero of=/f bs=1M count=40 conv=fsync 2>/dev/null "
                      "&& echo ok") == "ok\n"
    daemon.out("rm", cid)
    assert not cdir.exists()
    assert cid not in Path(f"/proc/{daemon.proc.pid}/mounts").read_text()


def _loop_devices_of(path: Path) -> list[str]:
    """Loop devices backed by `path` (also once it is deleted)."""
    listing = subprocess.run(["losetup", "-a"], capture_output=True, text=True, timeout=30)
    return [line for line in listing.stdout.splitlines() if str(path) in line]


def test_a_guest_filling_a_volume_gets_enospc_and_nothing_else_suffers(daemon: Daemon) -> None:
    """Finding 6, volumes: a guest writes past its volume's `size=`. It gets ENOSPC; the host
    file holding the volume stays within the size; the daemon and a bystander container are
    fine; what the guest wrote survives its container's restart, and a second container
    mounting the volume meanwhile keeps it when the first stops; removal leaves no mount,
    loop device or file. Without bounded volumes `size=` was refused, and were it ignored the
    whole write would land on the host's disk and dd would succeed."""
    daemon.out("volume", "create", "--opt", "size=32m", "vfill")
    image = daemon.root / "volumes" / "vfill" / "disk.img"
    mounts = Path(f"/proc/{daemon.proc.pid}/mounts")  # the daemon's mount namespace
    bystander = daemon.out("run", "-d", IMG, "sleep", "300").strip()
    holder = ""
    try:
        fill = ("cat /data/log 2>/dev/null; echo run >> /data/log; "
                "dd if=/dev/zero of=/data/fill bs=1M count=64 conv=fsync; echo dd=$?; "
                "rm /data/fill; echo after > /data/after; cat /data/after")
        result = daemon.cli("run", "--name", "vfiller", "-v", "vfill:/data", IMG, "sh", "-c",
                            fill)
        out, err = result.stdout.decode(), result.stderr.decode()
        assert "No space left on device" in err, (out, err)
        assert "dd=1" in out and out.endswith("after\n"), (out, err)
        assert image.stat().st_blocks * 512 <= 33 << 20
        assert "/volumes/vfill/" not in mounts.read_text()  # its only user stopped
        # a second container mounts it; the first runs again (a restart) and stops again
        holder = daemon.out("run", "-d", "-v", "vfill:/data", IMG, "sleep", "300").strip()
        again = daemon.cli("start", "-a", "vfiller")
        assert again.stdout.decode().startswith("run\n"), again  # the first run's line
        assert "No space left on device" in again.stderr.decode(), again
        assert daemon.out("exec", holder, "cat", "/data/log", "/data/after") == \
            "run\nrun\nafter\n"
        assert "/volumes/vfill/_data" in mounts.read_text()  # still held by the second
        assert daemon.out("exec", bystander, "echo", "fine") == "fine\n"
        assert json.loads(daemon.out("volume", "inspect", "vfill"))[0]["Options"] == {
            "size": "32m"}
    finally:
        daemon.cli("rm", "-f", bystander, *([holder] if holder else []))
        daemon.cli("rm", "-f", "vfiller")
    # `rm -f` answers before the run's cleanup ends
    wait_until(lambda: daemon.cli("volume", "rm", "vfill").returncode == 0, "volume rm vfill")
    assert not image.parent.exists()
    assert "/volumes/vfill/" not in mounts.read_text()
    assert _loop_devices_of(image) == []


def test_a_guest_printing_without_end_fills_only_its_rotated_logs(daemon: Daemon) -> None:
    """Finding 6, container logs: the json-file log rotates at max-size and keeps max-file
    files; `logs` reads across them in order. Without rotation the one file holds it all."""
    cid = daemon.out("run", "-d", "--log-opt", "max-size=64k", "--log-opt", "max-file=3", IMG,
                     "sh", "-c", "seq 1 200000; echo last-line").strip()
    assert daemon.out("wait", cid).strip() == "0"
    cdir = daemon.root / "containers" / cid
    logs = sorted(p.name for p in cdir.glob("container.log*"))
    assert logs == ["container.log", "container.log.1", "container.log.2"], logs
    assert all((cdir / name).stat().st_size < 64 * 1024 + 70 * 1024 for name in logs)
    lines = daemon.out("logs", cid).splitlines()
    assert lines[-1] == "last-line"
    # (the oldest file may start with the rest of a line cut across two output chunks)
    numbers = [int(n) for n in lines[1:-1]]
    assert numbers == list(range(numbers[0], 200001))  # in order, nothing lost in between
    assert json.loads(daemon.out("inspect", "-f", "{{json .HostConfig.LogConfig}}", cid)) == {
        "Type": "json-file", "Config": {"max-size": str(64 * 1024), "max-file": "3"}}
    daemon.out("rm", cid)


def test_a_guest_flooding_its_console_fills_only_a_capped_log(daemon: Daemon) -> None:
    """Finding 6, the serial console: QEMU wrote it to a file without end (`-serial file:`).
    Now the daemon reads it from a pipe and keeps the first and the last 64 KiB with a marker
    of what it dropped; the last words stay for diagnosis."""
    cid = daemon.out("run", "-d", IMG, "sh", "-c",
                     "yes 'console flood' | head -c 600000 > /dev/ttyS0; "
                     "echo 'last words' > /dev/ttyS0").strip()
    assert daemon.out("wait", cid).strip() == "0"
    console = daemon.root / "containers" / cid / "console.log"
    # copied next to the container when its VM closes
    wait_until(console.exists, "console log kept")
    text = console.read_bytes()
    assert len(text) < 2 * 64 * 1024 + 200, len(text)
    assert b"bytes dropped here ---" in text
    assert text.rstrip().endswith(b"last words")
    daemon.out("rm", cid)


def test_cap_add_sys_ptrace_no_longer_hands_over_the_channel(daemon: Daemon,
                                                              tmp_path: Path) -> None:
    """CAP_SYS_PTRACE passes the check the non-dumpable init relies on, and used to let the
    same helper take the port and forge its own exit code (42 for the 3 it returns). Container
    processes now run in a PID namespace of their own, where the init (and every process that
    holds the port) has no pid: as the main process the helper sees only itself, and run with
    `exec` beside a main process it takes that process's fds (the capability works) but never
    the port, so its exec's exit code is its own too."""
    helper = static_helper("steal_ctl_fd", tmp_path)
    code, out = _run_steal(daemon, helper, "--cap-add", "SYS_PTRACE")
    scanned, taken, forged = _steal_report(out)
    assert (code, forged) == ("3", "0"), out
    assert scanned == set() and taken == [], out  # PID 1 is the helper itself
    cid = daemon.out("run", "-d", "--cap-add", "SYS_PTRACE", IMG, "sleep", "1000").strip()
    try:
        daemon.out("cp", str(helper), f"{cid}:/steal")
        result = daemon.cli("exec", cid, "/steal")
        out = (result.stdout + result.stderr).decode()
        scanned, taken, forged = _steal_report(out)
        assert (result.returncode, forged) == (3, "0"), out
        assert scanned == {1}, out  # the main process (sleep), nothing of the VM's
        assert taken and not [link for link in taken if link.startswith("/dev/vport")], out
        assert daemon.out("inspect", "-f", "{{.State.Running}}", cid).strip() == "true"
    finally:
        daemon.cli("rm", "-f", cid)
    assert daemon.out("run", "--rm", IMG, "echo", "still-fine").strip() == "still-fine"


def test_a_container_sees_only_its_own_processes(daemon: Daemon) -> None:
    """Container processes have a PID namespace of their own, as with docker: the main process
    is PID 1 (`$$` is 1), `ps` and /proc show the container's processes and nothing of the VM
    (the init, kernel threads), `exec` and `top` join the same namespace, and a PID 1 without a
    SIGTERM handler ignores `stop`'s SIGTERM until the SIGKILL (exit code 137)."""
    cid = daemon.out("run", "-d", IMG, "sh", "-c",
                     "echo main=$$; sleep 1000 & wait").strip()
    try:
        wait_until(lambda: "main=" in daemon.out("logs", cid), "main= logged")
        assert daemon.out("logs", cid) == "main=1\n"
        listing = daemon.out("exec", cid, "sh", "-c",
                             "echo self=$$; for d in /proc/[0-9]*; do "
                             "echo ${d#/proc/} $(cat $d/comm); done")
        lines = listing.splitlines()
        self_pid = lines[0].removeprefix("self=")
        procs = dict(line.split(maxsplit=1) for line in lines[1:])
        assert procs.pop("1") == "sh", listing
        procs.pop(self_pid)
        procs = {pid: comm for pid, comm in procs.items() if comm != "cat"}  # $(cat ...)
        assert list(procs.values()) == ["sleep"], listing
        assert daemon.out("exec", cid, "cat", "/proc/1/cmdline").split("\0")[:2] == ["sh", "-c"]
        # `docker top` (the CLI has no top; the API's): ps in the container's namespace
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(daemon.socket))) as http:
            top = http.get(f"http://docker/containers/{cid}/top").json()
        commands = [row[-1] for row in top["Processes"]]
        assert sorted(commands) == ["sh -c echo main=$$; sleep 1000 & wait", "sleep 1000"], top
        start = time.monotonic()
        daemon.out("stop", "-t", "2", cid)
        assert time.monotonic() - start >= 2  # SIGTERM ignored by PID 1 without a handler
        assert daemon.out("inspect", "-f", "{{.State.ExitCode}}", cid).strip() == "137"
    finally:
        daemon.cli("rm", "-f", cid)


@pytest.mark.parametrize("caps", [(), ("--cap-add", "SYS_PTRACE")], ids=["default", "ptrace"])
def test_the_initramfs_is_out_of_a_containers_reach(daemon: Daemon, tmp_path: Path,
                                                   caps: tuple[str, ...]) -> None:
    """Review finding: the container was only chrooted, so the guest's initramfs (the init
    binary, its mounts) was one step away: through the classic chroot escape with the
    CAP_SYS_CHROOT of docker's default set, and with CAP_SYS_PTRACE through
    /proc/<kernel thread>/root. Now the container root is pivoted to in a mount namespace of its
    own, and its PID namespace shows no process whose root is elsewhere."""
    helper = static_helper("escape_root", tmp_path)
    cid = daemon.out("create", *caps, IMG, "/escape").strip()
    try:
        daemon.out("cp", str(helper), f"{cid}:/escape")
        daemon.out("start", cid)
        assert daemon.out("wait", cid).strip() == "0"
        out = daemon.out("logs", cid)
        assert out.endswith("done\n"), out
        results = [line.split() for line in out.splitlines()[:-1]]
        reached = [r for r in results if r[-1] != "no"]
        assert not reached, f"the initramfs is reachable:\n{out}"
        assert ["procroot", "1", "no"] in results and ["escape", "no"] in results, out
    finally:
        daemon.cli("rm", "-f", cid)
