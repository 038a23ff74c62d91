"""Unit tests of funcs run containers on the real runtime with fake VMs: a container's root is
a plain directory here (the overlay is not what is tested)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from steelcup.image import rootfs


@pytest.fixture(autouse=True)
def plain_dirs(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def prepare(layers: Any, cdir: Path, disks: Any = None, size_bytes: int = 0,
                ids: Any = None, guest_overlay: bool = False) -> Path:
        (cdir / "rootfs").mkdir(exist_ok=True)
        return cdir / "rootfs"

    monkeypatch.setattr(rootfs, "prepare", prepare)
    monkeypatch.setattr(rootfs, "release", lambda cdir: None)
    monkeypatch.setattr(rootfs, "remove", lambda cdir: shutil.rmtree(cdir, ignore_errors=True))
    yield
