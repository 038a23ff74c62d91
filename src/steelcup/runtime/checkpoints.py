"""A container's checkpoints on disk (docs/checkpoints.md): `checkpoints/NAME/` in the
container's directory holds `vm.state` (the VM's RAM and device state, QEMU's migration stream)
and `checkpoint.json` (what the host needs to run it on: the guest process of the container's
main process, how much of its output the log has, the VM's devices). A checkpoint is complete
or absent: it is written in a temp directory renamed into place.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from steelcup.errors import Conflict, InvalidArgument, NotFound
from steelcup.net.nft import PublishedPort
from steelcup.runtime.model import ContainerConfig
from steelcup.vm.saved import SavedVm

CHECKPOINTS_DIR = "checkpoints"
# A suspended container's VM (docs/checkpoints.md, "Suspend"): a checkpoint of its own, in a
# directory `checkpoint ls` does not read, made by `suspend` and dropped once it ran on.
SUSPEND_DIR = "suspended"
SUSPEND_NAME = "suspend"
PORTS_FILE = "ports.json"
STATE_FILE = "vm.state"
RECORD_FILE = "checkpoint.json"
FORMAT = 1
# Each holds up to all of the VM's RAM on the host's disk: a client must not fill the disk with
# them (the tenant quotas bound the containers, this the checkpoints of each).
MAX_PER_CONTAINER = 8
# docker's restricted name pattern (daemon/names); at most 128 bytes here (a file name).
# Matched whole (`fullmatch`): `$` alone also matches before a final newline.
_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{1,127}")


@dataclass(frozen=True)
class Checkpoint:
    name: str
    created: str  # RFC 3339
    process_id: int  # the guest protocol's id of the container's main process
    pid: int  # that process's pid in the container
    logged_bytes: int  # its output in the container's log when the checkpoint was made
    vm: SavedVm
    state_bytes: int = 0  # the size of vm.state

    def to_json(self) -> dict[str, object]:
        return {"format": FORMAT, "name": self.name, "created": self.created,
                "process_id": self.process_id, "pid": self.pid,
                "logged_bytes": self.logged_bytes, "vm": self.vm.to_json(),
                "state_bytes": self.state_bytes}

    @classmethod
    def from_json(cls, data: object) -> Checkpoint:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError("not a checkpoint record of a known format")
        try:
            return cls(name=str(data["name"]), created=str(data["created"]),
                       process_id=int(data["process_id"]), pid=int(data["pid"]),
                       logged_bytes=int(data["logged_bytes"]),
                       vm=SavedVm.from_json(data["vm"]),
                       state_bytes=int(data.get("state_bytes", 0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"bad checkpoint record: {exc!r}") from exc


WHY_9P = ("QEMU cannot save a VM while its guest has a 9p share mounted, and volumes and bind "
          "mounts reach the guest as 9p shares")
NOT_CHECKPOINTABLE = ("container {name} was not created with --checkpointable "
                      "(HostConfig.SteelcupCheckpointable): its root is a 9p share of the host, "
                      "and QEMU cannot save a VM while its guest has one mounted; create it with "
                      "--checkpointable to hold its root in the VM's memory instead")


def check_config(config: ContainerConfig) -> None:
    """InvalidArgument if a --checkpointable container has something that keeps a 9p share
    mounted in its guest, or shares its VM (pods, an engine's netns), or if --auto-suspend is
    asked of a container that cannot be suspended. Pure."""
    if config.auto_suspend_s and not config.checkpointable:
        raise InvalidArgument("--auto-suspend needs --checkpointable (only such a container's "
                              "VM can be saved while it is suspended)")
    if config.auto_suspend_s and config.auto_remove:
        raise InvalidArgument("--auto-suspend cannot be used with --rm (a suspend ends the "
                              "run, which would remove the container)")
    if not config.checkpointable:
        return
    # Resolved at create (`mount_plans`), or as asked (a service's template, checked before
    # any of its replicas is made).
    shared = sorted({str(p.get("target", "")) for p in config.mount_plans
                     if p.get("kind") != "tmpfs"}
                    | {str(m.get("Target", "")) for m in config.mounts
                       if str(m.get("Type", "volume")).lower() != "tmpfs"}
                    | {b.split(":")[1] if ":" in b else b for b in config.binds})
    if shared:
        raise InvalidArgument(f"a --checkpointable container cannot have volumes or bind "
                              f"mounts ({', '.join(shared)}): {WHY_9P}; use --tmpfs, or "
                              "leave out --checkpointable")
    if config.pod_sandbox or config.pod_of or config.netns_path:
        raise InvalidArgument("a --checkpointable container cannot be in a pod or an engine's "
                              "network namespace (its VM is not its own to save)")


def check_name(name: str) -> str:
    if not _NAME_RE.fullmatch(name):
        raise InvalidArgument(f"invalid checkpoint name {name!r}: 2-128 characters of "
                              "[a-zA-Z0-9_.-], starting with a letter or digit")
    return name


def directory(container_dir: Path, top: str = CHECKPOINTS_DIR) -> Path:
    return container_dir / top


def begin(container_dir: Path, name: str, top_dir: str = CHECKPOINTS_DIR) -> Path:
    """A fresh temp directory for checkpoint `name` (Conflict if it exists already); its
    `STATE_FILE` is for the VM's stream, `commit` makes it the checkpoint. In `top_dir`
    SUSPEND_DIR a stale suspend state (one that ran on, cut short by a crash) is replaced.
    Blocking."""
    check_name(name)
    top = directory(container_dir, top_dir)
    top.mkdir(mode=0o700, exist_ok=True)
    if top_dir == SUSPEND_DIR:
        shutil.rmtree(top / name, ignore_errors=True)
    if (top / name).exists():
        raise Conflict(f"checkpoint with name {name} already exists for this container")
    kept = [e for e in top.iterdir() if not e.name.startswith(".")]
    if len(kept) >= MAX_PER_CONTAINER:
        raise Conflict(f"this container has {len(kept)} checkpoints, the most it may keep: "
                       "remove one first (checkpoint rm)")
    tmp = top / f".{name}.part"
    shutil.rmtree(tmp, ignore_errors=True)  # a checkpoint cut short by a crash
    tmp.mkdir(mode=0o700)
    return tmp


def commit(tmp: Path, checkpoint: Checkpoint) -> Checkpoint:
    """Write the record next to the stream and rename the directory into place. Blocking."""
    state = tmp / STATE_FILE
    done = Checkpoint(**{**checkpoint.__dict__, "state_bytes": state.stat().st_size})
    record = tmp / RECORD_FILE
    with open(record, "wb") as out:
        out.write(json.dumps(done.to_json()).encode())
        out.flush()
        os.fsync(out.fileno())
    with open(state, "rb") as f:
        os.fsync(f.fileno())
    final = tmp.parent / checkpoint.name
    if final.exists():
        raise Conflict(f"checkpoint with name {checkpoint.name} already exists for this "
                       "container")
    tmp.rename(final)
    return done


def abandon(tmp: Path) -> None:
    shutil.rmtree(tmp, ignore_errors=True)


def _known(name: str) -> str:
    """A name no checkpoint can have is simply not found."""
    if not _NAME_RE.fullmatch(name):
        raise NotFound(f"no checkpoint {name!r} for this container")
    return name


def load(container_dir: Path, name: str, top: str = CHECKPOINTS_DIR) -> Checkpoint:
    """Checkpoint `name` (NotFound: none of that name; InvalidArgument: unreadable)."""
    _known(name)
    path = directory(container_dir, top) / name / RECORD_FILE
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise NotFound(f"no checkpoint {name} for this container") from None
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"checkpoint {name} cannot be read: {exc}") from exc
    try:
        checkpoint = Checkpoint.from_json(data)
    except ValueError as exc:
        raise InvalidArgument(f"checkpoint {name} cannot be read: {exc}") from exc
    if checkpoint.name != name:
        raise InvalidArgument(f"checkpoint {name} names itself {checkpoint.name}")
    return checkpoint


def state_path(container_dir: Path, name: str, top: str = CHECKPOINTS_DIR) -> Path:
    return directory(container_dir, top) / _known(name) / STATE_FILE


def save_suspended_ports(container_dir: Path, ports: Sequence[PublishedPort]) -> None:
    """The ports the suspended container's run had published (a connection to one resumes
    a container with --auto-suspend, also after a daemon restart). Blocking."""
    path = directory(container_dir, SUSPEND_DIR) / PORTS_FILE
    path.write_text(json.dumps([asdict(p) for p in ports]))


def suspended_ports(container_dir: Path) -> list[PublishedPort]:
    """What `save_suspended_ports` wrote (empty if nothing readable). Blocking."""
    try:
        data = json.loads((directory(container_dir, SUSPEND_DIR) / PORTS_FILE).read_text())
        return [PublishedPort(**p) for p in data]
    except (OSError, ValueError, TypeError):
        return []


def drop_suspended(container_dir: Path) -> None:
    """Forget a suspended container's saved VM (it ran on, or the container was stopped).
    Blocking."""
    shutil.rmtree(directory(container_dir, SUSPEND_DIR), ignore_errors=True)


def list_all(container_dir: Path) -> list[Checkpoint]:
    """The container's complete checkpoints, oldest first (unreadable ones left out)."""
    found = []
    top = directory(container_dir)
    if not top.is_dir():
        return []
    for entry in top.iterdir():
        if entry.name.startswith("."):
            continue
        with contextlib.suppress(NotFound, InvalidArgument):
            found.append(load(container_dir, entry.name))
    return sorted(found, key=lambda c: (c.created, c.name))


def remove(container_dir: Path, name: str) -> None:
    _known(name)
    path = directory(container_dir) / name
    if not path.is_dir():
        raise NotFound(f"no checkpoint {name} for this container")
    shutil.rmtree(path)
