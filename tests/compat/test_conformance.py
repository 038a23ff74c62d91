"""Where steelcup once answered differently from dockerd (issue 20), driven by the real docker
CLI and docker-py: each test failed before its fix."""

from __future__ import annotations

import io
import json
import os
import pty
import select
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compat.conftest import DOCKER, IMG, Docker

docker = pytest.importorskip("docker")
pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def client(dockerd: Docker) -> Iterator[docker.DockerClient]:
    c = docker.DockerClient(base_url=dockerd.host, version="auto", timeout=180)
    yield c
    c.close()


def inspect(dockerd: Docker, ref: str) -> dict:  # type: ignore[type-arg]
    return json.loads(dockerd.out("inspect", ref))[0]  # type: ignore[no-any-return]


def test_kill_answers_once_the_container_is_dead(dockerd: Docker) -> None:
    """dockerd's SIGKILL waits for the exit: `rm` right after `kill` once got 409 "container
    is running", and inspect still showed it running."""
    for _ in range(3):
        cid = dockerd.out("run", "-d", IMG, "sleep", "1000").strip()
        dockerd.out("kill", cid)
        state = inspect(dockerd, cid)["State"]
        assert (state["Status"], state["Running"], state["ExitCode"]) == ("exited", False, 137)
        dockerd.out("rm", cid)


def test_attach_without_stream_returns_the_logs_and_closes(dockerd: Docker) -> None:
    """`attach?stream=0` once waited for a next run's output that never came: the client hung
    for minutes. dockerd replays the logs (logs=1) and closes; without logs, it closes."""
    quick = docker.APIClient(base_url=dockerd.host, version="auto", timeout=20)
    try:
        cid = quick.create_container(IMG, ["sh", "-c", "echo out; echo err >&2"])["Id"]
        quick.start(cid)
        assert quick.wait(cid)["StatusCode"] == 0
        out = quick.attach(cid, stdout=True, stderr=True, stream=False, logs=True)
        assert sorted(out.split()) == [b"err", b"out"], out
        assert quick.attach(cid, stdout=True, stderr=False, stream=False, logs=True) == b"out\n"
        assert quick.attach(cid, stream=False, logs=False) == b""
        quick.remove_container(cid)
    finally:
        quick.close()


def test_exec_tty_is_decided_by_create(client: docker.DockerClient, dockerd: Docker) -> None:
    """An exec created with Tty=true runs on a terminal even when its start says Tty=false
    (docker-py's default): start's flag only chooses the framing, as dockerd. A start's false
    once took the terminal away (no \\r\\n, stderr apart)."""
    c = client.containers.run(IMG, ["sleep", "1000"], detach=True)
    try:
        api = client.api
        eid = api.exec_create(c.id, ["sh", "-c", "echo out; echo err >&2; [ -t 1 ] && echo tty"],
                              tty=True)["Id"]
        assert api.exec_start(eid, tty=False) == b"out\r\nerr\r\ntty\r\n"
        info = api.exec_inspect(eid)
        assert (info["ExitCode"], info["ProcessConfig"]["tty"]) == (0, True)
        # a missing or non-executable binary starts and exits as with dockerd; inspect says so
        for argv, code in ((["no-such-binary"], 127), (["/etc/passwd"], 126)):
            result = dockerd.run("exec", c.id, *argv)
            assert result.returncode == code, (argv, result)
            assert argv[0].encode() in result.stdout + result.stderr, result
            eid = api.exec_create(c.id, argv)["Id"]
            out = api.exec_start(eid)
            assert argv[0].encode() in out, out
            info = api.exec_inspect(eid)
            assert (info["Running"], info["ExitCode"]) == (False, code), info
    finally:
        c.remove(force=True)


def test_env_entry_without_value_is_dropped(client: docker.DockerClient) -> None:
    """dockerd drops an `Env` entry without `=` (taking the value from the client's
    environment is the CLI's job); steelcup once stored it as `Foo=`."""
    c = client.containers.run(IMG, ["sleep", "1000"], environment=["Foo", "A=1"], detach=True)
    try:
        env = c.attrs["Config"]["Env"]
        assert "A=1" in env and not any(e.partition("=")[0] == "Foo" for e in env), env
        code, out = c.exec_run(["env"], environment=["A", "B=2", "Bare"])
        names = [line.partition("=")[0] for line in out.decode().splitlines()]
        assert code == 0 and "B" in names and not {"A", "Foo", "Bare"} & set(names), out
    finally:
        c.remove(force=True)


def test_bind_mounts_show_rprivate_propagation(dockerd: Docker, tmp_path: Path) -> None:
    """dockerd shows `Propagation: rprivate` for binds (steelcup showed "")."""
    cid = dockerd.out("create", "-v", f"{tmp_path}:/data", "-v", "vol-prop:/v", IMG,
                      "true").strip()
    try:
        mounts = {m["Destination"]: m for m in inspect(dockerd, cid)["Mounts"]}
        assert mounts["/data"]["Type"] == "bind" and mounts["/data"]["Propagation"] == "rprivate"
        assert mounts["/v"]["Type"] == "volume" and mounts["/v"]["Propagation"] == ""
    finally:
        dockerd.out("rm", "-v", cid)
        dockerd.run("volume", "rm", "vol-prop")


def test_diff_commit_export_hide_what_steelcup_made(dockerd: Docker, tmp_path: Path) -> None:
    """`docker diff` once listed /dev, /proc, /sys, /etc/hosts, /etc/hostname (steelcup's own
    for each run); dockerd hides them, and keeps them out of commit and export."""
    cid = dockerd.out("run", "-d", IMG, "sh", "-c", "echo hi > /tmp/x").strip()
    try:
        assert dockerd.out("wait", cid).strip() == "0"
        assert dockerd.out("diff", cid).splitlines() == ["C /tmp", "A /tmp/x"]
        dockerd.out("export", "-o", str(tmp_path / "fs.tar"), cid)
        with tarfile.open(tmp_path / "fs.tar") as tar:
            exported = {m.name.rstrip("/"): m.size for m in tar.getmembers()}
        assert "tmp/x" in exported and "dev" in exported
        # as in dockerd's export: its mount points, empty
        assert exported["etc/hosts"] == exported["etc/hostname"] == 0, exported
        dockerd.out("commit", cid, "conf-committed:1")
        dockerd.out("save", "-o", str(tmp_path / "img.tar"), "conf-committed:1")
        with tarfile.open(tmp_path / "img.tar") as outer:
            manifest = json.load(outer.extractfile("manifest.json"))  # type: ignore[arg-type]
            top = outer.extractfile(manifest[0]["Layers"][-1])
            assert top is not None
            with tarfile.open(fileobj=io.BytesIO(top.read())) as layer:
                names = {m.name.rstrip("/") for m in layer.getmembers()}
        assert "tmp/x" in names and not names & {"dev", "proc", "sys", "etc/hosts",
                                                 "etc/hostname"}, names
    finally:
        dockerd.run("rm", "-f", cid)
        dockerd.run("rmi", "conf-committed:1")


def _on_pty(argv: list[str], env: dict[str, str], steps: list[tuple[bytes, bytes]],
            timeout_s: float = 60) -> tuple[int | None, bytes]:
    """Run `argv` on a pty; for each (expect, keys) wait for `expect` (b"": two seconds after
    the start, or half a second after the previous keys), then type `keys`. Detach keys are
    typed one at a time, as a person does: the docker CLI only sees them so.
    The exit code, or None (after killing it) if it had not ended by `timeout_s`."""
    pid, fd = pty.fork()
    if pid == 0:  # child
        os.execve(argv[0], argv, env)
    output = seen = b""
    started = last = time.monotonic()
    deadline = started + timeout_s
    try:
        while time.monotonic() < deadline:
            if steps and (steps[0][0] in seen if steps[0][0] else
                          time.monotonic() > last + (0.5 if last > started else 2)):
                seen = seen.split(steps[0][0], 1)[1] if steps[0][0] else b""
                os.write(fd, steps.pop(0)[1])
                last = time.monotonic()
            ready, _, _ = select.select([fd], [], [], 0.3)
            if ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    data = b""
                if not data:
                    break
                output += data
                seen += data
        while True:  # the pty reads EOF a moment before the process has exited
            done, status = os.waitpid(pid, os.WNOHANG)
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if done == 0:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return None, output
        return os.waitstatus_to_exitcode(status), output
    finally:
        os.close(fd)


def test_detach_keys_detach_run_it_and_attach(dockerd: Docker) -> None:
    """ctrl-p ctrl-q (or --detach-keys) leaves the container running and the client ends, as
    with dockerd. The client's going once closed the terminal's input (StdinOnce), so the
    next attach found a shell that no longer read anything."""
    name = "detachable"
    code, out = _on_pty([DOCKER, "run", "-it", "--name", name, IMG, "sh"], dockerd.env,
                        [(b"# ", b"echo ready-$((1+1))\r"), (b"ready-2\r\n/ # ", b"\x10"),
                         (b"", b"\x11")])
    try:
        assert code == 0, (code, out)
        assert inspect(dockerd, name)["State"]["Running"] is True
        code, out = _on_pty([DOCKER, "attach", "--detach-keys", "ctrl-x,y", name], dockerd.env,
                            [(b"", b"\r"), (b"# ", b"echo again-$((2+2))\r"),
                             (b"again-4\r\n/ # ", b"\x18"), (b"", b"y")])
        # dockerd's CLI says so and exits 1 when `attach` detaches (nerdctl issue 3571)
        assert code == 1 and b"read escape sequence" in out, (code, out)
        assert inspect(dockerd, name)["State"]["Running"] is True
        # the container's shell still answers: detaching did not end or wedge it
        code, out = _on_pty([DOCKER, "attach", name], dockerd.env,
                            [(b"", b"\r"), (b"# ", b"echo third-$((3+3))\r"),
                             (b"third-6\r\n/ # ", b"exit 7\r")])
        assert code == 7, (code, out)
    finally:
        dockerd.run("rm", "-f", name)


def test_detach_keys_sent_to_the_daemon_end_the_session(client: docker.DockerClient) -> None:
    """A client that sends the detach keys over the stream (docker-py's socket; the docker
    CLI watches for them itself) is detached by the daemon, as dockerd: it once hung."""
    c = client.containers.run(IMG, ["sh"], tty=True, stdin_open=True, detach=True)
    try:
        for keys, typed in ((None, b"\x10\x11"), ("ctrl-x,y", b"\x18y")):
            params = {"stdin": 1, "stdout": 1, "stream": 1}
            if keys:
                params["detachKeys"] = keys
            sock = client.api.attach_socket(c.id, params=params)
            raw = sock._sock
            raw.settimeout(30)
            raw.sendall(b"echo hi-$((20+1))\r")
            seen = b""
            while b"hi-21" not in seen:
                data = raw.recv(4096)
                assert data, seen
                seen += data
            raw.sendall(typed)
            while raw.recv(4096):  # the daemon ends the session: EOF, not a timeout
                pass
            sock.close()
            c.reload()
            assert c.status == "running"
        bad = client.api._post(client.api._url("/containers/{0}/attach", c.id),
                               params={"stream": 1, "stdout": 1, "detachKeys": "ctrl-pp"})
        assert bad.status_code == 400 and "Invalid detach keys" in bad.text, bad.text
    finally:
        c.remove(force=True)


def test_detach_keys_end_an_exec_session(client: docker.DockerClient) -> None:
    """A terminal exec's detach keys (DetachKeys at create, ctrl-p ctrl-q by default) end the
    client's session and leave the process running, as dockerd."""
    c = client.containers.run(IMG, ["sleep", "1000"], detach=True)
    try:
        api = client.api
        for keys, typed in ((None, b"\x10\x11"), ("ctrl-x,y", b"\x18y")):
            eid = api.exec_create(c.id, ["sh"], tty=True, stdin=True, detach_keys=keys)["Id"]
            sock = api.exec_start(eid, tty=True, socket=True)
            raw = sock._sock
            raw.settimeout(30)
            raw.sendall(b"echo ex-$((40+2))\r")
            seen = b""
            while b"ex-42" not in seen:
                data = raw.recv(4096)
                assert data, seen
                seen += data
            raw.sendall(typed)
            while raw.recv(4096):  # the daemon ends the session: EOF, not a timeout
                pass
            sock.close()
            assert api.exec_inspect(eid)["Running"] is True
    finally:
        c.remove(force=True)
