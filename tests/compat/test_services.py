"""Swarm mode on one node with the real docker CLI and docker-py (docs/services.md): swarm
init, a 3-replica service whose tasks each run in a VM, a task's container removed and
replaced, scale, update, logs, removal; docker-py's swarm.init and services.create/list;
reconciliation across daemon restarts (with and without live restore)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compat.conftest import DOCKER, IMG, Docker
from tests.vm.support import (
    BUSYBOX_TAR,
    leftovers_of,
    need_assets,
    start_daemon,
    stop_daemon,
    wait_until,
)

docker = pytest.importorskip("docker")
pytestmark = pytest.mark.vm


def running_tasks(d: Docker, service: str) -> list[dict[str, str]]:
    out = d.out("service", "ps", "--no-trunc", service, "--filter", "desired-state=running",
                "--format", "{{json .}}")
    return [row for row in map(json.loads, out.splitlines())
            if row["CurrentState"].startswith("Running")]


def containers(d: Docker, service: str) -> list[str]:
    return d.out("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={service}"
                 ).split()


@pytest.fixture(scope="module")
def swarm(dockerd: Docker) -> Iterator[Docker]:
    result = dockerd.run("service", "ls")
    assert result.returncode != 0 and b"not a swarm manager" in result.stderr
    out = dockerd.out("swarm", "init")
    assert "Swarm initialized: current node" in out
    info = json.loads(dockerd.out("info", "--format", "{{json .Swarm}}"))
    assert info["LocalNodeState"] == "active" and info["ControlAvailable"] is True
    assert info["Nodes"] == 1 and info["Managers"] == 1
    yield dockerd
    dockerd.run("swarm", "leave", "--force")


def test_node_ls_shows_this_node_as_leader(swarm: Docker) -> None:
    rows = [json.loads(line) for line in
            swarm.out("node", "ls", "--format", "{{json .}}").splitlines()]
    assert len(rows) == 1
    assert rows[0]["Self"] is True and rows[0]["ManagerStatus"] == "Leader"
    assert rows[0]["Status"] == "Ready" and rows[0]["Availability"] == "Active"
    again = swarm.run("swarm", "init")
    assert again.returncode != 0 and b"already part of a swarm" in again.stderr
    join = swarm.run("swarm", "join", "--token", "SWMTKN-1-x", "10.9.9.9:2377")
    assert join.returncode != 0 and b"one node" in join.stderr


def test_replicas_replacement_scale_update_and_removal(swarm: Docker) -> None:
    # Without --detach the CLI follows the tasks until all 3 run (and stay up 5 s).
    swarm.out("service", "create", "--name", "web", "--replicas", "3", "--restart-delay",
              "1s", "--stop-grace-period", "1s", "--label", "tier=front", IMG,
              "sleep", "1000", timeout=300)
    assert len(running_tasks(swarm, "web")) == 3
    assert len(containers(swarm, "web")) == 3
    ls = json.loads(swarm.out("service", "ls", "--format", "{{json .}}"))
    assert ls["Name"] == "web" and ls["Replicas"] == "3/3" and ls["Mode"] == "replicated"
    spec = json.loads(swarm.out("service", "inspect", "web", "--format", "{{json .Spec}}"))
    assert spec["Labels"] == {"tier": "front"}
    assert spec["TaskTemplate"]["RestartPolicy"]["Delay"] == 1_000_000_000
    assert spec["Mode"] == {"Replicated": {"Replicas": 3}}

    # docker rm -f of one task's container: a new task takes its slot
    victim = running_tasks(swarm, "web")[0]
    cid = swarm.out("ps", "-q", "--filter", f"label=com.docker.swarm.task.id={victim['ID']}"
                    ).strip()
    assert cid
    swarm.out("rm", "-f", cid)
    wait_until(lambda: len(running_tasks(swarm, "web")) == 3
               and victim["ID"] not in {t["ID"] for t in running_tasks(swarm, "web")},
               "a replacement task running", timeout_s=90)
    history = swarm.out("service", "ps", "--no-trunc", "web", "--format",
                        "{{.ID}} {{.CurrentState}}")
    assert any(line.startswith(victim["ID"]) and "Failed" in line
               for line in history.splitlines())

    swarm.out("service", "scale", "web=1", timeout=300)
    wait_until(lambda: len(containers(swarm, "web")) == 1, "scaled down to 1 container",
               timeout_s=60)
    assert len(running_tasks(swarm, "web")) == 1

    before = {t["ID"] for t in running_tasks(swarm, "web")}
    swarm.out("service", "update", "--detach", "--env-add", "COLOUR=blue", "web")
    wait_until(lambda: (now := running_tasks(swarm, "web")) != []
               and not before & {t["ID"] for t in now}, "the updated task running",
               timeout_s=90)
    cid = containers(swarm, "web")[0]
    env = json.loads(swarm.out("inspect", "--format", "{{json .Config.Env}}", cid))
    assert "COLOUR=blue" in env
    swarm.out("service", "rollback", "web", timeout=300)  # follows it until converged
    cid = containers(swarm, "web")[0]
    env = json.loads(swarm.out("inspect", "--format", "{{json .Config.Env}}", cid))
    assert "COLOUR=blue" not in env
    again = swarm.run("service", "rollback", "web")
    assert again.returncode != 0 and b"does not have a previous spec" in again.stderr

    # An update whose task cannot start rolls itself back (--update-failure-action rollback)
    swarm.run("service", "update", "--update-failure-action", "rollback", "--update-monitor",
              "1s", "--args", "no-such-command", "web", timeout=300)
    wait_until(lambda: swarm.out("service", "inspect", "web", "--format",
                                 "{{.UpdateStatus.State}}").strip() == "rollback_completed",
               "the failed update rolled back", timeout_s=90)
    args = swarm.out("service", "inspect", "web", "--format",
                     "{{json .Spec.TaskTemplate.ContainerSpec.Args}}")
    assert json.loads(args) == ["sleep", "1000"]
    assert len(running_tasks(swarm, "web")) == 1

    swarm.out("service", "rm", "web")
    assert swarm.out("service", "ls", "-q") == ""
    wait_until(lambda: not swarm.out("ps", "-aq", "--filter",
                                     "label=com.docker.swarm.service.name=web").strip(),
               "the service's containers removed", timeout_s=60)


def test_service_logs_carry_task_context(swarm: Docker) -> None:
    swarm.out("service", "create", "--detach", "--name", "hello", "--restart-condition",
              "none", IMG, "sh", "-c", "echo hello from a task")
    wait_until(lambda: "hello from a task" in swarm.out("service", "logs", "hello"),
               "the task's output in service logs", timeout_s=90)
    line = swarm.out("service", "logs", "hello").splitlines()[0]
    assert line.startswith("hello.1.") and "@" in line and line.endswith(
        "| hello from a task")
    raw = swarm.out("service", "logs", "--raw", "hello")
    assert raw.strip() == "hello from a task"
    swarm.out("service", "rm", "hello")

    # -f follows the tasks started after it began too, until the service is removed
    swarm.out("service", "create", "--detach", "--name", "again", "--restart-delay", "0s",
              IMG, "sh", "-c", "echo run of $HOSTNAME; sleep 2; exit 1")
    wait_until(lambda: running_tasks(swarm, "again") != [], "the first task running", 90)
    follower = subprocess.Popen([DOCKER, "service", "logs", "-f", "--raw", "again"],
                                stdout=subprocess.PIPE, env=swarm.env)
    try:
        wait_until(lambda: len(swarm.out("service", "ps", "-q", "again").split()) >= 3,
                   "two replacements", 90)
        swarm.out("service", "rm", "again")
        out, _ = follower.communicate(timeout=30)  # ends with the service
    finally:
        follower.kill()
    runs = {line for line in out.decode().splitlines() if line.startswith("run of ")}
    assert len(runs) >= 2, out  # a task started after `logs -f` began is in it too


def test_docker_py_services(swarm: Docker) -> None:
    client = docker.DockerClient(base_url=swarm.host, version="auto", timeout=180)
    try:
        swarm.out("swarm", "leave", "--force")
        assert swarm.run("service", "ls").returncode != 0
        node_id = client.swarm.init()
        assert node_id == client.info()["Swarm"]["NodeID"]
        assert client.swarm.attrs["JoinTokens"]["Worker"].startswith("SWMTKN-1-")
        service = client.services.create(IMG, command=["sleep", "1000"], name="py",
                                         labels={"via": "docker-py"})
        assert service.name == "py"
        assert [s.name for s in client.services.list(filters={"label": "via=docker-py"})] == [
            "py"]
        wait_until(lambda: any(t["Status"]["State"] == "running"
                               for t in service.tasks()), "docker-py's task running",
                   timeout_s=90)
        service.remove()
        assert client.services.list() == []
    finally:
        client.close()


def test_reconciliation_resumes_after_daemon_restarts(tmp_path: Path) -> None:
    """A --live-restore restart keeps the running tasks (their VMs outlived the daemon) and
    reconciling goes on; after a plain restart (VMs stopped with the daemon) each task is
    replaced."""
    need_assets()
    root, sock = tmp_path / "root", tmp_path / "run" / "steelcup.sock"
    live = ("--live-restore",)
    daemon = start_daemon(root, sock, None, live)
    try:
        d = Docker(daemon, tmp_path / "docker-config")
        d.out("load", "-i", str(BUSYBOX_TAR))
        d.out("swarm", "init")
        d.out("service", "create", "--detach", "--name", "kept", "--replicas", "2",
              "--restart-delay", "1s", "--stop-grace-period", "1s", IMG, "sleep", "1000")
        wait_until(lambda: len(running_tasks(d, "kept")) == 2, "2 tasks running", 120)
        before = {t["ID"] for t in running_tasks(d, "kept")}

        stop_daemon(daemon)  # --live-restore: the tasks' VMs keep running
        daemon = start_daemon(root, sock, None, live)
        d = Docker(daemon, tmp_path / "docker-config")
        assert {t["ID"] for t in running_tasks(d, "kept")} == before
        victim = sorted(before)[0]
        d.out("rm", "-f", d.out("ps", "-q", "--filter",
                                f"label=com.docker.swarm.task.id={victim}").strip())
        wait_until(lambda: len(running_tasks(d, "kept")) == 2
                   and victim not in {t["ID"] for t in running_tasks(d, "kept")},
                   "the removed task's replacement running", 120)
        kept = {t["ID"] for t in running_tasks(d, "kept")}

        stop_daemon(daemon)  # still kept; the next daemon stops them when it stops
        daemon = start_daemon(root, sock, None)
        stop_daemon(daemon)
        daemon = start_daemon(root, sock, None)
        d = Docker(daemon, tmp_path / "docker-config")
        wait_until(lambda: len(running_tasks(d, "kept")) == 2
                   and not kept & {t["ID"] for t in running_tasks(d, "kept")},
                   "the tasks the stop ended replaced", 120)
        d.out("service", "rm", "kept")
        wait_until(lambda: not d.out("ps", "-aq").strip(), "the service's containers gone", 60)
    finally:
        stop_daemon(daemon)
        problems = leftovers_of(root)
    assert not problems, "after daemon shutdown: " + "\n".join(problems)
