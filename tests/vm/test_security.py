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

import pytest

from steelcup.daemon import vm_run_dir
from steelcup.net.netns import socket_in
from tests.vm.support import Daemon

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


def _wait_for(path: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.2)


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
        _wait_for(_in_daemon_ns(daemon, cdir / "rw/upper/planted"))
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
        # (the guest's own link-local address needs its duplicate detection done first)
        out = daemon.out("run", "--rm", IMG, "sh", "-c",
                         "for i in $(seq 20); do ip -6 addr show dev eth0 | grep -q tentative "
                         "|| break; sleep 0.25; done; "
                         f"nc -w 3 {target}%eth0 2323 </dev/null; echo rc=$?; "
                         f"ping6 -c 1 -W 2 {target}%eth0 >/dev/null 2>&1; echo ping=$?")
        assert "host-secret" not in out and not served, out
        assert "ping=0" not in out, out
    finally:
        listener.close()
        thread.join(5)
    addrs = subprocess.run(["ip", "-n", daemon.netns, "-6", "addr", "show", "dev", "steelcup0"],
                           capture_output=True, text=True).stdout
    assert "inet6" not in addrs, addrs


HELPERS = Path(__file__).parent / "helpers"


def _static_helper(name: str, out_dir: Path) -> Path:
    """tests/vm/helpers/<name>.c built static with musl-gcc (busybox has no pidfd tools)."""
    if shutil.which("musl-gcc") is None:
        pytest.skip("musl-gcc (musl-tools) is needed to build the attack helper")
    out = out_dir / name
    subprocess.run(["musl-gcc", "-static", "-O2", "-Wall", "-Werror", "-o", str(out),
                    str(HELPERS / f"{name}.c")], check=True, capture_output=True, timeout=120)
    return out


def test_a_container_cannot_take_its_inits_control_channel(daemon: Daemon,
                                                           tmp_path: Path) -> None:
    """Issue #8: a container's root took PID 1's control-port fd (pidfd_getfd, /proc/1/fd/N)
    and wrote its own EXIT frames: forged exit codes, or a half frame that left it "Up". Init
    is non-dumpable and container processes lack CAP_SYS_PTRACE, so every way in is refused
    and the container's exit code is the one its process returned."""
    helper = _static_helper("steal_ctl_fd", tmp_path)
    cid = daemon.out("create", IMG, "/steal").strip()
    try:
        daemon.out("cp", str(helper), f"{cid}:/steal")
        daemon.out("start", cid)
        code = daemon.out("wait", cid).strip()
        logs = daemon.cli("logs", cid, check=True)
        out = (logs.stdout + logs.stderr).decode()
        results = {tuple(line.split()[:2]): line.split()[2:] for line in out.splitlines()
                   if line.split()[:1] in (["getfd"], ["procfd"])}
        other = dict(line.split(maxsplit=1) for line in out.splitlines()
                     if line.split()[:1] in (["mem"], ["ptrace"], ["forged"], ["pidfd_open"]))
        assert code == "3", f"exit code {code}, not the process's own 3:\n{out}"
        assert len(results) == 2 * 65, out  # the helper ran to the end
        assert "pidfd_open" not in other, out  # pidfd_open itself is allowed: the attack is real
        taken = {k: v for k, v in results.items() if v[0] == "ok"}
        assert not taken, f"init's fds reachable from the container: {taken}"
        getfd = {v[0] for k, v in results.items() if k[0] == "getfd"}
        assert getfd == {"EPERM"}, out
        procfd = {v[0] for k, v in results.items() if k[0] == "procfd"}
        # fds init does not have are ENOENT; each one it has (the port among them) is refused
        assert procfd <= {"EACCES", "ENOENT"} and "EACCES" in procfd, out
        assert other.get("mem") in ("EACCES", "EPERM"), out
        assert other.get("ptrace") == "EPERM", out
        assert other.get("forged") == "0", out
        state = json.loads(daemon.out("inspect", cid))[0]["State"]
        assert (state["Status"], state["ExitCode"]) == ("exited", 3), state
    finally:
        daemon.cli("rm", "-f", cid)


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
    deadline = time.monotonic() + 30  # `rm -f` answers before the run's cleanup ends
    while (removed := daemon.cli("volume", "rm", "vfill")).returncode != 0:
        assert time.monotonic() < deadline, removed
        time.sleep(0.2)
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
    deadline = time.monotonic() + 30  # copied next to the container when its VM closes
    while not console.exists():
        assert time.monotonic() < deadline, "no console log kept"
        time.sleep(0.2)
    text = console.read_bytes()
    assert len(text) < 2 * 64 * 1024 + 200, len(text)
    assert b"bytes dropped here ---" in text
    assert text.rstrip().endswith(b"last words")
    daemon.out("rm", cid)


def test_cap_add_sys_ptrace_hands_over_the_channel_and_nothing_more(daemon: Daemon,
                                                                     tmp_path: Path) -> None:
    """The documented consequence (docs/security.md): CAP_SYS_PTRACE passes the check the
    non-dumpable init relies on, so the same helper takes the port and forges its own exit
    code (42 for the 3 it returns). That is all it gets: the daemon and the next container are
    unaffected. If this starts failing because the channel is out of reach, update the doc."""
    helper = _static_helper("steal_ctl_fd", tmp_path)
    cid = daemon.out("create", "--cap-add", "SYS_PTRACE", IMG, "/steal").strip()
    try:
        daemon.out("cp", str(helper), f"{cid}:/steal")
        daemon.out("start", cid)
        assert daemon.out("wait", cid).strip() == "42"
        state = json.loads(daemon.out("inspect", cid))[0]["State"]
        assert (state["Status"], state["ExitCode"]) == ("exited", 42), state
    finally:
        daemon.cli("rm", "-f", cid)
    assert daemon.out("run", "--rm", IMG, "echo", "still-fine").strip() == "still-fine"
