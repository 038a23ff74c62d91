"""Crons and their run history in the daemon's state database (steelcup.state.db).

A cron is unique by (tenant, name); its runs are kept in the order they were recorded.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator

from steelcup.cron.model import CronRun, CronSpec, CronState, from_iso, iso
from steelcup.errors import Conflict, InvalidArgument, NotFound

_SCHEMA = """
CREATE TABLE IF NOT EXISTS crons (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    suspended INTEGER NOT NULL DEFAULT 0,
    considered TEXT NOT NULL,
    PRIMARY KEY (tenant, name)
);
CREATE TABLE IF NOT EXISTS cron_runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    data TEXT NOT NULL,
    FOREIGN KEY (tenant, name) REFERENCES crons(tenant, name) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS cron_runs_of ON cron_runs(tenant, name, seq);
"""


def split(key: str) -> tuple[str, str]:
    """A cron key -> (tenant, name)."""
    tenant, sep, name = key.partition("/")
    return (tenant, name) if sep else ("", key)


def missing(ref: str) -> NotFound:
    return NotFound(f"no such cron: {ref}")


class CronStore:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._lock = threading.Lock()
        with self._lock:
            self._db.executescript(_SCHEMA)

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- crons -------------------------------------------------------------------------------
    def add(self, spec: CronSpec, state: CronState) -> None:
        try:
            with self._tx():
                self._db.execute(
                    "INSERT INTO crons (tenant, name, spec, suspended, considered) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (spec.tenant, spec.name, json.dumps(spec.to_json()), int(state.suspended),
                     iso(state.considered)))
        except sqlite3.IntegrityError:
            raise Conflict(f"a cron named {spec.name} exists already") from None

    def get(self, key: str) -> tuple[CronSpec, CronState]:
        tenant, name = split(key)
        with self._lock:
            row = self._db.execute(
                "SELECT spec, suspended, considered FROM crons WHERE tenant = ? AND name = ?",
                (tenant, name)).fetchone()
        if row is None:
            raise missing(key)
        return _decode(row)

    def list(self, tenant: str | None = None) -> builtins.list[tuple[CronSpec, CronState]]:
        """A tenant's crons, or every tenant's (None), by tenant and name."""
        query = "SELECT spec, suspended, considered FROM crons"
        args: tuple[str, ...] = ()
        if tenant is not None:
            query, args = query + " WHERE tenant = ?", (tenant,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY tenant, name", args).fetchall()
        return [_decode(row) for row in rows]

    def set_state(self, key: str, state: CronState) -> None:
        tenant, name = split(key)
        with self._tx():
            done = self._db.execute(
                "UPDATE crons SET suspended = ?, considered = ? WHERE tenant = ? AND name = ?",
                (int(state.suspended), iso(state.considered), tenant, name)).rowcount
        if not done:
            raise missing(key)

    def remove(self, key: str) -> None:
        """The cron and its history."""
        tenant, name = split(key)
        with self._tx():
            self._db.execute("DELETE FROM cron_runs WHERE tenant = ? AND name = ?",
                             (tenant, name))
            done = self._db.execute("DELETE FROM crons WHERE tenant = ? AND name = ?",
                                    (tenant, name)).rowcount
        if not done:
            raise missing(key)

    def resolve(self, ref: str, tenant: str | None) -> str:
        """The key of the cron `ref` names for `tenant` (None: the operator, who sees every
        tenant's: `TENANT/NAME`, or a plain name of its own, else of the only tenant that
        has one); another tenant's cron is missing exactly as one that does not exist."""
        if tenant is not None:
            if "/" in ref:
                raise missing(ref)
            key = f"{tenant}/{ref}" if tenant else ref
            try:
                self.get(key)
            except NotFound:
                raise missing(ref) from None  # the reference as given, never the key
            return key
        if "/" in ref:
            self.get(ref)
            return ref
        with self._lock:
            owners = [r[0] for r in self._db.execute(
                "SELECT tenant FROM crons WHERE name = ? ORDER BY tenant", (ref,))]
        if "" in owners:
            return ref
        if len(owners) == 1:
            return f"{owners[0]}/{ref}"
        if not owners:
            raise missing(ref)
        raise InvalidArgument(f"cron name {ref} is used by several tenants "
                              f"({', '.join(owners)}): name it as TENANT/{ref}")

    # -- runs --------------------------------------------------------------------------------
    def record(self, run: CronRun) -> None:
        """Add `run` to its cron's history, or update it there; a run of a removed cron is
        dropped (its container ends after the cron is gone)."""
        tenant, name = split(run.cron)
        data = json.dumps(run.to_json())
        with self._tx():
            exists = self._db.execute("SELECT 1 FROM crons WHERE tenant = ? AND name = ?",
                                      (tenant, name)).fetchone()
            if exists is None:
                return
            self._db.execute(
                "INSERT INTO cron_runs (id, tenant, name, data) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET data = excluded.data",
                (run.id, tenant, name, data))

    def runs(self, key: str, tail: int | None = None) -> builtins.list[CronRun]:
        """The cron's history, oldest first (the last `tail` entries)."""
        tenant, name = split(key)
        with self._lock:
            rows = self._db.execute(
                "SELECT data FROM cron_runs WHERE tenant = ? AND name = ? ORDER BY seq DESC"
                + (" LIMIT ?" if tail is not None else ""),
                (tenant, name, *((tail,) if tail is not None else ()))).fetchall()
        return [CronRun.from_json(json.loads(row[0])) for row in reversed(rows)]

    def running(self) -> builtins.list[CronRun]:
        """Every run recorded as running (of every cron)."""
        with self._lock:
            rows = self._db.execute("SELECT data FROM cron_runs ORDER BY seq").fetchall()
        runs = [CronRun.from_json(json.loads(row[0])) for row in rows]
        return [r for r in runs if r.status.value == "running"]

    def forget(self, ids: builtins.list[str]) -> None:
        if not ids:
            return
        with self._tx():
            self._db.executemany("DELETE FROM cron_runs WHERE id = ?", [(i,) for i in ids])


def _decode(row: tuple[str, int, str]) -> tuple[CronSpec, CronState]:
    considered = from_iso(row[2])
    assert considered is not None
    return CronSpec.from_json(json.loads(row[0])), CronState(bool(row[1]), considered)
