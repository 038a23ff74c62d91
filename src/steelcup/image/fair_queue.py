"""The order in which background work shared by tenants is done (the erofs images of block
roots): what somebody is waiting for first, then one owner's oldest item at a time, owners
in turn, so that a tenant who queues many items delays another's by one item at most
(besides the one being done).

Pure bookkeeping: the caller holds its own lock around every call."""

from __future__ import annotations

from collections import OrderedDict, deque


class FairQueue:
    """Keys (unique) waiting their turn, each queued by an owner ("" is the operator's)."""

    def __init__(self) -> None:
        self._urgent: deque[str] = deque()
        self._owners: OrderedDict[str, deque[str]] = OrderedDict()  # in turn order
        self._owner_of: dict[str, str] = {}  # key -> its owner, while not urgent

    def __len__(self) -> int:
        return len(self._urgent) + len(self._owner_of)

    def __contains__(self, key: str) -> bool:
        return key in self._owner_of or key in self._urgent

    def add(self, key: str, owner: str, *, urgent: bool = False) -> None:
        """Queue `key` for `owner` (at the end of its own line), or ahead of every owner's
        line if somebody waits for it. A key queued already keeps its place, unless it
        becomes urgent now."""
        if key in self:
            if urgent:
                self.promote(key)
            return
        if urgent:
            self._urgent.append(key)
            return
        self._owner_of[key] = owner
        line = self._owners.get(owner)
        if line is None:
            line = self._owners[owner] = deque()  # a new owner's turn comes last
        line.append(key)

    def promote(self, key: str) -> None:
        """Somebody now waits for `key` (queued): it goes after the urgent ones before it."""
        owner = self._owner_of.pop(key, None)
        if owner is None:
            return  # urgent already, or not queued
        self._remove_from_line(owner, key)
        self._urgent.append(key)

    def discard(self, key: str) -> None:
        """Take `key` out of the queue, if it is in it."""
        owner = self._owner_of.pop(key, None)
        if owner is not None:
            self._remove_from_line(owner, key)
        elif key in self._urgent:
            self._urgent.remove(key)

    def take(self) -> str | None:
        """The next key (removed from the queue), or None if it is empty: the oldest urgent
        one, else the oldest of the owner whose turn it is, whose turn then passes."""
        if self._urgent:
            return self._urgent.popleft()
        if not self._owners:
            return None
        owner, line = next(iter(self._owners.items()))
        key = line.popleft()
        del self._owner_of[key]
        if line:
            self._owners.move_to_end(owner)
        else:
            del self._owners[owner]
        return key

    def _remove_from_line(self, owner: str, key: str) -> None:
        line = self._owners[owner]
        line.remove(key)
        if not line:
            del self._owners[owner]
