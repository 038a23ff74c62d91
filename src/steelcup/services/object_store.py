"""Persistence of swarm secrets and configs: their records in the daemon's SQLite database,
their data in files of mode 0600 in a directory of mode 0700 under the daemon's root (never in
the database, never in a record the API encodes)."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from pathlib import Path

from steelcup.errors import Conflict, NotFound
from steelcup.services.model import SwarmObject

_TABLE = ("CREATE TABLE IF NOT EXISTS swarm_objects (id TEXT PRIMARY KEY, kind TEXT NOT NULL,"
          " tenant TEXT NOT NULL, name TEXT NOT NULL, data TEXT NOT NULL,"
          " UNIQUE (kind, tenant, name))")


class ObjectStore:
    """Records in `db`, contents as `dir`/ID (ids are swarm ids: base 36, no path)."""

    def __init__(self, db: sqlite3.Connection, dir: Path) -> None:
        self._db = db
        self._db.execute(_TABLE)
        self.dir = dir
        dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(dir, 0o700)

    def _path(self, object_id: str) -> Path:
        if not object_id.isalnum():
            raise NotFound(f"{object_id} not found")
        return self.dir / object_id

    def insert(self, record: SwarmObject, data: bytes) -> None:
        path = self._path(record.id)
        tmp = path.with_name(f".{record.id}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)  # whatever the umask
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            with self._db:
                self._db.execute(
                    "INSERT INTO swarm_objects (id, kind, tenant, name, data) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (record.id, record.kind.value, record.tenant, record.name,
                     json.dumps(record.to_json())))
        except sqlite3.IntegrityError as exc:
            tmp.unlink()
            raise Conflict(f"{record.kind.value} {record.name} already exists") from exc
        os.replace(tmp, path)

    def save(self, record: SwarmObject) -> None:
        with self._db:
            self._db.execute("UPDATE swarm_objects SET data = ? WHERE id = ?",
                             (json.dumps(record.to_json()), record.id))

    def delete(self, object_id: str) -> None:
        with self._db:
            self._db.execute("DELETE FROM swarm_objects WHERE id = ?", (object_id,))
        with contextlib.suppress(FileNotFoundError):
            self._path(object_id).unlink()

    def data(self, object_id: str) -> bytes:
        try:
            fd = os.open(self._path(object_id), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFound(f"{object_id}: its data is missing") from None
        with os.fdopen(fd, "rb") as f:
            return f.read()

    def load(self) -> list[SwarmObject]:
        rows = self._db.execute("SELECT data FROM swarm_objects ORDER BY rowid").fetchall()
        return [SwarmObject.from_json(json.loads(r[0])) for r in rows]
