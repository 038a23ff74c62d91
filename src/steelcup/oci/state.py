"""What steelcup-runtime keeps per container, and the OCI state document it reports.

The record lives in `<root>/<id>/state.json`: which daemon container the OCI id is, the
bundle, its annotations and the keeper's pid (the host process that stands for the
container's main process). `oci_state` is pure: the record and the daemon's status in, the
runtime spec's state JSON out.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from steelcup.errors import InvalidArgument, NotFound

OCI_VERSION = "1.1.0"
STATE_FILE = "state.json"
# runc's rule for container ids
_ID = re.compile(r"[\w+\-.]+")

# docker's status words as the runtime spec's (created, running, paused, stopped)
_STATUS = {
    "created": "created",
    "running": "running",
    "restarting": "running",
    "paused": "paused",
    "removing": "stopped",
    "exited": "stopped",
    "dead": "stopped",
}


@dataclass(frozen=True)
class Record:
    id: str
    container: str  # the daemon's container id
    bundle: str
    created: str  # RFC 3339
    annotations: Mapping[str, str] = field(default_factory=dict)
    keeper_pid: int = 0
    terminal: bool = False
    cgroup: str = ""  # the container's host cgroup (linux.cgroupsPath), removed by delete

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["annotations"] = dict(self.annotations)
        return data

    @staticmethod
    def from_json(data: Any) -> Record:
        if not isinstance(data, dict):
            raise ValueError("not an object")
        return Record(**{**data, "annotations": dict(data.get("annotations") or {})})


def check_id(container_id: str) -> str:
    if not container_id or not _ID.fullmatch(container_id) or container_id in (".", ".."):
        raise InvalidArgument(f"invalid container id format: {container_id!r}")
    return container_id


def oci_status(docker_status: str | None) -> str:
    """The runtime spec's status for the daemon's (None: the daemon no longer has it)."""
    return _STATUS.get(docker_status or "", "stopped")


def oci_state(record: Record, docker_status: str | None, keeper_alive: bool) -> dict[str, Any]:
    """The state document of `runc state`: pid is the keeper's while the container lives."""
    status = oci_status(docker_status)
    if status == "created" and not keeper_alive:
        status = "stopped"
    live = status != "stopped" and keeper_alive
    return {
        "ociVersion": OCI_VERSION,
        "id": record.id,
        "pid": record.keeper_pid if live else 0,
        "status": status,
        "bundle": record.bundle,
        "rootfs": "",
        "created": record.created,
        "annotations": dict(record.annotations),
        "owner": "",
    }


class StateDir:
    """The records under the runtime's --root, one directory per container id."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, container_id: str) -> Path:
        return self.root / check_id(container_id)

    def load(self, container_id: str) -> Record:
        try:
            data = json.loads((self.path(container_id) / STATE_FILE).read_text())
            return Record.from_json(data)
        except FileNotFoundError:
            raise NotFound("container does not exist") from None
        except (OSError, ValueError, TypeError) as exc:
            raise NotFound(f"container {container_id}: unreadable state ({exc})") from None

    def create(self, record: Record) -> None:
        directory = self.path(record.id)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o711)
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            raise InvalidArgument(f"container with id exists: {record.id}") from None
        self.save(record)

    def save(self, record: Record) -> None:
        directory = self.path(record.id)
        tmp = directory / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(record.to_json()))
        os.replace(tmp, directory / STATE_FILE)

    def with_keeper(self, record: Record, pid: int) -> Record:
        record = replace(record, keeper_pid=pid)
        self.save(record)
        return record

    def remove(self, container_id: str) -> None:
        directory = self.path(container_id)
        for name in (STATE_FILE, STATE_FILE + ".tmp"):
            (directory / name).unlink(missing_ok=True)
        try:
            directory.rmdir()
        except FileNotFoundError:
            pass

    def ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / STATE_FILE).exists())
