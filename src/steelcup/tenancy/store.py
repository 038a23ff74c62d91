"""Tenants and their keys in the daemon's state database (steelcup.state.db).

A key is what a tenant authenticates with: a client certificate the daemon's CA signed (stored
by the SHA-256 of its DER form) and a bearer token (stored by its SHA-256 only). A removed key
is deleted, so the next lookup of it fails: the listener checks on every request.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace

from steelcup.errors import Conflict, NotFound
from steelcup.tenancy.model import Quotas, Tenant

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tenants (
    name TEXT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    created TEXT NOT NULL,
    quotas TEXT NOT NULL,
    size_default TEXT NOT NULL,
    id_slot INTEGER NOT NULL UNIQUE CHECK (id_slot > 0)
);
CREATE TABLE IF NOT EXISTS tenant_keys (
    key_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL REFERENCES tenants(name),
    created TEXT NOT NULL,
    not_after TEXT NOT NULL,
    cert_sha256 TEXT NOT NULL UNIQUE,
    token_sha256 TEXT NOT NULL UNIQUE
);
"""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class TenantKey:
    key_id: str
    tenant: str
    created: str
    not_after: str  # the certificate's expiry, RFC 3339
    cert_sha256: str
    token_sha256: str


class TenantStore:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._lock = threading.Lock()
        with self._lock:
            self._db.executescript(_SCHEMA)

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        """One atomic transaction under the lock (the daemon's connection autocommits)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- tenants -----------------------------------------------------------------------------
    def add(self, tenant: Tenant) -> Tenant:
        """Store a new tenant with the lowest free id slot (its `id_slot` is ignored)."""
        try:
            with self._tx():
                used = {r[0] for r in self._db.execute("SELECT id_slot FROM tenants")}
                slot = next(n for n in range(1, len(used) + 2) if n not in used)
                self._db.execute(
                    "INSERT INTO tenants VALUES (?, ?, ?, ?, ?, ?)",
                    (tenant.name, tenant.id, tenant.created,
                     json.dumps(tenant.quotas.to_json()), tenant.size_default, slot))
        except sqlite3.IntegrityError:
            raise Conflict(f"tenant {tenant.name!r} already exists") from None
        return replace(tenant, id_slot=slot)

    def get(self, name: str) -> Tenant:
        row = self._db.execute("SELECT * FROM tenants WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound(f"no such tenant: {name}")
        return _tenant(row)

    def list(self) -> builtins.list[Tenant]:
        return [_tenant(r) for r in self._db.execute("SELECT * FROM tenants ORDER BY name")]

    def update(self, name: str, quotas: Quotas, size_default: str) -> Tenant:
        with self._lock:
            cur = self._db.execute(
                "UPDATE tenants SET quotas = ?, size_default = ? WHERE name = ?",
                (json.dumps(quotas.to_json()), size_default, name))
            if cur.rowcount == 0:
                raise NotFound(f"no such tenant: {name}")
        return self.get(name)

    def remove(self, name: str) -> None:
        """The tenant and every key of it (their next request is refused)."""
        with self._tx():
            self._db.execute("DELETE FROM tenant_keys WHERE tenant = ?", (name,))
            cur = self._db.execute("DELETE FROM tenants WHERE name = ?", (name,))
            if cur.rowcount == 0:
                raise NotFound(f"no such tenant: {name}")

    # -- keys --------------------------------------------------------------------------------
    def add_key(self, key: TenantKey) -> None:
        with self._lock:
            self._db.execute("INSERT INTO tenant_keys VALUES (?, ?, ?, ?, ?, ?)",
                             (key.key_id, key.tenant, key.created, key.not_after,
                              key.cert_sha256, key.token_sha256))

    def keys(self, tenant: str) -> builtins.list[TenantKey]:
        self.get(tenant)
        return [TenantKey(*r) for r in self._db.execute(
            "SELECT * FROM tenant_keys WHERE tenant = ? ORDER BY created, key_id", (tenant,))]

    def remove_key(self, tenant: str, key_id: str) -> None:
        with self._lock:
            cur = self._db.execute("DELETE FROM tenant_keys WHERE tenant = ? AND key_id = ?",
                                   (tenant, key_id))
            if cur.rowcount == 0:
                raise NotFound(f"tenant {tenant} has no key {key_id}")

    def key_by_cert(self, cert_der: bytes) -> TenantKey | None:
        row = self._db.execute("SELECT * FROM tenant_keys WHERE cert_sha256 = ?",
                               (sha256_hex(cert_der),)).fetchone()
        return TenantKey(*row) if row is not None else None

    def key_by_token(self, token: str) -> TenantKey | None:
        row = self._db.execute("SELECT * FROM tenant_keys WHERE token_sha256 = ?",
                               (sha256_hex(token.encode()),)).fetchone()
        return TenantKey(*row) if row is not None else None


def _tenant(row: tuple[str, str, str, str, str, int]) -> Tenant:
    name, id_, created, quotas, size_default, id_slot = row
    return Tenant(name, id_, created, Quotas.from_json(json.loads(quotas)), size_default,
                  id_slot)
