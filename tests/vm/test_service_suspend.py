"""A service with --auto-suspend, with real VMs (docs/services.md, "Auto-suspend"): its idle
replica is suspended (its QEMU gone) and keeps its task; a request to the service's published
port, or to its virtual IP from a container on its network, is held while the replica
resumes, then answered; the service still has its one task, not a replacement; removed
while asleep, it is not woken. The docker
CLI asks for it with the service labels steelcup.checkpointable / steelcup.auto-suspend."""

from __future__ import annotations

import json
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
    start_daemon,
    stop_daemon,
    wait_pool_ready,
    wait_until,
)
from tests.vm.suspend_support import docker_cli_for, qemus_of

pytestmark = pytest.mark.vm
IMG = "steelcup/busybox"
PORT = 18293
SERVER = "mkdir -p /www && echo hello from a service > /www/index.html && httpd -f -p 80 -h /www"
PAGE = "hello from a service\n"


def _fetch(netns: str, url: str) -> str:
    probe = ("import urllib.request\n"
             f"print(urllib.request.urlopen('{url}', timeout=90).read().decode(), end='')\n")
    return in_netns(netns, "python3", "-c", probe, timeout=120).stdout.decode()


def _tasks(daemon: Daemon) -> list[str]:
    """The ids of the service's tasks, of every state (a replacement would add one)."""
    return sorted(daemon.out("service", "ps", "-q", "--no-trunc", "web").split())


def _replica(daemon: Daemon) -> str:
    [cid] = daemon.out("ps", "-aq", "--no-trunc").split()
    return cid


def _suspended(daemon: Daemon, cid: str) -> bool:
    return bool(json.loads(daemon.out("inspect", cid))[0]["State"]["SteelcupSuspended"])


def test_a_sleeping_service_wakes_on_a_connection(tmp_path: Path) -> None:
    need_assets()
    netns = new_netns("svcsusp")
    root, sock = tmp_path / "root", tmp_path / "run" / "steelcup.sock"
    daemon = start_daemon(root, sock, netns)
    try:
        daemon.cli("load", "-i", str(BUSYBOX_TAR), check=True)
        wait_pool_ready(daemon)
        daemon.out("swarm", "init")
        refused = daemon.cli("service", "create", "-d", "--name", "bad", "--auto-suspend",
                             "2s", IMG, "true")
        assert refused.returncode != 0 and b"--checkpointable" in refused.stderr
        # A secret: copied into the replica's RAM (no 9p share may stay mounted in a VM
        # that is to be saved), and there after each resume.
        (tmp_path / "pw").write_text("s3cret\n")
        daemon.out("secret", "create", "dbpass", str(tmp_path / "pw"))
        daemon.out("service", "create", "-d", "--name", "web", "--checkpointable",
                   "--auto-suspend", "2s", "--secret", "dbpass", "-p", f"{PORT}:80", IMG,
                   "sh", "-c", SERVER)
        wait_until(lambda: len(daemon.out("ps", "-q").split()) == 1, "the replica runs",
                   timeout_s=120)
        cid = _replica(daemon)
        tasks = _tasks(daemon)
        mounts = daemon.out("exec", cid, "cat", "/proc/mounts").splitlines()
        assert not [m for m in mounts if m.split()[2] == "9p"], mounts
        [secrets] = [m.split() for m in mounts if m.split()[1] == "/run/secrets"]
        assert secrets[2] == "tmpfs" and secrets[3].startswith("ro,"), secrets
        assert len(tasks) == 1
        spec = json.loads(daemon.out("service", "inspect", "web"))[0]
        vip = spec["Endpoint"]["VirtualIPs"][0]["Addr"].split("/")[0]

        wait_until(lambda: _suspended(daemon, cid), "the idle replica suspended",
                   timeout_s=180)
        assert qemus_of(cid) == 0  # its VM is on disk, its QEMU gone
        assert _tasks(daemon) == tasks  # a suspend is no failure: not replaced
        # The request is held while the replica resumes, then answered.
        assert _fetch(netns, f"http://127.0.0.1:{PORT}/") == PAGE
        assert not _suspended(daemon, cid)
        assert qemus_of(cid) == 1
        assert _tasks(daemon) == tasks and _replica(daemon) == cid
        assert daemon.out("exec", cid, "cat", "/run/secrets/dbpass") == "s3cret\n"
        written = daemon.cli("exec", cid, "sh", "-c", "echo x > /run/secrets/dbpass")
        assert written.returncode != 0 and b"Read-only" in written.stderr

        # Idle again: suspended again; a container on the service's network reaches it by
        # its name (its virtual IP), held as well.
        wait_until(lambda: _suspended(daemon, cid), "suspended again", timeout_s=180)
        assert daemon.out("run", "--rm", IMG, "sh", "-c", "wget -qO- http://web/") == PAGE
        assert not _suspended(daemon, cid)
        assert _tasks(daemon) == tasks
        # and the host reaches its VIP straight, once more asleep
        wait_until(lambda: _suspended(daemon, cid), "suspended a third time", timeout_s=180)
        assert _fetch(netns, f"http://{vip}/") == PAGE
        assert _tasks(daemon) == tasks

        # A sleeping service is removed without being woken.
        wait_until(lambda: _suspended(daemon, cid), "suspended a fourth time", timeout_s=180)
        daemon.out("service", "rm", "web")
        wait_until(lambda: not daemon.out("ps", "-aq").split(), "the replica removed",
                   timeout_s=60)
        assert qemus_of(cid) == 0
        # its saved VM goes with it (the directory just after the record: gone for clients
        # first, runtime.Runtime._remove)
        wait_until(lambda: not (root / "containers" / cid).exists(), "its directory removed",
                   timeout_s=30)
    finally:
        stop_daemon(daemon)
        delete_netns(netns)
    assert leftovers_of(root, netns=netns) == []


def test_the_docker_cli_asks_for_it_with_service_labels(tmp_path: Path) -> None:
    need_assets()
    netns = new_netns("svcsuspd")
    root, sock = tmp_path / "root", tmp_path / "run" / "steelcup.sock"
    daemon = start_daemon(root, sock, netns)
    docker_cli = docker_cli_for(sock, root)

    try:
        daemon.cli("load", "-i", str(BUSYBOX_TAR), check=True)
        wait_pool_ready(daemon)
        docker_cli("swarm", "init")
        docker_cli("service", "create", "-d", "--name", "web", "--label",
                   "steelcup.checkpointable=true", "--label", "steelcup.auto-suspend=2s",
                   "-p", f"{PORT + 1}:80", IMG, "sh", "-c", SERVER)
        wait_until(lambda: len(daemon.out("ps", "-q").split()) == 1, "the replica runs",
                   timeout_s=120)
        cid = _replica(daemon)
        host = json.loads(daemon.out("inspect", cid))[0]["HostConfig"]
        assert host["SteelcupCheckpointable"] is True and host["SteelcupAutoSuspend"] == 2
        wait_until(lambda: _suspended(daemon, cid), "the idle replica suspended",
                   timeout_s=180)
        assert _fetch(netns, f"http://127.0.0.1:{PORT + 1}/") == PAGE
        assert docker_cli("service", "ls", "--format", "{{.Replicas}}").strip() == "1/1"
        docker_cli("service", "rm", "web")
        wait_until(lambda: not daemon.out("ps", "-aq").split(), "the replica removed",
                   timeout_s=60)
    finally:
        stop_daemon(daemon)
        delete_netns(netns)
    assert leftovers_of(root, netns=netns) == []
