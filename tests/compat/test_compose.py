"""docker-compose 1.29 (Debian's package) driving a steelcup daemon: up -d / ps / logs / down."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.compat.conftest import IMG, Docker

COMPOSE = shutil.which("docker-compose")
DAEMON_NETWORKING = True  # the services find each other by name on the project network
pytestmark = [pytest.mark.vm,
              pytest.mark.skipif(COMPOSE is None, reason="docker-compose not installed")]


def compose_file() -> str:
    """Two services: a busybox httpd and a client that fetches from it by service name (and
    links to it, as older compose files do)."""
    return (
        'version: "3.7"\n'
        "services:\n"
        "  web:\n"
        f"    image: {IMG}\n"
        '    command: ["sh", "-c", "mkdir -p /www && echo hello-from-web > /www/index.html'
        ' && echo compose-up && exec httpd -f -p 80 -h /www"]\n'
        "    environment:\n"
        "      MODE: compose\n"
        "    labels:\n"
        "      tier: compat\n"
        "    restart: unless-stopped\n"
        "  client:\n"
        f"    image: {IMG}\n"
        "    depends_on: [web]\n"
        "    links: [web]\n"  # compose sends these as the endpoint's Links
        '    command: ["sh", "-c", "for i in $$(seq 150); do wget -qO- http://web/ && break;'
        ' sleep 0.2; done; wget -qO- http://web_1/ && echo by-link;'
        ' exec sleep 100000"]\n'
    )


def test_up_ps_logs_down(dockerd: Docker, tmp_path: Path) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    (project / "docker-compose.yml").write_text(compose_file())
    env = dict(dockerd.env, COMPOSE_PROJECT_NAME="sc", COMPOSE_INTERACTIVE_NO_CLI="1")

    def compose(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[bytes]:
        assert COMPOSE is not None
        result = subprocess.run([COMPOSE, *args], cwd=project, env=env, capture_output=True,
                                timeout=timeout)
        assert result.returncode == 0, (
            f"docker-compose {' '.join(args)} -> {result.returncode}\n{result.stderr.decode()}\n"
            f"daemon log tail:\n{dockerd.daemon.log.read_text()[-3000:]}")
        return result

    try:
        compose("up", "-d")
        ps = compose("ps").stdout.decode()
        assert "sc_web_1" in ps and "sc_client_1" in ps and "Up" in ps, ps
        fmt = ('{{index .Config.Labels "com.docker.compose.project"}} {{.Config.Labels.tier}} '
               "{{.HostConfig.RestartPolicy.Name}}")
        labels = dockerd.out("inspect", "-f", fmt, "sc_web_1").split()
        assert labels == ["sc", "compat", "unless-stopped"]
        deadline = time.monotonic() + 60
        logs = ""
        while "by-link" not in logs and time.monotonic() < deadline:
            logs = compose("logs", "--no-color").stdout.decode()
            time.sleep(0.5)  # polling the guests' output
        assert "compose-up" in logs and "hello-from-web" in logs, logs
        assert "by-link" in logs, logs  # web_1: a link alias, answered to the client alone
        assert dockerd.out("exec", "sc_web_1", "sh", "-c", "echo $MODE") == "compose\n"
    finally:
        compose("down", "-t", "1")
    assert dockerd.out("ps", "-a", "--filter", "label=com.docker.compose.project=sc", "-q") == ""


def healthy_file() -> str:
    """db turns healthy only once its command has made /tmp/ready (about 3 s in); app waits
    for that with `condition: service_healthy` (compose file format 2.4, as compose 1.29
    reads it)."""
    return (
        'version: "2.4"\n'
        "services:\n"
        "  db:\n"
        f"    image: {IMG}\n"
        '    command: ["sh", "-c", "sleep 3; touch /tmp/ready; exec sleep 100000"]\n'
        "    healthcheck:\n"
        '      test: ["CMD-SHELL", "test -f /tmp/ready"]\n'
        "      interval: 1s\n"
        "      timeout: 2s\n"
        "      retries: 30\n"
        "  app:\n"
        f"    image: {IMG}\n"
        '    command: ["sleep", "100000"]\n'
        "    depends_on:\n"
        "      db:\n"
        "        condition: service_healthy\n"
    )


def test_depends_on_service_healthy(dockerd: Docker, tmp_path: Path) -> None:
    """`docker-compose up -d` starts app only after db's health check passed: the daemon's
    own events put db's `health_status: healthy` before app's `start`."""
    project = tmp_path / "healthy"
    project.mkdir()
    (project / "docker-compose.yml").write_text(healthy_file())
    env = dict(dockerd.env, COMPOSE_PROJECT_NAME="hc", COMPOSE_INTERACTIVE_NO_CLI="1")
    assert COMPOSE is not None
    began = str(int(time.time()) - 1)

    def compose(*args: str) -> str:
        assert COMPOSE is not None
        result = subprocess.run([COMPOSE, *args], cwd=project, env=env, capture_output=True,
                                timeout=300)
        assert result.returncode == 0, (
            f"docker-compose {' '.join(args)} -> {result.returncode}\n{result.stderr.decode()}\n"
            f"daemon log tail:\n{dockerd.daemon.log.read_text()[-3000:]}")
        return result.stdout.decode() + result.stderr.decode()

    try:
        compose("up", "-d")
        assert dockerd.out("inspect", "-f", "{{.State.Health.Status}}", "hc_db_1") == (
            "healthy\n")
        assert dockerd.out("inspect", "-f", "{{.State.Running}}", "hc_app_1") == "true\n"
        until = str(int(time.time()) + 1)
        events = dockerd.out(
            "events", "--since", began, "--until", until, "--filter", "type=container",
            "--filter", "label=com.docker.compose.project=hc",
            "--format", '{{.TimeNano}} {{.Actor.Attributes.name}} {{.Action}}').splitlines()
        order = [(int(t), name, action) for t, name, action in
                 (line.split(" ", 2) for line in events)]
        order.sort()
        labelled = [f"{name} {action}" for _, name, action in order]
        assert "hc_db_1 start" in labelled and "hc_app_1 start" in labelled, labelled
        first_healthy = labelled.index("hc_db_1 health_status: healthy")
        assert labelled.index("hc_db_1 start") < first_healthy < labelled.index(
            "hc_app_1 start"), labelled
        # db was not healthy at once (its command makes it so ~3 s in): compose waited
        waited_ns = order[first_healthy][0] - order[labelled.index("hc_db_1 start")][0]
        assert waited_ns > 2_000_000_000, labelled
    finally:
        compose("down", "-t", "1")
