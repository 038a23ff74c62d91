"""Floating IPs (issue 15) with real containers in real VMs, a daemon of the module's own run
with `--fip-pool 198.51.100.16/28 --fip-interface` the daemon side of a veth whose other end is
in an "outside" network namespace (198.51.100.1/24; the daemon's side is 198.51.100.2/24).

From outside, HTTP to the FIP reaches the container only while attached and only on the port
its security group allows; the container's connections to outside come from the FIP (a
python HTTP server outside logs its clients), and from the host's address once detached;
another container cannot reach the FIP directly; a stop and start, and a daemon restart, keep
it attached; a release cuts it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.vm.fip_support import HOST_IP, OUTSIDE_IP, start_fip_daemon, wire_outside
from tests.vm.support import (
    BUSYBOX_TAR,
    Daemon,
    delete_netns,
    in_netns,
    leftovers_of,
    need_assets,
    new_netns,
    stop_daemon,
)

pytestmark = pytest.mark.vm
IMG = "steelcup/busybox"
POOL = "198.51.100.16/28"
DAEMON_IF = "fipd0"
OUTSIDE_IF = "fipo0"
LOG_PORT = 9000  # the outside's HTTP server that logs who connects
SERVE = ("mkdir -p /www && echo hello from web > /www/index.html && httpd -p 81 -h /www && "
         "exec httpd -f -p 80 -h /www")
FETCH = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=4).read())"


def _outside_get(outside: str, url: str) -> bool:
    """One HTTP GET from the outside namespace: whether the page came back."""
    run = in_netns(outside, sys.executable, "-c", FETCH, url, timeout=30)
    return run.returncode == 0 and b"hello from web" in run.stdout


def _until(outside: str, url: str, want: bool, within_s: float = 60) -> None:
    deadline = time.monotonic() + within_s
    while _outside_get(outside, url) != want:
        assert time.monotonic() < deadline, (url, want)


class Setup:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.root, self.sock = tmp / "root", tmp / "run" / "steelcup.sock"
        self.inner = new_netns("fipd")
        self.outside = new_netns("fipo")
        self.daemon: Daemon | None = None
        self.server: subprocess.Popen[bytes] | None = None
        self.server_log = tmp / "clients.log"

    def wire(self) -> None:
        wire_outside(self.inner, self.outside, DAEMON_IF, OUTSIDE_IF)
        with open(self.server_log, "wb") as log:
            self.server = subprocess.Popen(
                ["ip", "netns", "exec", self.outside, sys.executable, "-m", "http.server",
                 str(LOG_PORT), "--bind", OUTSIDE_IP, "--directory", str(self.tmp)],
                stdout=log, stderr=subprocess.STDOUT)

    def start(self) -> Daemon:
        self.daemon = start_fip_daemon(self.root, self.sock, self.inner, POOL, DAEMON_IF)
        return self.daemon

    def clients(self) -> list[str]:
        """The addresses the outside server saw, in order."""
        lines = self.server_log.read_text(errors="replace").splitlines()
        return [line.split()[0] for line in lines if '"GET ' in line]

    def close(self) -> list[str]:
        problems = []
        if self.daemon is not None:
            self.daemon.cli("rm", "-f", "web", "other")
            stop_daemon(self.daemon)
            problems = leftovers_of(self.root, netns=self.inner)
        if self.server is not None:
            self.server.terminate()
            self.server.wait(10)
        delete_netns(self.inner)
        delete_netns(self.outside)
        return problems


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    need_assets()
    s = Setup(tmp_path_factory.mktemp("fip"))
    try:
        s.wire()
        daemon = s.start()
        daemon.cli("load", "-i", str(BUSYBOX_TAR), check=True)
        group = s.tmp / "web.json"
        group.write_text(json.dumps({"rules": [
            {"direction": "ingress", "protocol": "tcp", "ports": 80},
            {"direction": "egress", "protocol": "tcp", "ports": LOG_PORT,
             "remote": f"{OUTSIDE_IP}/32"}]}))
        daemon.out("sg", "create", "-f", str(group), "web")
        yield s
    finally:
        problems = s.close()
        assert not problems, "\n".join(problems)


def _fetch_outside(daemon: Daemon, container: str) -> bool:
    run = daemon.cli("exec", container, "sh", "-c",
                     f"timeout 5 wget -qO- http://{OUTSIDE_IP}:{LOG_PORT}/ >/dev/null",
                     timeout=60)
    return run.returncode == 0


def test_a_fip_carries_traffic_both_ways_while_attached(setup: Setup) -> None:
    assert setup.daemon is not None
    daemon = setup.daemon
    fip = daemon.out("fip", "allocate").strip()
    assert fip.startswith("198.51.100.")
    assert fip in daemon.out("fip", "ls", "-f", "dangling=true")
    daemon.out("run", "-d", "--name", "web", "--sg", "web", "--fip", fip, IMG, "sh", "-c",
               SERVE)
    daemon.out("run", "-d", "--name", "other", IMG, "sleep", "900")
    assert daemon.out("fip", "ls", "-q", "-f", "dangling=true").strip() == ""

    _until(setup.outside, f"http://{fip}/", True)  # every port reaches it, its group says 80
    assert not _outside_get(setup.outside, f"http://{fip}:81/")
    # the pool is not reachable from a container directly, not even an attached FIP
    reach = daemon.cli("exec", "other", "sh", "-c", f"timeout 5 wget -qO- http://{fip}/",
                       timeout=60)
    assert reach.returncode != 0
    # outbound: the outside sees the FIP as the client
    assert _fetch_outside(daemon, "web")
    assert setup.clients()[-1] == fip

    daemon.out("fip", "detach", "web")
    assert not _outside_get(setup.outside, f"http://{fip}/")
    assert _fetch_outside(daemon, "web")
    assert setup.clients()[-1] == HOST_IP  # masqueraded like any container now
    daemon.out("fip", "attach", fip, "web")
    _until(setup.outside, f"http://{fip}/", True, 20)

    daemon.out("stop", "web")
    daemon.out("start", "web")
    _until(setup.outside, f"http://{fip}/", True)  # kept across stop and start


def test_a_fip_survives_a_daemon_restart_and_a_release_cuts_it(setup: Setup) -> None:
    assert setup.daemon is not None
    fip = json.loads(setup.daemon.out("fip", "inspect",
                                      setup.daemon.out("fip", "ls", "-q").strip()))[0]
    stop_daemon(setup.daemon)  # --no-live-restore: the containers stop with it
    daemon = setup.start()
    web = json.loads(daemon.out("inspect", "web"))[0]["Id"]
    listed = json.loads(daemon.out("fip", "inspect", fip["Address"]))[0]
    assert listed["Container"] == web
    daemon.out("start", "web")
    _until(setup.outside, f"http://{fip['Address']}/", True)
    daemon.out("fip", "release", fip["Address"])
    assert not _outside_get(setup.outside, f"http://{fip['Address']}/")
    assert daemon.out("fip", "ls", "-q").strip() == ""
    held = subprocess.run(["ip", "-n", setup.inner, "-o", "addr", "show", "dev", DAEMON_IF],
                          capture_output=True, text=True).stdout
    assert f"{fip['Address']}/32" not in held
