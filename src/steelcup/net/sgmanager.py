"""`SecurityGroups`: a tenant's security groups and memberships (persisted), and the
`inet steelcup_sg` table for the containers in groups (rendered by net/sgrender.py,
loaded by the NetworkManager with its other tables, atomically, whenever groups, memberships or
endpoints change).

Everything is per tenant: a group's name is looked up in the caller's tenant only, and a
`remote_group` names a group of the same tenant, so no tenant can name (or learn of) another's.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence

from steelcup.defaults import SECURITY_GROUPS_LABEL
from steelcup.errors import Conflict, InvalidArgument, NotFound
from steelcup.net import sgrender
from steelcup.net.secgroups import Rule, SecurityGroup, check_name, parse_document
from steelcup.net.sgstore import SecurityGroupStore

# container id -> [(address, gateway)] of its endpoints (its addresses on its networks)
Nics = Mapping[str, Sequence[tuple[str, str]]]


def requested(labels: Mapping[str, str]) -> list[str]:
    """The groups a create asks for (`run --sg A --sg B` sends the label A,B), in order, once."""
    raw = labels.get(SECURITY_GROUPS_LABEL, "")
    names = [n.strip() for n in raw.split(",") if n.strip()]
    return list(dict.fromkeys(names))


class SecurityGroups:
    def __init__(self, store: SecurityGroupStore, reload: Callable[[], Awaitable[None]],
                 addresses_of: Callable[[str], list[str]]) -> None:
        """`reload`: re-render and load the whole ruleset; `addresses_of(container id)`: every
        address the container holds (for remote_group rules, running or not)."""
        self.store = store
        self._reload = reload
        self._addresses_of = addresses_of

    # -- groups -------------------------------------------------------------------------------

    def all(self, tenant: str | None) -> list[SecurityGroup]:
        return self.store.groups(tenant)

    def get(self, name: str, tenant: str) -> SecurityGroup:
        return self.store.get(tenant, name)

    def members(self, name: str, tenant: str) -> list[str]:
        self.store.get(tenant, name)
        return self.store.members(tenant, name)

    async def create(self, name: str, document: object, tenant: str) -> SecurityGroup:
        check_name(name)
        description, rules = parse_document(document)
        self._check_remotes(name, rules, tenant)
        group = SecurityGroup(name, tenant, description, rules, _now())
        self.store.insert(group)
        return group

    async def update(self, name: str, document: object, tenant: str) -> SecurityGroup:
        """Replace the group's rules; its running members' rules change at once."""
        old = self.store.get(tenant, name)
        description, rules = parse_document(document)
        self._check_remotes(name, rules, tenant)
        group = SecurityGroup(name, tenant, description, rules, old.created)
        self.store.replace(group)
        await self._reload()
        return group

    async def remove(self, name: str, tenant: str) -> None:
        self.store.get(tenant, name)
        members = self.store.members(tenant, name)
        if members:
            raise Conflict(f"security group {name} is in use by {len(members)} container(s) "
                           f"({', '.join(c[:12] for c in members)}): remove it from them first "
                           "(steelcup update --sg-rm)")
        users = [g.name for g in self.store.groups(tenant) if g.name != name
                 and any(r.remote_group == name for r in g.rules)]
        if users:
            raise Conflict(f"security group {name} is the remote_group of a rule in "
                           f"{', '.join(users)}")
        self.store.delete(tenant, name)

    def _check_remotes(self, name: str, rules: Sequence[Rule], tenant: str) -> None:
        """A remote_group is one of the tenant's own groups (or the group itself)."""
        known = {g.name for g in self.store.groups(tenant)} | {name}
        for i, rule in enumerate(rules):
            if rule.remote_group and rule.remote_group not in known:
                raise InvalidArgument(f"rule {i + 1}: remote_group {rule.remote_group!r}: no "
                                      "such security group")

    # -- memberships --------------------------------------------------------------------------

    def check(self, names: Sequence[str], tenant: str) -> list[str]:
        """`names` exist among `tenant`'s groups (NotFound naming the first that does not)."""
        for name in names:
            self.store.get(tenant, name)
        return list(dict.fromkeys(names))

    def groups_of(self, container_id: str) -> list[str]:
        return self.store.groups_of(container_id)

    def has_members(self, container_ids: Collection[str]) -> bool:
        """Whether any of `container_ids` is in a group (one query, however many)."""
        return any(cid in container_ids for _, _, cid in self.store.memberships())

    async def join(self, container_id: str, tenant: str, names: Sequence[str]) -> None:
        """At create: the container is in `names` (checked) from its first start."""
        if names:
            self.store.set_members(tenant, container_id, self.check(names, tenant))

    async def change(self, container_id: str, tenant: str, add: Sequence[str] = (),
                     remove: Sequence[str] = ()) -> list[str]:
        """`update --sg-add/--sg-rm`: the new set, applied at once if it runs."""
        current = self.store.groups_of(container_id)
        self.check(add, tenant)
        missing = [n for n in remove if n not in current]
        if missing:
            raise NotFound(f"container {container_id[:12]} is not in security group "
                           f"{missing[0]}")
        wanted = [n for n in dict.fromkeys([*current, *add]) if n not in remove]
        self.store.set_members(tenant, container_id, wanted)
        await self._reload()
        return wanted

    def forget(self, container_id: str) -> bool:
        """The container is removed: it leaves its groups. Whether it was in any."""
        was = bool(self.store.groups_of(container_id))
        if was:
            self.store.set_members("", container_id, [])
        return was

    # -- rules --------------------------------------------------------------------------------

    def render(self, nics: Nics) -> str:
        """The `inet steelcup_sg` table for the containers of `nics` that are in groups."""
        by_container: dict[str, list[str]] = {}
        tenants: dict[str, str] = {}
        for tenant, name, cid in self.store.memberships():
            by_container.setdefault(cid, []).append(name)
            tenants[cid] = tenant
        groups = {(g.tenant, g.name): g for g in self.store.groups()}
        members: dict[tuple[str, str], list[str]] = {}
        for cid, names in by_container.items():
            addresses = self._addresses_of(cid)
            for name in names:
                members.setdefault((tenants[cid], name), []).extend(addresses)
        guarded = []
        for cid, own in nics.items():
            if cid not in by_container or not own:
                continue
            guarded.append(sgrender.Guarded(
                cid, tuple(a for a, _ in own), tuple(gw for _, gw in own),
                tuple(groups[(tenants[cid], n)] for n in by_container[cid])))
        return sgrender.render(guarded, members)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z"
