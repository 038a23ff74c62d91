"""Funcs over the real runtime with a fake VM source: each call is a fresh container fed its
input, its output collected, its container removed; exits, timeouts, the output cap, the
concurrency limit and the queue, tenants' scoping and the recovery after a daemon stop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from steelcup.errors import InvalidArgument, NotFound, TooBusy
from steelcup.funcs.model import FUNC_LABEL, Auth, Call, CallStatus, Limits
from steelcup.funcs.service import Funcs
from steelcup.funcs.store import FuncStore
from steelcup.guest.client import Stream
from steelcup.runtime.containers import Runtime
from steelcup.runtime.model import ContainerConfig
from steelcup.state.db import open_db
from steelcup.tenancy.credentials import Authority
from steelcup.tenancy.manager import Tenants
from steelcup.tenancy.store import TenantStore
from tests.unit.runtime.fakevm import FakeProcess, FakeVms
from tests.unit.runtime.support import make_runtime

T = TypeVar("T")
SPEC = {"Image": "base:1", "Cmd": ["cat"], "Env": ["MINE=1"]}


def run(tmp_path: Path, body: Callable[[Funcs, Runtime, FakeVms], Awaitable[T]]) -> T:
    async def main() -> T:
        vms = FakeVms()
        db = open_db(tmp_path)
        runtime = make_runtime(tmp_path, db, None, vms.source())
        funcs = Funcs(FuncStore(db), runtime, runtime.create, runtime.events)
        try:
            return await asyncio.wait_for(body(funcs, runtime, vms), 20)
        finally:
            await funcs.close()
            await runtime.shutdown()

    return asyncio.run(main())


async def fed(process: FakeProcess) -> bytes:
    """The process's whole stdin, once the call closed it."""
    while not process.stdin_closed:
        await asyncio.sleep(0.005)
    return bytes(process.stdin)


async def echo(process: FakeProcess, code: int = 0) -> None:
    process.write(await fed(process))
    process.exit(code)


def test_a_call_feeds_stdin_returns_stdout_and_removes_its_container(tmp_path: Path) -> None:
    async def body(funcs: Funcs, rt: Runtime, vms: FakeVms) -> None:
        func = funcs.create("", "echo", SPEC, Auth.SECRET, Limits())
        data = bytes(range(256)) * 300
        call = funcs.submit(func, data, ["HTTP_X_A=1"])
        process = await vms.next_process()
        assert process.spec.args == ("cat",)
        assert {"MINE=1", "HTTP_X_A=1", f"STEELCUP_CALL_ID={call.id}",
                "STEELCUP_FUNC=echo"} <= set(process.spec.env)
        assert process.spec.stdin and not process.spec.tty
        await echo(process)
        done = await funcs.wait(call.id)
        assert (done.status, done.exit_code, done.stdout) == (CallStatus.DONE, 0, data)
        assert rt.list() == [] and vms.machines[0].closed
        assert funcs.call(call.id).stdout == data  # from the store, once finished
        assert [c.id for c in funcs.calls("echo")] == [call.id]

    run(tmp_path, body)


def test_a_non_zero_exit_fails_the_call_with_its_code(tmp_path: Path) -> None:
    async def body(funcs: Funcs, rt: Runtime, vms: FakeVms) -> None:
        func = funcs.create("", "three", SPEC, Auth.SECRET, Limits())
        call = funcs.submit(func, b"", [])
        process = await vms.next_process()
        process.write(b"bad\n", stream=Stream.STDERR)
        process.exit(3)
        done = await funcs.wait(call.id)
        assert (done.status, done.exit_code, done.stderr) == (CallStatus.FAILED, 3, b"bad\n")
        assert "exited with 3" in done.error

    run(tmp_path, body)


def test_a_call_past_its_timeout_is_killed_with_its_vm(tmp_path: Path) -> None:
    async def body(funcs: Funcs, rt: Runtime, vms: FakeVms) -> None:
        func = funcs.create("", "slow", SPEC, Auth.SECRET, Limits(timeout_s=0.3))
        call = funcs.submit(func, b"", [])
        await vms.next_process()  # never exits by itself
        done = await funcs.wait(call.id)
        assert done.status is CallStatus.TIMED_OUT and done.exit_code is None
        assert "timeout of 0.3s" in done.error
        assert vms.machines[0].closed and rt.list() == []

    run(tmp_path, body)


def test_output_past_the_cap_stops_the_call(tmp_path: Path) -> None:
    async def body(funcs: Funcs, rt: Runtime, vms: FakeVms) -> None:
        func = funcs.create("", "big", SPEC, Auth.SECRET, Limits(max_output_bytes=1000))
        call = funcs.submit(func, b"", [])
        process = await vms.next_process()
        for _ in range(100):
            process.write(b"x" * 100)
        done = await funcs.wait(call.id)
        assert done.status is CallStatus.FAILED and done.stdout_truncated
        assert len(done.stdout) == 1000 and "cap of 1000 bytes" in done.error
        assert rt.list() == []

    run(tmp_path, body)


def test_input_past_the_cap_is_refused_before_any_container(tmp_path: Path) -> None:
    async def body(funcs: Funcs, rt: Runtime, vms: FakeVms) -> None:
        func = funcs.create("", "small", SPEC, Auth.SECRET, Limits(max_input_bytes=10))
        with pytest.raises(InvalidArgument, match="cap of 10 bytes"):
            funcs.submit(func, b"x" * 11, [])
        assert vms.machines == []

    run(tmp_path, body)


def test_concurrency_bounds_running_calls_and_the_queue_bounds_waiting(
        tmp_path: Path) -> None:
    async def body(funcs: Funcs, rt: Runtime, vms: FakeVms) -> None:
        func = funcs.create("", "pair", SPEC, Auth.SECRET,
                            Limits(concurrency=2, queue=3))
        calls = [funcs.submit(func, str(i).encode(), []) for i in range(5)]
        with pytest.raises(TooBusy):
            funcs.submit(func, b"", [])
        first = [await vms.next_process(), await vms.next_process()]
        await asyncio.sleep(0.05)
        assert vms.started.empty() and len(rt.list()) == 2  # the other three wait
        seen = [await fed(p) for p in first]
        for process in first:
            await echo(process)
        for _ in range(3):
            process = await vms.next_process()
            seen.append(await fed(process))
            await echo(process)
        results = [await funcs.wait(c.id) for c in calls]
        assert [r.stdout for r in results] == [b"0", b"1", b"2", b"3", b"4"]
        assert sorted(seen) == [b"0", b"1", b"2", b"3", b"4"]
        assert funcs.gate.peak[func.key] == 2

    run(tmp_path, body)


def test_tenants_see_and_reach_only_their_own_funcs(tmp_path: Path) -> None:
    async def body(funcs: Funcs, rt: Runtime, vms: FakeVms) -> None:
        image = rt.images.get("base:1")
        rt.images.get = lambda ref, tenant=None: image  # type: ignore[method-assign]
        a = funcs.create("alice", "hello", SPEC, Auth.SECRET, Limits())
        b = funcs.create("bob", "hello", SPEC, Auth.TOKEN, Limits())
        mine = funcs.create("", "hello", SPEC, Auth.SECRET, Limits())
        assert funcs.resolve("hello", "alice") == "alice/hello"
        assert funcs.resolve("hello", None) == "hello"  # the operator's own first
        assert funcs.resolve("alice/hello", None) == "alice/hello"
        for ref in ("alice/hello", "nothing"):
            with pytest.raises(NotFound):
                funcs.resolve(ref, "bob")
        assert [f.key for f in funcs.list("bob")] == ["bob/hello"]
        # the gateway: a func's secret reaches it; bob's token reaches only bob's
        assert funcs.for_gateway("hello", secret=a.secret, tenant=None) == a
        assert funcs.for_gateway("hello", secret=None, tenant="bob") == b
        assert funcs.for_gateway("hello", secret=mine.secret, tenant="bob") == mine
        for secret, tenant in ((None, "alice"), ("wrong", None), (None, None)):
            with pytest.raises(NotFound):
                funcs.for_gateway("hello", secret=secret, tenant=tenant)
        funcs.remove("hello")  # the operator's, by key
        with pytest.raises(InvalidArgument, match="ambiguous"):
            funcs.resolve("hello", None)

    run(tmp_path, body)


def test_a_bad_spec_or_missing_image_is_refused_at_create(tmp_path: Path) -> None:
    async def body(funcs: Funcs, rt: Runtime, vms: FakeVms) -> None:
        with pytest.raises(NotFound):
            funcs.create("", "x", {"Image": "nope:1"}, Auth.SECRET, Limits())
        with pytest.raises(InvalidArgument):
            funcs.create("", "x", {"Image": "base:1", "HostConfig": {"NanoCpus": -1}},
                         Auth.SECRET, Limits())
        assert funcs.list() == []

    run(tmp_path, body)


def test_recover_fails_unfinished_calls_and_removes_their_containers(tmp_path: Path) -> None:
    async def body(funcs: Funcs, rt: Runtime, vms: FakeVms) -> None:
        funcs.store.put_call(Call(id="old", func="echo", tenant="", created="t",
                                  status=CallStatus.RUNNING))
        rt.create(ContainerConfig(image="base:1", image_id="", cmd=("cat",),
                                  labels=((FUNC_LABEL, "echo"),)), None)
        rt.create(ContainerConfig(image="base:1", image_id="", cmd=("cat",)), "keep")
        await funcs.recover()
        old = funcs.call("old")
        assert old.status is CallStatus.FAILED and "daemon stopped" in old.error
        assert [r.name for r in rt.list()] == ["keep"]

    run(tmp_path, body)


def test_a_tenants_func_calls_quota_spans_its_funcs(tmp_path: Path) -> None:
    async def body(unlimited: Funcs, rt: Runtime, vms: FakeVms) -> None:
        tenants = Tenants(TenantStore(open_db(tmp_path / "t")), Authority(tmp_path / "tls"))
        tenants.create("alice", ["func-calls=1"])
        funcs = Funcs(unlimited.store, rt, rt.create, rt.events, tenants)
        image = rt.images.get("base:1")
        rt.images.get = lambda ref, tenant=None: image  # type: ignore[method-assign]
        one = funcs.create("alice", "one", SPEC, Auth.SECRET, Limits())
        two = funcs.create("alice", "two", SPEC, Auth.SECRET, Limits())
        first = funcs.submit(one, b"1", [])
        second = funcs.submit(two, b"2", [])
        process = await vms.next_process()
        await asyncio.sleep(0.05)
        assert vms.started.empty() and funcs.call(second.id).status is CallStatus.QUEUED
        await echo(process)
        await echo(await vms.next_process())
        assert [(await funcs.wait(c.id)).stdout for c in (first, second)] == [b"1", b"2"]
        await funcs.close()

    run(tmp_path, body)


def test_follow_gives_each_call_as_it_finishes_until_the_func_goes(tmp_path: Path) -> None:
    async def body(funcs: Funcs, rt: Runtime, vms: FakeVms) -> None:
        func = funcs.create("", "echo", SPEC, Auth.SECRET, Limits())
        other = funcs.create("", "other", SPEC, Auth.SECRET, Limits())
        feed = funcs.follow(func.key)
        try:
            funcs.submit(other, b"o", [])
            await echo(await vms.next_process())
            call = funcs.submit(func, b"e", [])
            await echo(await vms.next_process())
            got = await feed.next()
            assert got is not None and (got.id, got.stdout) == (call.id, b"e")
            funcs.remove(func.key)
            assert await feed.next() is None
        finally:
            feed.close()

    run(tmp_path, body)
