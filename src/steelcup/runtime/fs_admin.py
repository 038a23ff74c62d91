"""`docker container prune` (with docker's until and label filters)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from steelcup.errors import Conflict, InvalidArgument, NotFound
from steelcup.runtime.containers import Runtime
from steelcup.runtime.fs_paths import writable_layer
from steelcup.runtime.lifecycle import Op, allows
from steelcup.runtime.logs import parse_time_ns
from steelcup.runtime.model import ContainerRecord


@dataclass(frozen=True)
class PruneReport:
    deleted: list[str]
    reclaimed_bytes: int


async def prune(runtime: Runtime, filters: dict[str, list[str]],
                tenant: str | None = None) -> PruneReport:
    """Remove stopped containers matching `filters`; the space is their upper dirs."""
    deleted: list[str] = []
    reclaimed = 0
    for record in prune_candidates(runtime.list(tenant), filters, time.time()):
        try:
            async with writable_layer(runtime, record.id) as upper:
                size = await asyncio.to_thread(_tree_bytes, upper)
            await runtime.remove(record.id)
        except (Conflict, NotFound):
            continue  # started or removed meanwhile
        deleted.append(record.id)
        reclaimed += size
    runtime.events.publish("container", "prune", "", {"reclaimed": str(reclaimed)},
                           tenant or "")
    return PruneReport(deleted, reclaimed)


def prune_candidates(
    records: Iterable[ContainerRecord], filters: dict[str, list[str]], now_s: float
) -> list[ContainerRecord]:
    """Stopped containers (those a plain `rm` may remove) that match docker's prune filters
    (until, label, label!)."""
    for key in filters:
        if key not in ("until", "label", "label!"):
            raise InvalidArgument(f"invalid filter '{key}'")
    untils = [parse_until(v, now_s) for v in filters.get("until", [])]
    out = []
    for record in records:
        if not allows(record.state.status, Op.REMOVE):
            continue
        created = parse_time_ns(record.created) / 1e9
        if any(created >= u for u in untils):
            continue
        labels = dict(record.config.labels)
        if not all(_label_ok(labels, v) for v in filters.get("label", [])):
            continue
        if any(_label_ok(labels, v) for v in filters.get("label!", [])):
            continue
        out.append(record)
    return out


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_until(text: str, now_s: float) -> float:
    """docker's `until` filter: unix time, RFC 3339, or a Go duration before now."""
    text = text.strip()
    if text and _DURATION.sub("", text) == "":
        return now_s - sum(float(n) * _UNIT_S[u] for n, u in _DURATION.findall(text))
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return parse_time_ns(text.replace("+00:00", "Z")) / 1e9
    except ValueError:
        raise InvalidArgument(f"invalid until filter: {text!r}") from None


def _label_ok(labels: dict[str, str], want: str) -> bool:
    key, sep, value = want.partition("=")
    return key in labels and (not sep or labels[key] == value)


def _tree_bytes(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total
