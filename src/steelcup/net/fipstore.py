"""Persistence of floating IPs (the daemon's SQLite database, with the networks): one row per
allocated address, so an address is never handed out twice, also across restarts."""

from __future__ import annotations

import sqlite3

from steelcup.errors import Conflict
from steelcup.net.fip import FipRecord


class FipStore:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        with self._db:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS net_fips ("
                " address TEXT PRIMARY KEY, tenant TEXT NOT NULL, data TEXT NOT NULL)")

    def insert(self, records: list[FipRecord]) -> None:
        """All of `records` or none (an address allocated meanwhile: Conflict)."""
        try:
            with self._db:
                self._db.executemany(
                    "INSERT INTO net_fips (address, tenant, data) VALUES (?, ?, ?)",
                    [(r.address, r.tenant, r.to_json()) for r in records])
        except sqlite3.IntegrityError as exc:
            raise Conflict("floating IP already allocated") from exc

    def update(self, record: FipRecord) -> None:
        """Its name or attachment (its address and tenant never change)."""
        with self._db:
            self._db.execute("UPDATE net_fips SET data = ? WHERE address = ?",
                             (record.to_json(), record.address))

    def delete(self, address: str) -> None:
        with self._db:
            self._db.execute("DELETE FROM net_fips WHERE address = ?", (address,))

    def all(self, tenant: str | None = None) -> list[FipRecord]:
        """Every tenant's (None) or `tenant`'s, in address order."""
        if tenant is None:
            rows = self._db.execute("SELECT data FROM net_fips").fetchall()
        else:
            rows = self._db.execute("SELECT data FROM net_fips WHERE tenant = ?",
                                    (tenant,)).fetchall()
        records = [FipRecord.from_json(r[0]) for r in rows]
        return sorted(records, key=lambda r: tuple(int(p) for p in r.address.split(".")))
