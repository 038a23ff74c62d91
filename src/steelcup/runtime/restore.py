"""Live restore's record of a running container that outlived the daemon (docs/live-restore.md).

A `--live-restore` daemon keeps one `restore.json` in the directory of each running container
it could leave running, from the container's start to the end of its run (so a daemon killed
outright leaves them too): how to find its VM (`VmHandle`), which guest process is its main
one, where that process's output begins in the log (`LogMark`), and the host side of its
network (taps, published ports). The next daemon reads them before it cleans up anything, keeps
what the live ones use and re-attaches them; how much output the log has is counted from the
log itself.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from steelcup.net.nft import PublishedPort
from steelcup.runtime import logs
from steelcup.vm.machine import VmHandle
from steelcup.vm.process import start_time

log = logging.getLogger(__name__)

RESTORE_FILE = "restore.json"
FORMAT = 2


@dataclass(frozen=True)
class LogMark:
    """Where the main process's output stands in the container's log: `base_bytes` of it are
    in entries stamped before `since_ns`, the rest in entries stamped `since_ns` or later (the
    log writer's stamps only go forward). Set at the run's start (since = then, base = 0) and
    moved on at each rotation of the log (which may delete the file that held the start)."""

    since_ns: int
    base_bytes: int = 0

    def logged_bytes(self, log_path: Path) -> tuple[int, int]:
        """The process's output bytes in the log (RESUME's RECEIVED), and the time stamp a
        writer that goes on appending must stay above. Blocking (reads the log)."""
        counted, last_ns = logs.count_output(log_path, self.since_ns)
        return self.base_bytes + counted, last_ns + 1


@dataclass(frozen=True)
class Kept:
    """A container left running by the previous daemon."""

    container_id: str
    vm: VmHandle
    process_id: int  # the guest protocol's id of the container's main process
    pid: int  # that process's pid in the container
    log_mark: LogMark
    slot_dir: str = ""  # a pooled VM's rootfs slot (its bind of the container's root stays)
    taps: tuple[str, ...] = ()
    ports: tuple[PublishedPort, ...] = ()
    volumes: tuple[str, ...] = ()  # the volumes (keys) mounted on the host for it

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
            "log_since_ns": self.log_mark.since_ns,
            "log_base_bytes": self.log_mark.base_bytes,
            "slot_dir": self.slot_dir,
            "taps": list(self.taps),
            "ports": [[p.host_ip, p.host_port, p.container_ip, p.container_port, p.proto]
                      for p in self.ports],
            "volumes": list(self.volumes),
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
                log_mark=LogMark(int(data["log_since_ns"]),  # type: ignore[call-overload]
                                 int(data["log_base_bytes"])),  # type: ignore[call-overload]
                slot_dir=str(data.get("slot_dir", "")),
                taps=tuple(str(t) for t in data.get("taps", [])),  # type: ignore[attr-defined]
                ports=ports,
                volumes=tuple(str(v) for v in data.get("volumes", [])),  # type: ignore[attr-defined]
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
    """The run ended (or was not re-attached): a later start must not act on the record."""
    with contextlib.suppress(FileNotFoundError):
        (container_dir / RESTORE_FILE).unlink()
