"""The call gate: per-func and per-tenant slots, the FIFO, its bound and cancellations."""

from __future__ import annotations

import asyncio

import pytest

from steelcup.errors import TooBusy
from steelcup.funcs.gate import CallGate


def run(coro: object) -> None:
    asyncio.run(asyncio.wait_for(coro, 5))  # type: ignore[arg-type]


def test_a_func_runs_at_most_its_limit_and_the_rest_start_in_order() -> None:
    async def body() -> None:
        gate = CallGate()
        tickets = [gate.reserve("f", "", 2, None, 10) for _ in range(5)]
        assert [t.granted.done() for t in tickets] == [True, True, False, False, False]
        assert gate.queued("f") == 3
        gate.release(tickets[0])
        assert [t.granted.done() for t in tickets] == [True, True, True, False, False]
        gate.release(tickets[2])
        gate.release(tickets[1])
        assert all(t.granted.done() for t in tickets)
        assert gate.running["f"] == 2 and gate.peak["f"] == 2

    run(body())


def test_a_full_queue_refuses_and_frees_room_as_calls_start() -> None:
    async def body() -> None:
        gate = CallGate()
        first = gate.reserve("f", "", 1, None, 2)
        gate.reserve("f", "", 1, None, 2)
        gate.reserve("f", "", 1, None, 2)
        with pytest.raises(TooBusy, match="queue holds 2"):
            gate.reserve("f", "", 1, None, 2)
        gate.release(first)
        gate.reserve("f", "", 1, None, 2)  # one started: room for one more waiting

    run(body())


def test_the_tenant_cap_spans_its_funcs_and_other_tenants_are_not_held() -> None:
    async def body() -> None:
        gate = CallGate()
        a1 = gate.reserve("alice/a", "alice", 5, 2, 10)
        a2 = gate.reserve("alice/b", "alice", 5, 2, 10)
        a3 = gate.reserve("alice/a", "alice", 5, 2, 10)
        bob = gate.reserve("bob/a", "bob", 5, 2, 10)
        op = gate.reserve("mine", "", 5, None, 10)
        assert (a1.granted.done(), a2.granted.done(), a3.granted.done()) == (True, True, False)
        assert bob.granted.done() and op.granted.done()
        gate.release(a2)
        assert a3.granted.done() and gate.running_tenant["alice"] == 2

    run(body())


def test_a_later_call_never_overtakes_an_older_one_of_its_func() -> None:
    async def body() -> None:
        gate = CallGate()
        # alice's cap holds her second call of f; a third one of f must wait behind it even
        # once f (not alice) has room
        held = gate.reserve("alice/g", "alice", 5, 1, 10)
        waiting = gate.reserve("alice/f", "alice", 1, 1, 10)
        later = gate.reserve("alice/f", "alice", 1, 1, 10)
        assert not waiting.granted.done() and not later.granted.done()
        gate.release(held)
        assert waiting.granted.done() and not later.granted.done()

    run(body())


def test_a_cancelled_waiter_leaves_the_queue_and_its_slot_goes_on() -> None:
    async def body() -> None:
        gate = CallGate()
        running = gate.reserve("f", "", 1, None, 10)
        gone = gate.reserve("f", "", 1, None, 10)
        next_ = gate.reserve("f", "", 1, None, 10)
        task = asyncio.create_task(gate.ready(gone))
        await asyncio.sleep(0)
        task.cancel()
        gate.release(gone)  # the call gave up before it got a slot
        assert gate.queued("f") == 1
        gate.release(running)
        assert next_.granted.done() and gate.running["f"] == 1
        gate.release(next_)
        gate.release(next_)  # twice is once
        assert gate.running["f"] == 0

    run(body())


def test_slot_holds_and_gives_back() -> None:
    async def body() -> None:
        gate = CallGate()
        inside = asyncio.Event()
        leave = asyncio.Event()

        async def call() -> None:
            async with gate.slot("f", "", 1, None, 5):
                inside.set()
                await leave.wait()

        first = asyncio.create_task(call())
        await inside.wait()
        inside.clear()
        second = asyncio.create_task(call())
        await asyncio.sleep(0.01)
        assert not inside.is_set() and gate.queued("f") == 1
        leave.set()
        await asyncio.gather(first, second)
        assert gate.running["f"] == 0

    run(body())
