"""A Runtime on a temp root with one tiny image ("base:1"); without a VM source (`vms`) enough
for create, inspect, recover and remove, which never boot a VM."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path
from typing import cast

from steelcup.image.store import ImageStore
from steelcup.pool.source import VmSource
from steelcup.runtime.containers import Runtime
from steelcup.runtime.events import EventBus
from steelcup.runtime.resources import Resources
from steelcup.runtime.store import ContainerStore
from tests.unit.image.tarutil import make_tar


def make_runtime(root: Path, db: sqlite3.Connection,
                 resources: Resources | None = None, vms: VmSource | None = None) -> Runtime:
    """A runtime over `db` (reuse the same db and root to simulate a daemon restart)."""
    images = ImageStore(root / "images", db)
    if not images.list():
        images.import_rootfs(io.BytesIO(make_tar([("dir", "bin")])), "base:1")
    return Runtime(root / "rt", ContainerStore(db), images, cast(VmSource, vms), EventBus(),
                   resources=resources)
