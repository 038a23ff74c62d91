"""Which daemon's persistent taps are which: each run dir holds a tap tag of its own.

A pool's ready VMs and templates sit on persistent taps (the daemon makes them: QEMU may not),
named with the daemon's 3-hex tap tag (`template.tap_tag`), and a daemon's start-up sweep
deletes the taps with its tag that a killed predecessor left. Two daemons in one network
namespace whose tags were equal (1 in 4096, the tag being a hash of the run dir) would delete
each other's running VMs' taps. So a tag is claimed in a registry beside the run dirs
(`/run/steelcup/tap-tags/TAG`, a symlink to the run dir holding it), under a lock: the hash's
tag when free, else the next free one. A run dir keeps its tag across restarts (live-restored
VMs keep their taps); a tag whose run dir is gone (a daemon that stopped cleanly, or a reset
with no VM left running) is free again.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from steelcup.pool.template import TAP_TAG_DIGITS, tap_tag

REGISTRY = "tap-tags"  # beside the run dirs
LOCK = ".lock"
TAGS = 16**TAP_TAG_DIGITS


def candidates(run_dir: Path) -> list[str]:
    """The tags `run_dir` may take, in order: its hash's (what it had before the registry),
    then every other one after it."""
    first = int(tap_tag(run_dir), 16)
    return [f"{(first + i) % TAGS:0{TAP_TAG_DIGITS}x}" for i in range(TAGS)]


def choose(run_dir: Path, held: dict[str, str], live: set[str]) -> str | None:
    """The tag `run_dir` holds (`held`: tag -> the run dir holding it) or the first candidate
    no live run dir holds (`live`: the held run dirs that still exist); None if all are."""
    mine = str(run_dir)
    for tag, owner in sorted(held.items()):
        if owner == mine:
            return tag
    return next((tag for tag in candidates(run_dir) if held.get(tag) not in live), None)


def claim(run_dir: Path) -> str:
    """`run_dir`'s tap tag, claimed in the registry beside it (made if missing); OSError if
    the registry cannot be written, RuntimeError if every tag is held."""
    registry = run_dir.parent / REGISTRY
    registry.mkdir(mode=0o700, parents=True, exist_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)  # its existence is what keeps the claim
    fd = os.open(registry / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        held: dict[str, str] = {}
        for entry in registry.iterdir():
            if entry.name.startswith(".") or not entry.is_symlink():
                continue
            held[entry.name] = os.readlink(entry)
        live = {owner for owner in set(held.values()) if Path(owner).is_dir()}
        for tag, owner in held.items():  # run dirs gone: their tags are free
            if owner not in live:
                with contextlib.suppress(FileNotFoundError):
                    (registry / tag).unlink()
        chosen = choose(run_dir, held, live)
        if chosen is None:
            raise RuntimeError(f"all {TAGS} tap tags in {registry} are held by run dirs that "
                               "exist: remove those of daemons that no longer run")
        if held.get(chosen) != str(run_dir):
            temp = registry / f".{chosen}.tmp"
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            temp.symlink_to(run_dir)
            temp.replace(registry / chosen)
        return chosen
    finally:
        os.close(fd)  # the lock goes with it
