"""Typed records of containers and execs: what the runtime stores and the API renders."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from steelcup.image.config import HealthConfig
from steelcup.runtime.capabilities import DEFAULT_CAPS
from steelcup.runtime.healthcheck import HealthState
from steelcup.runtime.spec import process_env
from steelcup.runtime.swarmfiles import SwarmFile


class Status(enum.Enum):
    """Docker's container status words."""

    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    RESTARTING = "restarting"
    REMOVING = "removing"
    EXITED = "exited"
    DEAD = "dead"


# The label of a build step's container (its image is most often an intermediate one).
BUILD_STEP_LABEL = ("steelcup.build", "step")
HOST_GATEWAY = "host-gateway"  # --add-host NAME:host-gateway: the network's gateway


@dataclass(frozen=True)
class ContainerConfig:
    """What a container was created with (docker's Config + the HostConfig parts we honour)."""

    image: str  # the reference as the user gave it
    image_id: str
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    hostname: str = ""
    tty: bool = False
    open_stdin: bool = False
    stdin_once: bool = False
    attach_stdin: bool = False
    attach_stdout: bool = True
    attach_stderr: bool = True
    labels: tuple[tuple[str, str], ...] = ()
    stop_signal: str = ""
    stop_timeout_s: int | None = None
    auto_remove: bool = False
    mem_mib: int = 0  # 0 = daemon default
    cpus: float = 0.0  # 0 = daemon default
    cpu_shares: int = 0  # recorded for inspect; a VM has its own vCPUs
    restart_policy: str = "no"  # no | always | on-failure | unless-stopped
    restart_max_retries: int = 0  # on-failure only; 0 = unlimited
    network_mode: str = ""  # as given; "" = default
    network_aliases: tuple[str, ...] = ()
    extra_networks: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (network, aliases)
    # Static addresses asked at create (EndpointsConfig...IPAMConfig.IPv4Address), by the
    # network as named there; the primary network under `network_mode or "default"`.
    network_ipv4: tuple[tuple[str, str], ...] = ()
    # Legacy links of its endpoints (network as named at create, target container id, alias)
    network_links: tuple[tuple[str, str, str], ...] = ()
    exposed_ports: tuple[str, ...] = ()  # "80/tcp"
    port_bindings: str = ""  # HostConfig.PortBindings as JSON
    publish_all_ports: bool = False
    # Requested mounts as docker sent them; resolved into `mount_plans` at create.
    binds: tuple[str, ...] = ()
    mounts: tuple[dict[str, Any], ...] = ()
    tmpfs: tuple[tuple[str, str], ...] = ()
    volumes: tuple[str, ...] = ()  # Config.Volumes (anonymous volume targets)
    mount_plans: tuple[dict[str, Any], ...] = ()  # volume.spec.MountPlan.to_json() each
    # The writable layer's size (HostConfig.StorageOpt size). Asked: 0 = the daemon's default,
    # which create fills in; a stored 0 is a container made before layers had a size.
    storage_bytes: int = 0
    # json-file log rotation (HostConfig.LogConfig max-size, max-file); 0 = the daemon's.
    log_max_bytes: int = 0
    log_max_files: int = 0
    # Capabilities: the request as given (for inspect) and the set it resolved to at create
    # (runtime.capabilities), which every start and exec of the container runs with.
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    privileged: bool = False
    caps: int = DEFAULT_CAPS  # records from before CapAdd/CapDrop were honoured had these
    # /etc/hosts and /etc/resolv.conf additions (--add-host NAME:IP, --dns, --dns-search,
    # --dns-option); an ExtraHosts IP may be "host-gateway" (the network's gateway).
    extra_hosts: tuple[tuple[str, str], ...] = ()
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()
    group_add: tuple[str, ...] = ()  # --group-add: supplementary groups (names or gids)
    read_only: bool = False  # --read-only: the rootfs is mounted read-only in the guest
    shm_size_bytes: int = 0  # --shm-size: /dev/shm's size; 0 = the guest kernel's default
    # --link NAME:ALIAS (legacy links): /etc/hosts lines for the linked container, by name
    links: tuple[tuple[str, str], ...] = ()
    sysctls: tuple[tuple[str, str], ...] = ()  # --sysctl KEY=VALUE, written in the guest
    ulimits: tuple[tuple[str, int, int], ...] = ()  # --ulimit NAME=SOFT:HARD (-1: unlimited)
    pids_limit: int = 0  # --pids-limit: the guest's pids cgroup for its processes; 0 = none
    # Config.Healthcheck: the request, merged with the image's HEALTHCHECK at create
    healthcheck: HealthConfig | None = None
    # An existing host directory as the root instead of the image's layers (HostConfig.
    # SteelcupRootfs, the operator's only: steelcup-runtime's OCI bundles); "" = the image's.
    rootfs_dir: str = ""
    # Swarm secrets and configs of a service's task (runtime.swarmfiles), placed each run.
    swarm_files: tuple[SwarmFile, ...] = ()
    # Pods in one VM (HostConfig.SteelcupPodSandbox / SteelcupPodOf, the operator's only:
    # steelcup-runtime's pods): a sandbox's VM can take further containers; a member runs in
    # the VM of the sandbox container `pod_of` (its full id) instead of a VM of its own.
    pod_sandbox: bool = False
    pod_of: str = ""
    # A network namespace the engine made (HostConfig.SteelcupNetns, the operator's only:
    # steelcup-runtime's OCI netns path): the VM's one NIC is mirrored into it
    # (steelcup.net.netnsnic) and the daemon's own networks are not used; "" = they are.
    netns_path: str = ""
    # --checkpointable (HostConfig.SteelcupCheckpointable, docs/checkpoints.md): the guest holds
    # the root in RAM and mounts no 9p share, so the VM can be checkpointed; no volumes.
    checkpointable: bool = False
    # The root is the image's erofs on a disk under the writable layer over 9p, overlaid in
    # the guest (--rootfs-cache block). Fixed at create, when the image's erofs is ready: the
    # writable layer of such a container holds user.overlay.* xattrs and whiteout stand-ins,
    # that of another trusted.overlay.* ones, so neither is ever mounted the other way.
    block_root: bool = False
    # --auto-suspend (HostConfig.SteelcupAutoSuspend, docs/checkpoints.md): suspended after
    # this many seconds without network traffic, resumed by a connection to a published
    # port; 0 = never. Only with `checkpointable`.
    auto_suspend_s: int = 0
    # The container's cgroup on the host (HostConfig.SteelcupCgroup, the operator's only:
    # steelcup-runtime's OCI linux.cgroupsPath), a path from the hierarchy's root: the VM's
    # QEMU is moved into it once acquired (steelcup.cgroups); "" = QEMU stays where the
    # daemon put it.
    cgroup_path: str = ""

    def rlimits(self) -> tuple[str, ...]:
        """The ulimits as the guest protocol's RLIMIT fields."""
        return tuple(f"{name}={soft}:{hard}" for name, soft, hard in self.ulimits)

    def process_env(self, home: str, tty: bool, env: Sequence[str] | None = None
                    ) -> tuple[str, ...]:
        """What a process of this container starts with (`spec.process_env`): its `env`
        (an exec's, merged over the container's) or the container's own, with dockerd's
        defaults unless the container is an OCI bundle's."""
        return process_env(self.env if env is None else env, home=home,
                           hostname=self.hostname, tty=tty, dockerd=not self.rootfs_dir)
    tenant: str = ""  # who owns it ("" = the operator's own: single-user use)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["healthcheck"] = self.healthcheck.to_json() if self.healthcheck else None
        return data

    @staticmethod
    def from_json(data: dict[str, Any]) -> ContainerConfig:
        def tup(value: Any) -> tuple[str, ...] | None:
            return None if value is None else tuple(str(v) for v in value)

        return ContainerConfig(
            **{
                **data,
                "entrypoint": tup(data.get("entrypoint")),
                "cmd": tup(data.get("cmd")),
                "env": tuple(data.get("env", ())),
                "labels": tuple((str(k), str(v)) for k, v in data.get("labels", ())),
                "network_aliases": tuple(data.get("network_aliases", ())),
                "extra_networks": tuple(
                    (str(n), tuple(a)) for n, a in data.get("extra_networks", ())
                ),
                "network_links": tuple(
                    (str(n), str(t), str(a)) for n, t, a in data.get("network_links", ())
                ),
                "network_ipv4": tuple(
                    (str(n), str(a)) for n, a in data.get("network_ipv4", ())
                ),
                "exposed_ports": tuple(data.get("exposed_ports", ())),
                "binds": tuple(data.get("binds", ())),
                "mounts": tuple(data.get("mounts", ())),
                "tmpfs": tuple((str(k), str(v)) for k, v in data.get("tmpfs", ())),
                "volumes": tuple(data.get("volumes", ())),
                "mount_plans": tuple(data.get("mount_plans", ())),
                "cap_add": tuple(data.get("cap_add", ())),
                "cap_drop": tuple(data.get("cap_drop", ())),
                "extra_hosts": tuple((str(h), str(a)) for h, a in data.get("extra_hosts", ())),
                "dns": tuple(data.get("dns", ())),
                "dns_search": tuple(data.get("dns_search", ())),
                "dns_options": tuple(data.get("dns_options", ())),
                "group_add": tuple(data.get("group_add", ())),
                "links": tuple((str(n), str(a)) for n, a in data.get("links", ())),
                "sysctls": tuple((str(k), str(v)) for k, v in data.get("sysctls", ())),
                "ulimits": tuple((str(n), int(s), int(h)) for n, s, h in data.get("ulimits", ())),
                "healthcheck": HealthConfig.from_json(data["healthcheck"])
                if data.get("healthcheck") else None,
                "swarm_files": tuple(SwarmFile.from_json(f)
                                     for f in data.get("swarm_files", ())),
            }
        )


@dataclass(frozen=True)
class ContainerState:
    """The mutable part of a container, replaced as a whole on every transition."""

    status: Status = Status.CREATED
    pid: int = 0
    exit_code: int = 0
    error: str = ""
    started_at: str = "0001-01-01T00:00:00Z"
    finished_at: str = "0001-01-01T00:00:00Z"
    oom_killed: bool = False
    # Stopped by stop/kill from a user: restart policies leave it alone (docker's
    # HasBeenManuallyStopped).
    manually_stopped: bool = False
    # Suspended (docs/checkpoints.md): its run ended with its VM saved to disk; clients are
    # shown it running, and `resume` (or exec, attach, start) runs the VM on.
    suspended: bool = False
    health: HealthState | None = None  # State.Health: set by the health monitor

    @property
    def running(self) -> bool:
        return self.status in (Status.RUNNING, Status.PAUSED)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.value
        data["health"] = self.health.to_json() if self.health else None
        return data

    @staticmethod
    def from_json(data: dict[str, Any]) -> ContainerState:
        health = data.get("health")
        return ContainerState(**{**data, "status": Status(data["status"]),
                                 "health": HealthState.from_json(health) if health else None})


@dataclass(frozen=True)
class ContainerRecord:
    """One container as persisted: identity, config, process argv, state."""

    id: str
    name: str
    created: str
    config: ContainerConfig
    path: str  # argv[0]
    args: tuple[str, ...]  # argv[1:]
    state: ContainerState = field(default_factory=ContainerState)
    restart_count: int = 0

    def with_state(self, **changes: Any) -> ContainerRecord:
        return replace(self, state=replace(self.state, **changes))

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "created": self.created,
            "config": self.config.to_json(),
            "path": self.path,
            "args": list(self.args),
            "state": self.state.to_json(),
            "restart_count": self.restart_count,
        }

    @staticmethod
    def from_json(data: dict[str, Any]) -> ContainerRecord:
        return ContainerRecord(
            id=data["id"],
            name=data["name"],
            created=data["created"],
            config=ContainerConfig.from_json(data["config"]),
            path=data["path"],
            args=tuple(data["args"]),
            state=ContainerState.from_json(data["state"]),
            restart_count=int(data.get("restart_count", 0)),
        )


@dataclass(frozen=True)
class ExecConfig:
    """A `docker exec` request."""

    container_id: str
    cmd: tuple[str, ...]
    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    tty: bool = False
    attach_stdin: bool = False
    attach_stdout: bool = True
    attach_stderr: bool = True
    privileged: bool = False  # every capability, whatever the container's set
    detach_keys: bytes = b""  # on a terminal, end the client's session (the API's parsing)


@dataclass(frozen=True)
class EndpointView:
    """A container's address on one network (for inspect)."""

    network_name: str
    network_id: str
    endpoint_id: str
    gateway: str
    address: str
    prefix_len: int
    mac: str
    aliases: tuple[str, ...] = ()
    static_ipv4: str = ""  # the address asked for (IPAMConfig), if one was


@dataclass(frozen=True)
class PortView:
    """A published port of the current run."""

    container_port: int
    proto: str
    host_ip: str
    host_port: int


@dataclass(frozen=True)
class NetView:
    """What the network layer knows of one container."""

    endpoints: tuple[EndpointView, ...] = ()
    ports: tuple[PortView, ...] = ()
