"""Persistence of container records in the daemon's SQLite database (one row per container)."""

from __future__ import annotations

import json
import sqlite3

from steelcup.errors import Conflict
from steelcup.runtime.model import ContainerRecord

_TABLE = ("CREATE TABLE IF NOT EXISTS containers ("
          " id TEXT PRIMARY KEY, tenant TEXT NOT NULL DEFAULT '', name TEXT NOT NULL,"
          " data TEXT NOT NULL, UNIQUE (tenant, name))")


class ContainerStore:
    """Atomic save/load/delete of `ContainerRecord`s; names are unique per tenant."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        columns = [r[1] for r in self._db.execute("PRAGMA table_info(containers)")]
        if columns and "tenant" not in columns:
            # names were unique daemon-wide: rebuild the table with (tenant, name) unique,
            # every existing container being the operator's ("")
            self._db.execute("BEGIN IMMEDIATE")  # autocommit connection: one transaction
            try:
                self._db.execute("ALTER TABLE containers RENAME TO containers_v1")
                self._db.execute(_TABLE)
                self._db.execute("INSERT INTO containers (id, tenant, name, data) "
                                 "SELECT id, '', name, data FROM containers_v1 ORDER BY rowid")
                self._db.execute("DROP TABLE containers_v1")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        else:
            self._db.execute(_TABLE)

    def insert(self, record: ContainerRecord) -> None:
        try:
            with self._db:
                self._db.execute(
                    "INSERT INTO containers (id, tenant, name, data) VALUES (?, ?, ?, ?)",
                    (record.id, record.config.tenant, record.name,
                     json.dumps(record.to_json())),
                )
        except sqlite3.IntegrityError as exc:
            raise Conflict(
                f'Conflict. The container name "/{record.name}" is already in use. '
                "You have to remove (or rename) that container to be able to reuse that name."
            ) from exc

    def save(self, record: ContainerRecord) -> None:
        with self._db:
            self._db.execute(
                "UPDATE containers SET name = ?, data = ? WHERE id = ?",
                (record.name, json.dumps(record.to_json()), record.id),
            )

    def delete(self, container_id: str) -> None:
        with self._db:
            self._db.execute("DELETE FROM containers WHERE id = ?", (container_id,))

    def load_all(self) -> list[ContainerRecord]:
        rows = self._db.execute("SELECT data FROM containers ORDER BY rowid").fetchall()
        return [ContainerRecord.from_json(json.loads(row[0])) for row in rows]
