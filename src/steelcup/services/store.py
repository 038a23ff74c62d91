"""Persistence of the swarm, services and tasks in the daemon's SQLite database: what the
orchestrator resumes from after a restart."""

from __future__ import annotations

import json
import sqlite3

from steelcup.errors import Conflict
from steelcup.services.model import ServiceRecord, SwarmState, TaskRecord

_TABLES = (
    "CREATE TABLE IF NOT EXISTS swarm (key TEXT PRIMARY KEY, data TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS services (id TEXT PRIMARY KEY, tenant TEXT NOT NULL,"
    " name TEXT NOT NULL, data TEXT NOT NULL, UNIQUE (tenant, name))",
    "CREATE TABLE IF NOT EXISTS tasks (id TEXT PRIMARY KEY, service_id TEXT NOT NULL,"
    " data TEXT NOT NULL)",
    # Which virtual IP is a service's on which network (services/addressing.py); kept after
    # the service's removal until its VIPs are released.
    "CREATE TABLE IF NOT EXISTS service_vips (service_id TEXT NOT NULL,"
    " network_id TEXT NOT NULL, vip_id TEXT NOT NULL, PRIMARY KEY (service_id, network_id))",
)


class ServiceStore:
    """Atomic saves of the swarm row, service records (names unique per tenant) and tasks."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        for table in _TABLES:
            self._db.execute(table)

    # -- swarm -----------------------------------------------------------------------------
    def load_swarm(self) -> SwarmState | None:
        row = self._db.execute("SELECT data FROM swarm WHERE key = 'swarm'").fetchone()
        return SwarmState.from_json(json.loads(row[0])) if row else None

    def save_swarm(self, state: SwarmState) -> None:
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO swarm (key, data) VALUES ('swarm', ?)",
                             (json.dumps(state.to_json()),))

    # -- services --------------------------------------------------------------------------
    def insert_service(self, record: ServiceRecord) -> None:
        try:
            with self._db:
                self._db.execute(
                    "INSERT INTO services (id, tenant, name, data) VALUES (?, ?, ?, ?)",
                    (record.id, record.tenant, record.name, json.dumps(record.to_json())))
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"service {record.name} already exists") from exc

    def save_service(self, record: ServiceRecord) -> None:
        try:
            with self._db:
                self._db.execute("UPDATE services SET name = ?, data = ? WHERE id = ?",
                                 (record.name, json.dumps(record.to_json()), record.id))
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"service {record.name} already exists") from exc

    def delete_service(self, service_id: str) -> None:
        with self._db:
            self._db.execute("DELETE FROM services WHERE id = ?", (service_id,))

    def load_services(self) -> list[ServiceRecord]:
        rows = self._db.execute("SELECT data FROM services ORDER BY rowid").fetchall()
        return [ServiceRecord.from_json(json.loads(r[0])) for r in rows]

    # -- tasks -----------------------------------------------------------------------------
    def save_task(self, record: TaskRecord) -> None:
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO tasks (id, service_id, data) "
                             "VALUES (?, ?, ?)",
                             (record.id, record.service_id, json.dumps(record.to_json())))

    def delete_task(self, task_id: str) -> None:
        with self._db:
            self._db.execute("DELETE FROM tasks WHERE id = ?", (task_id,))

    def load_tasks(self) -> list[TaskRecord]:
        rows = self._db.execute("SELECT data FROM tasks ORDER BY rowid").fetchall()
        return [TaskRecord.from_json(json.loads(r[0])) for r in rows]

    # -- virtual IPs -----------------------------------------------------------------------
    def service_vips(self, service_id: str) -> dict[str, str]:
        """network id -> vip id, for one service."""
        rows = self._db.execute("SELECT network_id, vip_id FROM service_vips WHERE "
                                "service_id = ?", (service_id,)).fetchall()
        return {str(n): str(v) for n, v in rows}

    def vip_owners(self) -> list[str]:
        rows = self._db.execute("SELECT DISTINCT service_id FROM service_vips").fetchall()
        return [str(r[0]) for r in rows]

    def save_service_vip(self, service_id: str, network_id: str, vip_id: str) -> None:
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO service_vips (service_id, network_id, "
                             "vip_id) VALUES (?, ?, ?)", (service_id, network_id, vip_id))

    def delete_service_vip(self, service_id: str, network_id: str) -> None:
        with self._db:
            self._db.execute("DELETE FROM service_vips WHERE service_id = ? AND "
                             "network_id = ?", (service_id, network_id))
