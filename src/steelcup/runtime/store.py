"""Persistence of container records in the daemon's SQLite database (one row per container)."""

from __future__ import annotations

import json
import sqlite3

from steelcup.errors import Conflict
from steelcup.runtime.model import ContainerRecord


class ContainerStore:
    """Atomic save/load/delete of `ContainerRecord`s; names are unique."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS containers ("
            " id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, data TEXT NOT NULL)"
        )

    def insert(self, record: ContainerRecord) -> None:
        try:
            with self._db:
                self._db.execute(
                    "INSERT INTO containers (id, name, data) VALUES (?, ?, ?)",
                    (record.id, record.name, json.dumps(record.to_json())),
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
