"""A Runtime on a temp root with one tiny image ("base:1"); without a VM source (`vms`) enough
for create, inspect, recover and remove, which never boot a VM. `plain_dirs`: the fixture
that makes a container's root a plain directory (a test module uses it with
`pytestmark = pytest.mark.usefixtures("plain_dirs")`, and imports it from here when it is not
below tests/unit/runtime, whose conftest has it)."""

from __future__ import annotations

import asyncio
import io
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from steelcup.image import rootfs
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


@pytest.fixture
def plain_dirs(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A container's root is a plain directory: the overlay is not what these tests test
    (`pytestmark = pytest.mark.usefixtures("plain_dirs")`)."""
    def prepare(layers: Any, cdir: Path, disks: Any = None, size_bytes: int = 0,
                ids: Any = None, guest_overlay: bool = False) -> Path:
        (cdir / "rootfs").mkdir(exist_ok=True)
        return cdir / "rootfs"

    monkeypatch.setattr(rootfs, "prepare", prepare)
    monkeypatch.setattr(rootfs, "release", lambda cdir: None)
    monkeypatch.setattr(rootfs, "remove", lambda cdir: shutil.rmtree(cdir, ignore_errors=True))
    yield


async def logged(runtime: Runtime, cid: str, text: bytes) -> None:
    """Until `text` is in the container's log (AssertionError after ~2 s)."""
    path = runtime.log_path(cid)
    for _ in range(200):
        if path.exists() and text in path.read_bytes():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{text!r} never reached the log")
