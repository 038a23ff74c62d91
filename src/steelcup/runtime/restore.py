"""Live restore's record of a running container that outlived the daemon (docs/live-restore.md).

A daemon stopping with `--live-restore` writes one `restore.json` into the directory of each
container it leaves running: how to find its VM (`VmHandle`), which guest process is its main
one and how much of that process's output reached the log, and the host side of its network
(taps, published ports). The next daemon reads them before it cleans up anything, keeps what the
live ones use, re-attaches them, and deletes every record it read.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from steelcup.net.nft import PublishedPort
from steelcup.vm.machine import VmHandle
from steelcup.vm.process import start_time

log = logging.getLogger(__name__)

RESTORE_FILE = "restore.json"
FORMAT = 1


@dataclass(frozen=True)
class Kept:
    """A container left running by the previous daemon."""

    container_id: str
    vm: VmHandle
    process_id: int  # the guest protocol's id of the container's main process
    pid: int  # that process's pid in the container
    logged_bytes: int  # of its output, written to the container's log (RESUME's RECEIVED)
    slot_dir: str = ""  # a pooled VM's rootfs slot (its bind of the container's root stays)
    taps: tuple[str, ...] = ()
    ports: tuple[PublishedPort, ...] = ()

    def alive(self) -> bool:
        """Whether the VM's QEMU is still the process the record names."""
        return start_time(self.vm.pid) == self.vm.started

    def run_dir_paths(self) -> tuple[Path, ...]:
        """What of the VM run dir the VM still uses: its state dir and slot."""
        return tuple(Path(p) for p in (self.vm.state_dir, self.slot_dir) if p)

    def to_json(self) -> dict[str, object]:
        return {
            "format": FORMAT,
            "container_id": self.container_id,
            "vm": self.vm.to_json(),
            "process_id": self.process_id,
            "pid": self.pid,
            "logged_bytes": self.logged_bytes,
            "slot_dir": self.slot_dir,
            "taps": list(self.taps),
            "ports": [[p.host_ip, p.host_port, p.container_ip, p.container_port, p.proto]
                      for p in self.ports],
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Kept:
        if data.get("format") != FORMAT:
            raise ValueError(f"unknown format {data.get('format')!r}")
        try:
            ports = tuple(PublishedPort(str(h), int(hp), str(c), int(cp), str(proto))
                          for h, hp, c, cp, proto in data.get("ports", []))  # type: ignore[attr-defined]
            return cls(
                container_id=str(data["container_id"]),
                vm=VmHandle.from_json(data["vm"]),  # type: ignore[arg-type]
                process_id=int(data["process_id"]),  # type: ignore[call-overload]
                pid=int(data["pid"]),  # type: ignore[call-overload]
                logged_bytes=int(data["logged_bytes"]),  # type: ignore[call-overload]
                slot_dir=str(data.get("slot_dir", "")),
                taps=tuple(str(t) for t in data.get("taps", [])),  # type: ignore[attr-defined]
                ports=ports,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"bad restore record: {exc!r}") from exc


def save(container_dir: Path, kept: Kept) -> None:
    """Written whole or not at all (temp file, fsync, rename)."""
    path = container_dir / RESTORE_FILE
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as out:
        out.write(json.dumps(kept.to_json()).encode())
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def load_all(containers_dir: Path) -> dict[str, Kept]:
    """Every record under `containers_dir` (one per container directory), unreadable ones
    logged and skipped (their containers are then exited, as after a crash)."""
    found: dict[str, Kept] = {}
    if not containers_dir.is_dir():
        return found
    for path in sorted(containers_dir.glob(f"*/{RESTORE_FILE}")):
        try:
            kept = Kept.from_json(json.loads(path.read_bytes()))
        except (OSError, ValueError) as exc:
            log.warning("live restore: ignoring %s: %s", path, exc)
            continue
        if kept.container_id != path.parent.name:
            log.warning("live restore: ignoring %s: it names container %s", path,
                        kept.container_id)
            continue
        found[kept.container_id] = kept
    return found


def forget(container_dir: Path) -> None:
    """The record was read: a later start must not act on it again."""
    with contextlib.suppress(FileNotFoundError):
        (container_dir / RESTORE_FILE).unlink()
