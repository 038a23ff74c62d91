"""Live restore with real VMs: containers outlive a daemon stopped with --live-restore, and the
next daemon re-attaches them (output, exit codes, exec, stop, published ports).

The daemons here run in a network namespace of the test's own, like the session daemon; each
`ip netns exec` gives its daemon a new mount namespace, which the QEMUs of the first keep
alive (their root filesystems stay mounted there).
"""

from __future__ import annotations

import json
import operator
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from steelcup.daemon import vm_run_dir
from tests.vm.support import (
    BUSYBOX_TAR,
    Daemon,
    delete_netns,
    in_netns,
    leftovers_of,
    need_assets,
    new_netns,
    our_qemus,
    start_daemon,
    stop_daemon,
    wait_until,
)

pytestmark = pytest.mark.vm
IMG = "steelcup/busybox"
PORT = 18181


def _restore_record(root: Path, cid: str) -> dict[str, object]:
    data: dict[str, object] = json.loads(
        (root / "containers" / cid / "restore.json").read_text())
    return data


def _alive(pid: int) -> bool:
    """Running, not a zombie (a QEMU the first daemon spawned is reaped by whoever inherited
    it, maybe late)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _fetch(netns: str, url: str) -> str:
    probe = ("import urllib.request,time\n"
             "for i in range(100):\n"
             "    try:\n"
             f"        print(urllib.request.urlopen('{url}', timeout=2).read().decode(),"
             " end=''); break\n"
             "    except OSError: time.sleep(0.2)\n")
    return in_netns(netns, "python3", "-c", probe).stdout.decode()


def _state(daemon: Daemon, cid: str) -> dict[str, object]:
    state: dict[str, object] = json.loads(daemon.out("inspect", cid))[0]["State"]
    return state


def test_containers_outlive_a_live_restore_restart(tmp_path: Path) -> None:
    need_assets()
    netns = new_netns("lr")
    root, sock = tmp_path / "root", tmp_path / "run" / "steelcup.sock"
    args = ("--live-restore",)  # the default: said only because test daemons say --no-...
    daemon = start_daemon(root, sock, netns, args)
    cids: list[str] = []
    try:
        daemon.cli("load", "-i", str(BUSYBOX_TAR), check=True)
        # A counter across the restart: every line once, in order, in the log. It counts
        # until told to stop (a fixed count could end before a loaded host's restart does).
        counter = daemon.out(
            "run", "-d", IMG, "sh", "-c",
            "i=0; while [ ! -e /stop ]; do echo line $i; i=$((i+1)); sleep 0.05; done; "
            "exit 3").strip()
        web = daemon.out(
            "run", "-d", "-p", f"127.0.0.1:{PORT}:80", IMG, "sh", "-c",
            "mkdir -p /www && echo hello from web > /www/index.html && "
            "exec httpd -f -p 80 -h /www").strip()
        doomed = daemon.out("run", "-d", IMG, "sleep", "1000").strip()
        paused = daemon.out("run", "-d", IMG, "sh", "-c",
                            "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done"
                            ).strip()
        cids += [counter, web, doomed, paused]
        wait_until(lambda: b"tick 3" in daemon.cli("logs", paused).stdout, "ticks")
        daemon.out("pause", paused)
        assert _fetch(netns, f"http://127.0.0.1:{PORT}/") == "hello from web\n"
        wait_until(lambda: b"line 20" in daemon.cli("logs", counter).stdout, "counter output")
        # Exits while no daemon runs: its status and last words wait in the guest. Started
        # last, right before the stop (on a loaded host the steps above took over 5 s).
        early = daemon.out("run", "-d", IMG, "sh", "-c",
                           "echo started; sleep 5; echo bye; exit 5").strip()
        cids.append(early)

        stopped_at = time.monotonic()
        stop_daemon(daemon)
        assert daemon.proc.returncode == 0, daemon.log.read_text()[-3000:]
        records = {cid: _restore_record(root, cid)
                   for cid in (counter, web, doomed, early, paused)}
        pids = {cid: int(rec["vm"]["pid"]) for cid, rec in records.items()}  # type: ignore[index]
        assert all(_alive(pid) for pid in pids.values()), "a VM died with the daemon"
        # No daemon runs: the port keeper still serves the loopback port.
        assert _fetch(netns, f"http://127.0.0.1:{PORT}/") == "hello from web\n"
        os.kill(pids[doomed], signal.SIGKILL)  # a VM that dies while no daemon runs
        time.sleep(6)  # `early` exits meanwhile; `counter` keeps printing

        daemon = start_daemon(root, sock, netns, args)
        daemon.out("ps")
        assert daemon.out("system", "info", "-f", "{{json .LiveRestoreEnabled}}").strip() == "true"
        gap_s = time.monotonic() - stopped_at - 6
        print(f"\nlive restore: API back {gap_s:.2f} s after the stop began (4 containers, "
              "minus the 6 s the test waited)")
        # The records of the re-attached stay (a kill -9 of this daemon would need them).
        assert not (root / "containers" / doomed / "restore.json").exists()
        assert (root / "containers" / web / "restore.json").exists()

        assert _state(daemon, web)["Running"] is True
        assert _state(daemon, counter)["Running"] is True
        assert _state(daemon, counter)["Pid"] == 1
        # A paused container is kept paused; it ticks on once unpaused, no tick lost or twice.
        paused_state = _state(daemon, paused)
        assert paused_state["Status"] == "paused", (paused_state, daemon.log.read_text()[-4000:])
        daemon.out("unpause", paused)
        ticks = len(daemon.out("logs", paused).splitlines())
        wait_until(lambda: len(daemon.out("logs", paused).splitlines()) > ticks + 3,
                   "ticks after unpause")
        logged = _counted(daemon.out("logs", paused).splitlines())
        assert logged == list(range(len(logged))), "a gap or a duplicate in the log"
        daemon.out("rm", "-f", paused)
        doomed_state = _state(daemon, doomed)
        assert doomed_state["Running"] is False and doomed_state["ExitCode"] == 255
        assert daemon.out("wait", early).strip() == "5"
        assert daemon.out("logs", early) == "started\nbye\n"
        assert not (root / "containers" / early / "restore.json").exists()

        # Output produced while no daemon ran is in the log, nothing twice, nothing missing.
        # Detached: the counter may see /stop and end the container before `touch` itself
        # exits, and an exec still running when its container ends is killed (137, as docker's).
        daemon.out("exec", "-d", counter, "touch", "/stop")
        assert daemon.out("wait", counter).strip() == "3"
        lines = daemon.out("logs", counter).splitlines()
        assert len(lines) > 20 and lines == [f"line {i}" for i in range(len(lines))]

        # A second restart: a re-attached VM is left running and re-attached again.
        stop_daemon(daemon)
        assert daemon.proc.returncode == 0, daemon.log.read_text()[-3000:]
        assert _alive(pids[web])
        daemon = start_daemon(root, sock, netns, args)
        assert _state(daemon, web)["Running"] is True

        # The re-attached web container: its port, exec, stop.
        assert _fetch(netns, f"http://127.0.0.1:{PORT}/") == "hello from web\n"
        assert daemon.out("exec", web, "cat", "/www/index.html") == "hello from web\n"
        daemon.out("stop", "-t", "1", web)
        assert _state(daemon, web)["ExitCode"] == 137
        assert all(not _alive(pid) for pid in pids.values())
        for cid in (counter, web, doomed, early):
            daemon.out("rm", cid)
        cids = []
    finally:
        if daemon.proc.poll() is None and cids:  # a live-restore stop would keep them
            daemon.cli("rm", "-f", *cids)
        stop_daemon(daemon)
        problems = leftovers_of(root, netns=netns)
        delete_netns(netns)
    assert not problems, "after daemon shutdown: " + "\n".join(problems)


def _counted(lines: list[str]) -> list[int]:
    return [int(line.split()[1]) for line in lines]


def test_containers_outlive_a_killed_live_restore_daemon(tmp_path: Path) -> None:
    """kill -9 of a --live-restore daemon: each running container's restore record was written
    at its start, so the next daemon re-attaches it as after a graceful stop; its output is
    counted from the log (nothing lost or doubled); a container that exited meanwhile gets its
    real exit code; a container with a volume is kept with its volume mounted; VMs without a
    record (the warm cache's) are swept, leaving nothing behind (docs/live-restore.md)."""
    need_assets()
    netns = new_netns("lrk")
    root, sock = tmp_path / "root", tmp_path / "run" / "steelcup.sock"
    args = ("--live-restore",)
    daemon = start_daemon(root, sock, netns, args)
    cids: list[str] = []
    try:
        daemon.cli("load", "-i", str(BUSYBOX_TAR), check=True)
        # Serves a page and prints until stopped; SIGTERM ends it with 7 (its trap: a code
        # only it gives).
        counter = daemon.out(
            "run", "-d", "-p", f"127.0.0.1:{PORT + 1}:80", IMG, "sh", "-c",
            "mkdir -p /www && echo hello from counter > /www/index.html && "
            "httpd -p 80 -h /www && "
            "trap 'exit 7' TERM; i=0; while true; do echo line $i; i=$((i+1)); "
            "sleep 0.02; done").strip()
        with_volume = daemon.out("run", "-d", "-v", "/data", IMG, "sh", "-c",
                                 "echo before > /data/f; exec sleep 1000").strip()
        early = daemon.out("run", "-d", IMG, "sh", "-c",
                           "echo started; sleep 4; echo bye; exit 5").strip()
        cids += [counter, early, with_volume]
        # (`early` first: it ends 4 s after its start, its record with it.)
        for cid in (early, counter, with_volume):
            assert (root / "containers" / cid / "restore.json").exists()
        wait_until(lambda: daemon.out("exec", with_volume, "cat", "/data/f") == "before\n",
                   "the volume written")
        wait_until(lambda: b"line 50" in daemon.cli("logs", counter).stdout, "counter output")
        assert _fetch(netns, f"http://127.0.0.1:{PORT + 1}/") == "hello from counter\n"
        before = set(our_qemus(str(vm_run_dir(root))))
        record = _restore_record(root, counter)
        kept_pid = int(record["vm"]["pid"])  # type: ignore[index]
        vol_pid = int(_restore_record(root, with_volume)["vm"]["pid"])  # type: ignore[index]
        kept_taps = set(record["taps"]) | set(  # type: ignore[call-overload]
            _restore_record(root, with_volume)["taps"])  # type: ignore[call-overload]
        assert kept_taps

        daemon.proc.kill()  # no graceful stop: mid-output, mid-everything
        daemon.proc.wait()
        assert _alive(kept_pid), "with --live-restore VMs outlive a crash"
        assert _fetch(netns, f"http://127.0.0.1:{PORT + 1}/") == "hello from counter\n"
        time.sleep(6)  # `early` exits meanwhile; `counter` keeps printing into the guest

        daemon = start_daemon(root, sock, netns, args)
        assert _state(daemon, counter)["Running"] is True
        assert daemon.out("wait", early).strip() == "5"
        assert daemon.out("logs", early) == "started\nbye\n"
        # A container with a volume is kept too: its volume stayed mounted for it.
        assert _state(daemon, with_volume)["Running"] is True
        assert daemon.out("exec", with_volume, "sh", "-c",
                          "echo after >> /data/f; cat /data/f") == "before\nafter\n"
        # Every VM of the killed daemon but the re-attached ones is gone (swept or exited).
        survivors = {q for q in before if _alive(int(q.split(":")[0]))}
        assert {int(q.split(":")[0]) for q in survivors} == {kept_pid, vol_pid}, survivors
        assert _fetch(netns, f"http://127.0.0.1:{PORT + 1}/") == "hello from counter\n"
        # Of the killed daemon's taps only the re-attached container's are left.
        links = in_netns(netns, "ip", "-o", "link", "show").stdout.decode()
        taps = {line.split(":")[1].strip().split("@")[0] for line in links.splitlines()
                if line.split(":")[1].strip().startswith(("sct", "scw"))}
        assert kept_taps <= taps and not {t for t in taps - kept_taps if t.startswith("sct")}

        # Output from before the kill, from while no daemon ran, and from now: each line once.
        logged = _counted(daemon.out("logs", counter).splitlines())
        wait_until(lambda: len(daemon.out("logs", counter).splitlines()) > len(logged) + 20,
                   "counter output after the re-attach")
        logged = _counted(daemon.out("logs", counter).splitlines())
        assert logged == list(range(len(logged))), "a gap or a duplicate in the log"
        assert daemon.out("exec", counter, "echo", "in the guest") == "in the guest\n"

        daemon.out("stop", "-t", "5", counter)
        assert _state(daemon, counter)["ExitCode"] == 7
        assert not _alive(kept_pid)
        logged = _counted(daemon.out("logs", counter).splitlines())
        assert logged == list(range(len(logged)))
        daemon.out("stop", "-t", "1", with_volume)
        for cid in cids:
            assert not (root / "containers" / cid / "restore.json").exists()
            daemon.out("rm", "-v", cid)
    finally:
        if daemon.proc.poll() is None and cids:
            daemon.cli("rm", "-f", *cids)
        stop_daemon(daemon)
        problems = leftovers_of(root, netns=netns)
        delete_netns(netns)
    assert not problems, "after daemon shutdown: " + "\n".join(problems)


# How long after the order the daemon is killed: inside the request, the VM's boot, the
# guest's start of the process, and after the run has begun.
RUN_KILL_POINTS_S = (0.15, 0.5, 1.0, 2.5)
RM_KILL_POINTS_S = (0.05, 0.3, 1.0)


def test_a_daemon_killed_at_any_point_of_run_or_rm_leaves_no_orphans(tmp_path: Path) -> None:
    """kill -9 of the daemon at several points of `run -d -p` and of `rm -f`: once the next
    daemon has started, each container is either running with a live VM (re-attached) or not
    running, with no VM; removing them all leaves no VM, tap, mount, NAT rule, port keeper or
    run-dir file behind (issue 11's crash points; the delays stand for them, since each
    outcome must leave nothing, whichever point the kill hit)."""
    need_assets()
    netns = new_netns("lrc")
    root, sock = tmp_path / "root", tmp_path / "run" / "steelcup.sock"
    args = ("--live-restore", "--pool-size", "0", "--no-templates")  # no VM but the runs'

    daemon = start_daemon(root, sock, netns, args)
    try:
        daemon.cli("load", "-i", str(BUSYBOX_TAR), check=True)
        cli_argv = [*(["ip", "netns", "exec", netns]), sys.executable, "-m", "steelcup",
                    "-H", f"unix://{sock}"]

        def killed_during(*order: str, after_s: float) -> None:
            nonlocal daemon
            client = subprocess.Popen([*cli_argv, *order], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
            time.sleep(after_s)
            daemon.proc.kill()
            daemon.proc.wait()
            client.wait(timeout=30)
            daemon = start_daemon(root, sock, netns, args)
            _consistent(daemon, root)

        for i, after_s in enumerate(RUN_KILL_POINTS_S):
            killed_during("run", "-d", "--name", f"run{i}", "-p", f"127.0.0.1:{PORT + 10 + i}:80",
                          IMG, "sleep", "1000", after_s=after_s)
        victims = [daemon.out("run", "-d", "-p", f"{PORT + 20 + i}:80", IMG, "sleep",
                              "1000").strip() for i in range(len(RM_KILL_POINTS_S))]
        for victim, after_s in zip(victims, RM_KILL_POINTS_S, strict=True):
            killed_during("rm", "-f", victim, after_s=after_s)

        everything = daemon.out("ps", "-aq").split()
        if everything:
            daemon.out("rm", "-f", *everything)
        assert our_qemus(str(vm_run_dir(root))) == []
        rules = in_netns(netns, "nft", "list", "table", "inet", "steelcup").stdout.decode()
        assert "dnat ip to" not in rules, rules
    finally:
        stop_daemon(daemon)
        problems = leftovers_of(root, netns=netns)
        delete_netns(netns)
    assert not problems, "after daemon shutdown: " + "\n".join(problems)


def _consistent(daemon: Daemon, root: Path) -> None:
    """Each container's state matches its VM: running ones have a live QEMU, and (once the
    next daemon's sweep has taken effect) no QEMU runs that is not a running container's."""
    def vms_and_kept() -> tuple[set[int], set[int]]:
        running = daemon.out("ps", "-q", "--no-trunc").split()
        vms = {int(q.split(":")[0]) for q in our_qemus(str(vm_run_dir(root)))
               if _alive(int(q.split(":")[0]))}
        kept = {int(_restore_record(root, cid)["vm"]["pid"])  # type: ignore[index]
                for cid in running}
        return vms, kept

    wait_until(lambda: operator.eq(*vms_and_kept()), "QEMUs = running containers' VMs",
               timeout_s=10)
    vms, kept = vms_and_kept()
    assert all(_alive(pid) for pid in kept)
