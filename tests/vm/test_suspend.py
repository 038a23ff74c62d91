"""Suspend and resume with real VMs (docs/checkpoints.md, "Suspend"): a suspended container's
QEMU is gone while clients see it running; resume, exec or start runs its VM on from where it
was saved (the counter in its memory goes on); stop ends it unresumed; it stays suspended
across a daemon restart."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.vm.support import (
    BUSYBOX_TAR,
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
from tests.vm.suspend_support import docker_cli_for, qemus_of, state_of, ticks_of

pytestmark = pytest.mark.vm
IMG = "steelcup/busybox"
PORT = 18291
AUTO_PORT = 18292
HOLD_PORT = 18293
PROGRAM = ("mkdir -p /www && echo hello from suspend > /www/index.html && httpd -p 80 -h /www"
           " && i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done")


def _fetch(netns: str, url: str) -> str:
    probe = ("import urllib.request\n"
             f"print(urllib.request.urlopen('{url}', timeout=60).read().decode(), end='')\n")
    got = in_netns(netns, "python3", "-c", probe, timeout=90)
    # a failure says why (the client's error), not just that nothing came
    return got.stdout.decode() if got.returncode == 0 else f"failed: {got.stderr.decode()}"


def test_a_suspended_container_runs_on_when_resumed(tmp_path: Path) -> None:
    need_assets()
    netns = new_netns("susp")
    root, sock = tmp_path / "root", tmp_path / "run" / "steelcup.sock"
    daemon = start_daemon(root, sock, netns)
    try:
        daemon.cli("load", "-i", str(BUSYBOX_TAR), check=True)
        wait_pool_ready(daemon)
        plain = daemon.out("run", "-d", IMG, "sleep", "1000").strip()
        refused = daemon.cli("suspend", plain)
        assert refused.returncode != 0 and b"--checkpointable" in refused.stderr
        daemon.out("rm", "-f", plain)

        cid = daemon.out("run", "-d", "--checkpointable", "--name", "sleepy", "-p",
                         f"127.0.0.1:{PORT}:80", IMG, "sh", "-c", PROGRAM).strip()
        wait_until(lambda: len(ticks_of(daemon, cid)) >= 5, "ticks", timeout_s=60)
        address = json.loads(daemon.out("inspect", cid))[0]["NetworkSettings"]["IPAddress"]

        daemon.out("suspend", "sleepy")
        state = state_of(daemon, cid)
        assert state["Status"] == "running" and state["Running"] is True
        assert state["SteelcupSuspended"] is True
        assert "(suspended)" in daemon.out("ps")
        assert "suspend" not in daemon.out("checkpoint", "ls", cid)  # not a user's checkpoint
        saved = ticks_of(daemon, cid)
        assert saved == list(range(1, len(saved) + 1))

        daemon.out("resume", "sleepy")
        assert state_of(daemon, cid)["SteelcupSuspended"] is False
        wait_until(lambda: len(ticks_of(daemon, cid)) >= len(saved) + 3, "ticks after resume",
                   timeout_s=60)
        assert ticks_of(daemon, cid)[len(saved)] == len(saved) + 1  # on from its memory
        assert qemus_of(cid) == 1  # a QEMU of its own again
        assert json.loads(daemon.out("inspect", cid))[0]["NetworkSettings"]["IPAddress"] \
            == address
        assert _fetch(netns, f"http://127.0.0.1:{PORT}/") == "hello from suspend\n"

        # exec of a suspended container resumes it first.
        daemon.out("suspend", cid)
        assert qemus_of(cid) == 0  # its QEMU is gone
        counted = len(ticks_of(daemon, cid))
        assert daemon.out("exec", cid, "echo", "awake").strip() == "awake"
        assert state_of(daemon, cid)["SteelcupSuspended"] is False
        wait_until(lambda: len(ticks_of(daemon, cid)) > counted, "ticks after exec", timeout_s=60)
        assert ticks_of(daemon, cid)[counted] == counted + 1

        # A suspended container stays suspended across a daemon restart, and resumes after.
        daemon.out("suspend", cid)
        counted = len(ticks_of(daemon, cid))
        stop_daemon(daemon)
        daemon = start_daemon(root, sock, netns)
        assert state_of(daemon, cid)["SteelcupSuspended"] is True
        daemon.out("start", cid)  # start of a suspended container is a resume
        wait_until(lambda: len(ticks_of(daemon, cid)) > counted, "ticks after restart",
                   timeout_s=60)
        assert ticks_of(daemon, cid)[counted] == counted + 1

        # stop ends a suspended container without running it on.
        daemon.out("suspend", cid)
        daemon.out("stop", cid)
        state = state_of(daemon, cid)
        assert state["Running"] is False and state["SteelcupSuspended"] is False
        assert qemus_of(cid) == 0  # not resumed to be stopped
        assert not (root / "containers" / cid / "suspended").exists()
        daemon.out("rm", cid)
    finally:
        stop_daemon(daemon)
        delete_netns(netns)
    assert leftovers_of(root, netns=netns) == []


def test_an_idle_container_is_suspended_and_a_connection_resumes_it(tmp_path: Path) -> None:
    need_assets()
    netns = new_netns("autosusp")
    root, sock = tmp_path / "root", tmp_path / "run" / "steelcup.sock"
    daemon = start_daemon(root, sock, netns)
    try:
        daemon.cli("load", "-i", str(BUSYBOX_TAR), check=True)
        wait_pool_ready(daemon)
        refused = daemon.cli("run", "-d", "--auto-suspend", "5s", IMG, "true")
        assert refused.returncode != 0 and b"--checkpointable" in refused.stderr
        cid = daemon.out("run", "-d", "--checkpointable", "--auto-suspend", "4s", "-p",
                         f"127.0.0.1:{AUTO_PORT}:80", IMG, "sh", "-c", PROGRAM).strip()
        assert json.loads(daemon.out("inspect", cid))[0]["HostConfig"][
            "SteelcupAutoSuspend"] == 4
        assert _fetch(netns, f"http://127.0.0.1:{AUTO_PORT}/") == "hello from suspend\n"
        wait_until(lambda: state_of(daemon, cid)["SteelcupSuspended"] is True,
                   "the idle container suspended", timeout_s=120)
        counted = len(ticks_of(daemon, cid))
        # A client's request to the suspended container is held while it resumes, then
        # answered: no refusal, no error.
        assert _fetch(netns, f"http://127.0.0.1:{AUTO_PORT}/") == "hello from suspend\n"
        assert state_of(daemon, cid)["SteelcupSuspended"] is False
        wait_until(lambda: len(ticks_of(daemon, cid)) > counted, "ticks after the wake",
                   timeout_s=60)
        assert ticks_of(daemon, cid)[counted] == counted + 1  # on from where it slept
        # Idle again: suspended again, and woken again.
        wait_until(lambda: state_of(daemon, cid)["SteelcupSuspended"] is True,
                   "suspended again", timeout_s=120)
        assert _fetch(netns, f"http://127.0.0.1:{AUTO_PORT}/") == "hello from suspend\n"
        daemon.out("rm", "-f", cid)
    except BaseException:
        print_diagnostics(root)
        raise
    finally:
        stop_daemon(daemon)
        delete_netns(netns)
    assert leftovers_of(root, netns=netns) == []


# A request on a new connection every 25 ms for 5 s, to each address in turn; a line per
# request: "ok", or what went wrong.
_STEADY_CLIENT = """
import sys, threading, time, urllib.request
urls = sys.argv[1:]
results = []
def get(i):
    try:
        body = urllib.request.urlopen(urls[i % len(urls)], timeout=90).read().decode()
        results.append("ok" if body == "hello from suspend\\n" else f"bad {i}: {body!r}")
    except Exception as exc:
        results.append(f"error {i} ({urls[i % len(urls)]}): {exc!r}")
threads = []
end = time.monotonic() + 5
while time.monotonic() < end:
    threads.append(threading.Thread(target=get, args=(len(threads),)))
    threads[-1].start()
    time.sleep(0.025)
for t in threads:
    t.join()
print("\\n".join(results))
"""


def test_requests_during_a_suspend_are_held_and_answered(tmp_path: Path) -> None:
    """Clients keep making requests to an --auto-suspend container while it is suspended by
    hand, through its loopback proxy and through DNAT: those during the save are held by its
    wake proxies (bound before its ports were unpublished), which resume it after, and every
    request is answered; none is refused or lost with the VM."""
    need_assets()
    netns = new_netns("susphold")
    root, sock = tmp_path / "root", tmp_path / "run" / "steelcup.sock"
    daemon = start_daemon(root, sock, netns)
    try:
        daemon.cli("load", "-i", str(BUSYBOX_TAR), check=True)
        wait_pool_ready(daemon)
        cid = daemon.out("run", "-d", "--checkpointable", "--auto-suspend", "1h", "-p",
                         f"{HOLD_PORT}:80", IMG, "sh", "-c", PROGRAM).strip()
        gateway = json.loads(daemon.out("inspect", cid))[0]["NetworkSettings"]["Gateway"]
        urls = [f"http://127.0.0.1:{HOLD_PORT}/", f"http://{gateway}:{HOLD_PORT}/"]
        for url in urls:
            assert _fetch(netns, url) == "hello from suspend\n"
        client = subprocess.Popen(["ip", "netns", "exec", netns, "python3", "-c",
                                   _STEADY_CLIENT, *urls], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        try:
            time.sleep(0.5)  # some are answered before the suspend
            daemon.out("suspend", cid)
            out, err = client.communicate(timeout=240)
        finally:
            if client.poll() is None:
                client.kill()
        results = out.decode().splitlines()
        assert client.returncode == 0, err.decode()
        assert len(results) >= 100, results
        failed = [r for r in results if r != "ok"]
        assert failed == [], failed
        # It was suspended, and requests that came meanwhile woke it.
        events = [json.loads(line)["Action"] for line in daemon.out(
            "events", "--since", "0", "--until", f"{time.time() + 1:.3f}", "--filter",
            f"container={cid}", "--format", "json").splitlines()]
        assert "suspend" in events and "resume" in events, events
        assert state_of(daemon, cid)["SteelcupSuspended"] is False
        daemon.out("rm", "-f", cid)
    except BaseException:
        print_diagnostics(root)
        raise
    finally:
        stop_daemon(daemon)
        delete_netns(netns)
    assert leftovers_of(root, netns=netns) == []


def test_docker_clients_take_a_suspended_container_as_running(tmp_path: Path) -> None:
    import docker  # docker-py

    need_assets()
    netns = new_netns("suspdock")
    root, sock = tmp_path / "root", tmp_path / "run" / "steelcup.sock"
    daemon = start_daemon(root, sock, netns)
    docker_cli = docker_cli_for(sock, root)

    client = docker.DockerClient(base_url=f"unix://{sock}")
    try:
        daemon.cli("load", "-i", str(BUSYBOX_TAR), check=True)
        wait_pool_ready(daemon)
        cid = daemon.out("run", "-d", "--checkpointable", "--name", "napper", IMG, "sh", "-c",
                         PROGRAM).strip()
        wait_until(lambda: len(ticks_of(daemon, cid)) >= 3, "ticks", timeout_s=60)
        daemon.out("suspend", cid)
        assert "(suspended)" in docker_cli("ps")
        assert docker_cli("inspect", "-f", "{{.State.Running}} {{.State.Status}}",
                          "napper").split() == ["true", "running"]
        assert client.containers.get(cid).status == "running"
        assert [c.id for c in client.containers.list()] == [cid]
        assert docker_cli("exec", "napper", "echo", "hi").strip() == "hi"  # resumed first
        assert state_of(daemon, cid)["SteelcupSuspended"] is False
        daemon.out("suspend", cid)
        client.containers.get(cid).stop(timeout=1)  # ends it unresumed
        assert client.containers.get(cid).status == "exited"
        assert qemus_of(cid) == 0
        docker_cli("rm", "napper")
    finally:
        client.close()
        stop_daemon(daemon)
        delete_netns(netns)
    assert leftovers_of(root, netns=netns) == []
