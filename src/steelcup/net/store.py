"""Persistence of networks, endpoints and virtual IPs in the daemon's SQLite database.

The (network, address) uniqueness constraint is what guarantees no duplicate address, also
across daemon restarts and concurrent connects; (tenant, name) that names are unique per tenant.
A virtual IP's address is taken from the same subnet: the manager allocates both kinds from
the union of the two tables.
"""

from __future__ import annotations

import sqlite3

from steelcup.errors import Conflict
from steelcup.net.model import Endpoint, NetworkRecord, VipRecord

_NETWORKS = ("CREATE TABLE IF NOT EXISTS networks ("
             " id TEXT PRIMARY KEY, tenant TEXT NOT NULL DEFAULT '', name TEXT NOT NULL,"
             " data TEXT NOT NULL, UNIQUE (tenant, name))")


class NetStore:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        # Endpoints decoded by their row's text (an Endpoint is immutable, so the same text is
        # the same endpoint): every ruleset load lists them all, and decoding 400 rows was
        # half of a load's 4.5 ms.
        self._decoded: dict[str, Endpoint] = {}
        columns = [r[1] for r in self._db.execute("PRAGMA table_info(networks)")]
        if columns and "tenant" not in columns:
            self._migrate_to_tenants()
        with self._db:
            self._db.execute(_NETWORKS)
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS net_endpoints ("
                " network_id TEXT NOT NULL REFERENCES networks(id),"
                " container_id TEXT NOT NULL, address TEXT NOT NULL, data TEXT NOT NULL,"
                " PRIMARY KEY (network_id, container_id), UNIQUE (network_id, address))"
            )
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS net_vips ("
                " id TEXT PRIMARY KEY, network_id TEXT NOT NULL REFERENCES networks(id),"
                " name TEXT NOT NULL, address TEXT, data TEXT NOT NULL,"  # NULL: dnsrr
                " UNIQUE (network_id, name), UNIQUE (network_id, address))"
            )

    @property
    def connection(self) -> sqlite3.Connection:
        """The database, for the network layer's other stores (security groups)."""
        return self._db

    def _migrate_to_tenants(self) -> None:
        """Names were unique daemon-wide: rebuild the table with (tenant, name) unique, every
        existing network being the operator's (""). SQLite's own recipe for a changed
        constraint (new table, copy, drop, rename) with foreign keys off, so the endpoints that
        reference `networks` keep referencing it; one transaction."""
        self._db.execute("PRAGMA foreign_keys=OFF")  # no effect inside a transaction
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(_NETWORKS.replace("networks (", "networks_v2 (", 1))
                self._db.execute("INSERT INTO networks_v2 (id, tenant, name, data) "
                                 "SELECT id, '', name, data FROM networks ORDER BY rowid")
                self._db.execute("DROP TABLE networks")
                self._db.execute("ALTER TABLE networks_v2 RENAME TO networks")
                if self._db.execute("PRAGMA foreign_key_check").fetchall():
                    raise sqlite3.IntegrityError("network endpoints lost their network")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        finally:
            self._db.execute("PRAGMA foreign_keys=ON")

    def insert_network(self, rec: NetworkRecord) -> None:
        try:
            with self._db:
                self._db.execute(
                    "INSERT INTO networks (id, tenant, name, data) VALUES (?, ?, ?, ?)",
                    (rec.id, rec.tenant, rec.name, rec.to_json()))
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"network with name {rec.name} already exists") from exc

    def delete_network(self, network_id: str) -> None:
        with self._db:
            self._db.execute("DELETE FROM net_endpoints WHERE network_id = ?", (network_id,))
            self._db.execute("DELETE FROM net_vips WHERE network_id = ?", (network_id,))
            self._db.execute("DELETE FROM networks WHERE id = ?", (network_id,))

    def networks(self, tenant: str | None = None) -> list[NetworkRecord]:
        """Every network (None), or only `tenant`'s."""
        if tenant is None:
            rows = self._db.execute("SELECT data FROM networks ORDER BY rowid").fetchall()
        else:
            rows = self._db.execute("SELECT data FROM networks WHERE tenant = ? ORDER BY rowid",
                                    (tenant,)).fetchall()
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
        out = [self._decoded.get(r[0]) or Endpoint.from_json(r[0]) for r in rows]
        if network_id is None:  # keep what the table holds now, no more
            self._decoded = {r[0]: ep for r, ep in zip(rows, out, strict=True)}
        return out

    def insert_vip(self, vip: VipRecord) -> None:
        try:
            with self._db:
                self._db.execute(
                    "INSERT INTO net_vips (id, network_id, name, address, data)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (vip.id, vip.network_id, vip.name, vip.address or None, vip.to_json()))
        except sqlite3.IntegrityError as exc:
            at = f" or with address {vip.address}" if vip.address else ""
            raise Conflict(f"a virtual IP named {vip.name}{at} already exists on the "
                           "network") from exc

    def update_vip(self, vip: VipRecord) -> None:
        """Its backends, aliases or ports (its network, name and address never change)."""
        with self._db:
            self._db.execute("UPDATE net_vips SET data = ? WHERE id = ?",
                             (vip.to_json(), vip.id))

    def delete_vip(self, vip_id: str) -> None:
        with self._db:
            self._db.execute("DELETE FROM net_vips WHERE id = ?", (vip_id,))

    def vips(self, network_id: str | None = None) -> list[VipRecord]:
        if network_id is None:
            rows = self._db.execute("SELECT data FROM net_vips ORDER BY rowid").fetchall()
        else:
            rows = self._db.execute("SELECT data FROM net_vips WHERE network_id = ?"
                                    " ORDER BY rowid", (network_id,)).fetchall()
        return [VipRecord.from_json(r[0]) for r in rows]
