"""Per-registry credentials saved by `steelcup login`: one JSON file per tenant under the
daemon root, 0600 (the operator's `registry-auth.json`, tenant T's `registry-auth/T.json`).

The format follows docker's config.json `auths` section (`{"auths": {"host": {"auth": b64}}}`),
so a person reading it recognises it. Writes are atomic (temp file + rename).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import tempfile
import threading
from pathlib import Path

from steelcup.errors import SteelcupError
from steelcup.image.auth import Credentials, credentials_from_json, normalize_server_address
from steelcup.tenancy.model import check_tenant_name

FILE_NAME = "registry-auth.json"
TENANT_DIR = "registry-auth"


class CredentialStore:
    """Credentials keyed by normalised registry host (`127.0.0.1:5000`, `docker.io`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def get(self, server: str) -> Credentials | None:
        entry = self._read().get(normalize_server_address(server))
        if not isinstance(entry, dict):
            return None
        try:
            return credentials_from_json(entry)
        except SteelcupError:
            return None

    def set(self, server: str, creds: Credentials) -> None:
        key = normalize_server_address(server)
        entry: dict[str, str] = {}
        if creds.username:
            raw = f"{creds.username}:{creds.password}".encode()
            entry["auth"] = base64.b64encode(raw).decode("ascii")
        if creds.identity_token:
            entry["identitytoken"] = creds.identity_token
        with self._lock:
            auths = self._read()
            auths[key] = entry
            self._write(auths)

    def remove(self, server: str) -> bool:
        """Forget `server`; False if nothing was stored for it."""
        key = normalize_server_address(server)
        with self._lock:
            auths = self._read()
            if key not in auths:
                return False
            del auths[key]
            self._write(auths)
            return True

    def servers(self) -> list[str]:
        return sorted(self._read())

    def _read(self) -> dict[str, object]:
        try:
            doc = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, binascii.Error) as exc:
            raise SteelcupError(f"cannot read credentials file {self.path}: {exc}") from exc
        auths = doc.get("auths") if isinstance(doc, dict) else None
        return dict(auths) if isinstance(auths, dict) else {}

    def _write(self, auths: dict[str, object]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".registry-auth-")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as out:
                json.dump({"auths": auths}, out, indent=2, sort_keys=True)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class TenantCredentials:
    """Each tenant's own `CredentialStore`: a login by one tenant is never used for another's
    pull or push. The operator (tenant None or "") keeps the single-user file."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._stores: dict[str, CredentialStore] = {}

    def of(self, tenant: str | None) -> CredentialStore:
        key = tenant or ""
        with self._lock:
            store = self._stores.get(key)
            if store is None:
                path = (self.root / FILE_NAME if not key
                        else self.root / TENANT_DIR / f"{check_tenant_name(key)}.json")
                store = self._stores[key] = CredentialStore(path)
            return store

    def forget(self, tenant: str) -> None:
        """A removed tenant's saved logins go with it."""
        with self._lock:
            self._stores.pop(tenant, None)
            (self.root / TENANT_DIR / f"{check_tenant_name(tenant)}.json").unlink(missing_ok=True)
