"""A floating IP attached to a service (issue 15), with a 2-replica service of real VMs: a
daemon of the module's own run with `--fip-pool 198.51.100.32/28 --fip-interface` the daemon
side of a veth whose other end is in an "outside" network namespace (198.51.100.1/24).

From outside, HTTP to the FIP is answered by both replicas (each answers its hostname); the
replicas' security groups still apply (a group allowing port 80 only closes port 81 through the
FIP); a daemon restart keeps the FIP on the service, reached again once its replicas are back;
scaled down to one replica the FIP still reaches the service, through the one left; the
service's removal detaches the FIP (still allocated) and the FIP answers nothing.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.vm.fip_support import start_fip_daemon, wire_outside
from tests.vm.support import (
    BUSYBOX_TAR,
    Daemon,
    delete_netns,
    in_netns,
    leftovers_of,
    need_assets,
    new_netns,
    stop_daemon,
    wait_until,
)

pytestmark = pytest.mark.vm
IMG = "steelcup/busybox"
POOL = "198.51.100.32/28"
DAEMON_IF = "fipsd0"
OUTSIDE_IF = "fipso0"
# each replica answers its hostname (its task's container) on 80 and 81
SERVE = ("mkdir -p /www && hostname > /www/index.html && httpd -p 81 -h /www && "
         "exec httpd -f -p 80 -h /www")
# `count` GETs of a URL, each a new connection: what answered, how many failed
POLLER = r"""
import json, sys, urllib.request
url, count = sys.argv[1], int(sys.argv[2])
seen, failed = {}, 0
for _ in range(count):
    try:
        with urllib.request.urlopen(url, timeout=3) as reply:
            body = reply.read().decode().strip()
        seen[body] = seen.get(body, 0) + 1
    except Exception:
        failed += 1
print(json.dumps({"seen": seen, "failed": failed}))
"""


class Setup:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.root, self.sock = tmp / "root", tmp / "run" / "steelcup.sock"
        self.inner = new_netns("fipsd")
        self.outside = new_netns("fipso")
        self.daemon: Daemon | None = None

    def wire(self) -> None:
        wire_outside(self.inner, self.outside, DAEMON_IF, OUTSIDE_IF)

    def start(self) -> Daemon:
        self.daemon = start_fip_daemon(self.root, self.sock, self.inner, POOL, DAEMON_IF)
        return self.daemon

    def poll(self, url: str, count: int) -> tuple[dict[str, int], int]:
        """From outside: which replicas answered `count` connections, and how many failed."""
        run = in_netns(self.outside, sys.executable, "-c", POLLER, url, str(count),
                       timeout=30 + 4 * count)
        assert run.returncode == 0, run.stderr.decode()
        answer = json.loads(run.stdout)
        return answer["seen"], answer["failed"]

    def close(self) -> list[str]:
        problems = []
        if self.daemon is not None:
            self.daemon.cli("service", "rm", "web")
            wait_until(lambda: not self.tasks(), "the service's containers removed", 120)
            stop_daemon(self.daemon)
            problems = leftovers_of(self.root, netns=self.inner)
        delete_netns(self.inner)
        delete_netns(self.outside)
        return problems

    def tasks(self) -> list[str]:
        assert self.daemon is not None
        return self.daemon.out("ps", "-q", "--filter",
                               "label=com.docker.swarm.service.name=web").split()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    need_assets()
    s = Setup(tmp_path_factory.mktemp("fipsvc"))
    try:
        s.wire()
        daemon = s.start()
        daemon.cli("load", "-i", str(BUSYBOX_TAR), check=True)
        daemon.out("swarm", "init")
        group = s.tmp / "web.json"
        group.write_text(json.dumps({"rules": [
            {"direction": "ingress", "protocol": "tcp", "ports": 80}]}))
        daemon.out("sg", "create", "-f", str(group), "web")
        made = daemon.cli("service", "create", "--name", "web", "--replicas", "2", IMG, "sh",
                          "-c", SERVE, timeout=600)
        assert made.returncode == 0, made.stderr.decode()
        yield s
    finally:
        problems = s.close()
        assert not problems, "\n".join(problems)


def _until_answered(setup: Setup, url: str, within_s: float = 60, by: int = 1) -> None:
    """Poll until `by` different replicas have answered (a replica without a health check is
    in the service's rotation once its VM runs, a moment before its httpd listens)."""
    deadline, answered = time.monotonic() + within_s, set()
    while len(answered) < by:
        answered |= set(setup.poll(url, 1)[0])
        assert time.monotonic() < deadline, f"{url}: only {sorted(answered)} answered"


def test_a_service_fip_reaches_both_replicas_under_their_groups(setup: Setup) -> None:
    assert setup.daemon is not None
    daemon = setup.daemon
    fip = daemon.out("fip", "allocate").strip()
    assert fip.startswith("198.51.100.")
    assert daemon.out("fip", "attach", fip, "web").strip() == fip
    listed = json.loads(daemon.out("fip", "inspect", fip))[0]
    service_id = json.loads(daemon.out("service", "inspect", "web"))[0]["ID"]
    assert (listed["Service"], listed["Container"]) == (service_id, "")
    replicas = set(setup.tasks())
    assert len(replicas) == 2

    _until_answered(setup, f"http://{fip}/")
    seen, failed = setup.poll(f"http://{fip}/", 24)
    assert failed == 0 and len(seen) == 2, seen  # both replicas answer, balanced per connection
    assert {h for h in seen} <= {c[:12] for c in replicas}

    # the replicas' security groups filter what comes through the FIP
    assert setup.poll(f"http://{fip}:81/", 2)[1] == 0
    for cid in replicas:
        daemon.out("update", "--sg-add", "web", cid)
    assert setup.poll(f"http://{fip}:81/", 2) == ({}, 2)
    assert setup.poll(f"http://{fip}/", 4)[1] == 0


def test_a_service_fip_survives_a_daemon_restart(setup: Setup) -> None:
    assert setup.daemon is not None
    fip = setup.daemon.out("fip", "ls", "-q").strip()
    stop_daemon(setup.daemon)  # --no-live-restore: the replicas stop with it
    daemon = setup.start()
    service_id = json.loads(daemon.out("service", "inspect", "web"))[0]["ID"]
    assert json.loads(daemon.out("fip", "inspect", fip))[0]["Service"] == service_id
    wait_until(lambda: len(setup.tasks()) == 2, "both replicas running again", 300)
    _until_answered(setup, f"http://{fip}/", 120, by=2)  # as its replicas come back
    assert setup.poll(f"http://{fip}/", 4)[1] == 0


def test_a_service_fip_follows_its_replicas_and_goes_with_the_service(setup: Setup) -> None:
    assert setup.daemon is not None
    daemon = setup.daemon
    fip = daemon.out("fip", "ls", "-q").strip()
    daemon.out("service", "scale", "web=1")
    wait_until(lambda: len(setup.tasks()) == 1, "one replica left", 120)
    [left] = setup.tasks()
    seen, failed = setup.poll(f"http://{fip}/", 8)
    assert failed == 0 and set(seen) == {left[:12]}, seen

    daemon.out("service", "rm", "web")
    wait_until(lambda: json.loads(daemon.out("fip", "inspect", fip))[0]["Service"] == "",
               "the FIP detached from the removed service", 60)
    assert fip in daemon.out("fip", "ls", "-q", "-f", "dangling=true").split()
    assert setup.poll(f"http://{fip}/", 1) == ({}, 1)
    wait_until(lambda: not setup.tasks(), "the service's containers removed", 120)
