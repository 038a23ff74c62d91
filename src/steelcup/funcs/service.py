"""The daemon's funcs: create, list, update and remove them (tenant objects, persisted), and
run their calls through the call gate, one fresh container each (docs/funcs.md).

Handlers of the management API and of the gateway call this; it never sees a request.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hmac
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from steelcup.errors import Conflict, InvalidArgument, NotFound, SteelcupError
from steelcup.funcs.gate import CallGate
from steelcup.funcs.model import (
    FUNC_LABEL,
    Auth,
    Call,
    CallStatus,
    Func,
    Limits,
    check_func_name,
    new_call_id,
    new_secret,
)
from steelcup.funcs.runner import Create, call_config, run_call
from steelcup.funcs.store import FuncStore
from steelcup.runtime.containers import Runtime, now_rfc3339
from steelcup.runtime.events import EventBus
from steelcup.tenancy.manager import Tenants
from steelcup.tenancy.quota import need, unlimited

log = logging.getLogger(__name__)
_ENDS = frozenset(s.value for s in CallStatus if s.finished)  # the events of a call's end


@dataclass(eq=False)
class _LiveCall:
    call: Call
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Funcs:
    def __init__(self, store: FuncStore, runtime: Runtime, create: Create, events: EventBus,
                 tenants: Tenants | None = None) -> None:
        self.store = store
        self.runtime = runtime
        self.create_container = create
        self.events = events
        self.tenants = tenants
        self.gate = CallGate()
        self._funcs: dict[str, Func] = {f.key: f for f in store.load()}
        self._live: dict[str, _LiveCall] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        if tenants is not None:
            tenants.quotas.register("funcs", lambda t: len(self.list(t)))

    # -- funcs -------------------------------------------------------------------------------

    def list(self, tenant: str | None = None) -> builtins.list[Func]:
        """`tenant`'s funcs; every tenant's for None (the operator)."""
        return [f for f in self._funcs.values() if tenant is None or f.tenant == tenant]

    def resolve(self, ref: str, tenant: str | None) -> str:
        """The key of the func `ref` names for `tenant` (None: the operator, who names a
        tenant's as TENANT/NAME, or by its name if no other has it); NotFound as for a
        missing one otherwise."""
        missing = NotFound(f"no such func: {ref}")
        if tenant is not None:
            if f"{tenant}/{ref}" in self._funcs:
                return f"{tenant}/{ref}"
            raise missing
        if ref in self._funcs:
            return ref
        named = [f.key for f in self._funcs.values() if f.name == ref]
        if len(named) == 1:
            return named[0]
        if named:
            raise InvalidArgument(f"func name {ref} is ambiguous: {', '.join(sorted(named))}")
        raise missing

    def get(self, key: str) -> Func:
        try:
            return self._funcs[key]
        except KeyError:
            raise NotFound(f"no such func: {key}") from None

    def create(self, tenant: str, name: str, spec: Mapping[str, Any], auth: Auth,
               limits: Limits) -> Func:
        """A new func of `tenant`; its spec is decoded as a container create would be and its
        image must be there, so a bad func is refused now rather than at its first call."""
        check_func_name(name)
        limits.checked()
        config = call_config(spec, tenant, [], name, "")
        self.runtime.images.get(config.image, tenant or None)
        func = Func(name=name, tenant=tenant, spec=dict(spec), auth=auth,
                    secret=new_secret() if auth is Auth.SECRET else "", created=now_rfc3339(),
                    limits=limits)
        if func.key in self._funcs:
            raise Conflict(f"a func named {name} exists already")
        admit = self.tenants.quotas.admit if self.tenants is not None else unlimited
        with admit(tenant, need(funcs=1)):
            self.store.insert(func)
            self._funcs[func.key] = func
        self._event(func, "create")
        return func

    def update(self, key: str, limits: Limits, *, new_key: bool = False) -> Func:
        func = self.get(key)
        limits.checked()
        secret = new_secret() if new_key and func.auth is Auth.SECRET else func.secret
        updated = replace(func, limits=limits, secret=secret)
        self.store.save(updated)
        self._funcs[key] = updated
        self._event(updated, "update")
        return updated

    def remove(self, key: str) -> None:
        """Forget the func and its calls' history; calls running finish on their own."""
        func = self.get(key)
        self.store.delete(func)
        del self._funcs[key]
        self._event(func, "destroy")

    def _event(self, func: Func, action: str, **extra: str) -> None:
        self.events.publish("func", action, func.name, {"name": func.name, **extra},
                            func.tenant)

    # -- the gateway's lookup ----------------------------------------------------------------

    def for_gateway(self, name: str, *, secret: str | None, tenant: str | None) -> Func:
        """The func a gateway request may call: by `name` with its secret, or by `name` among
        the funcs of the tenant whose bearer token came (token-auth funcs). Anything else is
        answered as a missing func (no oracle of names or secrets)."""
        named = [f for f in self._funcs.values() if f.name == name]
        for func in named:  # a secret names one func, whoever else the request may be
            if (func.auth is Auth.SECRET and secret
                    and hmac.compare_digest(func.secret.encode(), secret.encode())):
                return func
        for func in named:
            if func.auth is Auth.TOKEN and tenant and func.tenant == tenant:
                return func
        raise NotFound(f"no such func: {name} (or not callable with these credentials)")

    # -- calls -------------------------------------------------------------------------------

    def _tenant_limit(self, tenant: str) -> int | None:
        if not tenant or self.tenants is None:
            return None
        return self.tenants.get(tenant).quotas.func_calls

    def submit(self, func: Func, body: bytes, env: builtins.list[str]) -> Call:
        """Queue a call (TooBusy if its func's queue is full); it runs in the background."""
        if len(body) > func.limits.max_input_bytes:
            raise InvalidArgument(f"the input is larger than the func's cap of "
                                  f"{func.limits.max_input_bytes} bytes")
        ticket = self.gate.reserve(func.key, func.tenant, func.limits.concurrency,
                                   self._tenant_limit(func.tenant), func.limits.queue)
        call = Call(id=new_call_id(), func=func.name, tenant=func.tenant,
                    created=now_rfc3339(), input_bytes=len(body))
        live = _LiveCall(call)
        try:
            self.store.put_call(call)
        except BaseException:
            self.gate.release(ticket)
            raise
        self._live[call.id] = live

        async def run() -> None:
            try:
                await self.gate.ready(ticket)
                await self._run(func, live, body, env)
            finally:
                self.gate.release(ticket)
                if not live.call.status.finished:
                    live.call = live.call.advanced(status=CallStatus.FAILED,
                                                   finished=now_rfc3339(),
                                                   error="the daemon stopped during the call")
                with contextlib.suppress(SteelcupError, OSError):
                    self.store.put_call(live.call)
                live.done.set()
                self._live.pop(call.id, None)

        task = asyncio.create_task(run(), name=f"func-call-{call.id[:12]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return call

    async def _run(self, func: Func, live: _LiveCall, body: bytes,
                   env: builtins.list[str]) -> None:
        call = live.call
        live.call = call.advanced(status=CallStatus.RUNNING, started=now_rfc3339())
        self.store.put_call(live.call)
        self._event(func, "call", callId=call.id)
        try:
            config = call_config(func.spec, func.tenant, [*env, f"STEELCUP_CALL_ID={call.id}",
                                                          f"STEELCUP_FUNC={func.name}"],
                                 func.name, call.id)
        except SteelcupError as exc:
            live.call = live.call.advanced(status=CallStatus.FAILED, error=str(exc),
                                           finished=now_rfc3339())
            return

        def started(cid: str) -> None:
            live.call = live.call.advanced(container_id=cid)

        outcome = await run_call(self.runtime, self.create_container, config, body,
                                 func.limits.timeout_s, func.limits.max_output_bytes, started)
        if outcome.timed_out:
            status = CallStatus.TIMED_OUT
        elif outcome.exit_code == 0 and not outcome.output_over and not outcome.error:
            status = CallStatus.DONE
        else:
            status = CallStatus.FAILED
        error = outcome.error
        if not error and outcome.exit_code not in (0, None):
            error = f"the func's process exited with {outcome.exit_code}"
        live.call = live.call.advanced(
            status=status, finished=now_rfc3339(), exit_code=outcome.exit_code, error=error,
            stdout=outcome.stdout, stderr=outcome.stderr, stdout_truncated=outcome.output_over,
            container_id=outcome.container_id)
        self._event(func, status.value, callId=call.id,
                    exitCode="" if outcome.exit_code is None else str(outcome.exit_code))

    def call(self, call_id: str) -> Call:
        live = self._live.get(call_id)
        if live is not None:
            return live.call
        call = self.store.call(call_id)
        if call is None:
            raise NotFound(f"no such func call: {call_id}")
        return call

    async def wait(self, call_id: str) -> Call:
        """The call once it has finished."""
        live = self._live.get(call_id)
        if live is not None:
            await live.done.wait()
            return live.call
        return self.call(call_id)

    def calls(self, key: str) -> builtins.list[Call]:
        """The func's recent calls, oldest first (running ones as they are now)."""
        func = self.get(key)
        kept = self.store.calls(func.tenant, func.name)
        return [self._live[c.id].call if c.id in self._live else c for c in kept]

    def follow(self, key: str) -> CallFeed:
        """The func's calls as they finish, from now on (`CallFeed`)."""
        return CallFeed(self, self.get(key))

    # -- the daemon's start and stop ---------------------------------------------------------

    async def recover(self) -> None:
        """After the runtime's recovery: calls a stopped daemon left unfinished are failed,
        and their containers removed."""
        for call in self.store.unfinished():
            self.store.put_call(call.advanced(status=CallStatus.FAILED, finished=now_rfc3339(),
                                              error="the daemon stopped during the call"))
        for record in self.runtime.list():
            if FUNC_LABEL in dict(record.config.labels):
                with contextlib.suppress(SteelcupError):
                    await self.runtime.remove(record.id, force=True, volumes=True)

    async def close(self) -> None:
        """End every call in flight (their containers are removed)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class CallFeed:
    """One func's calls as they finish: subscribed to the events on creation (so a call that
    ends while the caller reads the history is not missed); `close` ends the subscription."""

    def __init__(self, funcs: Funcs, func: Func) -> None:
        self._funcs = funcs
        self._func = func
        self._queue = funcs.events.subscribe(func.tenant)

    async def next(self) -> Call | None:
        """The next call to finish; None once the func is removed."""
        while True:
            event = await self._queue.get()
            if event["Type"] != "func" or event["Actor"]["ID"] != self._func.name:
                continue
            if event["Action"] == "destroy":
                return None
            if event["Action"] in _ENDS:
                with contextlib.suppress(NotFound):  # out of the history already
                    return self._funcs.call(event["Actor"]["Attributes"]["callId"])

    def close(self) -> None:
        self._funcs.events.unsubscribe(self._queue)
