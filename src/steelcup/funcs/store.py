"""Funcs and their recent calls in the daemon's state database.

A func is one row (its JSON); a call one row with its output, the last `history` of each func
kept (`func logs`, `GET /calls/ID`). Writes are single transactions.
"""

from __future__ import annotations

import json
import sqlite3

from steelcup.errors import Conflict
from steelcup.funcs.model import Call, CallStatus, Func

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS funcs (tenant TEXT NOT NULL, name TEXT NOT NULL,"
    " data TEXT NOT NULL, PRIMARY KEY (tenant, name))",
    "CREATE TABLE IF NOT EXISTS func_calls (id TEXT PRIMARY KEY, tenant TEXT NOT NULL,"
    " func TEXT NOT NULL, seq INTEGER NOT NULL, data TEXT NOT NULL, stdout BLOB NOT NULL,"
    " stderr BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS func_calls_by_func ON func_calls (tenant, func, seq)",
)
HISTORY = 20  # calls kept per func


class FuncStore:
    def __init__(self, db: sqlite3.Connection, history: int = HISTORY) -> None:
        self._db = db
        self.history = history
        for statement in _SCHEMA:
            db.execute(statement)
        row = db.execute("SELECT MAX(seq) FROM func_calls").fetchone()
        self._seq = int(row[0] or 0)

    # -- funcs
    def insert(self, func: Func) -> None:
        try:
            with self._db:
                self._db.execute("INSERT INTO funcs (tenant, name, data) VALUES (?, ?, ?)",
                                 (func.tenant, func.name, json.dumps(func.to_json())))
        except sqlite3.IntegrityError:
            raise Conflict(f"a func named {func.name} exists already") from None

    def save(self, func: Func) -> None:
        with self._db:
            self._db.execute("UPDATE funcs SET data = ? WHERE tenant = ? AND name = ?",
                             (json.dumps(func.to_json()), func.tenant, func.name))

    def delete(self, func: Func) -> None:
        with self._db:
            self._db.execute("DELETE FROM funcs WHERE tenant = ? AND name = ?",
                             (func.tenant, func.name))
            self._db.execute("DELETE FROM func_calls WHERE tenant = ? AND func = ?",
                             (func.tenant, func.name))

    def load(self) -> list[Func]:
        return [Func.from_json(json.loads(data))
                for (data,) in self._db.execute("SELECT data FROM funcs ORDER BY tenant, name")]

    # -- calls
    def put_call(self, call: Call) -> None:
        """Insert or update a call; a new one pushes the func's oldest past `history` out."""
        data = json.dumps(call.summary_json() | {"Tenant": call.tenant,
                                                 "StdoutTruncated": call.stdout_truncated})
        with self._db:
            updated = self._db.execute(
                "UPDATE func_calls SET data = ?, stdout = ?, stderr = ? WHERE id = ?",
                (data, call.stdout, call.stderr, call.id)).rowcount
            if updated:
                return
            self._seq += 1
            self._db.execute(
                "INSERT INTO func_calls (id, tenant, func, seq, data, stdout, stderr)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (call.id, call.tenant, call.func, self._seq, data, call.stdout, call.stderr))
            self._db.execute(
                "DELETE FROM func_calls WHERE tenant = ? AND func = ? AND seq NOT IN"
                " (SELECT seq FROM func_calls WHERE tenant = ? AND func = ?"
                "  ORDER BY seq DESC LIMIT ?)",
                (call.tenant, call.func, call.tenant, call.func, self.history))

    def call(self, call_id: str) -> Call | None:
        row = self._db.execute("SELECT data, stdout, stderr FROM func_calls WHERE id = ?",
                               (call_id,)).fetchone()
        return _call(*row) if row else None

    def calls(self, tenant: str, func: str) -> list[Call]:
        """The func's kept calls, oldest first."""
        return [_call(*row) for row in self._db.execute(
            "SELECT data, stdout, stderr FROM func_calls WHERE tenant = ? AND func = ?"
            " ORDER BY seq", (tenant, func))]

    def unfinished(self) -> list[Call]:
        return [c for c in (_call(*row) for row in self._db.execute(
            "SELECT data, stdout, stderr FROM func_calls")) if not c.status.finished]


def _call(data: str, stdout: bytes, stderr: bytes) -> Call:
    d = json.loads(data)
    return Call(id=d["Id"], func=d["Func"], tenant=d["Tenant"], created=d["Created"],
                status=CallStatus(d["Status"]), started=d["Started"], finished=d["Finished"],
                exit_code=d["ExitCode"], error=d["Error"], input_bytes=d["InputBytes"],
                container_id=d["ContainerId"], stdout=bytes(stdout), stderr=bytes(stderr),
                stdout_truncated=bool(d.get("StdoutTruncated")))
