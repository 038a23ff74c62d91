"""`func create` sends as its Spec the very create body `run -i` sends for the same flags, and
its limits in the API's units."""

from __future__ import annotations

import pytest

from steelcup.cli import netflags
from steelcup.cli.commands.containers import _options
from steelcup.cli.commands.func import create_request
from steelcup.cli.createspec import create_body
from steelcup.cli.main import build_parser
from steelcup.errors import InvalidArgument

FLAGS = ("-e", "A=1", "-w", "/srv", "-m", "64m", "--cap-add", "NET_ADMIN", "-l", "k=v")


def test_the_spec_is_runs_create_body_with_stdin_open() -> None:
    args = build_parser("func").parse_args(
        ["func", "create", "--name", "up", "--timeout", "1m30s", "--concurrency", "3",
         "--max-input", "2k", "--max-output", "1m", "--auth", "token", *FLAGS,
         "busybox", "tr", "a-z", "A-Z"])
    request = create_request(args)
    run_args = build_parser("run").parse_args(["run", "-i", *FLAGS, "busybox", "tr", "a-z",
                                               "A-Z"])
    run_body = create_body(_options(run_args, run=True), for_run=True)
    netflags.apply(run_body, run_args)  # as `run` does
    assert request["Spec"] == run_body
    assert request["Spec"]["OpenStdin"] and request["Spec"]["StdinOnce"]
    assert {k: v for k, v in request.items() if k != "Spec"} == {
        "Name": "up", "Auth": "token", "Timeout": 90.0, "Concurrency": 3, "MaxInput": 2048,
        "MaxOutput": 1024 * 1024}


@pytest.mark.parametrize(("argv", "message"), [
    (["func", "create", "busybox", "cat"], "needs --name"),
    (["func", "create", "--name", "x", "-t", "busybox"], "no terminal"),
])
def test_refusals(argv: list[str], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        create_request(build_parser("func").parse_args(argv))
