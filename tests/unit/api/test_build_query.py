"""POST /build's query as the docker CLI and docker-py send it, decoded and checked."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import pytest

from steelcup.api.build_routes import build_request, error_message
from steelcup.api.http_types import Request
from steelcup.build.builder import BuildFailed
from steelcup.errors import InvalidArgument, NotFound, Unsupported


def request(pairs: list[tuple[str, str]]) -> Request:
    return Request(None, "POST", "/v1.43/build?" + urlencode(pairs), [])  # type: ignore[arg-type]


def test_docker_cli_query() -> None:
    req = request([("t", "a:1"), ("t", "b"), ("buildargs", json.dumps({"X": "1", "UNSET": None})),
                   ("labels", json.dumps({"l": "v"})), ("target", "build"), ("nocache", "1"),
                   ("q", "1"), ("networkmode", "default"), ("extrahosts", "h:1.2.3.4,g=::1"),
                   ("rm", "1"), ("forcerm", "0"), ("pull", "true"), ("platform", "linux/amd64")])
    b = build_request(req)
    assert b.tags == ("a:1", "b") and b.build_args == {"X": "1"} and b.labels == {"l": "v"}
    assert (b.target, b.nocache, b.quiet, b.pull, b.network_mode) == ("build", True, True,
                                                                     True, "")
    assert b.extra_hosts == (("h", "1.2.3.4"), ("g", "::1")) and b.tenant is None


@pytest.mark.parametrize(("pairs", "error"), [
    ([("t", "Bad Tag")], InvalidArgument),
    ([("buildargs", "[1]")], InvalidArgument),
    ([("buildargs", '{"X": 1}')], InvalidArgument),
    ([("extrahosts", "nohost")], InvalidArgument),
    ([("networkmode", "host")], InvalidArgument),
    ([("remote", "https://github.com/owner/repo.git")], Unsupported),
    ([("remote", "git://example.invalid/repo")], Unsupported),
    ([("remote", "ctx.tar")], InvalidArgument),
])
def test_bad_queries(pairs: list[tuple[str, str]], error: type[Exception]) -> None:
    with pytest.raises(error):
        build_request(request(pairs))


def test_error_messages_carry_a_run_exit_code() -> None:
    failed: dict[str, Any] = error_message(BuildFailed("The command 'x' returned ... 3", 3))
    assert failed["errorDetail"] == {"message": "The command 'x' returned ... 3", "code": 3}
    assert error_message(NotFound("No such image: x"))["error"] == "No such image: x"
    assert error_message(RuntimeError("boom"))["error"] == "internal error: boom"


def test_an_http_remote_is_taken() -> None:
    assert build_request(request([("remote", "https://example.invalid/ctx.tar.gz")])).tags == ()
