"""Persistence of networks and endpoints in the daemon's SQLite database.

The (network, address) uniqueness constraint is what guarantees no duplicate address, also
across daemon restarts and concurrent connects.
"""

from __future__ import annotations

import sqlite3

from steelcup.errors import Conflict
from steelcup.net.model import Endpoint, NetworkRecord


class NetStore:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        with self._db:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS networks ("
                " id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, data TEXT NOT NULL)"
            )
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS net_endpoints ("
                " network_id TEXT NOT NULL REFERENCES networks(id),"
                " container_id TEXT NOT NULL, address TEXT NOT NULL, data TEXT NOT NULL,"
                " PRIMARY KEY (network_id, container_id), UNIQUE (network_id, address))"
            )

    def insert_network(self, rec: NetworkRecord) -> None:
        try:
            with self._db:
                self._db.execute("INSERT INTO networks (id, name, data) VALUES (?, ?, ?)",
                                 (rec.id, rec.name, rec.to_json()))
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"network with name {rec.name} already exists") from exc

    def delete_network(self, network_id: str) -> None:
        with self._db:
            self._db.execute("DELETE FROM net_endpoints WHERE network_id = ?", (network_id,))
            self._db.execute("DELETE FROM networks WHERE id = ?", (network_id,))

    def networks(self) -> list[NetworkRecord]:
        rows = self._db.execute("SELECT data FROM networks ORDER BY rowid").fetchall()
        return [NetworkRecord.from_json(r[0]) for r in rows]

    def insert_endpoint(self, ep: Endpoint) -> None:
        try:
            with self._db:
                self._db.execute(
                    "INSERT INTO net_endpoints (network_id, container_id, address, data)"
                    " VALUES (?, ?, ?, ?)",
                    (ep.network_id, ep.container_id, ep.address, ep.to_json()),
                )
        except sqlite3.IntegrityError as exc:
            raise Conflict(
                f"container {ep.container_id[:12]} is already connected to the network, or "
                f"address {ep.address} is taken"
            ) from exc

    def delete_endpoint(self, network_id: str, container_id: str) -> None:
        with self._db:
            self._db.execute(
                "DELETE FROM net_endpoints WHERE network_id = ? AND container_id = ?",
                (network_id, container_id),
            )

    def endpoints(self, network_id: str | None = None) -> list[Endpoint]:
        if network_id is None:
            rows = self._db.execute("SELECT data FROM net_endpoints ORDER BY rowid").fetchall()
        else:
            rows = self._db.execute(
                "SELECT data FROM net_endpoints WHERE network_id = ? ORDER BY rowid",
                (network_id,),
            ).fetchall()
        return [Endpoint.from_json(r[0]) for r in rows]
