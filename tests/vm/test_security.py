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


def _as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    # Through a shell: setpriv itself execs while it still holds root's capabilities.
    return subprocess.run([*NOBODY, "/bin/sh", "-c", 'exec "$@"', "sh", *argv],
                          capture_output=True, text=True, timeout=30)


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
        _wait_for(cdir / "upper" / "planted")
        planted = cdir / "upper" / "suid-sh"
        assert planted.stat().st_mode & stat.S_ISUID  # the guest did make one ...
        with _traversable_parents(daemon.root):
            for path in (planted, cdir / "rootfs" / "suid-sh"):
                run = _as_nobody(str(path), "id", "-u")
                assert run.returncode != 0 and "0" not in run.stdout.split(), run  # unreachable
                assert "Permission denied" in run.stderr
        assert {"nosuid", "nodev"} <= _mount_options(daemon, cdir / "rootfs")
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
