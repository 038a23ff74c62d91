"""Swarm secrets and configs with the real docker CLI (docs/services.md): `docker secret
create` / `config create` / ls / inspect / rm, a service whose replica (a VM) reads its secret
on /run/secrets (read-only, owner and mode as asked) and its config at its target, removal
refused while in use, `docker stack deploy` of a file with top-level `secrets:`/`configs:`
(`file:`), and a path-traversal target refused."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compat.conftest import IMG, Docker
from tests.vm.support import wait_until

pytestmark = pytest.mark.vm
DAEMON_NETWORKING = True  # a stack makes its default overlay network


def running_container(d: Docker, service: str) -> str:
    """The container of the service's one running task ("" while there is none)."""
    rows = [json.loads(line) for line in d.out(
        "service", "ps", "--no-trunc", service, "--filter", "desired-state=running",
        "--format", "{{json .}}").splitlines()]
    if not any(r["CurrentState"].startswith("Running") for r in rows):
        return ""
    ids = d.out("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={service}")
    return ids.split()[0] if ids.split() else ""


@pytest.fixture(scope="module")
def swarm(dockerd: Docker) -> Iterator[Docker]:
    dockerd.out("swarm", "init")
    yield dockerd
    dockerd.run("swarm", "leave", "--force")


def test_a_replica_reads_its_secret_and_config(swarm: Docker, tmp_path: Path) -> None:
    (tmp_path / "pw").write_bytes(b"hunter2\n")
    (tmp_path / "app.conf").write_bytes(b"port=80\n")
    sid = swarm.out("secret", "create", "--label", "k=v", "db-pass", str(tmp_path / "pw")).strip()
    swarm.out("config", "create", "app-conf", str(tmp_path / "app.conf"))
    assert swarm.out("secret", "ls", "--format", "{{.Name}}").split() == ["db-pass"]
    shown = json.loads(swarm.out("secret", "inspect", "db-pass"))[0]
    assert shown["ID"] == sid and shown["Spec"]["Labels"] == {"k": "v"}
    assert "Data" not in shown["Spec"]  # as dockerd: a secret's data is never returned
    assert swarm.out("config", "inspect", "--pretty", "app-conf").find("port=80") >= 0
    swarm.out("service", "create", "--detach", "--name", "reader",
              "--secret", "source=db-pass,target=pw,uid=1000,gid=100,mode=0400",
              "--config", "source=app-conf,target=/etc/app/app.conf,mode=0440",
              IMG, "sleep", "100000", timeout=120)
    wait_until(lambda: bool(running_container(swarm, "reader")), "the reader's task", 180)
    cid = running_container(swarm, "reader")
    assert swarm.out("exec", cid, "cat", "/run/secrets/pw") == "hunter2\n"
    assert swarm.out("exec", cid, "stat", "-c", "%a %u %g", "/run/secrets/pw").split() == [
        "400", "1000", "100"]
    written = swarm.run("exec", cid, "sh", "-c", "echo stolen > /run/secrets/pw")
    assert written.returncode != 0 and b"Read-only file system" in written.stderr
    assert swarm.out("exec", cid, "cat", "/etc/app/app.conf") == "port=80\n"
    assert swarm.out("exec", cid, "stat", "-c", "%a", "/etc/app/app.conf").strip() == "440"
    # in use: dockerd's refusal; free once the service is gone
    refused = swarm.run("secret", "rm", "db-pass")
    assert refused.returncode != 0
    assert b"secret 'db-pass' is in use by the following service: reader" in refused.stderr
    swarm.out("service", "rm", "reader")
    wait_until(lambda: swarm.run("secret", "rm", "db-pass").returncode == 0,
               "the secret removed once unused", 60)
    swarm.out("config", "rm", "app-conf")
    assert swarm.out("secret", "ls", "-q") == "" and swarm.out("config", "ls", "-q") == ""


def test_a_traversing_target_is_refused(swarm: Docker, tmp_path: Path) -> None:
    (tmp_path / "s").write_bytes(b"x")
    swarm.out("secret", "create", "trav", str(tmp_path / "s"))
    try:
        for flag, ref in (("--secret", "source=trav,target=../../etc/shadow"),
                          ("--config", "source=trav,target=/etc/../../x")):
            if flag == "--config":
                swarm.out("config", "create", "trav", str(tmp_path / "s"))
            result = swarm.run("service", "create", "--detach", "--name", "trav", flag, ref,
                               IMG, "true")
            assert result.returncode != 0, result.stdout
            assert b"target" in result.stderr, result.stderr
        assert swarm.out("service", "ls", "-q") == ""
    finally:
        swarm.run("secret", "rm", "trav")
        swarm.run("config", "rm", "trav")


def test_a_stack_with_secrets_and_configs_from_files(swarm: Docker, tmp_path: Path) -> None:
    (tmp_path / "token.txt").write_text("s3cret\n")
    (tmp_path / "motd.txt").write_text("hello stack\n")
    doc = {"version": "3.8",
           "services": {"app": {"image": IMG, "command": ["sleep", "100000"],
                                "secrets": ["token"],
                                "configs": [{"source": "motd", "target": "/etc/motd"}]}},
           "secrets": {"token": {"file": "token.txt"}},
           "configs": {"motd": {"file": "motd.txt"}}}
    compose = tmp_path / "compose.yml"
    compose.write_text(json.dumps(doc))
    swarm.out("stack", "deploy", "-c", str(compose), "sec", timeout=300)
    try:
        assert swarm.out("secret", "ls", "--format", "{{.Name}}").split() == ["sec_token"]
        wait_until(lambda: bool(running_container(swarm, "sec_app")), "the stack's task", 180)
        cid = running_container(swarm, "sec_app")
        assert swarm.out("exec", cid, "cat", "/run/secrets/token") == "s3cret\n"
        assert swarm.out("exec", cid, "cat", "/etc/motd") == "hello stack\n"
    finally:
        swarm.out("stack", "rm", "sec")
    # the stack's secrets and configs go with it (the CLI removes them after its services)
    wait_until(lambda: swarm.out("secret", "ls", "-q") == "" and swarm.out(
        "config", "ls", "-q") == "", "the stack's secrets removed", 120)
