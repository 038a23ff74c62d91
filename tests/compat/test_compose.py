"""docker-compose 1.29 (Debian's package) driving a steelcup daemon: up -d / ps / logs / down."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.compat.conftest import IMG, Docker

COMPOSE = shutil.which("docker-compose")
pytestmark = [pytest.mark.vm,
              pytest.mark.skipif(COMPOSE is None, reason="docker-compose not installed")]


def compose_file(networks: bool) -> str:
    # Until the daemon serves /networks (api/net_routes.py, being built), compose would fail
    # creating <project>_default, so the service opts out of networking.
    network = "" if networks else "    network_mode: none\n"
    return (
        'version: "3.7"\n'
        "services:\n"
        "  app:\n"
        f"    image: {IMG}\n"
        '    command: ["sh", "-c", "echo compose-up; while true; do sleep 1; done"]\n'
        "    environment:\n"
        "      MODE: compose\n"
        "    labels:\n"
        "      tier: compat\n"
        "    restart: unless-stopped\n"
        f"{network}"
    )


def test_up_ps_logs_down(dockerd: Docker, tmp_path: Path) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    networks = dockerd.run("network", "ls").returncode == 0
    (project / "docker-compose.yml").write_text(compose_file(networks))
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
        assert "sc_app_1" in ps and "Up" in ps, ps
        fmt = ('{{index .Config.Labels "com.docker.compose.project"}} {{.Config.Labels.tier}} '
               "{{.HostConfig.RestartPolicy.Name}}")
        labels = dockerd.out("inspect", "-f", fmt, "sc_app_1").split()
        assert labels == ["sc", "compat", "unless-stopped"]
        deadline = time.monotonic() + 60
        logs = ""
        while "compose-up" not in logs and time.monotonic() < deadline:
            logs = compose("logs", "--no-color").stdout.decode()
            time.sleep(0.5)  # polling the guest's first line
        assert "compose-up" in logs
        assert dockerd.out("exec", "sc_app_1", "sh", "-c", "echo $MODE") == "compose\n"
    finally:
        compose("down", "-t", "1")
    assert dockerd.out("ps", "-a", "--filter", "label=com.docker.compose.project=sc", "-q") == ""
