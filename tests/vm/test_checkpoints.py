"""Container checkpoints with real VMs (docs/checkpoints.md): a --checkpointable container's VM
saved whole and run on from there by `start --checkpoint`, through steelcup's CLI and docker's,
after a daemon restart too; and the refusals."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.vm.support import (
    BUSYBOX_TAR,
    Daemon,
    delete_netns,
    in_netns,
    leftovers_of,
    need_assets,
    new_netns,
    print_diagnostics,
    start_daemon,
    stop_daemon,
    wait_pool_ready,
    wait_until,
)
from tests.vm.suspend_support import state_of, ticks_of

pytestmark = pytest.mark.vm
IMG = "steelcup/busybox"
PORT = 18281
# A counter that lives only in the shell's memory, printed and appended to a file in the root
# (which a checkpointable container holds in its VM's RAM), and a web server on port 80.
PROGRAM = ("mkdir -p /www && echo hello from checkpoint > /www/index.html && httpd -p 80 -h /www"
           " && i=0; while true; do i=$((i+1)); echo tick $i; echo $i >> /count.log; "
           "sleep 0.2; done")


def _pool(daemon: Daemon) -> dict[str, object]:
    pool: dict[str, object] = json.loads(
        daemon.out("system", "info", "-f", "{{json .Steelcup.Pool}}"))
    return pool


def _fetch(netns: str, url: str) -> str:
    probe = ("import urllib.request,time\n"
             "for i in range(100):\n"
             "    try:\n"
             f"        print(urllib.request.urlopen('{url}', timeout=2).read().decode(),"
             " end=''); break\n"
             "    except OSError: time.sleep(0.2)\n")
    return in_netns(netns, "python3", "-c", probe).stdout.decode()


def _resumed_from(daemon: Daemon, cid: str, count: int) -> list[int]:
    """The ticks logged after the first `count` once a few more came."""
    wait_until(lambda: len(ticks_of(daemon, cid)) >= count + 5, "ticks after the restore",
               timeout_s=60)
    return ticks_of(daemon, cid)[count:]


def _saved_runstate(state: Path) -> str:
    """The run state QEMU recorded in a migration stream (its `globalstate` section: the
    length, then the NUL-padded name)."""
    data = state.read_bytes()
    at = data.index(b"globalstate")
    for name in ("paused", "running"):
        if data.find(name.encode() + b"\0", at, at + 256) >= 0:
            return name
    raise AssertionError(f"no run state after globalstate: {data[at:at + 64]!r}")


def test_a_checkpointed_container_runs_on_from_its_checkpoint(tmp_path: Path) -> None:
    need_assets()
    netns = new_netns("ckpt")
    root, sock = tmp_path / "root", tmp_path / "run" / "steelcup.sock"
    daemon = start_daemon(root, sock, netns)
    cid = ""
    try:
        daemon.cli("load", "-i", str(BUSYBOX_TAR), check=True)
        # A ready VM of the warm cache: a template clone whose root share was staged (mounted)
        # before it was handed out; the copy into RAM unmounts it.
        wait_pool_ready(daemon)
        cid = daemon.out("run", "-d", "--checkpointable", "-p", f"127.0.0.1:{PORT}:80", IMG,
                         "sh", "-c", PROGRAM).strip()
        assert _pool(daemon)["CacheHits"] == 1
        info = json.loads(daemon.out("inspect", cid))[0]
        assert info["HostConfig"]["SteelcupCheckpointable"] is True
        address = info["NetworkSettings"]["IPAddress"]
        wait_until(lambda: len(ticks_of(daemon, cid)) >= 10, "ticks", timeout_s=60)
        assert _fetch(netns, f"http://127.0.0.1:{PORT}/") == "hello from checkpoint\n"

        assert daemon.out("checkpoint", "create", cid, "cp1").strip() == "cp1"
        state = state_of(daemon, cid)
        assert state["Running"] is False and state["ExitCode"] == 137
        saved = ticks_of(daemon, cid)
        assert saved == list(range(1, len(saved) + 1))
        listed = daemon.out("checkpoint", "ls", cid)
        assert "cp1" in listed and "CHECKPOINT NAME" in listed
        state_file = root / "containers" / cid / "checkpoints" / "cp1" / "vm.state"
        assert state_file.stat().st_size > 1024 * 1024
        # Saved from a stopped VM: a live save under TCG can miss a guest's write.
        assert _saved_runstate(state_file) == "paused"

        assert daemon.out("start", "--checkpoint", "cp1", cid).strip() == cid
        assert state_of(daemon, cid)["Running"] is True
        # The counter goes on where it stopped: every tick once, none from 1 again.
        after = _resumed_from(daemon, cid, len(saved))
        assert after[:3] == [len(saved) + 1, len(saved) + 2, len(saved) + 3], after
        ticks = ticks_of(daemon, cid)  # once: the counter goes on between two reads
        assert ticks == list(range(1, len(ticks) + 1))
        # The file in the root is intact and went on growing; exec, the same address, the port.
        counted = [int(x) for x in daemon.out("exec", cid, "cat", "/count.log").split()]
        assert counted == list(range(1, len(counted) + 1)) and len(counted) > len(saved)
        assert json.loads(daemon.out("inspect", cid))[0]["NetworkSettings"]["IPAddress"] \
            == address
        assert _fetch(netns, f"http://127.0.0.1:{PORT}/") == "hello from checkpoint\n"
        # Its clock was set on restore (it stood still in the checkpoint).
        guest_now = int(daemon.out("exec", cid, "date", "+%s"))
        host_now = int(subprocess.run(["date", "+%s"], capture_output=True,
                                      check=True).stdout)
        assert abs(guest_now - host_now) <= 5

        # --leave-running: saved, and it runs on.
        pre = len(ticks_of(daemon, cid))
        assert daemon.out("checkpoint", "create", "--leave-running", cid, "cp2").strip() \
            == "cp2"
        assert state_of(daemon, cid)["Running"] is True
        assert _saved_runstate(state_file.parent.parent / "cp2" / "vm.state") == "paused"
        now = len(ticks_of(daemon, cid))
        assert _resumed_from(daemon, cid, now)[0] == now + 1
        daemon.out("exec", cid, "true")
        assert daemon.out("checkpoint", "ls", "-q", cid).split() == ["cp1", "cp2"]

        # A checkpoint survives a daemon restart (this daemon stops what runs when it stops).
        stop_daemon(daemon)
        daemon = start_daemon(root, sock, netns)
        assert state_of(daemon, cid)["Running"] is False
        before = len(ticks_of(daemon, cid))
        daemon.out("start", "--checkpoint", "cp1", cid)
        again = _resumed_from(daemon, cid, before)
        assert again[0] == len(saved) + 1, again  # from cp1's counter, not from 1
        daemon.out("stop", "-t", "1", cid)
        # cp2 was made of a restored VM: it restores as well, from its counter (the log had
        # between `pre` and `now` ticks when cp2 was made; the guest replays what it lacked).
        before = len(ticks_of(daemon, cid))
        daemon.out("start", "--checkpoint", "cp2", cid)
        first = _resumed_from(daemon, cid, before)[0]
        assert pre + 1 <= first <= now + 1, (pre, first, now)
        daemon.out("stop", "-t", "1", cid)
        assert daemon.out("checkpoint", "rm", cid, "cp1", "cp2").split() == ["cp1", "cp2"]
        assert daemon.out("checkpoint", "ls", "-q", cid).strip() == ""
        daemon.out("rm", cid)
        cid = ""
    except BaseException:
        print_diagnostics(root)
        raise
    finally:
        if cid and daemon.proc.poll() is None:
            daemon.cli("rm", "-f", cid)
        stop_daemon(daemon)
        problems = leftovers_of(root, netns=netns)
        delete_netns(netns)
    assert not problems, "after daemon shutdown: " + "\n".join(problems)


def _status(daemon: Daemon, method: str, path: str) -> int:
    result = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", method,
         "--unix-socket", str(daemon.socket), f"http://steelcup/v1.43{path}"],
        capture_output=True, check=True, timeout=120)
    return int(result.stdout)


def test_checkpoint_refusals(daemon: Daemon) -> None:
    plain = daemon.out("run", "-d", IMG, "sleep", "1000").strip()
    ckpt = daemon.out("create", "--checkpointable", IMG, "sleep", "1000").strip()
    try:
        refused = daemon.cli("checkpoint", "create", plain, "cp")
        assert refused.returncode != 0
        assert b"not created with --checkpointable" in refused.stderr
        assert b"9p" in refused.stderr
        assert daemon.out("exec", plain, "true") == ""  # untouched by the refusal
        refused = daemon.cli("run", "--checkpointable", "-v", "ckvol:/data", IMG, "true")
        assert refused.returncode != 0 and b"cannot have volumes" in refused.stderr
        assert b"9p" in refused.stderr
        refused = daemon.cli("checkpoint", "create", ckpt, "cp")
        assert refused.returncode != 0 and b"is not running" in refused.stderr
        # Unknown and impossible names are missing checkpoints: 404.
        assert _status(daemon, "POST", f"/containers/{ckpt}/start?checkpoint=nosuch") == 404
        assert _status(daemon, "POST", f"/containers/{ckpt}/start?checkpoint=..") == 404
        assert _status(daemon, "DELETE", f"/containers/{ckpt}/checkpoints/nosuch") == 404
        refused = daemon.cli("start", "--checkpoint", "nosuch", ckpt)
        assert refused.returncode != 0 and b"no checkpoint" in refused.stderr
        assert state_of(daemon, ckpt)["Status"] == "created"
        daemon.out("start", ckpt)
        refused = daemon.cli("checkpoint", "create", ckpt, "bad/name")
        assert refused.returncode != 0 and b"invalid checkpoint name" in refused.stderr
    finally:
        daemon.cli("rm", "-f", plain, ckpt)


def test_the_docker_cli_checkpoints_a_container(daemon: Daemon) -> None:
    env = {"DOCKER_HOST": f"unix://{daemon.socket}", "PATH": "/usr/local/bin:/usr/bin:/bin",
           "HOME": str(daemon.root)}

    def docker(*args: str) -> str:
        result = subprocess.run(["docker", *args], capture_output=True, env=env, timeout=180)
        assert result.returncode == 0, result.stderr.decode()
        return result.stdout.decode()

    cid = docker("run", "-d", "--name", "dockerckpt", IMG, "sh", "-c",
                 "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done").strip()
    try:
        refused = subprocess.run(["docker", "checkpoint", "create", cid, "c1"],
                                 capture_output=True, env=env, timeout=180)
        assert refused.returncode != 0 and b"--checkpointable" in refused.stderr
        docker("rm", "-f", cid)
        cid = daemon.out("run", "-d", "--checkpointable", "--name", "dockerckpt", IMG, "sh",
                         "-c", "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done"
                         ).strip()
        wait_until(lambda: len(ticks_of(daemon, cid)) >= 5, "ticks", timeout_s=60)
        docker("checkpoint", "create", "dockerckpt", "c1")
        assert "c1" in docker("checkpoint", "ls", "dockerckpt")
        count = len(ticks_of(daemon, cid))
        docker("start", "--checkpoint", "c1", "dockerckpt")
        assert _resumed_from(daemon, cid, count)[0] == count + 1
        docker("checkpoint", "rm", "dockerckpt", "c1")
        assert "c1" not in docker("checkpoint", "ls", "dockerckpt")
    finally:
        subprocess.run(["docker", "rm", "-f", "dockerckpt"], capture_output=True, env=env,
                       timeout=180)


def test_a_directly_booted_vm_is_checkpointed_too(tmp_path: Path) -> None:
    """Without templates a VM's RAM is the machine's own (not the backend object a clone's
    is): its checkpoint restores into a VM with the same."""
    need_assets()
    netns = new_netns("ckd")
    root, sock = tmp_path / "root", tmp_path / "run" / "steelcup.sock"
    daemon = start_daemon(root, sock, netns, ("--no-templates",))
    try:
        daemon.cli("load", "-i", str(BUSYBOX_TAR), check=True)
        cid = daemon.out("run", "-d", "--checkpointable", IMG, "sh", "-c",
                         "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done").strip()
        wait_until(lambda: len(ticks_of(daemon, cid)) >= 5, "ticks", timeout_s=60)
        daemon.out("checkpoint", "create", cid, "cp1")
        count = len(ticks_of(daemon, cid))
        daemon.out("start", "--checkpoint", "cp1", cid)
        assert _resumed_from(daemon, cid, count)[0] == count + 1
        assert _pool(daemon)["DirectBoots"] == 1  # the restore is not a boot
        daemon.out("rm", "-f", cid)
    finally:
        stop_daemon(daemon)
        problems = leftovers_of(root, netns=netns)
        delete_netns(netns)
    assert not problems, "after daemon shutdown: " + "\n".join(problems)


def test_a_restored_container_outlives_a_live_restore_restart(tmp_path: Path) -> None:
    """The VM a checkpoint was restored into is adopted by the next daemon like any other."""
    need_assets()
    netns = new_netns("ckl")
    root, sock = tmp_path / "root", tmp_path / "run" / "steelcup.sock"
    args = ("--live-restore", "--no-templates")
    daemon = start_daemon(root, sock, netns, args)
    cid = ""
    try:
        daemon.cli("load", "-i", str(BUSYBOX_TAR), check=True)
        cid = daemon.out("run", "-d", "--checkpointable", IMG, "sh", "-c",
                         "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done").strip()
        wait_until(lambda: len(ticks_of(daemon, cid)) >= 5, "ticks", timeout_s=60)
        daemon.out("checkpoint", "create", cid, "cp1")
        count = len(ticks_of(daemon, cid))
        daemon.out("start", "--checkpoint", "cp1", cid)
        _resumed_from(daemon, cid, count)
        stop_daemon(daemon)  # --live-restore: the restored VM runs on
        daemon = start_daemon(root, sock, netns, args)
        assert state_of(daemon, cid)["Running"] is True
        ticks = ticks_of(daemon, cid)
        more = _resumed_from(daemon, cid, len(ticks))
        assert ticks + more == list(range(1, len(ticks) + len(more) + 1))
        daemon.out("exec", cid, "true")
        daemon.out("rm", "-f", cid)
        cid = ""
    finally:
        if cid and daemon.proc.poll() is None:
            daemon.cli("rm", "-f", cid)
        stop_daemon(daemon)
        problems = leftovers_of(root, netns=netns)
        delete_netns(netns)
    assert not problems, "after daemon shutdown: " + "\n".join(problems)
