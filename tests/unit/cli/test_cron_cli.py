"""`steelcup cron create`'s request: the job container is the create body `run -d` makes from
the same flags (one parser of run flags), with the cron's own settings beside it."""

from __future__ import annotations

import pytest

from steelcup.cli.commands.cron import create_request
from steelcup.cli.createspec import ContainerOptions, create_body
from steelcup.cli.main import build_parser
from steelcup.errors import InvalidArgument


def _parse(*argv: str) -> object:
    return build_parser("cron").parse_args(["cron", "create", *argv])


def test_the_container_is_what_run_d_sends() -> None:
    args = _parse("--name", "tick", "--schedule", "@every 5s", "--concurrency", "forbid",
                  "--starting-deadline", "1m30s", "--history-limit", "3",
                  "-e", "A=1", "--size", "s2", "--network", "none", "-v", "data:/data",
                  "-w", "/data", "busybox", "sh", "-c", "echo hi")
    body = create_request(args)  # type: ignore[arg-type]
    assert {k: v for k, v in body.items() if k != "Container"} == {
        "Name": "tick", "Schedule": "@every 5s", "Timezone": "", "Concurrency": "forbid",
        "StartingDeadlineSeconds": 90.0, "HistoryLimit": {"Succeeded": 3, "Failed": 3},
        "Suspended": False}
    run = create_body(ContainerOptions("busybox", command=["sh", "-c", "echo hi"],
                                       detach=True, env=["A=1"], workdir="/data",
                                       labels=["sh.steelcup.size=s2"]), for_run=True)
    container = body["Container"]
    host = container.pop("HostConfig")
    assert host.pop("Binds") == ["data:/data"] and host.pop("NetworkMode") == "none"
    assert host.pop("PublishAllPorts") is False
    assert host == run.pop("HostConfig")
    assert container == run
    assert not (container["AttachStdin"] or container["AttachStdout"] or container["Tty"])


def test_job_flags_leave_out_what_a_job_cannot_have() -> None:
    for flag in ("-i", "-t", "--rm", "-d"):
        with pytest.raises(SystemExit):
            _parse("--name", "x", "--schedule", "@hourly", flag, "busybox")
    args = _parse("--name", "x", "--schedule", "@hourly", "--failed-history-limit", "0",
                  "--starting-deadline=-5s", "busybox")
    with pytest.raises(InvalidArgument, match="negative"):
        create_request(args)  # type: ignore[arg-type]
