"""Pure CLI parts: flags -> API bodies, docker's output formats, the template subset."""

from __future__ import annotations

import pytest

from steelcup.cli.commands.containers import _options, filters_json, parse_since
from steelcup.cli.commands.images import split_reference
from steelcup.cli.createspec import (
    create_body,
    exec_body,
    parse_env_file,
    parse_memory,
)
from steelcup.cli.format import (
    ellipsis,
    human_duration,
    human_size,
    images_table,
    parse_time,
    ps_table,
    render_template,
)
from steelcup.cli.main import build_parser
from steelcup.errors import InvalidArgument


def parse_run(*argv: str) -> dict[str, object]:
    args = build_parser("run").parse_args(["run", *argv])
    return create_body(_options(args, run=True), for_run=True)


def test_run_flags_become_docker_create_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FROM_HOST", "yes")
    monkeypatch.delenv("UNSET_VAR", raising=False)
    body = parse_run(
        "-i", "--rm", "--name", "web", "-e", "A=1", "-e", "FROM_HOST", "-e", "UNSET_VAR",
        "-w", "/srv", "-u", "1000:1000", "-h", "box", "-m", "512m", "--cpus", "1.5",
        "-l", "tier=front", "--stop-signal", "SIGINT", "--entrypoint", "/bin/sh",
        "busybox", "-c", "ls -la",
    )  # fmt: skip
    assert body["Image"] == "busybox"
    assert body["Cmd"] == ["-c", "ls -la"]  # flags after IMAGE belong to the command
    assert body["Entrypoint"] == ["/bin/sh"]
    assert body["Env"] == ["A=1", "FROM_HOST=yes"]
    assert (body["WorkingDir"], body["User"], body["Hostname"]) == ("/srv", "1000:1000", "box")
    assert (body["AttachStdin"], body["AttachStdout"], body["AttachStderr"]) == (True, True, True)
    assert (body["OpenStdin"], body["StdinOnce"], body["Tty"]) == (True, True, False)
    assert body["Labels"] == {"tier": "front"}
    assert body["StopSignal"] == "SIGINT"
    assert body["HostConfig"] == {
        "AutoRemove": True,
        "Memory": 512 * 1024 * 1024,
        "NanoCpus": 1_500_000_000,
    }


def test_run_detached_and_defaults() -> None:
    body = parse_run("-d", "alpine")
    assert body["Cmd"] is None and body["Entrypoint"] is None
    assert (body["AttachStdin"], body["AttachStdout"], body["AttachStderr"]) == (
        False,
        False,
        False,
    )
    assert body["HostConfig"] == {"AutoRemove": False}
    assert "StopSignal" not in body
    assert parse_run("--entrypoint", "", "alpine")["Entrypoint"] == [""]


def test_storage_opt_flag() -> None:
    body = parse_run("--storage-opt", "size=20G", "alpine")
    assert body["HostConfig"]["StorageOpt"] == {"size": "20G"}  # type: ignore[index]
    with pytest.raises(InvalidArgument, match="KEY=VALUE"):
        parse_run("--storage-opt", "20G", "alpine")


def test_log_flags() -> None:
    body = parse_run("--log-driver", "json-file", "--log-opt", "max-size=1m", "--log-opt",
                     "max-file=2", "alpine")
    assert body["HostConfig"]["LogConfig"] == {  # type: ignore[index]
        "Type": "json-file", "Config": {"max-size": "1m", "max-file": "2"}}


def test_capability_flags_go_to_host_config_as_given() -> None:
    body = parse_run("--cap-add", "NET_ADMIN", "--cap-add", "sys_ptrace", "--cap-drop", "CHOWN",
                     "busybox")
    assert body["HostConfig"] == {"AutoRemove": False, "CapAdd": ["NET_ADMIN", "sys_ptrace"],
                                  "CapDrop": ["CHOWN"]}
    assert parse_run("--privileged", "busybox")["HostConfig"] == {"AutoRemove": False,
                                                                  "Privileged": True}
    args = build_parser("create").parse_args(["create", "--cap-drop", "ALL", "alpine"])
    assert create_body(_options(args, run=False), for_run=False)["HostConfig"]["CapDrop"] == [
        "ALL"]
    args = build_parser("exec").parse_args(["exec", "--privileged", "c1", "id"])
    assert args.privileged and args.command == ["id"]
    assert exec_body(["id"], detach=False, interactive=False, tty=False,
                     privileged=True)["Privileged"] is True


def test_create_keeps_stdin_once_off() -> None:
    args = build_parser("create").parse_args(["create", "-i", "alpine", "sh"])
    body = create_body(_options(args, run=False), for_run=False)
    assert (body["OpenStdin"], body["AttachStdin"], body["StdinOnce"]) == (True, True, False)


def test_exec_body() -> None:
    body = exec_body(["sh"], detach=False, interactive=True, tty=True, env=["A=1"], workdir="/")
    assert body["AttachStdin"] and body["Tty"] and body["Cmd"] == ["sh"]
    assert exec_body(["true"], detach=True, interactive=True, tty=False)["AttachStdout"] is False
    with pytest.raises(InvalidArgument):
        exec_body([], detach=False, interactive=False, tty=False)


def test_parse_memory_and_env_file() -> None:
    assert parse_memory("1g") == 1024**3
    assert parse_memory("1.5G") == int(1.5 * 1024**3)
    assert parse_memory("1024") == 1024
    assert parse_memory("64mb") == 64 * 1024**2
    with pytest.raises(InvalidArgument):
        parse_memory("lots")
    text = "# comment\nA=1\n\nB=x=y\nHOME_VAR\nMISSING\n"
    assert parse_env_file(text, {"HOME_VAR": "h"}) == ["A=1", "B=x=y", "HOME_VAR=h"]
    with pytest.raises(InvalidArgument):
        parse_env_file("BAD KEY=1", {})


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.2, "Less than a second"),
        (1, "1 second"),
        (59, "59 seconds"),
        (60, "About a minute"),
        (119, "About a minute"),
        (120, "2 minutes"),
        (3600, "About an hour"),
        (5 * 3600, "5 hours"),
        (3 * 86400, "3 days"),
        (20 * 86400, "2 weeks"),
        (90 * 86400, "3 months"),
        (800 * 86400, "2 years"),
    ],
)
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_human_size_and_ellipsis() -> None:
    assert human_size(4261550) == "4.26MB"
    assert human_size(512) == "512B"
    assert human_size(1234) == "1.23kB"
    assert human_size(1.5e9) == "1.5GB"
    assert ellipsis("abcdef", 4) == "abc…"
    assert ellipsis("abc", 4) == "abc"


def test_ps_table_matches_docker_layout() -> None:
    now = 1_700_000_100.0
    rows = [
        {
            "Id": "4f66ad9a0b2e" + "0" * 52,
            "Names": ["/web"],
            "Image": "busybox",
            "Command": "sh -c 'while true; do sleep 1; done'",
            "Created": 1_700_000_000,
            "Status": "Up About a minute",
            "Ports": [],
        },
        {
            "Id": "a" * 64,
            "Names": ["/x"],
            "Image": "alpine:3.19",
            "Command": "true",
            "Created": 1_700_000_095,
            "Status": "Exited (0) 2 seconds ago",
        },
    ]
    out = ps_table(rows, now=now)
    assert out == (
        "CONTAINER ID   IMAGE         COMMAND                  CREATED              "
        "STATUS                     PORTS     NAMES\n"
        '4f66ad9a0b2e   busybox       "sh -c \'while true; …"   About a minute ago   '
        "Up About a minute                    web\n"
        'aaaaaaaaaaaa   alpine:3.19   "true"                   5 seconds ago        '
        "Exited (0) 2 seconds ago             x\n"
    )


def test_images_table() -> None:
    out = images_table(
        [
            {"Id": "sha256:" + "b" * 64, "RepoTags": ["busybox:latest", "localhost:5000/bb"],
             "Created": 100, "Size": 4261550},
            {"Id": "sha256:" + "c" * 64, "RepoTags": None, "Created": 100, "Size": 10},
        ],
        now=100 + 3 * 86400,
    )  # fmt: skip
    lines = out.splitlines()
    assert lines[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert lines[1].split() == ["busybox", "latest", "bbbbbbbbbbbb", "3", "days", "ago", "4.26MB"]
    assert lines[2].split()[:2] == ["localhost:5000/bb", "<none>"]
    assert lines[3].split()[:2] == ["<none>", "<none>"]


def test_render_template_subset() -> None:
    obj = {
        "Id": "abc",
        "State": {"ExitCode": 3, "Running": False},
        "Config": {"Env": ["A=1"], "Cmd": ["sh"]},
    }
    assert render_template("{{.State.ExitCode}}", obj) == "3"
    assert render_template("{{.Id}}", obj) == "abc"
    assert render_template("{{json .Config}}", obj) == '{"Env":["A=1"],"Cmd":["sh"]}'
    assert render_template("{{ .State.Running }}/{{.Config.Cmd}}", obj) == "false/[sh]"
    assert render_template("{{.Missing}}", obj) == "<no value>"
    with pytest.raises(InvalidArgument, match="unsupported"):
        render_template("{{range .Config.Env}}{{end}}", obj)


def test_since_filters_and_references() -> None:
    assert parse_since("10m", 1000.0) == "400"
    assert parse_since("1h30m", 10000.0) == "4600"
    assert parse_since("1700000000", 0) == "1700000000"
    assert parse_since("2023-11-14T22:13:20Z", 0) == "1700000000"
    assert parse_time("2023-11-14T22:13:20.5+00:00") == 1700000000.5
    with pytest.raises(InvalidArgument):
        parse_since("yesterday", 0)
    assert filters_json(["status=exited", "status=created", "name=web"]) == (
        '{"status":{"exited":true,"created":true},"name":{"web":true}}'
    )
    assert split_reference("busybox:1.36") == ("busybox", "1.36")
    assert split_reference("localhost:5000/a") == ("localhost:5000/a", "")
    assert split_reference("localhost:5000/a:v1") == ("localhost:5000/a", "v1")


def test_bad_flags_exit_125(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser("ps").parse_args(["ps", "--bogus"])
    assert exc.value.code == 125
    assert "--bogus" in capsys.readouterr().err


def test_health_flags_become_the_docker_clis_healthcheck() -> None:
    body = parse_run("--health-cmd", "test -f /tmp/ok", "--health-interval", "1s",
                     "--health-timeout", "1m30s", "--health-retries", "5",
                     "--health-start-period", "500ms", "--health-start-interval", "1.5s",
                     "busybox")
    assert body["Healthcheck"] == {
        "Test": ["CMD-SHELL", "test -f /tmp/ok"], "Interval": 1_000_000_000,
        "Timeout": 90_000_000_000, "StartPeriod": 500_000_000,
        "StartInterval": 1_500_000_000, "Retries": 5}
    # timing alone keeps the image's test (Test null), as the docker CLI sends it
    assert parse_run("--health-interval", "2s", "busybox")["Healthcheck"]["Test"] is None  # type: ignore[index]
    assert parse_run("--no-healthcheck", "busybox")["Healthcheck"] == {"Test": ["NONE"]}
    args = build_parser("create").parse_args(["create", "--health-cmd", "true", "alpine"])
    created = create_body(_options(args, run=False), for_run=False)
    assert created["Healthcheck"]["Test"] == ["CMD-SHELL", "true"]
    assert "Healthcheck" not in parse_run("busybox")


@pytest.mark.parametrize(("argv", "message"), [
    (["--no-healthcheck", "--health-cmd", "true"], "conflicts with --health-"),
    (["--health-interval=-1s"], "--health-interval cannot be negative"),
    (["--health-retries", "-2"], "--health-retries cannot be negative"),
    (["--health-timeout", "10"], "invalid argument '10' for --health-timeout"),
    (["--health-start-period", "1x"], "for --health-start-period"),
])
def test_bad_health_flags_are_refused(argv: list[str], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse_run(*argv, "busybox")


def test_health_flags_have_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser("run").parse_args(["run", "--help"])
    text = capsys.readouterr().out
    for flag in ("--health-cmd", "--health-interval", "--health-timeout", "--health-retries",
                 "--health-start-period", "--health-start-interval", "--no-healthcheck"):
        assert flag in text


def test_read_only_is_docker_run_read_only() -> None:
    assert parse_run("--read-only", "busybox")["HostConfig"] == {
        "AutoRemove": False, "ReadonlyRootfs": True}
    assert "ReadonlyRootfs" not in parse_run("busybox")["HostConfig"]  # type: ignore[operator]


def test_checkpoint_flags() -> None:
    assert parse_run("--checkpointable", "busybox")["HostConfig"] == {
        "AutoRemove": False, "SteelcupCheckpointable": True}
    args = build_parser("start").parse_args(["start", "--checkpoint", "cp1", "c1"])
    assert args.checkpoint == "cp1" and args.containers == ["c1"]
    args = build_parser("checkpoint").parse_args(
        ["checkpoint", "create", "--leave-running", "c1", "cp1"])
    assert (args.container, args.name, args.leave_running) == ("c1", "cp1", True)
    args = build_parser("checkpoint").parse_args(["checkpoint", "rm", "c1", "a", "b"])
    assert (args.container, args.names) == ("c1", ["a", "b"])
