"""`Tenants`: the operator's tenant administration and the listener's authentication, over the
tenant store and the daemon's certificate authority."""

from __future__ import annotations

import builtins
import datetime
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from steelcup.errors import Conflict, InvalidArgument, NotFound, Unsupported
from steelcup.tenancy.credentials import CLIENT_DAYS_DEFAULT, Authority, ClientCredential
from steelcup.tenancy.model import (
    DEFAULT_SIZE,
    Quotas,
    Tenant,
    check_tenant_name,
    parse_quotas,
    size_class,
)
from steelcup.tenancy.quota import QuotaGate
from steelcup.tenancy.store import TenantKey, TenantStore, sha256_hex
from steelcup.tenancy.usage import UsageLedger, UsageLine

TOKEN_BYTES = 32
KEY_ID_BYTES = 6
MAX_KEY_DAYS = 3650
Owned = Callable[[str], builtins.list[str]]  # tenant name -> what it owns ("container x", ...)


def _rfc3339(when: datetime.datetime) -> str:
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class IssuedKey:
    """What `tenant key create` hands over once: the daemon keeps only digests of it."""

    key: TenantKey
    ca_pem: bytes
    credential: ClientCredential
    token: str


class Tenants:
    def __init__(self, store: TenantStore, authority: Authority,
                 owned: Owned | None = None, usage: UsageLedger | None = None) -> None:
        self.store = store
        self.authority = authority
        # What a tenant still owns (refuses `remove`); every object type registers here.
        self.owned: Owned = owned or (lambda _name: [])
        # Quota admission: every object type registers how it counts and admits its creates.
        self.quotas = QuotaGate(self.store.get)
        # Container-seconds by size (None: this daemon does not meter).
        self.usage = usage

    def create(self, name: str, quota_words: Iterable[str] = (),
               size_default: str = DEFAULT_SIZE) -> Tenant:
        check_tenant_name(name)
        size_class(size_default)
        quotas = parse_quotas(quota_words)
        tenant = Tenant(name, secrets.token_hex(16), _rfc3339(datetime.datetime.now(
            datetime.UTC)), quotas, size_default)
        return self.store.add(tenant)

    def get(self, name: str) -> Tenant:
        return self.store.get(name)

    def list(self) -> builtins.list[Tenant]:
        return self.store.list()

    def update(self, name: str, quota_words: Iterable[str] = (),
               size_default: str | None = None) -> Tenant:
        tenant = self.store.get(name)
        if size_default is not None:
            size_class(size_default)
        quotas: Quotas = parse_quotas(quota_words, tenant.quotas)
        return self.store.update(name, quotas, size_default or tenant.size_default)

    def remove(self, name: str) -> None:
        """Refused while the tenant owns objects; its keys go with it."""
        self.store.get(name)
        owned = self.owned(name)
        if owned:
            shown = ", ".join(owned[:5]) + (f" and {len(owned) - 5} more" if len(owned) > 5
                                             else "")
            raise Conflict(f"tenant {name} still owns {shown}: remove them first")
        self.store.remove(name)

    def usage_report(self, name: str, since_ns: int = 0, until_ns: int = 0
                     ) -> builtins.list[UsageLine]:
        """A tenant's container-seconds per size in the window (also a removed tenant's)."""
        if self.usage is None:
            raise Unsupported("this daemon does not meter usage")
        if since_ns and until_ns and until_ns <= since_ns:
            raise InvalidArgument("until must be after since")
        if not self.usage.has_runs(name):
            self.store.get(name)  # NotFound for a name that never ran anything
        return self.usage.report(name, since_ns, until_ns)

    # -- keys ---------------------------------------------------------------------------------
    def issue_key(self, name: str, days: int = CLIENT_DAYS_DEFAULT) -> IssuedKey:
        self.store.get(name)
        if not 1 <= days <= MAX_KEY_DAYS:
            raise InvalidArgument(f"a key is valid for 1..{MAX_KEY_DAYS} days, not {days}")
        key_id = secrets.token_hex(KEY_ID_BYTES)
        credential = self.authority.issue_client(name, key_id, days)
        token = "scup_" + secrets.token_urlsafe(TOKEN_BYTES)
        key = TenantKey(key_id, name, _rfc3339(datetime.datetime.now(datetime.UTC)),
                        _rfc3339(credential.not_after), sha256_hex(credential.cert_der),
                        sha256_hex(token.encode()))
        self.store.add_key(key)
        return IssuedKey(key, self.authority.ca_pem(), credential, token)

    def keys(self, name: str) -> builtins.list[TenantKey]:
        return self.store.keys(name)

    def remove_key(self, name: str, key_id: str) -> None:
        self.store.remove_key(name, key_id)

    # -- authentication -----------------------------------------------------------------------
    def authenticate(self, *, cert_der: bytes | None = None, bearer: str | None = None,
                     now: datetime.datetime | None = None) -> Tenant | None:
        """The tenant a request speaks for: by the client certificate TLS verified against our
        CA, else by a bearer token; None if neither names a live key (removed, expired)."""
        key = None
        if cert_der is not None:
            key = self.store.key_by_cert(cert_der)
        if key is None and bearer:
            key = self.store.key_by_token(bearer)
        if key is None:
            return None
        now = now or datetime.datetime.now(datetime.UTC)
        if _rfc3339(now) >= key.not_after:
            return None
        try:
            return self.store.get(key.tenant)
        except NotFound:
            return None
