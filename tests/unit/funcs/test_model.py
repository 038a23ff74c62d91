"""Funcs' pure parts: names, limits, the request's environment, the store across a reopen,
and how a call's end becomes an HTTP answer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steelcup.api.func_routes import call_answer, limits_from
from steelcup.api.http import JsonResponse, RawResponse
from steelcup.errors import InvalidArgument
from steelcup.funcs.model import (
    MAX_REQUEST_ENV,
    Auth,
    Call,
    CallStatus,
    Func,
    Limits,
    check_func_name,
    request_env,
)
from steelcup.funcs.store import FuncStore
from steelcup.state.db import open_db


def test_headers_and_query_become_prefixed_sanitised_variables() -> None:
    env = request_env(
        [("x-request-id", "42"), ("Content-Type", "text/plain"), ("x-a.b", "1"),
         ("authorization", "Bearer secret"), ("cookie", "s=1"), ("proxy", "http://evil"),
         ("x-nul", "a\0b"), ("x-nl", "a\nb")],
        {"name": ["a", "b"], "weird-key!": ["v"], "secret": ["s3"], "async": ["1"],
         "empty": []},
        taken=["HTTP_X_REQUEST_ID=mine"])
    assert sorted(env) == ["HTTP_CONTENT_TYPE=text/plain", "HTTP_X_A_B=1", "QUERY_name=b",
                           "QUERY_weird_key_=v"]


def test_too_many_request_variables_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="too many headers"):
        request_env([(f"x-h{i}", "v") for i in range(MAX_REQUEST_ENV + 1)], {})
    with pytest.raises(InvalidArgument, match="larger than"):
        request_env([("x-big", "v" * 70000)], {})


def test_names_and_limits_are_checked() -> None:
    assert check_func_name("hello-1.v2") == "hello-1.v2"
    for bad in ("", "-x", "a/b", "x" * 64):
        with pytest.raises(InvalidArgument):
            check_func_name(bad)
    with pytest.raises(InvalidArgument, match="concurrency"):
        Limits(concurrency=0).checked()
    with pytest.raises(InvalidArgument, match="timeout"):
        Limits(timeout_s=0).checked()
    with pytest.raises(InvalidArgument, match="max-input"):
        Limits(max_input_bytes=65 * 1024 * 1024).checked()
    assert limits_from({"Timeout": 2.5, "Concurrency": 3}, Limits()) == Limits(
        timeout_s=2.5, concurrency=3)
    with pytest.raises(InvalidArgument, match="Concurrency: expected a number"):
        limits_from({"Concurrency": "3"}, Limits())


def func(name: str = "echo", tenant: str = "") -> Func:
    return Func(name=name, tenant=tenant, spec={"Image": "busybox", "Cmd": ["cat"]},
                auth=Auth.SECRET, secret="s" * 32, created="2026-01-01T00:00:00Z",
                limits=Limits(timeout_s=5, concurrency=2))


def test_funcs_and_calls_survive_a_reopen_and_history_is_bounded(tmp_path: Path) -> None:
    store = FuncStore(open_db(tmp_path), history=3)
    store.insert(func())
    store.insert(func(tenant="alice"))
    for i in range(5):
        store.put_call(Call(id=f"c{i}", func="echo", tenant="alice", created=f"t{i}"))
    store.put_call(Call(id="c4", func="echo", tenant="alice", created="t4",
                        status=CallStatus.DONE, exit_code=0, stdout=b"\0\xff"))
    store.put_call(Call(id="mine", func="echo", tenant="", created="t"))
    again = FuncStore(open_db(tmp_path), history=3)
    assert [f.key for f in again.load()] == ["echo", "alice/echo"]
    assert again.load()[0] == func()
    assert [c.id for c in again.calls("alice", "echo")] == ["c2", "c3", "c4"]
    done = again.call("c4")
    assert done is not None and done.stdout == b"\0\xff" and done.status is CallStatus.DONE
    assert {c.id for c in again.unfinished()} == {"c2", "c3", "mine"}
    again.delete(func(tenant="alice"))
    assert again.calls("alice", "echo") == [] and [f.key for f in again.load()] == ["echo"]


def call(**changes: object) -> Call:
    base = Call(id="abc", func="echo", tenant="", created="t", status=CallStatus.DONE,
                exit_code=0, stdout=b"out")
    return base.advanced(**changes)


def headers(response: object) -> dict[str, str]:
    return {k.lower(): v for k, v in response.headers}  # type: ignore[attr-defined]


def test_a_done_call_answers_its_output_with_its_exit_code_and_id() -> None:
    answer = call_answer(call(), exit_is_error=True)
    assert isinstance(answer, RawResponse) and answer.status == 200 and answer.body == b"out"
    assert headers(answer)["steelcup-exit-code"] == "0"
    assert headers(answer)["steelcup-call-id"] == "abc"


@pytest.mark.parametrize(("changes", "status"), [
    ({"status": CallStatus.FAILED, "exit_code": 3, "error": "exited with 3"}, 500),
    ({"status": CallStatus.TIMED_OUT, "exit_code": None, "error": "past its timeout"}, 504),
    ({"status": CallStatus.FAILED, "exit_code": 137, "stdout_truncated": True}, 502),
    ({"status": CallStatus.FAILED, "exit_code": None, "error": "no such image"}, 502),
])
def test_failures_are_json_errors_naming_the_call(changes: dict[str, object],
                                                   status: int) -> None:
    answer = call_answer(call(stderr=b"why", **changes), exit_is_error=True)
    assert isinstance(answer, JsonResponse) and answer.status == status
    body = json.loads(answer.body)
    assert body["CallId"] == "abc" and "abc" in body["message"] and body["Stderr"] == "why"


def test_the_admin_call_gives_a_failing_exit_its_output() -> None:
    answer = call_answer(call(status=CallStatus.FAILED, exit_code=3), exit_is_error=False)
    assert answer.status == 200 and headers(answer)["steelcup-exit-code"] == "3"


def test_an_unfinished_call_is_202_with_its_state() -> None:
    answer = call_answer(call(status=CallStatus.RUNNING, exit_code=None), exit_is_error=True)
    assert isinstance(answer, JsonResponse) and answer.status == 202
    assert json.loads(answer.body)["Status"] == "running"
