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
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.compat.conftest import DOCKER, IMG, Docker
from tests.vm.support import (
    BUSYBOX_TAR,
    delete_netns,
    in_netns,
    leftovers_of,
    need_assets,
    new_netns,
    start_daemon,
    stop_daemon,
    wait_until,
)

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
def swarm(dockerd: Docker) -> Iterator[Docker]:
    dockerd.out("swarm", "init")
    yield dockerd
    dockerd.run("swarm", "leave", "--force")


@pytest.fixture(scope="module")
def web(swarm: Docker) -> Iterator[Docker]:
    dockerd = swarm
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


def test_a_published_port_taken_fails_the_create(web: Docker) -> None:
    result = web.run("service", "create", "-d", "--name", "clash", "-p", f"{PORT}:80", IMG,
                     "sleep", "1000")
    assert result.returncode != 0 and b"already allocated" in result.stderr, result.stderr
    assert "clash" not in web.out("service", "ls", "--format", "{{.Name}}").split()
    wait_until(lambda: not task_containers(web, "clash"), "its tasks gone", 120)


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


# -- stacks ------------------------------------------------------------------------------------

STACK_PORT = 18081


def cgi_server(line: str) -> list[str]:
    """A busybox httpd whose /cgi-bin/x answers `line` (shell-expanded per request)."""
    script = ("#!/bin/sh\\necho Content-Type: text/plain\\necho\\n"
              f"echo {line}\\n")
    return ["sh", "-c", "mkdir -p /www/cgi-bin && printf '" + script + "' > /www/cgi-bin/x"
            " && chmod +x /www/cgi-bin/x && exec httpd -f -p 80 -h /www"]


def stack_file(path: Path, **extra: object) -> Path:
    """proxy -> app -> store on the stack's overlay network, each found by its service
    name; the proxy published on STACK_PORT. (JSON is YAML.)"""
    services: dict[str, object] = {
        "store": {"image": IMG, "networks": ["backend"], "command": [
            "sh", "-c", "mkdir -p /www && echo stored-value > /www/index.html"
            " && exec httpd -f -p 80 -h /www"]},
        "app": {"image": IMG, "networks": ["backend"],
                "command": cgi_server("app+$$(wget -qO- http://store/)"),
                "deploy": {"replicas": 1, "restart_policy": {"condition": "any",
                                                             "delay": "0s"}}},
        "proxy": {"image": IMG, "networks": ["backend"], "ports": [f"{STACK_PORT}:80"],
                  "command": cgi_server("proxy+$$(wget -qO- http://app/cgi-bin/x)"),
                  "environment": {"ROLE": "proxy"}, "labels": {"tier": "edge"}},
    }
    doc = {"version": "3.8", "services": services,
           "networks": {"backend": {"driver": "overlay"}}, **extra}
    path.write_text(json.dumps(doc, indent=1))
    return path


def test_a_stack_of_three_services_by_name(swarm: Docker, tmp_path: Path) -> None:
    compose = stack_file(tmp_path / "compose.yml")
    swarm.out("stack", "deploy", "-c", str(compose), "demo", timeout=300)
    assert swarm.out("stack", "ls", "--format", "{{.Name}} {{.Services}}").split() == [
        "demo", "3"]
    names = sorted(swarm.out("stack", "services", "demo", "--format", "{{.Name}}").split())
    assert names == ["demo_app", "demo_proxy", "demo_store"]
    net = json.loads(swarm.out("network", "inspect", "demo_backend"))[0]
    assert net["Driver"] == "overlay" and net["Labels"] == {
        "com.docker.stack.namespace": "demo"}
    wait_until(lambda: all(len(running_tasks(swarm, f"demo_{n}")) == 1
                           for n in ("store", "app", "proxy")), "the stack's tasks", 300)
    assert len(swarm.out("stack", "ps", "demo", "-q").split()) == 3
    assert swarm.daemon.netns is not None

    def answer() -> str:
        result = in_netns(swarm.daemon.netns or "", sys.executable, "-c",
                          "import urllib.request,sys; print(urllib.request.urlopen("
                          f"'http://127.0.0.1:{STACK_PORT}/cgi-bin/x', timeout=5)"
                          ".read().decode().strip())")
        return result.stdout.decode().strip()
    wait_until(lambda: answer() == "proxy+app+stored-value", "proxy -> app -> store", 60)
    swarm.out("stack", "rm", "demo")
    wait_until(lambda: not swarm.out("stack", "ls", "--format", "{{.Name}}").strip()
               and not task_containers(swarm, "demo_proxy"), "the stack removed", 120)
    wait_until(lambda: swarm.run("network", "inspect", "demo_backend").returncode != 0,
               "the stack's network removed", 60)


@pytest.mark.parametrize(("extra", "service_keys", "named"), [
    ({}, {"deploy": {"placement": {"max_replicas_per_node": 1}}}, "max replicas"),
    ({}, {"deploy": {"endpoint_mode": "dnsrr"}}, "dnsrr has no virtual IP"),
])
def test_stack_keys_steelcup_cannot_honour_are_named(
        swarm: Docker, tmp_path: Path, extra: dict[str, object],
        service_keys: dict[str, object], named: str) -> None:
    (tmp_path / "token.txt").write_text("s3cret\n")
    compose = stack_file(tmp_path / "compose.yml", **extra)
    doc = json.loads(compose.read_text())
    doc["services"]["proxy"].update(service_keys)
    compose.write_text(json.dumps(doc))
    result = swarm.run("stack", "deploy", "-c", str(compose), "bad")
    assert result.returncode != 0 and named.encode() in result.stderr, result.stderr
    swarm.run("stack", "rm", "bad")
    wait_until(lambda: not swarm.out("stack", "ls", "--format", "{{.Name}}").strip(),
               "no stack left", 120)


def test_the_steelcup_cli_deploys_the_same_stack(swarm: Docker, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from steelcup.cli.main import main

    def steelcup(*args: str) -> str:
        code = main(["-H", swarm.host, *args])
        out, err = capsys.readouterr()
        assert code == 0, err
        return out

    compose = stack_file(tmp_path / "compose.yml")
    out = steelcup("stack", "deploy", "-c", str(compose), "mine")
    assert "Creating network mine_backend" in out and "Creating service mine_proxy" in out
    assert steelcup("stack", "ls").splitlines()[1].split() == ["mine", "3"]
    assert swarm.out("stack", "ls", "--format", "{{.Name}}").split() == ["mine"]
    wait_until(lambda: all(len(running_tasks(swarm, f"mine_{n}")) == 1
                           for n in ("store", "app", "proxy")), "the stack's tasks", 300)
    assert len(steelcup("stack", "ps", "-q", "mine").split()) == 3
    assert "mine_app" in steelcup("stack", "services", "mine")

    def answer() -> str:
        result = in_netns(swarm.daemon.netns or "", sys.executable, "-c",
                          "import urllib.request; print(urllib.request.urlopen("
                          f"'http://127.0.0.1:{STACK_PORT}/cgi-bin/x', timeout=5)"
                          ".read().decode().strip())")
        return result.stdout.decode().strip()
    wait_until(lambda: answer() == "proxy+app+stored-value", "proxy -> app -> store", 60)
    # Deployed again: its services are updated in place (none changed: no task replaced).
    before = set(steelcup("stack", "ps", "-q", "mine").split())
    assert "Updating service mine_app" in steelcup("stack", "deploy", "-c", str(compose),
                                                   "mine")
    assert set(steelcup("stack", "ps", "-q", "mine").split()) == before
    out = steelcup("stack", "rm", "mine")
    assert "Removing network mine_backend" in out
    assert swarm.run("network", "inspect", "mine_backend").returncode != 0


def test_a_service_keeps_its_address_across_daemon_restarts(tmp_path: Path) -> None:
    """A --live-restore restart keeps the replicas and their VIP; after a plain restart the
    replicas are new tasks and the same VIP and published port reach them."""
    need_assets()
    netns = new_netns(f"r{os.urandom(2).hex()}")
    root, sock = tmp_path / "root", tmp_path / "run" / "steelcup.sock"
    live = ("--live-restore",)
    port = 18082
    daemon = start_daemon(root, sock, netns, live)
    try:
        d = Docker(daemon, tmp_path / "docker-config")
        d.out("load", "-i", str(BUSYBOX_TAR))
        d.out("swarm", "init")
        d.out("service", "create", "--name", "kept", "--replicas", "2", "-p", f"{port}:80",
              "--restart-delay", "0s", "--stop-grace-period", "1s", IMG, "sh", "-c", SERVE,
              timeout=300)
        vip = d.out("service", "inspect", "kept", "--format", "{{json .Endpoint.VirtualIPs}}")

        def answers() -> set[str]:
            result = in_netns(netns, sys.executable, "-c", POLLER,
                              f"http://127.0.0.1:{port}/", "/nonexistent", "20")
            reply = json.loads(result.stdout)
            return set(reply["seen"]) if reply["failed"] == 0 else set()
        first = {c[:12] for c in task_containers(d, "kept")}
        wait_until(lambda: answers() == first, "both replicas answering", 60)

        stop_daemon(daemon)  # --live-restore: the replicas keep running
        daemon = start_daemon(root, sock, netns, live)
        d = Docker(daemon, tmp_path / "docker-config")
        wait_until(lambda: answers() == first, "the same replicas, through the same port", 60)
        assert d.out("service", "inspect", "kept", "--format",
                     "{{json .Endpoint.VirtualIPs}}") == vip

        stop_daemon(daemon)  # still kept; the next daemon stops them when it stops
        daemon = start_daemon(root, sock, netns)
        stop_daemon(daemon)
        daemon = start_daemon(root, sock, netns)
        d = Docker(daemon, tmp_path / "docker-config")
        wait_until(lambda: len(running_tasks(d, "kept")) == 2, "replacements running", 180)
        second = {c[:12] for c in task_containers(d, "kept")}
        assert not first & second
        wait_until(lambda: answers() == second, "the new replicas behind the same port", 60)
        assert d.out("service", "inspect", "kept", "--format",
                     "{{json .Endpoint.VirtualIPs}}") == vip
        d.out("service", "rm", "kept")
        wait_until(lambda: not task_containers(d, "kept"), "the service's containers gone", 60)
    finally:
        stop_daemon(daemon)
        problems = leftovers_of(root, netns=netns)
        delete_netns(netns)
    assert not problems, "after daemon shutdown: " + "\n".join(problems)


def test_tenants_services_and_their_addresses_are_their_own(tmp_path: Path) -> None:
    """Two tenants over TLS each run a service named `web` with a published port: each
    reaches its own replica through its port and by name, and sees nothing of the other's
    service, tasks or network."""
    need_assets()
    netns = new_netns(f"t{os.urandom(2).hex()}")
    root, sock = tmp_path / "root", tmp_path / "run" / "steelcup.sock"
    daemon = start_daemon(root, sock, netns, ("--multi-tenant", "--allow-tcg", "--tls-listen",
                                              "127.0.0.1:2376"))
    try:
        def tenant(name: str) -> Callable[..., str]:
            certs = tmp_path / f"{name}-certs"
            subprocess.run([sys.executable, "-m", "steelcup", "tenant", "create", name],
                           env=daemon.env, check=True, capture_output=True)
            subprocess.run([sys.executable, "-m", "steelcup", "tenant", "key", "create", name,
                            "--out", str(certs)], env=daemon.env, check=True,
                           capture_output=True)
            env = dict(os.environ, DOCKER_HOST="tcp://127.0.0.1:2376", DOCKER_TLS_VERIFY="1",
                       DOCKER_CERT_PATH=str(certs), DOCKER_CLI_HINTS="false",
                       DOCKER_CONFIG=str(tmp_path / f"{name}-config"))
            for key in ("DOCKER_API_VERSION", "DOCKER_CONTEXT"):
                env.pop(key, None)

            def run(*args: str, ok: bool = True) -> str:
                result = subprocess.run(["ip", "netns", "exec", netns, DOCKER, *args],
                                        capture_output=True, env=env, timeout=300)
                if ok:
                    assert result.returncode == 0, (args, result.stderr[-2000:])
                return (result.stdout + result.stderr).decode()
            return run

        alice, bob = tenant("alice"), tenant("bob")
        for who, port in ((alice, 18091), (bob, 18092)):
            who("load", "-i", str(BUSYBOX_TAR))
            who("service", "create", "--name", "web", "-p", f"{port}:80",
                "--restart-delay", "0s", IMG, "sh", "-c", SERVE)
        alice("network", "create", "-d", "overlay", "--attachable", "anet")
        alice("service", "update", "--network-add", "anet", "web")

        def answer(port: int) -> str:
            result = in_netns(netns, sys.executable, "-c", POLLER,
                              f"http://127.0.0.1:{port}/", "/nonexistent", "5")
            reply = json.loads(result.stdout)
            return next(iter(reply["seen"])) if reply["seen"] and not reply["failed"] else ""

        def hostname(who: Callable[..., str]) -> str:
            return who("ps", "-q", "--filter",
                       "label=com.docker.swarm.service.name=web").split()[0][:12]
        wait_until(lambda: answer(18091) == hostname(alice) != "", "alice's web", 120)
        wait_until(lambda: answer(18092) == hostname(bob) != "", "bob's web", 120)
        # By name on alice's network: her service, not bob's.
        fetched = alice("run", "--rm", "--network", "anet", IMG, "wget", "-qO-", "http://web/")
        assert fetched.strip() == hostname(alice)
        alice_id = alice("service", "inspect", "web", "--format", "{{.ID}}").strip()
        assert "no such service" in bob("service", "inspect", alice_id, ok=False)
        assert "anet" not in bob("network", "ls", "--format", "{{.Name}}")
        assert len(bob("service", "ps", "-q", "web").split()) == 1  # bob's own task only
        for who in (alice, bob):
            who("service", "rm", "web")
    finally:
        stop_daemon(daemon)
        problems = leftovers_of(root, netns=netns)
        delete_netns(netns)
    assert not problems, "after daemon shutdown: " + "\n".join(problems)
