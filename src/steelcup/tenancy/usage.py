"""Usage metering: how long each tenant's containers ran, by size, in the state database.

A run is one row: the container, its tenant, its VM shape (vCPUs, memory and the size class of
that shape, if it is one), when it started and when it ended (NULL while it runs). `Meter`
writes them from the runtime's `start` and `die` events; `report` sums them per shape over a
window, like a bill. Paused time counts: a paused VM keeps its memory and vCPUs.

Restarts of the daemon: a running row's `seen_ns` is refreshed every `HEARTBEAT_S`. A daemon
that stops cleanly stops its containers, whose `die` ends their rows. After a crash,
`reconcile` ends each row still open whose container is not running now at its last heartbeat
(so a crash is billed to within one heartbeat, never for the time the daemon was down); a
container that is running now (one a restarted daemon kept alive) keeps its row, counted from
its real start.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from steelcup.tenancy.sizing import class_of

HEARTBEAT_S = 30.0
NS = 1_000_000_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage_runs (
    container_id TEXT NOT NULL,
    tenant TEXT NOT NULL,
    size TEXT NOT NULL,
    cpus INTEGER NOT NULL,
    mem_mib INTEGER NOT NULL,
    start_ns INTEGER NOT NULL,
    end_ns INTEGER,
    seen_ns INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_runs_by_tenant ON usage_runs (tenant, start_ns);
CREATE UNIQUE INDEX IF NOT EXISTS usage_runs_open ON usage_runs (container_id)
    WHERE end_ns IS NULL;
"""


@dataclass(frozen=True)
class Metered:
    """What a run is billed by: whose it is and its VM's shape."""

    tenant: str
    cpus: int
    mem_mib: int


@dataclass(frozen=True)
class UsageLine:
    """One line of a bill: the container-seconds of one shape in the window."""

    size: str  # the size class of the shape; "" when the shape is none
    cpus: int
    mem_mib: int
    containers: int  # distinct containers that ran in it
    seconds: int  # container-seconds, rounded up to the second

    def to_json(self) -> dict[str, Any]:
        return {"Size": self.size, "Cpus": self.cpus, "MemoryMiB": self.mem_mib,
                "Containers": self.containers, "Seconds": self.seconds}


class UsageLedger:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._lock = threading.Lock()
        with self._lock:
            self._db.executescript(_SCHEMA)

    def started(self, container_id: str, run: Metered, at_ns: int) -> None:
        """A run begins (a row the container left open, from a lost `die`, ends first)."""
        with self._lock:
            self._db.execute("UPDATE usage_runs SET end_ns = MIN(seen_ns, ?) "
                             "WHERE container_id = ? AND end_ns IS NULL", (at_ns, container_id))
            self._db.execute("INSERT INTO usage_runs VALUES (?, ?, ?, ?, ?, ?, NULL, ?)",
                             (container_id, run.tenant, class_of(run.cpus, run.mem_mib),
                              run.cpus, run.mem_mib, at_ns, at_ns))

    def stopped(self, container_id: str, at_ns: int) -> None:
        with self._lock:
            self._db.execute("UPDATE usage_runs SET end_ns = MAX(start_ns, ?) "
                             "WHERE container_id = ? AND end_ns IS NULL", (at_ns, container_id))

    def heartbeat(self, now_ns: int) -> None:
        """Every open run was still running at `now_ns` (what `reconcile` ends it at)."""
        with self._lock:
            self._db.execute("UPDATE usage_runs SET seen_ns = MAX(seen_ns, ?) "
                             "WHERE end_ns IS NULL", (now_ns,))

    def open_runs(self) -> list[str]:
        return [r[0] for r in self._db.execute(
            "SELECT container_id FROM usage_runs WHERE end_ns IS NULL ORDER BY start_ns")]

    def reconcile(self, running: Callable[[str], bool]) -> int:
        """At daemon start: end the open runs of containers not running now at their last
        heartbeat; returns how many it ended."""
        ended = 0
        for container_id in self.open_runs():
            if running(container_id):
                continue
            with self._lock:
                self._db.execute("UPDATE usage_runs SET end_ns = seen_ns "
                                 "WHERE container_id = ? AND end_ns IS NULL", (container_id,))
            ended += 1
        return ended

    def has_runs(self, tenant: str) -> bool:
        return self._db.execute("SELECT 1 FROM usage_runs WHERE tenant = ? LIMIT 1",
                                (tenant,)).fetchone() is not None

    def report(self, tenant: str, since_ns: int = 0, until_ns: int = 0,
               now_ns: int | None = None) -> list[UsageLine]:
        """Container-seconds of `tenant`'s runs inside [since, until) (0: unbounded; a run
        still going counts up to `now_ns`), one line per shape, classes first."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        end_of_window = min(until_ns, now_ns) if until_ns else now_ns
        rows = self._db.execute(
            "SELECT container_id, size, cpus, mem_mib, start_ns, end_ns FROM usage_runs "
            "WHERE tenant = ? AND start_ns < ? AND (end_ns IS NULL OR end_ns > ?)",
            (tenant, end_of_window, since_ns)).fetchall()
        spent: dict[tuple[str, int, int], int] = {}
        containers: dict[tuple[str, int, int], set[str]] = {}
        for container_id, size, cpus, mem_mib, start_ns, end_ns in rows:
            begin = max(start_ns, since_ns)
            end = min(end_ns if end_ns is not None else now_ns, end_of_window)
            if end <= begin:
                continue
            key = (size, cpus, mem_mib)
            spent[key] = spent.get(key, 0) + end - begin
            containers.setdefault(key, set()).add(container_id)
        lines = [UsageLine(size, cpus, mem, len(containers[(size, cpus, mem)]),
                           math.ceil(total / NS))
                 for (size, cpus, mem), total in spent.items()]
        return sorted(lines, key=lambda ln: (ln.size == "", ln.cpus, ln.mem_mib))


class Meter:
    """The runtime's container events into the ledger. `lookup` gives a container's tenant and
    shape (None: not known any more, nothing to open)."""

    def __init__(self, ledger: UsageLedger, lookup: Callable[[str], Metered | None]) -> None:
        self.ledger = ledger
        self.lookup = lookup

    def observe(self, event: dict[str, Any]) -> None:
        if event.get("Type") != "container":
            return
        action = event.get("Action")
        container_id = str(event.get("Actor", {}).get("ID", ""))
        at_ns = int(event.get("timeNano") or time.time_ns())
        if action == "start":
            run = self.lookup(container_id)
            if run is not None:
                self.ledger.started(container_id, run, at_ns)
        elif action in ("die", "destroy"):
            self.ledger.stopped(container_id, at_ns)

    async def heartbeats(self, period_s: float = HEARTBEAT_S) -> None:
        """Refresh the open runs' last-seen time until cancelled (the daemon runs this)."""
        while True:
            self.ledger.heartbeat(time.time_ns())
            await asyncio.sleep(period_s)  # a periodic timer, not a synchronisation
