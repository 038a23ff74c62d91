"""Service addressing with the real docker CLI on a networked daemon (docs/services.md): an
overlay network, a 3-replica busybox httpd published with `-p 18080:80` and answered by
more than one replica through the published port, `web` resolving to the service's VIP and
`tasks.web` to its replicas, a removed task's container replaced, a start-first rolling
update with a client polling through it (no failed request), and a replica whose health
check starts failing taken out and replaced.

Requests are made from inside the daemon's network namespace (where its published ports
are), by a small Python poller."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compat.conftest import IMG, Docker
from tests.vm.support import in_netns, wait_until

DAEMON_NETWORKING = True
pytestmark = pytest.mark.vm

PORT = 18080
# Each replica answers its hostname (the task's container), so a client sees who answered.
SERVE = ("mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www")
HEALTH = "wget -qO /dev/null http://127.0.0.1/"

POLLER = r"""
import json, os, sys, time, urllib.request
url, stop, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
ok, failed, seen, errors = 0, 0, {}, []
while (os.path.exists(stop) is False) if count == 0 else (ok + failed < count):
    try:
        with urllib.request.urlopen(url, timeout=3) as reply:
            body = reply.read().decode().strip()
        ok += 1
        seen[body] = seen.get(body, 0) + 1
    except Exception as exc:
        failed += 1
        errors.append(repr(exc)[:200])
    time.sleep(0.02)
print(json.dumps({"ok": ok, "failed": failed, "seen": seen, "errors": errors[:10]}))
"""


def running_tasks(d: Docker, service: str) -> list[dict[str, str]]:
    out = d.out("service", "ps", "--no-trunc", service, "--filter", "desired-state=running",
                "--format", "{{json .}}")
    return [row for row in map(json.loads, out.splitlines())
            if row["CurrentState"].startswith("Running")]


def task_containers(d: Docker, service: str) -> list[str]:
    return d.out("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={service}"
                 ).split()


def poll(d: Docker, count: int) -> dict[str, object]:
    """`count` requests through the published port, from the daemon's namespace."""
    assert d.daemon.netns is not None
    result = in_netns(d.daemon.netns, sys.executable, "-c", POLLER,
                      f"http://127.0.0.1:{PORT}/", "/nonexistent", str(count), timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    answer: dict[str, object] = json.loads(result.stdout)
    return answer


@pytest.fixture(scope="module")
def web(dockerd: Docker) -> Iterator[Docker]:
    dockerd.out("swarm", "init")
    dockerd.out("network", "create", "-d", "overlay", "--attachable", "appnet")
    net = json.loads(dockerd.out("network", "inspect", "appnet"))[0]
    assert net["Scope"] == "swarm" and net["Driver"] == "overlay" and net["Attachable"]
    dockerd.out("service", "create", "--name", "web", "--replicas", "3", "--network",
                "appnet", "-p", f"{PORT}:80", "--restart-delay", "0s",
                "--stop-grace-period", "1s", "--health-cmd", HEALTH, "--health-interval",
                "1s", "--health-retries", "2", "--health-timeout", "2s",
                "--update-order", "start-first", IMG, "sh", "-c", SERVE, timeout=600)
    yield dockerd
    dockerd.run("service", "rm", "web")
    wait_until(lambda: not task_containers(dockerd, "web"), "web's containers removed", 120)
    dockerd.run("network", "rm", "appnet")
    dockerd.run("swarm", "leave", "--force")


def test_the_published_port_reaches_more_than_one_replica(web: Docker) -> None:
    assert len(running_tasks(web, "web")) == 3
    endpoint = json.loads(web.out("service", "inspect", "web", "--format",
                                  "{{json .Endpoint}}"))
    net_id = web.out("network", "inspect", "appnet", "--format", "{{.Id}}").strip()
    [vip] = endpoint["VirtualIPs"]
    assert vip["NetworkID"] == net_id
    assert endpoint["Ports"] == [{"Protocol": "tcp", "TargetPort": 80,
                                  "PublishedPort": PORT, "PublishMode": "ingress"}]
    answer = poll(web, 40)
    seen = answer["seen"]
    assert answer["failed"] == 0, answer
    assert isinstance(seen, dict) and len(seen) >= 2, answer


def test_names_resolve_to_the_vip_and_the_replicas(web: Docker) -> None:
    vip = json.loads(web.out("service", "inspect", "web", "--format",
                             "{{json .Endpoint.VirtualIPs}}"))[0]["Addr"].split("/")[0]
    cid = task_containers(web, "web")[0]
    looked = web.out("exec", cid, "nslookup", "web")
    assert vip in looked, looked
    replicas = web.out("exec", cid, "nslookup", "tasks.web")
    addresses = {json.loads(web.out("inspect", c, "--format",
                                    "{{json .NetworkSettings.Networks}}"))["appnet"][
                                        "IPAddress"] for c in task_containers(web, "web")}
    assert len(addresses) == 3 and all(a in replicas for a in addresses), replicas
    # Another container on the network reaches the service by name.
    hostname = web.out("run", "--rm", "--network", "appnet", IMG, "wget", "-qO-",
                       "http://web/").strip()
    assert hostname and hostname in {c[:12] for c in task_containers(web, "web")}


def test_a_removed_replica_is_replaced(web: Docker) -> None:
    victim = task_containers(web, "web")[0]
    started = time.monotonic()
    web.out("rm", "-f", victim)
    wait_until(lambda: len(running_tasks(web, "web")) == 3
               and victim not in task_containers(web, "web"), "a replacement task", 180)
    took = time.monotonic() - started
    print(f"\nreplacing a removed replica (running and healthy): {took:.2f} s")
    answer = poll(web, 20)
    assert answer["failed"] == 0, answer


def test_a_start_first_update_fails_no_request(web: Docker, tmp_path: Path) -> None:
    assert web.daemon.netns is not None
    stop = tmp_path / "stop"
    poller = subprocess.Popen(
        ["ip", "netns", "exec", web.daemon.netns, sys.executable, "-c", POLLER,
         f"http://127.0.0.1:{PORT}/", str(stop), "0"], stdout=subprocess.PIPE)
    try:
        time.sleep(1)
        before = {row["ID"] for row in running_tasks(web, "web")}
        web.out("service", "update", "--env-add", "V=2", "web", timeout=600)
        wait_until(lambda: len(running_tasks(web, "web")) == 3, "3 updated tasks", 120)
        time.sleep(1)
    finally:
        stop.touch()
        out, _ = poller.communicate(timeout=60)
    answer = json.loads(out)
    print(f"\nstart-first update: {answer['ok']} requests answered, {answer['failed']} failed")
    after = {row["ID"] for row in running_tasks(web, "web")}
    assert not before & after  # every task was replaced
    assert answer["failed"] == 0, answer
    assert int(answer["ok"]) > 20


def test_a_replica_failing_its_health_check_leaves_and_is_replaced(web: Docker) -> None:
    victim = task_containers(web, "web")[0]
    web.out("exec", victim, "rm", "/www/index.html")  # its health check now fails

    def failed_unhealthy() -> bool:
        rows = [json.loads(line) for line in web.out(
            "service", "ps", "--no-trunc", "web", "--format", "{{json .}}").splitlines()]
        return any("unhealthy" in row["Error"] for row in rows)
    wait_until(failed_unhealthy, "the unhealthy task failed", 120)
    wait_until(lambda: len(running_tasks(web, "web")) == 3
               and victim not in task_containers(web, "web"), "its replacement", 180)
    answer = poll(web, 20)
    assert answer["failed"] == 0, answer
