"""Locate the guest kernel and initrd (built by `make guest`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from steelcup.errors import NotFound

KERNEL_NAME = "vmlinux"  # the unpacked kernel: QEMU boots it directly (PVH), ~6 s faster under TCG
INITRD_NAME = "initrd.img"
INIT_NAME = "init"  # the guest init binary: pooled VMs run it once as a warm-up program
SYSTEM_DIR = Path("/usr/lib/steelcup/guest")
ENV_VAR = "STEELCUP_ASSETS"


@dataclass(frozen=True)
class GuestAssets:
    kernel: Path
    initrd: Path
    init: Path | None = None  # optional: without it a pooled VM warms up with the initrd's /init


def repo_assets_dir() -> Path:
    """`<repo>/build/guest` for a source checkout (this file is <repo>/src/steelcup/vm/)."""
    return Path(__file__).resolve().parents[3] / "build" / "guest"


def candidate_dirs(explicit: Path | None) -> list[Path]:
    if explicit is not None:
        return [explicit]
    env = os.environ.get(ENV_VAR, "")
    if env:
        return [Path(env)]
    return [repo_assets_dir(), SYSTEM_DIR]


def _complete(directory: Path) -> GuestAssets | None:
    init = directory / INIT_NAME
    assets = GuestAssets(directory / KERNEL_NAME, directory / INITRD_NAME,
                         init if init.is_file() else None)
    if assets.kernel.is_file() and assets.initrd.is_file():
        return assets
    return None


def find_assets(explicit: Path | None = None) -> GuestAssets:
    """The first complete asset dir: `explicit`, else $STEELCUP_ASSETS, else the repo build
    dir, else /usr/lib/steelcup/guest. An explicit or environment choice is never overridden."""
    dirs = candidate_dirs(explicit)
    for directory in dirs:
        found = _complete(directory)
        if found is not None:
            return found
    tried = ", ".join(str(d) for d in dirs)
    raise NotFound(
        f"guest kernel and initrd ({KERNEL_NAME}, {INITRD_NAME}) not found in: {tried}. "
        f"Run `make guest` in the steelcup checkout, or point ${ENV_VAR} at a directory "
        "that holds them."
    )
