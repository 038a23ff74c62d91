"""The real docker CLI (v28) against a steelcup daemon over DOCKER_HOST=unix://..."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compat.conftest import DOCKER, IMG, Docker

pytestmark = pytest.mark.vm


def test_version_negotiates_an_api_the_cli_accepts(dockerd: Docker) -> None:
    out = dockerd.out("version", "--format", "{{json .}}")
    info = json.loads(out)
    assert info["Server"]["ApiVersion"] == "1.43"
    assert info["Server"]["MinAPIVersion"] == "1.24"
    assert info["Client"]["ApiVersion"] == "1.43"  # negotiated down from the CLI's own
    assert dockerd.out("info", "--format", "{{.OSType}} {{.DefaultRuntime}}").split() == [
        "linux", "steelcup"]


def test_run_rm_exit_code_and_streams(dockerd: Docker) -> None:
    result = dockerd.run("run", "--rm", "-e", "A=1", IMG, "sh", "-c",
                         "echo out $A; echo err >&2; exit 3")
    assert result.returncode == 3, result.stderr
    assert result.stdout == b"out 1\n"
    assert result.stderr == b"err\n"
    assert dockerd.out("ps", "-aq") == ""  # --rm removed it


def test_run_rm_failed_start_leaves_nothing(dockerd: Docker) -> None:
    """A `--rm` container whose start fails is removed before start answers, so the docker CLI
    (which then waits for `wait?condition=removed`) ends, with dockerd's status read from the
    error: 127 not found, 126 not executable. It once hung forever, leaving it "Created"."""
    before = set(dockerd.out("ps", "-aq").split())
    missing = dockerd.run("run", "--rm", IMG, "no-such-binary", timeout=60)
    assert missing.returncode == 127, missing.stderr
    assert b"no-such-binary" in missing.stderr
    not_exec = dockerd.run("run", "--rm", IMG, "/etc/passwd", timeout=60)
    assert not_exec.returncode == 126, not_exec.stderr
    assert set(dockerd.out("ps", "-aq").split()) == before


def test_cap_add_cap_drop_privileged(dockerd: Docker) -> None:
    """docker run --cap-add/--cap-drop reach the process; inspect shows them (the CLI sends
    them normalized); an unknown one is refused with dockerd's message."""
    probe = ("grep CapEff /proc/self/status; ip link set lo mtu 1000 && echo mtu-ok; "
             "touch /dev/shm/f; chown 1 /dev/shm/f || echo chown-refused")
    out = dockerd.out("run", "--name", "caps", "--cap-add", "NET_ADMIN", "--cap-drop", "chown",
                      IMG, "sh", "-c", probe)
    assert "mtu-ok" in out and "chown-refused" in out, out
    host = json.loads(dockerd.out("inspect", "caps"))[0]["HostConfig"]
    assert (host["CapAdd"], host["CapDrop"], host["Privileged"]) == (
        ["CAP_NET_ADMIN"], ["CAP_CHOWN"], False)
    dockerd.run("rm", "caps")
    full = dockerd.out("run", "--rm", "--privileged", IMG, "grep", "CapEff", "/proc/self/status")
    assert full.split() == ["CapEff:", "000001ffffffffff"], full
    bad = dockerd.run("run", "--rm", "--cap-add", "NOPE", IMG, "true")
    assert bad.returncode == 125
    assert b'unknown capability: "CAP_NOPE"' in bad.stderr, bad.stderr


def _pty_run(argv: list[str], env: dict[str, str], send: list[tuple[bytes, bytes]],
             timeout: float = 120) -> tuple[int, bytes]:
    """Run `argv` on a pty; for each (expect, reply) wait for `expect`, then type `reply`."""
    pid, fd = pty.fork()
    if pid == 0:  # child
        os.execve(argv[0], argv, env)
    output = b""
    deadline = time.monotonic() + timeout
    steps = list(send)
    try:
        while time.monotonic() < deadline:
            if steps and steps[0][0] in output:
                output = output.split(steps[0][0], 1)[1]
                os.write(fd, steps.pop(0)[1])
            ready, _, _ = select.select([fd], [], [], 0.5)
            if not ready:
                continue
            try:
                data = os.read(fd, 4096)
            except OSError:
                break
            if not data:
                break
            output += data
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    return os.waitstatus_to_exitcode(status), output


def test_run_it_through_a_pty(dockerd: Docker) -> None:
    code, output = _pty_run(
        [DOCKER, "run", "-it", "--rm", IMG, "sh"], dockerd.env,
        [(b"# ", b"echo tty-$((40+2)); tty\r"), (b"tty-42", b"exit 5\r")])
    assert code == 5, output
    assert b"/dev/pts/" in output


@pytest.fixture(scope="module")
def ticker(dockerd: Docker) -> Iterator[str]:
    """A detached container printing a line per second."""
    name = "ticker"
    dockerd.out("run", "-d", "--name", name, "-l", "role=ticker", "-l", "tier=test", IMG,
                "sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 1; done")
    yield name
    dockerd.run("rm", "-f", name)


def test_ps_filters_and_inspect_format(dockerd: Docker, ticker: str) -> None:
    fmt = ["--format", "{{.Names}}"]
    assert dockerd.out("ps", *fmt, "--filter", "label=role=ticker").split() == [ticker]
    assert dockerd.out("ps", *fmt, "--filter", "label=role=other").split() == []
    assert dockerd.out("ps", *fmt, "--filter", "status=running",
                       "--filter", f"name=^/{ticker}$").split() == [ticker]
    assert dockerd.out("ps", *fmt, "--filter", f"ancestor={IMG}").split() == [ticker]
    assert dockerd.out("ps", *fmt, "--filter", "status=exited").split() == []
    bad = dockerd.run("ps", "--filter", "nonsense=1")
    assert bad.returncode != 0 and b"invalid filter" in bad.stderr
    fmt = "{{.State.Status}} {{.Config.Labels.tier}} {{.HostConfig.RestartPolicy.Name}}"
    out = dockerd.out("inspect", "--format", fmt, ticker)
    assert out.split() == ["running", "test", "no"]


def test_logs_exec_top_stats(dockerd: Docker, ticker: str) -> None:
    deadline = time.monotonic() + 60
    while "tick 2" not in dockerd.out("logs", ticker) and time.monotonic() < deadline:
        time.sleep(0.5)  # polling the log for the guest's third line
    tail = dockerd.out("logs", "--tail", "1", ticker).splitlines()
    assert len(tail) == 1 and tail[0].startswith("tick ")
    stamped = dockerd.out("logs", "-t", "--tail", "1", ticker)
    assert stamped[:4].isdigit() and "Z tick " in stamped
    result = dockerd.run("exec", ticker, "sh", "-c", "echo from-exec; exit 4")
    assert (result.returncode, result.stdout) == (4, b"from-exec\n")
    top = dockerd.out("top", ticker).splitlines()
    assert "PID" in top[0] and any("while true" in line for line in top[1:])
    assert not any("/init" in line or "[kthreadd]" in line for line in top)
    stats = json.loads(dockerd.out("stats", "--no-stream", "--format", "{{json .}}", ticker))
    assert stats["Name"] == ticker
    used, _, limit = stats["MemUsage"].partition(" / ")
    assert used.endswith("iB") and limit.endswith("iB")  # 2 GiB: memory grows on demand
    assert stats["CPUPerc"].endswith("%") and int(stats["PIDs"]) >= 1


def test_logs_follow_ends_when_the_container_exits(dockerd: Docker) -> None:
    cid = dockerd.out("run", "-d", IMG, "sh", "-c", "for i in 1 2 3; do echo l$i; sleep 1; done"
                      ).strip()
    result = dockerd.run("logs", "-f", cid, timeout=90)
    assert result.stdout == b"l1\nl2\nl3\n"
    assert dockerd.out("wait", cid).strip() == "0"
    dockerd.out("rm", cid)


def test_exec_it_through_a_pty(dockerd: Docker, ticker: str) -> None:
    code, output = _pty_run([DOCKER, "exec", "-it", ticker, "sh"], dockerd.env,
                            [(b"# ", b"echo in-$((6*7))\r"), (b"in-42", b"exit 3\r")])
    assert code == 3, output


def test_pause_unpause(dockerd: Docker, ticker: str) -> None:
    dockerd.out("pause", ticker)
    try:
        assert dockerd.out("inspect", "-f", "{{.State.Status}}", ticker).strip() == "paused"
        assert "(Paused)" in dockerd.out("ps", "--filter", f"name={ticker}")
        before = dockerd.out("logs", ticker)
        time.sleep(2.5)  # a paused VM prints nothing in this window
        assert dockerd.out("logs", ticker) == before
        refused = dockerd.run("exec", ticker, "true")
        assert refused.returncode != 0 and b"paused" in refused.stderr
    finally:
        dockerd.out("unpause", ticker)
    assert dockerd.out("inspect", "-f", "{{.State.Status}}", ticker).strip() == "running"
    assert dockerd.run("exec", ticker, "true").returncode == 0


def test_attach_sees_output_and_exit_code(dockerd: Docker) -> None:
    cid = dockerd.out("run", "-d", IMG, "sh", "-c", "sleep 3; echo late; exit 6").strip()
    result = dockerd.run("attach", "--no-stdin", cid, timeout=90)
    assert result.stdout == b"late\n"
    assert result.returncode == 6
    dockerd.out("rm", cid)


def test_stop_kill_rm_and_restart_policy(dockerd: Docker) -> None:
    a = dockerd.out("run", "-d", "--name", "stopme", IMG, "sleep", "1000").strip()
    b = dockerd.out("run", "-d", "--name", "killme", IMG, "sleep", "1000").strip()
    start = time.monotonic()
    dockerd.out("stop", "-t", "1", "stopme")
    assert time.monotonic() - start < 30
    dockerd.out("kill", "killme")
    assert dockerd.out("wait", "killme").strip() == "137"
    # as with docker, sleep is PID 1 of the container and has no SIGTERM handler: stop's
    # SIGTERM does nothing and its SIGKILL, a second later, ends it: 128+9
    assert dockerd.out("inspect", "-f", "{{.State.ExitCode}}", a, b).split() == ["137", "137"]
    busy = dockerd.run("rm", "stopme")
    assert busy.returncode == 0
    dockerd.out("rm", "-f", "killme")
    assert dockerd.run("inspect", a).returncode != 0
    cid = dockerd.out("run", "-d", "--restart", "on-failure:2", IMG, "sh", "-c",
                      "echo try; exit 3").strip()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = dockerd.out("inspect", "-f", "{{.RestartCount}} {{.State.Status}}", cid).split()
        if status == ["2", "exited"]:
            break
        time.sleep(1)  # polling the restart manager's progress
    assert status == ["2", "exited"]
    assert dockerd.out("logs", cid) == "try\ntry\ntry\n"
    dockerd.out("rm", cid)


def test_events_with_since_and_until(dockerd: Docker) -> None:
    since = str(int(time.time()) - 1)
    dockerd.out("run", "--rm", "--name", "evt", IMG, "true")
    until = str(int(time.time()) + 1)
    out = dockerd.out("events", "--since", since, "--until", until, "--filter",
                      "container=evt", "--format", "{{.Type}} {{.Action}}", timeout=30)
    actions = [line.split()[1] for line in out.splitlines()]
    assert actions[:2] == ["create", "attach"] or actions[0] == "create"
    for action in ("create", "start", "die", "destroy"):
        assert action in actions, out
    only_die = dockerd.out("events", "--since", since, "--until", until, "--filter",
                           "event=die", "--format", "{{.Action}}", timeout=30)
    assert set(only_die.split()) == {"die"}


def test_images_tag_rmi_save_load(dockerd: Docker, tmp_path: Path) -> None:
    dockerd.out("tag", IMG, "mirror/busybox:v1")
    listed = dockerd.out("images", "--format", "{{.Repository}}:{{.Tag}}").split()
    assert "mirror/busybox:v1" in listed and f"{IMG}:latest" in listed
    saved = subprocess.run([DOCKER, "save", "mirror/busybox:v1"], env=dockerd.env,
                           capture_output=True, timeout=120, check=True).stdout
    assert len(saved) > 100_000
    dockerd.out("rmi", "mirror/busybox:v1")
    assert "mirror/busybox:v1" not in dockerd.out("images", "--format",
                                                  "{{.Repository}}:{{.Tag}}")
    loaded = dockerd.out("load", input=saved)
    assert "mirror/busybox:v1" in loaded
    assert dockerd.out("run", "--rm", "mirror/busybox:v1", "echo", "round-trip") == "round-trip\n"
    dockerd.out("rmi", "mirror/busybox:v1")


REGISTRY_BIN = Path("/usr/bin/docker-registry")


@pytest.mark.skipif(not REGISTRY_BIN.exists(), reason="docker-registry not installed")
def test_push_and_pull_against_a_local_registry(dockerd: Docker, tmp_path: Path) -> None:
    from tests.compat.test_registry import start_registry

    registry = start_registry(tmp_path)
    try:
        ref = f"{registry.host}/compat/busybox:1"
        dockerd.out("tag", IMG, ref)
        pushed = dockerd.run("push", ref, timeout=120)
        assert pushed.returncode == 0, pushed.stderr
        dockerd.out("rmi", ref)
        pulled = dockerd.run("pull", ref, timeout=120)
        assert pulled.returncode == 0, pulled.stderr
        assert dockerd.out("run", "--rm", ref, "echo", "pulled") == "pulled\n"
        dockerd.out("rmi", ref)
    finally:
        registry.proc.terminate()
        registry.proc.wait(timeout=10)
