"""Persistence of security groups and of which containers are in them (the daemon's SQLite
database): groups are unique per (tenant, name); a membership names a group of the container's
own tenant and goes with the container."""

from __future__ import annotations

import sqlite3

from steelcup.errors import Conflict, NotFound
from steelcup.net.secgroups import SecurityGroup


class SecurityGroupStore:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        with self._db:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS security_groups ("
                " tenant TEXT NOT NULL, name TEXT NOT NULL, data TEXT NOT NULL,"
                " PRIMARY KEY (tenant, name))")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS security_group_members ("
                " tenant TEXT NOT NULL, name TEXT NOT NULL, container_id TEXT NOT NULL,"
                " PRIMARY KEY (tenant, name, container_id),"
                " FOREIGN KEY (tenant, name) REFERENCES security_groups (tenant, name))")

    def insert(self, group: SecurityGroup) -> None:
        try:
            with self._db:
                self._db.execute("INSERT INTO security_groups (tenant, name, data) "
                                 "VALUES (?, ?, ?)", (group.tenant, group.name, group.to_json()))
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"security group {group.name} already exists") from exc

    def replace(self, group: SecurityGroup) -> None:
        with self._db:
            cur = self._db.execute("UPDATE security_groups SET data = ? WHERE tenant = ? AND "
                                   "name = ?", (group.to_json(), group.tenant, group.name))
        if cur.rowcount != 1:
            raise NotFound(f"security group {group.name} not found")

    def delete(self, tenant: str, name: str) -> None:
        try:
            with self._db:
                self._db.execute("DELETE FROM security_groups WHERE tenant = ? AND name = ?",
                                 (tenant, name))
        except sqlite3.IntegrityError as exc:  # the caller checks first; a race lands here
            raise Conflict(f"security group {name} is in use") from exc

    def delete_tenant(self, tenant: str) -> None:
        """Every group of a removed tenant, with any membership left."""
        with self._db:
            self._db.execute("DELETE FROM security_group_members WHERE tenant = ?", (tenant,))
            self._db.execute("DELETE FROM security_groups WHERE tenant = ?", (tenant,))

    def get(self, tenant: str, name: str) -> SecurityGroup:
        row = self._db.execute("SELECT data FROM security_groups WHERE tenant = ? AND name = ?",
                               (tenant, name)).fetchone()
        if row is None:
            raise NotFound(f"security group {name} not found")
        return SecurityGroup.from_json(row[0])

    def groups(self, tenant: str | None = None) -> list[SecurityGroup]:
        """Every tenant's groups (None) or `tenant`'s."""
        if tenant is None:
            rows = self._db.execute("SELECT data FROM security_groups ORDER BY rowid")
        else:
            rows = self._db.execute("SELECT data FROM security_groups WHERE tenant = ? "
                                    "ORDER BY rowid", (tenant,))
        return [SecurityGroup.from_json(r[0]) for r in rows.fetchall()]

    def set_members(self, tenant: str, container_id: str, names: list[str]) -> None:
        """The container is in exactly `names` (groups of `tenant`) from now on."""
        with self._db:
            self._db.execute("DELETE FROM security_group_members WHERE container_id = ?",
                             (container_id,))
            for name in names:
                self._db.execute("INSERT INTO security_group_members (tenant, name, "
                                 "container_id) VALUES (?, ?, ?)", (tenant, name, container_id))

    def groups_of(self, container_id: str) -> list[str]:
        rows = self._db.execute("SELECT name FROM security_group_members WHERE container_id = ?"
                                " ORDER BY name", (container_id,)).fetchall()
        return [str(r[0]) for r in rows]

    def members(self, tenant: str, name: str) -> list[str]:
        rows = self._db.execute("SELECT container_id FROM security_group_members WHERE "
                                "tenant = ? AND name = ? ORDER BY container_id",
                                (tenant, name)).fetchall()
        return [str(r[0]) for r in rows]

    def memberships(self) -> list[tuple[str, str, str]]:
        """Every (tenant, group, container id)."""
        rows = self._db.execute("SELECT tenant, name, container_id FROM security_group_members"
                                " ORDER BY tenant, name, container_id").fetchall()
        return [(str(t), str(n), str(c)) for t, n, c in rows]
