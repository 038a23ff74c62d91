"""End-to-end: the steelcup CLI against a real daemon whose containers run in real QEMU VMs."""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import platform
import pty
import select
import struct
import subprocess
import sys
import tarfile
import termios
import time
from pathlib import Path

import pytest

from tests.vm.support import Daemon, leftovers_of, start_daemon, stop_daemon, wait_pool_ready

pytestmark = pytest.mark.vm
IMG = "steelcup/busybox"


def test_guest_kernel_is_not_the_hosts(daemon: Daemon) -> None:
    out = daemon.out("run", "--rm", IMG, "sh", "-c", "uname -r; cat /proc/version")
    release, version = out.splitlines()[:2]
    assert release and release != platform.release()
    assert version != Path("/proc/version").read_text().strip()
    assert release in version


def test_env_cwd_and_exit_code(daemon: Daemon) -> None:
    result = daemon.cli("run", "--rm", "-e", "A=1", "-w", "/tmp", IMG, "sh", "-c",
                        "echo $A; pwd; exit 7")
    assert result.returncode == 7, result.stderr
    assert result.stdout.decode().splitlines() == ["1", "/tmp"]


def test_stdout_and_stderr_stay_apart(daemon: Daemon) -> None:
    result = daemon.cli("run", "--rm", IMG, "sh", "-c", "echo out; echo err >&2; echo out2")
    assert result.returncode == 0
    assert result.stdout.decode() == "out\nout2\n"
    assert result.stderr.decode() == "err\n"


def test_stdin_is_piped_through(daemon: Daemon) -> None:
    payload = b"".join(b"line %d\n" % i for i in range(20000))
    result = daemon.cli("run", "--rm", "-i", IMG, "sh", "-c", "cat; echo done", input=payload)
    assert result.returncode == 0, result.stderr
    assert result.stdout == payload + b"done\n"


def test_user_and_hostname(daemon: Daemon) -> None:
    out = daemon.out("run", "--rm", "-u", "nobody", "-h", "box1", IMG, "sh", "-c",
                     "id -u; id -g; hostname")
    assert out.split() == ["65534", "65534", "box1"]


def test_process_env_is_dockers(daemon: Daemon) -> None:
    """As dockerd and runc: PATH and HOSTNAME under the container's env, HOME from the user's
    passwd entry ("/" for a uid it does not list) unless the env sets it; Config.Env keeps only
    the container's own. (Without HOME, Python's `site` looks the user up in passwd.)"""
    env = daemon.out("run", "--rm", "-h", "box2", "-e", "A=1", IMG, "env").splitlines()
    assert {"HOSTNAME=box2", "HOME=/root", "A=1"} <= set(env), env
    assert not [e for e in env if e.startswith("TERM=")], env  # no tty
    cid = daemon.out("run", "-d", IMG, "sleep", "1000").strip()
    try:
        env = daemon.out("exec", "-u", "nobody", cid, "env").splitlines()
        assert {f"HOSTNAME={cid[:12]}", "HOME=/nonexistent"} <= set(env), env
        env = daemon.out("exec", "-u", "4242", cid, "env").splitlines()
        assert "HOME=/" in env, env
        env = daemon.out("exec", "-e", "HOME=/srv", "-e", "HOSTNAME=mine", cid,
                         "env").splitlines()
        assert {"HOME=/srv", "HOSTNAME=mine"} <= set(env), env
        config_env = json.loads(daemon.out("inspect", cid))[0]["Config"]["Env"]
        assert [e.split("=")[0] for e in config_env] == ["PATH"], config_env
    finally:
        daemon.cli("rm", "-f", cid)


def test_unknown_image_is_exit_125(daemon: Daemon) -> None:
    result = daemon.cli("run", "--rm", "no/such-image:1", "true")
    assert result.returncode == 125
    assert b"no/such-image" in result.stderr


def test_missing_command_is_127_not_executable_is_126(daemon: Daemon) -> None:
    """With `--rm`, nothing is left behind (the daemon removes it before start answers)."""
    before = set(daemon.out("ps", "-aq").split())
    missing = daemon.cli("run", "--rm", IMG, "no-such-binary")
    assert missing.returncode == 127, missing.stderr
    assert b"no-such-binary" in missing.stderr
    not_exec = daemon.cli("run", "--rm", IMG, "/etc/passwd")
    assert not_exec.returncode == 126, not_exec.stderr
    assert set(daemon.out("ps", "-aq").split()) == before


def test_signal_exit_status(daemon: Daemon) -> None:
    """A process ended by a signal exits 128+signal. The main process is PID 1 of the
    container's PID namespace, so, as with docker, its own `kill -9 $$` does nothing (the kernel
    drops signals a namespace's init has no handler for, from inside), and `docker kill` ends
    it."""
    result = daemon.cli("run", "--rm", IMG, "sh", "-c", "kill -9 $$; echo survived")
    assert (result.returncode, result.stdout) == (0, b"survived\n"), result
    cid = daemon.out("run", "-d", IMG, "sleep", "1000").strip()
    try:
        assert daemon.cli("exec", cid, "sh", "-c", "kill -9 $$").returncode == 137
        daemon.out("kill", cid)
        assert daemon.out("wait", cid).strip() == "137"
    finally:
        daemon.cli("rm", "-f", cid)


def test_large_output_streams_without_loss(daemon: Daemon, tmp_path: Path) -> None:
    size = 50_000_000
    out_file = tmp_path / "big"
    with open(out_file, "wb") as sink:
        proc = subprocess.run(
            [sys.executable, "-m", "steelcup", "run", "--rm", IMG, "sh", "-c",
             f"head -c {size} /dev/urandom > /dev/shm/big && md5sum /dev/shm/big >&2 && "
             "cat /dev/shm/big"],
            stdout=sink, stderr=subprocess.PIPE, env=daemon.env, timeout=600,
        )
    assert proc.returncode == 0, proc.stderr
    assert out_file.stat().st_size == size
    digest = hashlib.md5(out_file.read_bytes()).hexdigest()
    assert proc.stderr.decode().split()[0] == digest
    rss_kib = int(next(line.split()[1] for line in
                       Path(f"/proc/{daemon.proc.pid}/status").read_text().splitlines()
                       if line.startswith("VmHWM")))
    assert rss_kib < 400 * 1024, f"daemon peak RSS {rss_kib} KiB while streaming 50 MB"


def test_detached_lifecycle_exec_logs_ps_inspect(daemon: Daemon) -> None:
    cid = daemon.out("run", "-d", "--name", "web", "-l", "tier=front", IMG, "sh", "-c",
                     "echo started; trap 'echo got-usr1' USR1; "
                     "while true; do sleep 0.2; done").strip()
    assert len(cid) == 64
    try:
        # PID 1 of the container's PID namespace is its main process, as with docker
        assert daemon.out("exec", "web", "cat", "/proc/1/comm").strip() == "sh"
        exec_result = daemon.cli("exec", "web", "sh", "-c", "exit 3")
        assert exec_result.returncode == 3
        ps = daemon.out("ps")
        assert "web" in ps and cid[:12] in ps
        assert daemon.out("ps", "-q", "-f", "label=tier=front").strip() == cid[:12]
        assert daemon.out("ps", "-q", "-f", "label=tier=back").strip() == ""
        info = json.loads(daemon.out("inspect", "web"))[0]
        assert info["Id"] == cid and info["State"]["Running"] is True
        assert daemon.out("inspect", "-f", "{{.State.Status}}", "web").strip() == "running"
        daemon.out("kill", "-s", "USR1", "web")
        deadline = time.monotonic() + 30
        while "got-usr1" not in daemon.out("logs", "web"):
            assert time.monotonic() < deadline, daemon.out("logs", "web")
            time.sleep(0.2)
        assert daemon.out("logs", "web").startswith("started\n")
        daemon.out("stop", "-t", "1", "web")
        assert daemon.out("inspect", "-f", "{{.State.Status}}", "web").strip() == "exited"
        assert daemon.cli("exec", "web", "true").returncode != 0
    finally:
        daemon.cli("rm", "-f", "web")
    assert daemon.cli("inspect", "web").returncode != 0


def test_logs_follow_ends_when_container_exits(daemon: Daemon) -> None:
    cid = daemon.out("run", "-d", IMG, "sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.3; done")
    try:
        out = daemon.out("logs", "-f", cid.strip())
        assert out == "1\n2\n3\n"
        assert daemon.out("wait", cid.strip()).strip() == "0"
    finally:
        daemon.cli("rm", "-f", cid.strip())


def set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def test_interactive_tty(daemon: Daemon) -> None:
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(sys.executable, [sys.executable, "-m", "steelcup", "run", "-it", "--rm",
                                   IMG, "sh"], daemon.env)
    transcript = b""

    def read_until(marker: bytes, timeout_s: float = 120, start: int = 0) -> None:
        nonlocal transcript
        deadline = time.monotonic() + timeout_s
        while marker not in transcript[start:]:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"waiting for {marker!r}; got {transcript[-500:]!r}"
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                transcript += chunk

    def stty_size() -> bytes:
        start = len(transcript)
        # The marker is computed by the shell, so the terminal's echo of the line never matches.
        os.write(fd, b"echo SIZE-$(stty size)-$((1+1))END\n")
        read_until(b"-2END", 60, start)
        line = transcript[start:].split(b"-2END")[0]
        return line.split(b"SIZE-")[-1]

    try:
        set_size(fd, 33, 101)
        os.write(fd, b"tty; echo TTY-$TERM-$((6*7))\n")
        read_until(b"-42")
        assert b"/dev/pts/" in transcript
        assert b"TTY-xterm-42" in transcript  # dockerd's TERM with a tty
        assert stty_size() == b"33 101"
        set_size(fd, 40, 120)  # the kernel sends SIGWINCH to the CLI, which resizes the VM pty
        deadline = time.monotonic() + 30
        while (size := stty_size()) != b"40 120":
            assert time.monotonic() < deadline, size
            time.sleep(0.2)
        os.write(fd, b"exit 5\n")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 5
    finally:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)


def test_import_rootfs_tar(daemon: Daemon, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("bin/busybox")
        data = Path("/bin/busybox").read_bytes()
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("bin/sh")
        link.type, link.linkname = tarfile.SYMTYPE, "busybox"
        tar.addfile(link)
        msg = b"imported!\n"
        note = tarfile.TarInfo("etc/msg")
        note.size = len(msg)
        tar.addfile(note, io.BytesIO(msg))
    path = tmp_path / "rootfs.tar"
    path.write_bytes(buf.getvalue())
    daemon.out("import", str(path), "myimg:1")
    out = daemon.out("run", "--rm", "myimg:1", "/bin/busybox", "cat", "/etc/msg")
    assert out == "imported!\n"
    daemon.out("rmi", "myimg:1")


def test_daemon_restart_finds_containers(daemon: Daemon, tmp_path: Path) -> None:
    other = start_daemon(tmp_path / "root", tmp_path / "s.sock")
    try:
        other.out("load", "-i", str(Path(__file__).parents[2] / "build/images/busybox.tar"))
        other.out("create", "--name", "keepme", IMG, "echo", "kept")
        other.out("run", "--rm", "-v", "keep:/data", IMG, "sh", "-c", "echo vol > /data/f")
        cid = other.out("run", "-d", "--name", "running", IMG, "sleep", "300").strip()
    finally:
        stop_daemon(other)
    assert not leftovers_of(tmp_path / "root")
    again = start_daemon(tmp_path / "root", tmp_path / "s.sock")
    try:
        names = again.out("ps", "-a", "--format", "{{.Names}}").split()
        assert sorted(names) == ["keepme", "running"]
        assert again.out("inspect", "-f", "{{.State.Status}}", cid).strip() == "exited"
        result = again.cli("start", "-a", "keepme")
        assert result.returncode == 0 and result.stdout == b"kept\n", result.stderr
        assert again.out("run", "--rm", "-v", "keep:/data", IMG, "cat", "/data/f") == "vol\n"
    finally:
        stop_daemon(again)
    assert not leftovers_of(tmp_path / "root")


def test_killed_daemon_leaves_nothing_once_restarted(tmp_path: Path) -> None:
    """SIGKILL the daemon with running containers (one with a volume) and a full warm cache:
    its QEMUs die with it; the next daemon on the root clears the slot binds, template files
    and volume mounts it left, and the volume's data is still there."""
    root = tmp_path / "root"
    d = start_daemon(root, tmp_path / "s.sock")
    try:
        d.out("load", "-i", str(Path(__file__).parents[2] / "build/images/busybox.tar"))
        wait_pool_ready(d, timeout_s=120)
        cid = d.out("run", "-d", IMG, "sleep", "300").strip()  # a ready VM: its slot is bound
        vcid = d.out("run", "-d", "-v", "crashvol:/data", IMG, "sleep", "300").strip()
        d.out("exec", vcid, "sh", "-c", "echo survived > /data/f && sync")
    finally:
        d.proc.kill()
        d.proc.wait()
    time.sleep(1)  # PR_SET_PDEATHSIG: the QEMUs die with the daemon
    stale = leftovers_of(root)
    assert not [p for p in stale if p.startswith("QEMU")], stale
    assert any("/s/" in p for p in stale if p.startswith("mounts")), stale  # the slot bind
    assert any("/volumes/crashvol/_data" in p for p in stale if p.startswith("mounts")), stale
    assert any("/ram" in p for p in stale if p.startswith("template")), stale  # its RAM file
    assert not any("/ram" in p for p in stale if p.startswith("files")), stale  # not in /run
    again = start_daemon(root, tmp_path / "s.sock")
    try:
        wait_pool_ready(again, timeout_s=120)
        assert again.out("inspect", "-f", "{{.State.Status}}", cid).strip() == "exited"
        assert again.out("run", "--rm", IMG, "echo", "still fine") == "still fine\n"
        assert again.out("run", "--rm", "-v", "crashvol:/data", IMG, "cat", "/data/f") == \
            "survived\n"
    finally:
        stop_daemon(again)
    assert not leftovers_of(root)
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True, timeout=30)
    assert str(root) not in loops.stdout


def test_cp_diff_commit_with_a_running_vm(daemon: Daemon, tmp_path: Path) -> None:
    """Files copied in on the host are seen by the guest; guest writes are seen on the host."""
    cid = daemon.out("run", "-d", IMG, "sh", "-c",
                     "echo from-guest > /root/made-in-vm; rm /etc/group; sleep 300").strip()
    try:
        deadline = time.monotonic() + 60
        while "made-in-vm" not in daemon.out("diff", cid):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        changes = daemon.out("diff", cid).splitlines()
        assert "A /root/made-in-vm" in changes and "D /etc/group" in changes
        src = tmp_path / "hello.txt"
        src.write_text("from the host\n")
        daemon.out("cp", str(src), f"{cid}:/tmp/hello.txt")
        assert daemon.out("exec", cid, "cat", "/tmp/hello.txt") == "from the host\n"
        daemon.out("cp", f"{cid}:/root/made-in-vm", str(tmp_path / "back"))
        assert (tmp_path / "back").read_text() == "from-guest\n"
        daemon.out("commit", cid, "committed:1")
    finally:
        daemon.cli("rm", "-f", cid)
    out = daemon.out("run", "--rm", "committed:1", "sh", "-c",
                     "cat /root/made-in-vm /tmp/hello.txt; test -e /etc/group || echo no-group")
    assert out == "from-guest\nfrom the host\nno-group\n"
    daemon.out("rmi", "committed:1")


def test_twenty_concurrent_runs_all_succeed(daemon: Daemon) -> None:
    """Twenty `run --rm` at once (template clones on the default network): each gets its own
    output and exit code, and none is left behind."""
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> tuple[int, bytes]:
        result = daemon.cli("run", "--rm", "-l", "batch=twenty", IMG, "sh", "-c",
                            f"echo run-{i}; exit {i % 7}", timeout=600)
        return result.returncode, result.stdout

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(one, range(20)))
    assert results == [(i % 7, f"run-{i}\n".encode()) for i in range(20)]
    deadline = time.monotonic() + 30
    while daemon.out("ps", "-aq", "-f", "label=batch=twenty"):
        assert time.monotonic() < deadline, "auto-removed containers are still listed"
        time.sleep(0.2)
    info = daemon.out("system", "info")
    assert "VM templates: on" in info
    assert "VM warm cache: 2 per class" in info


def test_runs_get_ready_vms_from_the_warm_cache(daemon: Daemon) -> None:
    """The daemon keeps ready VMs for the default network's containers and hands them out."""
    before = json.loads(daemon.out("system", "info", "-f", "{{json .Steelcup.Pool}}"))
    assert daemon.out("run", "--rm", IMG, "cat", "/etc/hostname").strip()
    after = json.loads(daemon.out("system", "info", "-f", "{{json .Steelcup.Pool}}"))
    assert after["CacheHits"] == before["CacheHits"] + 1, (before, after)
    listing = daemon.out("pool", "ls")
    assert "READY" in listing and "HANDED OUT" in listing, listing
