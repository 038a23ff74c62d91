"""How many calls run at once: a per-func limit (`--concurrency`) and a per-tenant one (its
`func-calls` quota), with the calls beyond them waiting in a bounded FIFO per func.

A slot freed goes to the oldest waiting call that fits; a call never overtakes an older one of
the same func or the same tenant, so a func's calls start in the order they came. A func whose
queue is full refuses a new call (`TooBusy`, HTTP 429).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from steelcup.errors import TooBusy


@dataclass(eq=False)
class Ticket:
    """One call's place: a running slot once `granted` is done."""

    func: str
    tenant: str
    func_limit: int
    tenant_limit: int | None
    granted: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())
    released: bool = False


class CallGate:
    """Slots for running calls. `func` is a func's daemon-wide key; tenant "" is the operator,
    who has no tenant cap."""

    def __init__(self) -> None:
        self.running: Counter[str] = Counter()  # by func
        self.running_tenant: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()  # the most a func has run at once
        self._waiting: deque[Ticket] = deque()

    def queued(self, func: str) -> int:
        return sum(1 for w in self._waiting if w.func == func)

    def _fits(self, func: str, tenant: str, func_limit: int, tenant_limit: int | None) -> bool:
        if self.running[func] >= func_limit:
            return False
        return not tenant or tenant_limit is None or self.running_tenant[tenant] < tenant_limit

    def _take(self, func: str, tenant: str) -> None:
        self.running[func] += 1
        self.peak[func] = max(self.peak[func], self.running[func])
        if tenant:
            self.running_tenant[tenant] += 1

    def _release(self, func: str, tenant: str) -> None:
        self.running[func] -= 1
        if tenant:
            self.running_tenant[tenant] -= 1
        self._wake()

    def _wake(self) -> None:
        blocked_funcs: set[str] = set()
        blocked_tenants: set[str] = set()
        for waiter in list(self._waiting):
            if waiter.granted.done():  # cancelled meanwhile
                self._waiting.remove(waiter)
                continue
            if (waiter.func not in blocked_funcs and waiter.tenant not in blocked_tenants
                    and self._fits(waiter.func, waiter.tenant, waiter.func_limit,
                                   waiter.tenant_limit)):
                self._waiting.remove(waiter)
                self._take(waiter.func, waiter.tenant)
                waiter.granted.set_result(None)
            else:
                blocked_funcs.add(waiter.func)
                if waiter.tenant:
                    blocked_tenants.add(waiter.tenant)

    def _ahead(self, func: str, tenant: str) -> bool:
        return any(w.func == func or (tenant and w.tenant == tenant) for w in self._waiting)

    def reserve(self, func: str, tenant: str, func_limit: int, tenant_limit: int | None,
                queue: int) -> Ticket:
        """A place for one call of `func`: a running slot now if one is free and no older call
        of the func or tenant waits, else the end of the func's FIFO; TooBusy if `queue` calls
        of the func wait already. `ready` waits for the slot; `release` gives either back."""
        ticket = Ticket(func, tenant, func_limit, tenant_limit)
        if not self._ahead(func, tenant) and self._fits(func, tenant, func_limit, tenant_limit):
            self._take(func, tenant)
            ticket.granted.set_result(None)
            return ticket
        if self.queued(func) >= queue:
            raise TooBusy(f"func {func}: {self.running[func]} calls running and "
                          f"{self.queued(func)} waiting (its queue holds {queue}); "
                          "retry later")
        self._waiting.append(ticket)
        return ticket

    async def ready(self, ticket: Ticket) -> None:
        """Until `ticket` holds a running slot (at once if it does)."""
        await asyncio.shield(ticket.granted)

    def release(self, ticket: Ticket) -> None:
        """Give back `ticket`'s slot, or its place in the queue if it never got one."""
        if ticket.released:
            return
        ticket.released = True
        if ticket.granted.done():
            self._release(ticket.func, ticket.tenant)
        else:
            ticket.granted.cancel()
            with contextlib.suppress(ValueError):
                self._waiting.remove(ticket)
            self._wake()  # it may have held back a later call of another func

    @contextlib.asynccontextmanager
    async def slot(self, func: str, tenant: str, func_limit: int, tenant_limit: int | None,
                   queue: int) -> AsyncIterator[None]:
        """`reserve`, `ready` and `release` around a block."""
        ticket = self.reserve(func, tenant, func_limit, tenant_limit, queue)
        try:
            await self.ready(ticket)
            yield
        finally:
            self.release(ticket)
