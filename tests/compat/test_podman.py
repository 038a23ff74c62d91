"""podman with `--runtime steelcup-runtime`: each container in a steelcup VM, through the OCI
runtime CLI (steelcup.oci) and a real daemon. podman's storage, run dir and the runtime's
state live under the test's tmp dir; containers use `--network none` (podman's own networks
would touch the host's), and the settings are the peer tool's (cgroupfs, explicit rlimits).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compat.podmanutil import IMG, Podman, keepers_of, write_runtime_wrapper
from tests.vm.support import (
    BUSYBOX_TAR,
    REPO,
    Daemon,
    leftovers_of,
    need_assets,
    start_daemon,
    stop_daemon,
    wait_until,
)

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    need_assets()
    if shutil.which("podman") is None:
        pytest.fail("podman is needed (apt-get install podman)")
    base = tmp_path_factory.mktemp("podman")
    daemon = start_daemon(base / "sc", base / "sc-run" / "steelcup.sock")
    runtime_root = base / "oci"
    try:
        daemon.cli("load", "-i", str(BUSYBOX_TAR), check=True)
        wrapper = write_runtime_wrapper(base / "steelcup-runtime", daemon.socket, runtime_root)
        p = Podman(daemon, base, wrapper, runtime_root)
        p.run("load", "-i", str(BUSYBOX_TAR), check=True)
        yield p
    finally:
        subprocess.run(Podman(daemon, base, base / "steelcup-runtime", runtime_root).argv(
            "rm", "-a", "-f", "-t", "0"), capture_output=True, timeout=120)
        stop_daemon(daemon)
        problems = leftovers_of(base / "sc")
        keepers = keepers_of(runtime_root)
        for pid in keepers:
            os.kill(pid, 9)
        assert not keepers, f"keeper processes left running: {keepers}"
        assert not problems, "after daemon shutdown: " + "\n".join(problems)


def test_podman_run_prints_the_guest_kernel(podman: Podman) -> None:
    result = podman.container("--rm", IMG, "uname", "-r", check=True)
    guest = result.stdout.decode().strip()
    assert guest == podman.daemon.out("run", "--rm", "steelcup/busybox", "uname", "-r").strip()
    assert guest != os.uname().release
    assert podman.run("ps", "-aq", check=True).stdout == b""  # --rm removed it
    assert list(podman.runtime_root.iterdir()) == []  # and the runtime's record of it


def test_exit_code_stdout_stderr_and_stdin(podman: Podman) -> None:
    result = podman.container("--rm", IMG, "sh", "-c", "echo out; echo err >&2; exit 3")
    assert result.returncode == 3, result.stderr
    assert result.stdout == b"out\n"
    assert b"err\n" in result.stderr
    piped = podman.container("--rm", "-i", IMG, "sh", "-c", "cat; echo done",
                             input=b"hello\n", check=True)
    assert piped.stdout == b"hello\ndone\n"


def test_podmans_settings_reach_the_vm(podman: Podman, tmp_path: Path) -> None:
    """What podman writes into config.json for these flags arrives in the guest."""
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "hello").write_text("from the host\n")
    script = ("nproc; id -u; id -g; pwd; hostname; echo $FOO; cat /data/hello; "
              "df -k /scratch | tail -1 | awk '{print $2}'; ulimit -n; "
              "touch /data/x 2>/dev/null || echo read-only; "
              "awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo")
    out = podman.container("--rm", "--cpus", "2", "--memory", "300m", "-u", "1000:1000",
                           "-w", "/tmp", "--hostname", "hh", "-e", "FOO=bar", "-v",
                           f"{shared}:/data:ro", "--tmpfs", "/scratch:size=1m", IMG, "sh",
                           "-c", script, check=True).stdout.decode().split("\n")
    assert out[:10] == ["2", "1000", "1000", "/tmp", "hh", "bar", "from the host", "1024",
                        "1024", "read-only"], out
    assert 200 <= int(out[10]) <= 300, out  # the VM's memory is the limit


def test_privileged_is_every_capability_in_the_vm_and_host_devices_are_refused(
        podman: Podman) -> None:
    caps = podman.container("--rm", "--privileged", IMG, "sh", "-c",
                            "grep CapEff /proc/self/status", check=True).stdout.split()[-1]
    assert int(caps, 16) == (1 << 41) - 1, caps  # capabilities 0..40, all of them
    device = podman.container("--rm", "--device", "/dev/fuse", IMG, "true")
    assert device.returncode != 0
    assert b"linux.devices is not supported by steelcup" in device.stderr


def test_a_missing_program_is_127_and_one_not_executable_126(podman: Podman) -> None:
    """As with runc: `create` fails with runc's words, which podman maps to the exit code."""
    missing = podman.container("--rm", IMG, "no-such-program")
    assert missing.returncode == 127, missing.stderr
    assert b'"no-such-program": executable file not found in $PATH' in missing.stderr
    not_exec = podman.container("--rm", IMG, "/etc/passwd")
    assert not_exec.returncode == 126, not_exec.stderr
    assert podman.run("ps", "-aq", check=True).stdout == b""
    assert list(podman.runtime_root.iterdir()) == []


def test_a_terminal_through_the_console_socket(podman: Podman) -> None:
    """`-it`: conmon gets the pty master over the console socket; what is typed reaches the
    shell in the VM and its exit status comes back."""
    command = " ".join(podman.argv("run", "--rm", "-it", "--network", "none", "--ulimit",
                                   "nofile=1024:1024", "--ulimit", "nproc=1024:1024", IMG,
                                   "sh"))
    result = subprocess.run(["script", "-qec", command, "/dev/null"],
                            input=b"tty; echo typed-$((6*7))\nexit 5\n", capture_output=True,
                            timeout=180)
    out = result.stdout.decode(errors="replace")
    assert "typed-42" in out and "/dev/pts/" in out, out
    assert result.returncode == 5, out


def test_detached_exec_state_stop_and_remove(podman: Podman) -> None:
    cid = podman.container("-d", IMG, "sleep", "1000", check=True).stdout.decode().strip()
    state = podman.oci_json("state", cid)
    assert isinstance(state, dict)
    assert state["status"] == "running" and state["id"] == cid
    assert Path(f"/proc/{state['pid']}").exists()  # the keeper: the pid conmon reaps
    ran = podman.run("exec", cid, "sh", "-c", "echo in-exec; exit 4")
    assert ran.returncode == 4 and ran.stdout == b"in-exec\n", ran.stderr
    ps = podman.oci_json("ps", "--format", "json", cid)
    assert ps == [state["pid"]]
    podman.run("update", "--memory", "400m", cid, check=True)  # the runtime's `update`
    assert podman.daemon.out("inspect", "-f", "{{.HostConfig.Memory}}",
                             state["id"]).strip() == str(400 << 20)
    podman.run("pause", cid, check=True)
    assert podman.oci_json("state", cid)["status"] == "paused"  # type: ignore[index]
    podman.run("unpause", cid, check=True)
    assert podman.oci_json("state", cid)["status"] == "running"  # type: ignore[index]
    again = podman.run("exec", cid, "echo", "unpaused")
    assert again.stdout == b"unpaused\n", again.stderr
    podman.run("stop", "-t", "1", cid, check=True)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{state['pid']}").exists():  # reaped by conmon
        assert time.monotonic() < deadline, "the keeper outlived the container"
        time.sleep(0.1)
    # podman's cleanup has deleted the runtime's container by now (runc's error for it)
    gone = podman.oci("state", cid)
    assert gone.returncode == 1 and b"container does not exist" in gone.stderr
    status = podman.run("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", cid,
                        check=True).stdout.decode().split()
    assert status[0] == "exited" and status[1] in ("137", "143"), status
    podman.run("rm", cid, check=True)
    assert list(podman.runtime_root.iterdir()) == []


def daemons_below(root: Path) -> list[int]:
    """Pids of `steelcup daemon` processes whose state root is below `root`. A daemon's child
    between its fork and its exec (a QEMU being spawned) still shows the daemon's command
    line: one whose parent is such a daemon is not another daemon."""
    found: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if b"daemon" in argv and b"steelcup" in argv and any(
                a.startswith(str(root).encode()) for a in argv):
            found[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return sorted(pid for pid, parent in found.items() if parent not in found)


def test_without_a_daemon_the_runtime_starts_one_below_its_root(podman: Podman) -> None:
    """No --host: the runtime's first `create` starts a daemon with state below its --root
    (options through --daemon-arg), which then serves the next containers too."""
    root = podman.base / "auto"
    options = [f"--daemon-arg={a}" for a in ("--no-networking", "--accel", "tcg",
                                               "--no-live-restore")]
    own = podman.runtime
    podman.runtime = podman.base / "steelcup-runtime-auto"
    podman.runtime.write_text(
        "#!/bin/sh\n"
        f"PYTHONPATH={REPO / 'src'} exec {sys.executable} -m steelcup.oci --root {root} "
        f"{' '.join(options)} \"$@\"\n")
    podman.runtime.chmod(0o755)
    try:
        first = podman.container("--rm", IMG, "uname", "-r", check=True)
        assert (root / "daemon.sock").exists()
        daemons = daemons_below(root)
        assert len(daemons) == 1, daemons
        again = podman.container("--rm", IMG, "sh", "-c", "exit 7")
        assert again.returncode == 7
        assert daemons_below(root) == daemons  # the same daemon served it
        assert first.stdout.decode().strip() != os.uname().release
    finally:
        podman.runtime = own
        for pid in daemons_below(root):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while daemons_below(root) and time.monotonic() < deadline:
            time.sleep(0.2)
        problems = leftovers_of(root / "daemon")
        assert not daemons_below(root)
        assert not problems, problems


def _restart_facts(daemon: Daemon, cid: str, keeper: object) -> str:
    """What the daemon, the container and the keeper say when an exit does not arrive."""
    facts = [daemon.cli("ps", "-a", "--no-trunc").stdout.decode(),
             daemon.cli("inspect", "-f", "{{json .State}}", cid).stdout.decode(),
             daemon.cli("exec", cid, "ps").stdout.decode()]
    try:
        facts.append(f"keeper {keeper}: " + Path(f"/proc/{keeper}/status").read_text()[:300])
        facts += [f"thread {t.name}: " + (t / "wchan").read_text()
                  for t in Path(f"/proc/{keeper}/task").iterdir()]
    except OSError as exc:
        facts.append(f"keeper {keeper}: {exc}")
    facts.append(daemon.log.read_text()[-6000:])
    return "\n".join(facts)


def test_a_live_restore_restart_of_the_daemon_does_not_end_the_container(
        podman: Podman) -> None:
    """The keeper outlives a daemon restart that keeps the VM (live restore, the default):
    it attaches again, so output after the restart still arrives and the exit code too."""
    base = podman.base / "lr"
    args = ("--live-restore",)
    daemon = start_daemon(base / "sc", base / "steelcup.sock", extra_args=args)
    own = podman.runtime, podman.runtime_root
    podman.runtime = write_runtime_wrapper(base / "steelcup-runtime", daemon.socket,
                                           base / "oci")
    podman.runtime_root = base / "oci"
    try:
        # Ended by a signal after the restart, not by a file an exec makes: the container's
        # exit SIGKILLs whatever else runs in it, an exec not yet gone too (137, as runc's).
        cid = podman.container("-d", IMG, "sh", "-c",
                               "trap 'go=1' USR1; echo before; "
                               "while [ -z \"$go\" ]; do sleep 0.2; done; "
                               "echo after; exit 4", check=True).stdout.decode().strip()
        wait_until(lambda: b"before" in podman.run("logs", cid).stdout, "output before")
        keeper = podman.oci_json("state", cid)["pid"]  # type: ignore[index]
        stop_daemon(daemon)
        assert Path(f"/proc/{keeper}").exists(), "the keeper ended with the daemon"
        daemon = start_daemon(base / "sc", base / "steelcup.sock", extra_args=args)
        ran = podman.run("exec", cid, "echo", "exec after the restart")
        assert (ran.returncode, ran.stdout) == (0, b"exec after the restart\n"), (
            f"exec: {ran.returncode} {ran.stderr!r}\n" + _restart_facts(daemon, cid, keeper))
        podman.run("kill", "--signal", "USR1", cid, check=True)
        try:
            waited = podman.run("wait", cid, check=True, timeout=120)
        except subprocess.TimeoutExpired:
            raise AssertionError("no exit after the restart:\n" + _restart_facts(
                daemon, cid, keeper)) from None
        assert waited.stdout.strip() == b"4"
        assert podman.run("logs", cid, check=True).stdout == b"before\nafter\n"
        podman.run("rm", cid, check=True)
    finally:
        if daemon.proc.poll() is not None:  # failed while stopped: its VMs and mounts wait
            daemon = start_daemon(base / "sc", base / "steelcup.sock", extra_args=args)
        podman.run("rm", "-a", "-f", "-t", "0")
        podman.runtime, podman.runtime_root = own
        stop_daemon(daemon)
        problems = leftovers_of(base / "sc")  # and kills them (a failure's live-restore VMs)
    assert not problems, problems
