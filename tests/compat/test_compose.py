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
