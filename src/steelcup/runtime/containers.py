"""The container runtime: lifecycle of containers, each running in its own VM.

The runtime never sees HTTP: the API adapter decodes requests into `ContainerConfig` and calls
these methods. One private `_Live` object per container holds what exists only while the daemon
runs (the VM, the guest process, attached readers); the `ContainerRecord` is what is persisted.
Every status change goes through `lifecycle.transition`; other modules ask the runtime
(`record`, `check`, `holding_files`, `start_in`, `attach`) and never touch a `_Live`.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import errno
import functools
import itertools
import logging
import os
import shutil
import signal as signal_module
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Coroutine,
    Iterator,
    Sequence,
)
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from steelcup import boundedfs, sysmount
from steelcup.cgroups import paths as cgroup_paths
from steelcup.errors import (
    Conflict,
    Forbidden,
    GuestProtocolError,
    InvalidArgument,
    NotFound,
    ProcessStartError,
    SteelcupError,
    VmLaunchError,
)
from steelcup.guest import ops as guest_ops
from steelcup.guest.client import GuestProcess, GuestRequestError, ProcessSpec
from steelcup.guest.protocol import RootfsCache
from steelcup.guestlog import clip
from steelcup.idmap import IdRange, IdsFor, one_range
from steelcup.image import rootfs as rootfs_module
from steelcup.image.config import ImageConfig
from steelcup.image.erofs import ErofsImages
from steelcup.image.store import Image, ImageStore
from steelcup.image.users import User, resolve_user
from steelcup.net.nft import PublishedPort
from steelcup.pool.slots import release_dir as release_slot
from steelcup.pool.source import Share, VmRequest, VmSource
from steelcup.runtime import checkpoints as checkpoints_module
from steelcup.runtime import healthcheck, podmounts, stand_ins
from steelcup.runtime import logs as logs_module
from steelcup.runtime import restore as restore_module
from steelcup.runtime.capabilities import capability_set
from steelcup.runtime.events import EventBus
from steelcup.runtime.lifecycle import NOT_MODIFIED, NotModified, Op, Refusal, transition
from steelcup.runtime.links import LinkTarget, hosts_lines, not_found_text
from steelcup.runtime.model import BUILD_STEP_LABEL, ContainerConfig, ContainerRecord, Status
from steelcup.runtime.names import new_id, random_name, validate_name
from steelcup.runtime.output import Fanout, Subscriber
from steelcup.runtime.resources import Resources, RunResources
from steelcup.runtime.spec import (
    merge_env,
    parse_signal,
    resolve_argv,
    start_failure_text,
)
from steelcup.runtime.store import ContainerStore
from steelcup.runtime.swarmfiles import SECRETS_TAG
from steelcup.tenancy.sizing import vm_cpus
from steelcup.vm.cputime import QemuCpuTime
from steelcup.vm.hostio import HostIo, read_host_io
from steelcup.vm.machine import Machine, VmHandle
from steelcup.vm.process import QemuProcess
from steelcup.vm.saved import SavedVm

log = logging.getLogger(__name__)

DEFAULT_STOP_TIMEOUT_S = 10
EXIT_CODE_DAEMON_LOST = 255
EXIT_CODE_DAEMON_ERROR = 125  # docker's: the container never ran because the daemon failed
RESTART_POLICIES = ("no", "always", "on-failure", "unless-stopped")
# Docker's restart back-off: 100 ms doubling to 1 min, reset after 10 s of running.
RESTART_DELAY_MIN_S = 0.1
RESTART_DELAY_MAX_S = 60.0
RESTART_RESET_AFTER_S = 10.0
# How long a force removal waits for the killed process, then for its output relay.
REMOVE_KILL_WAIT_S = 5.0
REMOVE_PUMP_WAIT_S = 15.0
# How long a container's create waits for its image's erofs being made (--rootfs-cache
# block): an image's first container right after its pull then has a block root too, unless
# the image is so big that a 9p root now beats a block root later.
ROOT_DISK_WAIT_S = 20.0
REAP_WAIT_S = 60.0  # a --rm container's killed VM, before its files go
# Writable-layer disk images made ahead (boundedfs): as many as the daemon starts at once in a
# burst (`compose up`, a service's replicas); each is ~4 MiB of the host's disk.
LAYER_DISK_SPARES = 4
# A syncfs of a root with much dirty page cache in it (cache=loose) writes it all over 9p.
SYNC_ROOT_TIMEOUT_S = 60.0
# Live restore: how long a released run's relay may take to log what it had received.
HAND_OVER_PUMP_WAIT_S = 5.0
RESTORE_CONCURRENCY = 8
# Pods in one VM (docs/oci-runtime.md): a sandbox's VM exports its container dir's `pod/`
# as the 9p share `pod`; each member's root is bound at pod/<member id> once the VM runs.
POD_TAG = "pod"
POD_DIR = "pod"
POD_MAX_MEMBERS = 63  # the guest's CONTAINER numbers 1..63

# Makes the (not yet adopted) Machine for a VM an earlier daemon left running; its console log
# is kept at the path given (pool.direct.DirectSource.adoptable).
Adopter = Callable[[VmHandle, Path], Machine]
# Starts a VM that runs on from a checkpoint (pool.factory.Factory.restore).
Restorer = Callable[[VmRequest, SavedVm, Path], Awaitable[Machine]]
# A checkpoint's VM runs on with its clock set and this much fresh entropy, as a clone does.
CHECKPOINT_ENTROPY_BYTES = 32
# docker's exit code of a container checkpointed without --leave-running (CRIU kills it).
EXIT_CODE_CHECKPOINTED = 128 + signal_module.SIGKILL


def now_rfc3339() -> str:
    return logs_module.format_time_ns(time.time_ns())


@dataclass(eq=False)
class _Live:
    """Daemon-lifetime state of one container; private to the runtime."""

    record: ContainerRecord
    # Set together with the RUNNING status and cleared with EXITED (a REMOVING container may
    # still have them while its removal ends the run).
    machine: Machine | None = None
    process: GuestProcess | None = None
    vm_going: Machine | None = None  # the ended run's VM, killed, not yet reaped
    fanout: Fanout = field(default_factory=Fanout)
    # Set once the current run's process started (or failed to); stdin waits for it.
    started: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    exit_seq: int = 0
    removal_done: bool = False  # its record is gone: what `wait --condition removed` waits for
    # Held by start and by file access: a removal waits for them, they never see half a removal.
    busy: asyncio.Lock = field(default_factory=asyncio.Lock)
    pump: asyncio.Task[None] | None = None
    stopping: bool = False
    restart_task: asyncio.Task[None] | None = None
    restart_delay_s: float = 0.0
    started_mono: float = 0.0
    # Live restore: output bytes of the current run's process written to the log, the time
    # stamp of the last chunk logged (a later one is stamped after it), where the run's output
    # begins in the log (None: the run has no restore record), and whether the daemon is
    # letting go of the run (its VM keeps running: the pump stops without ending it).
    logged_bytes: int = 0
    log_last_ns: int = 0
    log_mark: restore_module.LogMark | None = None
    handing_over: bool = False
    slot_dir: str = ""  # a pooled VM's rootfs slot on the host (kept with the VM)
    pod_index: int = 0  # a pod member's CONTAINER number in its sandbox's VM (this run's)
    # How this run's guest caches the root (SETUP_ROOT's CACHE): with LOOSE the host syncs
    # and drops the guest's caches around its own access to the root (holding_files).
    rootfs_cache: RootfsCache = RootfsCache.NONE
    pod_next: int = 1  # a sandbox's next CONTAINER number for a member (per run of its VM)

    def ended(self, seq: int) -> bool:
        """The run of generation `seq` ended, or the container is gone (or dead)."""
        return (self.exit_seq != seq or self.removal_done
                or self.record.state.status is Status.DEAD)


@dataclass(eq=False)
class Attached:
    """A client attached to a container's output (and maybe its stdin)."""

    record: ContainerRecord  # as it was when the client attached
    subscriber: Subscriber
    _live: _Live
    # What of the log the subscriber will not get: entries stamped up to this (a replay of
    # the log up to here and then the subscription's stream miss nothing and repeat nothing).
    logged_until_ns: int

    async def write_stdin(self, data: bytes) -> bool:
        """Feed stdin of the current run once it has started; False if there is no process."""
        live = self._live
        await live.started.wait()
        if live.process is None or not live.record.config.open_stdin:
            return False
        try:
            await live.process.write_stdin(data)
        except GuestProtocolError:
            return False
        return True

    async def close_stdin(self) -> None:
        await self._live.started.wait()
        if self._live.process is not None:
            with contextlib.suppress(GuestProtocolError):
                await self._live.process.close_stdin()

    def detach(self) -> None:
        self._live.fanout.unsubscribe(self.subscriber)


@dataclass(frozen=True)
class Defaults:
    """Daemon-wide defaults for a container's VM."""

    mem_mib: int = 256
    cpus: int = 1
    # A container that asks for no memory limit starts at `mem_mib` and grows on demand up to
    # the VM templates' RAM (VmRequest.grows); False: `mem_mib` is its limit. Tenants'
    # containers always have a size (their size class).
    mem_grows: bool = False
    # The size of a container's writable layer unless it asks (`--storage-opt size=`). Docker
    # has no default limit; a guest must not be able to fill the host's disk.
    storage_bytes: int = 10 * boundedfs.GIB
    # json-file log rotation, and the most a container may ask for (docker keeps logs without
    # limit by default; a guest printing forever must not fill the disk).
    log_max_bytes: int = 20 * boundedfs.MIB
    log_max_files: int = 5
    # The VMs' user namespace (steelcup.idmap): the ids a container's files are stored with.
    # None: QEMU runs as host root and files hold the guest's own ids.
    ids: IdRange | None = None
    # How a container's guest caches its root's 9p share (the daemon's --rootfs-cache).
    rootfs_cache: RootfsCache = RootfsCache.NONE


def _realize_whiteouts(cdir: Path) -> None:
    """A block root's whiteout stand-ins in its writable layer (mounted here if it is not)
    made real whiteouts (stand_ins.realize_whiteouts); blocking."""
    upper = rootfs_module.mount_layer(cdir)
    if upper.is_dir():
        stand_ins.realize_whiteouts(upper)


class Runtime:
    """Creates, runs, stops and removes containers. All methods run on the daemon's loop."""

    def __init__(
        self,
        root: Path,
        store: ContainerStore,
        images: ImageStore,
        vms: VmSource,
        events: EventBus,
        defaults: Defaults = Defaults(),
        resources: Resources | None = None,
    ) -> None:
        self.root = root
        self.resources = resources or Resources()
        self.store = store
        self.images = images
        self.vms = vms
        self.events = events
        self.defaults = defaults
        # Each tenant's VM id range (the daemon sets it; without tenants, the daemon's own)
        self.ids_for: IdsFor = one_range(defaults.ids)
        self._containers: dict[str, _Live] = {}
        self._shutting_down = False
        # The daemon's --live-restore (it passes the same to `shutdown`); said by /info.
        self.live_restore = False
        # How checkpoints are restored (the daemon sets it); None: `start --checkpoint` fails.
        self.restorer: Restorer | None = None
        # Told, with the container's id, as a suspend begins (its ports are still published)
        # and again if it fails: whoever listens for a sleeping container's traffic (the
        # auto-suspender, the service waker) binds before the ports are unpublished for the
        # save, so no connection finds nothing listening in between (docs/checkpoints.md).
        self.suspend_watchers: builtins.list[Callable[[str], Awaitable[None]]] = []
        self._suspending: set[str] = set()  # saving for a suspend now
        self._vms_going: set[Machine] = set()  # killed VMs of ended `--rm` runs, being reaped
        # The images' erofs images (--rootfs-cache block; the daemon sets it).
        self.erofs: ErofsImages | None = None
        (root / "containers").mkdir(parents=True, exist_ok=True)
        self.disks = boundedfs.DiskMaker(root / "cache" / "layer-disk", defaults.storage_bytes,
                                         spares=LAYER_DISK_SPARES)
        if defaults.log_max_bytes <= 0 or defaults.log_max_files < 1:
            raise InvalidArgument("container logs need a positive max-size and max-file")

    # -- bookkeeping -------------------------------------------------------------------------

    def recover(self, kept: Collection[str] = ()) -> None:
        """Load records after a (re)start; containers whose VM died with a daemon are exited,
        except those in `kept` (their VM outlived it: `restore` re-attaches them). Directories
        of containers without a record (a removal cut short) are deleted."""
        records = self.store.load_all()
        known = {record.id for record in records}
        for cdir in (self.root / "containers").iterdir():
            if cdir.is_dir() and cdir.name not in known:
                try:
                    _unbind_members_of(cdir)
                    rootfs_module.remove(cdir)
                except (SteelcupError, OSError) as exc:
                    log.warning("cannot delete the leftover container dir %s: %s", cdir, exc)
        for record in records:
            if record.id in kept and record.state.status in (Status.RUNNING, Status.PAUSED):
                self._containers[record.id] = _Live(record)
                continue
            status = transition(record.state.status, Op.DAEMON_LOST)
            assert isinstance(status, Status)  # total over every status
            if status is Status.EXITED and record.state.status is not Status.EXITED:
                record = record.with_state(
                    status=status,
                    exit_code=EXIT_CODE_DAEMON_LOST,
                    pid=0,
                    error="the daemon stopped while the container was running",
                    finished_at=now_rfc3339(),
                )
                self.store.save(record)
            elif status is not record.state.status:  # removal cut short: dead, as dockerd
                record = record.with_state(
                    status=status, pid=0, error="the daemon stopped while removing it")
                self.store.save(record)
            _unbind_members_of(self.container_dir(record.id))  # their runs ended with the VM
            rootfs_module.release(self.container_dir(record.id))
            if record.state.suspended:  # its ports stay its own until it runs or stops
                self.resources.hold_ports(record.id, checkpoints_module.suspended_ports(
                    self.container_dir(record.id)))
            self._containers[record.id] = _Live(record)

    async def remove_ended_auto_remove(self) -> None:
        """After `recover()`: remove the `--rm` containers whose run ended with the previous
        daemon (dockerd does the same at start). Their exit would have removed them; an exited
        (or dead) `--rm` container only remains when the daemon died first (or while removing
        it). Once removed the record is gone, so each is removed once."""
        for live in list(self._containers.values()):
            record = live.record
            if not (record.config.auto_remove
                    and record.state.status in (Status.EXITED, Status.DEAD)):
                continue
            log.info("container %s (%s): removing this --rm container; its run ended when the "
                     "daemon stopped", record.id[:12], record.name)
            try:
                await self.remove(record.id, force=True)
            except (SteelcupError, OSError) as exc:
                log.warning("container %s: removing it failed: %s", record.id[:12], exc)

    def container_dir(self, container_id: str) -> Path:
        return self.root / "containers" / container_id

    def prepare_rootfs(self, record: ContainerRecord) -> Path:
        """Mount the container's root (its writable layer over the image, or over the
        operator's host directory: HostConfig.SteelcupRootfs); blocking."""
        ids = self.ids_for(record.config.tenant)
        if record.config.rootfs_dir:
            layers = rootfs_module.host_dir_layers(Path(record.config.rootfs_dir),
                                                   self.container_dir(record.id), ids)
        else:
            layers = self.images.layer_dirs(self.images.get(record.config.image_id), ids)
        cdir = self.container_dir(record.id)
        if record.config.block_root and not sysmount.is_mountpoint(cdir / "rootfs"):
            _realize_whiteouts(cdir)  # the guest's, for the host's view mounted below
        return rootfs_module.prepare(layers, cdir, self.disks, record.config.storage_bytes,
                                     ids, guest_overlay=record.config.block_root)

    def _may_have_block_root(self, config: ContainerConfig) -> bool:
        """Whether a container of `config` would have a block root once its image's erofs is
        made: the daemon's mode, and not a pod's, a checkpointable one (its root is in RAM),
        one on a host directory, or one whose writable layer is no disk of its own."""
        if self.defaults.rootfs_cache is not RootfsCache.BLOCK:
            return False
        if config.rootfs_dir or config.pod_of or config.pod_sandbox or config.checkpointable:
            return False
        return bool(config.storage_bytes or self.defaults.storage_bytes)

    def _block_root_for(self, config: ContainerConfig, image: Image) -> bool:
        """Whether a container created now has a block root (--rootfs-cache block): its
        image's erofs is made (else its making starts, for the image's next container), and
        it is not a pod's, a checkpointable one (its root is in RAM) or on a host directory."""
        if self.erofs is None or not self._may_have_block_root(config):
            return False
        if self.erofs.ready(image.id) is not None:
            return True
        if BUILD_STEP_LABEL not in config.labels:  # a build's intermediate images get none
            self._make_erofs(self.erofs, image, config.tenant)  # for its next container
        return False

    async def wait_for_root_disk(self, config: ContainerConfig,
                                 timeout_s: float = ROOT_DISK_WAIT_S) -> None:
        """Before `create` (--rootfs-cache block): wait, at most `timeout_s`, for the erofs of
        the container's image to be made (starting its making if nothing has), so that the
        container gets a block root. Returns at once when there is nothing to wait for: the
        erofs is made, its making failed, the daemon has other roots, or the image is unknown
        (create says so)."""
        if self.erofs is None or not self._may_have_block_root(config):
            return
        try:
            image = self._image_for(config)
        except SteelcupError:
            return
        making = self._make_erofs(self.erofs, image, config.tenant, urgent=True)
        if making is None:
            return
        began = time.monotonic()
        # asyncio.wait leaves the build alone when it times out (wait_for would cancel it)
        await asyncio.wait({asyncio.wrap_future(making)}, timeout=timeout_s)
        if not making.done():
            log.info("image %s: its erofs is not made after %.0f s; this container's root is "
                     "on 9p", image.short_id, time.monotonic() - began)

    def image_added(self, image: Image, tenant: str) -> None:
        """`tenant` got `image` (pulled, loaded, imported, built, committed): in block mode
        its erofs is made now, so that its first container has a block root too."""
        if self.erofs is not None and self.defaults.rootfs_cache is RootfsCache.BLOCK:
            self._make_erofs(self.erofs, image, tenant)

    def queue_root_disks(self) -> None:
        """At the daemon's start (block mode): queue the erofs of every image that has none,
        those from before the daemon made block roots (an upgrade from loose) or whose making
        a stop cut short, in the operator's line, behind what creates wait for. Blocking."""
        if self.erofs is None or self.defaults.rootfs_cache is not RootfsCache.BLOCK:
            return
        for image in self.images.list():
            self._make_erofs(self.erofs, image, "")

    def _make_erofs(self, erofs: ErofsImages, image: Image, tenant: str, *,
                    urgent: bool = False) -> Future[None] | None:
        """Queue the making of `image`'s erofs for `tenant` (unless made or failed before;
        `urgent`: a create waits for it); the future of its build, this one or the one
        queued or under way (None: nothing to wait for)."""
        store = self.images
        return erofs.ensure(image.id, lambda: store.layer_dirs(image), owner=tenant,
                            urgent=urgent)

    def log_rotation(self, config: ContainerConfig) -> logs_module.Rotation:
        """A container's log rotation (the daemon's for a container made before it had one)."""
        return logs_module.Rotation(config.log_max_bytes or self.defaults.log_max_bytes,
                                    config.log_max_files or self.defaults.log_max_files)

    def log_path(self, container_id: str) -> Path:
        return self.container_dir(container_id) / "container.log"

    def _find(self, ref: str) -> _Live:
        """By full id, name (with or without '/'), or unique id prefix."""
        if ref in self._containers:
            return self._containers[ref]
        name = ref.lstrip("/")
        named = [lv for lv in self._containers.values() if lv.record.name == name]
        if named:  # names are per tenant: the operator's own first, else the only one
            own = [lv for lv in named if not lv.record.config.tenant]
            if own or len(named) == 1:
                return (own or named)[0]
            raise InvalidArgument(f"{len(named)} containers of different tenants are named "
                                  f"{name!r}: use the id")
        matches = [lv for cid, lv in self._containers.items() if ref and cid.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise InvalidArgument(f"multiple IDs found with provided prefix: {ref}")
        raise NotFound(f"No such container: {ref}")

    def resolve(self, ref: str, tenant: str | None) -> str:
        """The full id of the container `ref` names for `tenant` (None: the operator, who sees
        every tenant's); another tenant's container is exactly as missing as a missing one."""
        if tenant is None:
            return self._find(ref).record.id
        own = [lv for lv in self._containers.values() if lv.record.config.tenant == tenant]
        for live in own:
            if live.record.id == ref or live.record.name == ref.lstrip("/"):
                return live.record.id
        matches = [lv for lv in own if ref and lv.record.id.startswith(ref)]
        if len(matches) == 1:
            return matches[0].record.id
        if len(matches) > 1:
            raise InvalidArgument(f"multiple IDs found with provided prefix: {ref}")
        raise NotFound(f"No such container: {ref}")

    def record(self, ref: str) -> ContainerRecord:
        """The container's record as it is now (NotFound, InvalidArgument for an ambiguous
        prefix)."""
        return self._find(ref).record

    def check(self, ref: str, op: Op) -> ContainerRecord:
        """The container's record if its status allows `op` now; docker's refusal if not."""
        live = self._find(ref)
        self._outcome(live, op, ref)
        return live.record

    def list(self, tenant: str | None = None) -> builtins.list[ContainerRecord]:
        """Every container (the operator's view), or only `tenant`'s."""
        return [lv.record for lv in self._containers.values()
                if tenant is None or lv.record.config.tenant == tenant]

    def vm_cpu_time(self, ref: str) -> QemuCpuTime | None:
        """The host CPU time the container's running VM has cost; None without one."""
        machine = self._find(ref).machine
        return machine.cpu_time() if machine is not None else None

    def vm_io(self, ref: str) -> HostIo | None:
        """The host storage I/O the container's running VM has caused; None without one."""
        pid = self.vm_pid(ref)
        return read_host_io(pid) if pid is not None else None

    def vm_pid(self, ref: str) -> int | None:
        """The host pid of the container's running VM (its QEMU); None without one."""
        machine = self._find(ref).machine
        return machine.pid if machine is not None else None

    def vm_size(self, config: ContainerConfig) -> tuple[int, int]:
        """The vCPUs and memory (MiB) of the container's VM (the daemon's defaults for what
        it did not ask)."""
        return vm_cpus(config.cpus, self.defaults.cpus), config.mem_mib or self.defaults.mem_mib

    def memory_grows(self, config: ContainerConfig) -> bool:
        """Whether the container's memory grows on demand (it asked for no limit and is the
        operator's: a tenant's has its size class)."""
        return self.defaults.mem_grows and not config.mem_mib and not config.tenant

    def image_in_use(self, image_id: str, tenant: str | None = None) -> bool:
        """Whether a container of `tenant` (None: of anyone) uses the image."""
        return any(lv.record.config.image_id == image_id
                   and (tenant is None or lv.record.config.tenant == tenant)
                   for lv in self._containers.values())

    def _save(self, live: _Live, record: ContainerRecord) -> None:
        live.record = record
        if not live.removal_done:  # a late write must not bring a removed record back
            self.store.save(record)

    def _outcome(self, live: _Live, op: Op, ref: str = "") -> Status | NotModified:
        """What `op` does now (lifecycle table); raises docker's refusal (Conflict)."""
        record = live.record
        outcome = transition(record.state.status, op)
        if isinstance(outcome, Refusal):
            raise outcome.error(id=record.id, name=record.name, ref=ref or record.id,
                                status=record.state.status)
        return outcome

    def _apply(self, live: _Live, op: Op, ref: str = "", **changes: Any) -> Status | NotModified:
        """The one place a status changes: `op`'s outcome, saved with `changes` (state
        fields) unless the table says not modified."""
        outcome = self._outcome(live, op, ref)
        if isinstance(outcome, Status) and (outcome is not live.record.state.status or changes):
            self._save(live, live.record.with_state(status=outcome, **changes))
        return outcome

    def set_health(self, ref: str, health: healthcheck.HealthState,
                   seq: int | None = None) -> bool:
        """Record the health monitor's verdict on run `seq` (`run_seq`; None: whichever) of
        the container; False (nothing changed) if that run is over or the container is gone."""
        live = self._find(ref)
        if (seq is not None and live.exit_seq != seq) or live.removal_done:
            return False
        self._save(live, live.record.with_state(health=health))
        return True

    def run_seq(self, ref: str) -> int:
        """The generation of the container's current (or next) run: it changes as each ends."""
        return self._find(ref).exit_seq

    def publish_event(self, record: ContainerRecord, action: str, **extra: str) -> None:
        """A container event with docker's attributes: labels, name, image, then `extra`."""
        attributes = {**dict(record.config.labels), "name": record.name,
                      "image": record.config.image, **extra}
        self.events.publish("container", action, record.id, attributes, record.config.tenant)

    async def _notify(self, live: _Live) -> None:
        async with live.changed:
            live.changed.notify_all()

    # -- create ------------------------------------------------------------------------------

    def create(self, config: ContainerConfig, name: str | None) -> ContainerRecord:
        # Settings first, then the image, as dockerd: a bad CapAdd is a 400 even for an image
        # that still has to be pulled.
        config = self._pod_config(self._netns_config(self._cgroup_config(config)))
        caps = capability_set(config.cap_add, config.cap_drop, config.privileged)
        for linked, _alias in config.links:
            self._linked(linked, config.tenant)
        image = self._image_for(config)
        argv = resolve_argv(
            image.config.entrypoint, image.config.cmd, config.entrypoint, config.cmd
        )
        env = merge_env(image.config.env, config.env)
        container_id = new_id()
        final_name = validate_name(name) if name else random_name()
        holder = next((lv for lv in self._containers.values() if lv.record.name == final_name
                       and lv.record.config.tenant == config.tenant), None)
        if holder is not None:  # names are per tenant
            raise Conflict(
                f'Conflict. The container name "/{final_name}" is already in use by container '
                f'"{holder.record.id}". You have to remove (or rename) that '
                "container to be able to reuse that name."
            )
        resolved = ContainerConfig(
            **{
                **config.__dict__,
                "image_id": image.id,
                "env": tuple(env),
                "caps": caps,
                "working_dir": config.working_dir or image.config.working_dir or "/",
                "user": config.user or image.config.user,
                "hostname": config.hostname or container_id[:12],
                "storage_bytes": config.storage_bytes or self.defaults.storage_bytes,
                "block_root": self._block_root_for(config, image),
                "log_max_bytes": config.log_max_bytes or self.defaults.log_max_bytes,
                "log_max_files": config.log_max_files or self.defaults.log_max_files,
                "stop_signal": config.stop_signal or image.config.stop_signal or "SIGTERM",
                "healthcheck": healthcheck.merge(config.healthcheck, image.config.healthcheck),
                "entrypoint": config.entrypoint
                if config.entrypoint is not None
                else (tuple(image.config.entrypoint) if image.config.entrypoint else None),
                "cmd": config.cmd if config.cmd else (
                    tuple(image.config.cmd) if image.config.cmd and config.entrypoint is None
                    else config.cmd
                ),
            }
        )
        parse_signal(resolved.stop_signal)  # reject a bad signal at create, like docker
        self._check_log_limits(resolved)
        _check_restart_policy(resolved)
        self.resources.check_networks(resolved)
        resolved = self.resources.plan(resolved, image)
        checkpoints_module.check_config(resolved)
        record = ContainerRecord(
            id=container_id,
            name=final_name,
            created=now_rfc3339(),
            config=resolved,
            path=argv[0],
            args=tuple(argv[1:]),
        )
        cdir = self.container_dir(container_id)
        cdir.mkdir(parents=True)
        try:
            self.store.insert(record)
        except SteelcupError:
            shutil.rmtree(cdir, ignore_errors=True)
            raise
        try:
            self.resources.connect(record)
        except SteelcupError:
            self.store.delete(container_id)
            shutil.rmtree(cdir, ignore_errors=True)
            raise
        self._containers[container_id] = _Live(record)
        self.publish_event(record, "create")
        return record

    def _pod_config(self, config: ContainerConfig) -> ContainerConfig:
        """A pod member's settings checked against its sandbox (named by its full id from
        now on); it has no network of its own: the VM's is the pod's."""
        if not (config.pod_sandbox or config.pod_of):
            return config
        if config.tenant:
            raise Forbidden("pods in one VM are for the operator only (steelcup-runtime), "
                            "not for a tenant")
        if not config.pod_of:
            return config
        if config.pod_sandbox:
            raise InvalidArgument("a container is a pod's sandbox or a member of one, not both")
        try:
            sandbox = self._find(config.pod_of).record
        except NotFound as exc:
            raise InvalidArgument(f"the pod's sandbox container {config.pod_of} does not "
                                  "exist") from exc
        if not sandbox.config.pod_sandbox:
            raise InvalidArgument(f"container {config.pod_of} is not a pod sandbox "
                                  "(HostConfig.SteelcupPodSandbox): its VM cannot take "
                                  "further containers")
        if (config.port_bindings or config.publish_all_ports or config.extra_networks
                or config.network_mode not in ("", "none", "default", "bridge")):
            raise InvalidArgument("a pod member shares its sandbox's network: give ports and "
                                  "networks to the sandbox")
        return replace(config, pod_of=sandbox.id, network_mode="none")

    @staticmethod
    def _cgroup_config(config: ContainerConfig) -> ContainerConfig:
        """HostConfig.SteelcupCgroup: a host cgroup for the VM's QEMU is the operator's
        (steelcup-runtime's) only, and only for a VM of the container's own."""
        if not config.cgroup_path:
            return config
        if config.tenant:
            raise Forbidden("a host cgroup for a container's VM is for the operator only "
                            "(steelcup-runtime), not for a tenant")
        if config.pod_of:
            raise InvalidArgument("a pod member runs in its sandbox's VM: give the cgroup to "
                                  "the sandbox (HostConfig.SteelcupCgroup)")
        return replace(config, cgroup_path=cgroup_paths.validate(config.cgroup_path))

    @staticmethod
    def _netns_config(config: ContainerConfig) -> ContainerConfig:
        """A container whose NIC goes into the engine's netns (HostConfig.SteelcupNetns) has
        that network only: the engine publishes its ports and joins its networks."""
        if not config.netns_path:
            return config
        if config.tenant:
            raise Forbidden("a host network namespace for a container's NIC is for the "
                            "operator only (steelcup-runtime), not for a tenant")
        if config.pod_of:
            raise InvalidArgument("a pod member shares its sandbox's network: give the "
                                  "network namespace to the sandbox")
        if (config.port_bindings or config.publish_all_ports or config.extra_networks
                or config.network_mode not in ("", "none", "default", "bridge")):
            raise InvalidArgument("a container in an engine's network namespace "
                                  "(HostConfig.SteelcupNetns) has that network only: publish "
                                  "ports and join networks with the engine")
        return replace(config, network_mode="none")

    def _image_for(self, config: ContainerConfig) -> Image:
        """The image a container is made from, in its tenant's names; for a root directory
        of the operator's (steelcup-runtime's bundles), none: an empty image config."""
        if not config.rootfs_dir:
            return self.images.get(config.image, config.tenant or None)
        if config.tenant:
            raise Forbidden("a host directory as a container's root is for the operator "
                            "only, not for a tenant")
        if not Path(config.rootfs_dir).is_dir():
            raise InvalidArgument(f"the container's root directory {config.rootfs_dir} does "
                                  "not exist")
        return Image(id="", repo_tags=(), config=ImageConfig(), created="", architecture="",
                     os="linux", diff_ids=(), size_bytes=0, raw_config=b"")

    def _linked(self, name: str, tenant: str) -> ContainerRecord:
        """The container a link names, among its tenant's; dockerd's 400 if there is none."""
        try:
            return self._containers[self.resolve(name, tenant)].record
        except NotFound as exc:
            raise InvalidArgument(not_found_text(name, str(exc))) from exc

    def _link_hosts(self, record: ContainerRecord) -> tuple[tuple[str, str], ...]:
        """/etc/hosts lines for the container's links, from the linked containers as they are
        now (each must be running and share a network with it)."""
        if not record.config.links:
            return ()
        targets = []
        for name, alias in record.config.links:
            other = self._linked(name, record.config.tenant)
            targets.append((alias, LinkTarget(
                name=other.name, hostname=other.config.hostname, running=other.state.running,
                addresses=self.resources.endpoint_addresses(other.id))))
        own = [network for network, _ in self.resources.endpoint_addresses(record.id)]
        return hosts_lines(record.name, own, targets)

    def _check_log_limits(self, config: ContainerConfig) -> None:
        """The daemon's log rotation is also the most a container may keep."""
        if config.log_max_bytes > self.defaults.log_max_bytes:
            raise InvalidArgument(f"log max-size {config.log_max_bytes} bytes exceeds this "
                                  f"daemon's limit of {self.defaults.log_max_bytes}")
        if config.log_max_files > self.defaults.log_max_files:
            raise InvalidArgument(f"log max-file {config.log_max_files} exceeds this daemon's "
                                  f"limit of {self.defaults.log_max_files}")

    # -- start -------------------------------------------------------------------------------

    async def start(self, ref: str, checkpoint: str = "") -> bool:
        """Start the container's process in a fresh VM, or with `checkpoint` run it on from
        that checkpoint of it (docs/checkpoints.md). False if it was already running.

        A `--rm` container whose start fails is removed before the error is raised, as dockerd
        does: nothing is left behind and `wait --condition removed` returns."""
        live = self._find(ref)
        if live.record.state.suspended and not checkpoint:
            return await self.resume(ref)
        failed: SteelcupError | None = None
        self._outcome(live, Op.START, ref)  # refused at once, not after a start in progress
        saved = None
        if checkpoint:
            saved = await asyncio.to_thread(checkpoints_module.load,
                                            self.container_dir(live.record.id), checkpoint)
        async with live.busy:
            if self._outcome(live, Op.START, ref) is NOT_MODIFIED:
                return False
            self._cancel_restart(live)  # `start` of a restarting container: now
            try:
                await self._start_locked(live, saved)
            except SteelcupError as exc:
                if not live.record.config.auto_remove:
                    raise
                failed = exc
        if failed is not None:
            with contextlib.suppress(Conflict):  # already being removed
                await self._remove(live, ref, force=True, volumes=True)
            raise failed
        return True

    async def _start_locked(self, live: _Live,
                            checkpoint: checkpoints_module.Checkpoint | None = None,
                            checkpoint_dir: str = checkpoints_module.CHECKPOINTS_DIR) -> None:
        record = live.record
        config = record.config
        cdir = self.container_dir(record.id)
        # Cleared, not replaced: stdin that arrived before start (the docker CLI sends it and
        # its EOF before it calls start) waits on this very event.
        live.started.clear()
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(rootfs_module.release, cdir)
            try:
                root = await asyncio.to_thread(self.prepare_rootfs, record)
                user = resolve_user(root, config.user, config.group_add)
                # Its ports are published once its guest has its addresses (`_start_in_vm`),
                # a restored VM's once it runs (`_publish_restored`).
                run = await self.resources.acquire(record, root, stack,
                                                   self._link_hosts(record), run_dir=cdir)
                spec = ProcessSpec(
                    args=(record.path, *record.args),
                    env=config.process_env(user.home, config.tty),
                    cwd=config.working_dir,
                    uid=user.uid,
                    gid=user.gid,
                    groups=user.groups,
                    tty=config.tty,
                    rows=24,
                    cols=80,
                    stdin=config.open_stdin,
                    main=True,
                    caps=config.caps,
                    rlimits=config.rlimits(),
                )
                if checkpoint is not None:
                    machine, process = await self._restore_in_vm(live, root, run, spec, stack,
                                                                 checkpoint, checkpoint_dir)
                elif config.pod_of:
                    machine, process = await self._start_in_pod(live, root, run, spec, stack)
                else:
                    machine, process = await self._start_in_vm(live, root, run, spec, stack)
            except ProcessStartError as exc:
                text = start_failure_text(record.path, exc.exit_code, str(exc))
                await self._start_failed(live, exc.exit_code, text)
                raise ProcessStartError(text, errno_value=exc.errno_value,
                                        exit_code=exc.exit_code) from exc
            except SteelcupError as exc:
                await self._start_failed(live, EXIT_CODE_DAEMON_ERROR, str(exc))
                raise
            try:
                self._outcome(live, Op.STARTED)
            except Conflict:  # removed meanwhile: the stack closes the VM it got
                live.started.set()
                await live.fanout.end()
                live.fanout = Fanout()
                raise
            stack.pop_all()
        live.machine = machine
        live.process = process
        # A checkpoint's process has logged that much output already (RESUME replays the rest)
        live.logged_bytes = checkpoint.logged_bytes if checkpoint is not None else 0
        live.log_mark = None
        if self.live_restore and not config.pod_of:  # a member is not kept (live-restore.md)
            live.log_mark = restore_module.LogMark(max(time.time_ns(), live.log_last_ns + 1),
                                                   live.logged_bytes)
        live.slot_dir = (str(machine.spec.shares[0].host_path)
                         if machine.rootfs_subdir and not config.pod_of else "")
        live.stopping = False
        live.started_mono = time.monotonic()
        self._apply(live, Op.STARTED, pid=process.pid, exit_code=0, error="",
                    started_at=now_rfc3339(), finished_at="0001-01-01T00:00:00Z",
                    manually_stopped=False, oom_killed=False, suspended=False)
        live.started.set()
        if checkpoint is not None:
            await self._publish_restored(live)
        self.resources.drop_held_ports(record.id)  # a suspended run's: published again
        live.pump = asyncio.create_task(
            self._run(live, machine, process), name=f"pump-{record.id[:12]}"
        )
        self.publish_event(live.record, "start")
        await self._save_record(live)

    async def _publish_restored(self, live: _Live) -> None:
        """A restored VM runs: its ports take connections now. Published earlier, a
        connection would go to a VM still loading and its SYN wait for an ARP answer that
        comes too late ("No route to host" after 3 s on a busy host)."""
        try:
            await self.resources.publish(live.record.id)
        except (SteelcupError, OSError) as exc:  # its ports refuse; the container runs
            log.warning("container %s: publishing its ports failed: %s",
                        live.record.id[:12], exc)

    async def _start_in_vm(self, live: _Live, root: Path, run: RunResources, spec: ProcessSpec,
                           stack: contextlib.AsyncExitStack) -> tuple[Machine, GuestProcess]:
        """A VM of the container's own (its sandbox's share, `pod/`, for a pod sandbox), set
        up and its main process started."""
        record, config = live.record, live.record.config
        cdir = self.container_dir(record.id)
        pod_shares: tuple[Share, ...] = ()
        if config.pod_sandbox:
            (cdir / POD_DIR).mkdir(mode=0o755, exist_ok=True)
            # remap: the members' roots are other filesystems bound below it (as a slot's)
            pod_shares = (Share(POD_TAG, cdir / POD_DIR, remap_devices=True),)
        cpus, mem_mib = self.vm_size(config)
        root_disk = None
        share = root
        if config.block_root:
            root_disk = self._erofs_of(config)
            share = rootfs_module.guest_layer(cdir)
        request = VmRequest(
            mem_mib=mem_mib,
            cpus=cpus,
            grows=self.memory_grows(config),
            shares=(Share("rootfs", share), *run.shares, *pod_shares),
            root_disk=root_disk,
            nics=run.vm_nics,
            tap_places=run.tap_places,
            console_log=cdir / "console.log",
            name=record.id[:12],
            tenant=config.tenant,
            cgroup_path=config.cgroup_path,
        )
        machine = await self.vms.acquire(request)
        stack.push_async_callback(machine.close)
        if config.cgroup_path:  # before the guest does any work: its CPU is the cgroup's
            await asyncio.to_thread(machine.place_in_cgroup, config.cgroup_path)
        await self.resources.plug_netns(record.id, stack)
        live.pod_next = 1
        # A checkpointable container's root is copied into guest RAM: no 9p share stays
        # mounted to block the VM's migration (docs/checkpoints.md).
        cache = (RootfsCache.RAM if config.checkpointable
                 else RootfsCache.BLOCK if config.block_root
                 else RootfsCache.LOOSE if self.defaults.rootfs_cache is RootfsCache.BLOCK
                 else self.defaults.rootfs_cache)
        staged = (cache is RootfsCache.BLOCK and root_disk is not None
                  and machine.has_staged_lower(root_disk))
        setup_root = functools.partial(machine.guest.setup_root, "rootfs", config.hostname,
                                       config.read_only, subdir=machine.rootfs_subdir,
                                       pids_max=config.pids_limit, cache=cache)
        try:
            await setup_root(staged=staged)
        except GuestRequestError as exc:
            if not staged:
                raise
            # The host thought the VM staged and the guest has no such mount (it said so and
            # mounted nothing): the disk is the image's all the same, mounted afresh.
            log.warning("container %s: the guest refused its staged lower (%s); its root is "
                        "mounted afresh", record.id[:12], exc)
            await setup_root()
        live.rootfs_cache = cache
        if config.sysctls:
            await machine.guest.sysctl(f"{k}={v}" for k, v in config.sysctls)
        await self.resources.configure_guest(machine.guest, run)
        await self.resources.publish(record.id, strict=True)  # the guest answers ARP now
        return machine, await machine.guest.start(spec)

    def _erofs_of(self, config: ContainerConfig) -> Path:
        """The erofs image a block-root container's VM gets as its disk."""
        short = config.image_id.removeprefix("sha256:")[:12]
        if self.erofs is None:
            raise SteelcupError(f"this container's root is image {short}'s erofs disk under "
                                "its writable layer: start the daemon with --rootfs-cache block")
        disk = self.erofs.ready(config.image_id)
        if disk is None:
            self._make_erofs(self.erofs, self.images.get(config.image_id), config.tenant)
            raise SteelcupError(f"the erofs disk of image {short} is missing (deleted on the "
                                "host?): it is being made again, start the container later")
        return disk

    def _refresh_block_view(self, record: ContainerRecord) -> None:
        """Before the host reads or writes a block-root container's files: the guest's
        whiteout stand-ins in its writable layer become real whiteouts, and the host's view
        of the root (an overlay, which caches what it looked up while the guest changed the
        layer) is mounted afresh if it is mounted (exec and health checks read users from it
        while the container runs); blocking."""
        cdir = self.container_dir(record.id)
        if sysmount.is_mountpoint(cdir / "rootfs"):
            boundedfs.unmount(cdir / "rootfs")
            self.prepare_rootfs(record)  # realizes the whiteouts before it mounts
        else:
            _realize_whiteouts(cdir)

    async def _restore_in_vm(self, live: _Live, root: Path, run: RunResources,
                             spec: ProcessSpec, stack: contextlib.AsyncExitStack,
                             checkpoint: checkpoints_module.Checkpoint,
                             checkpoint_dir: str) -> tuple[Machine, GuestProcess]:
        """A new VM that runs on from `checkpoint`, with this run's taps (same names, MACs and
        addresses: the network layer keeps a container's endpoints), its clock set and the
        container's main process re-attached."""
        record, config = live.record, live.record.config
        if self.restorer is None:
            raise Conflict("this daemon cannot restore checkpoints (no VM factory)")
        checkpoints_module.check_config(config)
        # Refused at create; a record from elsewhere must not get this far. (Its secrets'
        # share was copied into its guest's RAM: the restored VM has them.)
        if any(share.tag != SECRETS_TAG for share in run.shares):
            raise InvalidArgument(f"checkpoint {checkpoint.name} cannot run with 9p shares")
        cdir = self.container_dir(record.id)
        request = VmRequest(
            mem_mib=checkpoint.vm.mem_mib, cpus=checkpoint.vm.cpus,
            shares=(Share("rootfs", root),), nics=run.vm_nics, tap_places=run.tap_places,
            console_log=cdir / "console.log", name=record.id[:12], tenant=config.tenant,
            cgroup_path=config.cgroup_path)
        machine = await self.restorer(request, checkpoint.vm,
                                      checkpoints_module.state_path(cdir, checkpoint.name,
                                                                    checkpoint_dir))
        stack.push_async_callback(machine.close)
        # Its clock stood still since the checkpoint; its RNG state is the checkpoint's.
        await machine.guest.fixup(realtime_ns=time.time_ns(),
                                  entropy=os.urandom(CHECKPOINT_ENTROPY_BYTES))
        process = await machine.guest.resume(checkpoint.process_id, checkpoint.logged_bytes,
                                             spec, pid=checkpoint.pid)
        live.rootfs_cache = RootfsCache.RAM
        return machine, process

    def _member_dir(self, record: ContainerRecord) -> Path:
        """Where a pod member's root is bound in its sandbox's share."""
        return self.container_dir(record.config.pod_of) / POD_DIR / record.id

    async def _start_in_pod(self, live: _Live, root: Path, run: RunResources, spec: ProcessSpec,
                            stack: contextlib.AsyncExitStack) -> tuple[Machine, GuestProcess]:
        """The member's root bound into its running sandbox's share, set up in that VM as a
        further container, and its main process started there."""
        record, config = live.record, live.record.config
        sandbox = self._containers.get(config.pod_of)
        if sandbox is None or sandbox.machine is None or sandbox.stopping or \
                sandbox.record.state.status is not Status.RUNNING:
            raise Conflict(f"the pod's sandbox container {config.pod_of[:12]} is not running: "
                           "start it first")
        machine = sandbox.machine
        if run.vm_nics:
            raise InvalidArgument("a pod member has no network of its own: its pod's VM takes "
                                  "no new NICs once it runs")
        planned = podmounts.plan(run.mounts, run.shares, record.id, POD_TAG)
        if sandbox.pod_next > POD_MAX_MEMBERS:
            raise Conflict(f"the pod's VM has run {POD_MAX_MEMBERS} members: restart the pod")
        index, sandbox.pod_next = sandbox.pod_next, sandbox.pod_next + 1
        target = self._member_dir(record)
        await asyncio.to_thread(podmounts.bind_root, root, target.parent, record.id)
        stack.callback(podmounts.unbind_root, target.parent, record.id)
        mounts_dir = podmounts.mounts_dir(target.parent, record.id)
        stack.callback(podmounts.unbind, mounts_dir)
        mounts = await asyncio.to_thread(podmounts.bind, mounts_dir, planned)
        await machine.guest.setup_root(POD_TAG, readonly=config.read_only, subdir=record.id,
                                       container=index)
        if config.sysctls:  # the VM's network and IPC namespaces are the whole pod's
            await machine.guest.sysctl(f"{k}={v}" for k, v in config.sysctls)
        for mount in podmounts.with_container(mounts, index):
            await guest_ops.mount(machine.guest, mount)
        process = await machine.guest.start(replace(spec, container=index))
        live.pod_index = index
        return machine, process

    async def _start_failed(self, live: _Live, exit_code: int, error: str) -> None:
        self._apply(live, Op.START_FAILED, exit_code=exit_code, error=error)
        live.started.set()
        await live.fanout.end()
        live.fanout = Fanout()  # attaches from now on are for the next start
        await self._notify(live)

    async def _run(self, live: _Live, machine: Machine, process: GuestProcess) -> None:
        """Relay output to the log and attached readers until the process exits; clean up."""
        writer = logs_module.LogWriter(self.log_path(live.record.id),
                                       self.log_rotation(live.record.config),
                                       not_before_ns=live.log_last_ns + 1)
        exit_code = EXIT_CODE_DAEMON_LOST
        error = ""
        cancelled = False
        vm_lost = False
        try:
            async for stream, data in process.output():
                rotations = writer.rotations
                writer.write(stream.value, data)
                live.logged_bytes += len(data)
                live.log_last_ns = writer.last_ns
                # Published before anything else is awaited: an attach between the two would
                # get the chunk from the log's replay and from its stream (Runtime.attach).
                await live.fanout.publish(stream.value, data)
                if writer.rotations != rotations and live.log_mark is not None:
                    # The file holding the run's start may go with a later rotation: the
                    # record counts from here on (before the chunk is credited to the guest).
                    live.log_mark = restore_module.LogMark(writer.last_ns + 1, live.logged_bytes)
                    await self._save_record(live)
            status = await process.wait()
            exit_code = status.status
        except GuestProtocolError as exc:
            # The VM died or spoke nonsense: like a killed container. A pod member's VM goes
            # when its sandbox's run ends: the pod stopped, and it with it.
            killed = live.stopping or bool(live.record.config.pod_of)
            exit_code = 128 + signal_module.SIGKILL if killed else EXIT_CODE_DAEMON_LOST
            error = "" if killed else f"the container's VM failed: {exc}"
            vm_lost = True
            if not live.handing_over:  # else the link was closed on purpose
                log.warning("container %s: %s", live.record.id[:12], clip(str(exc)))
        except asyncio.CancelledError:
            error = "the daemon shut down"
            cancelled = True
            raise
        finally:
            writer.close()
            await live.fanout.end()
            if not live.handing_over:  # else the VM runs on for the next daemon (_hand_over)
                exit_code = await self._end_run(live, machine, exit_code, error, vm_lost=vm_lost,
                                                cancelled=cancelled)
        if live.handing_over:
            return
        self.publish_event(live.record, "die", exitCode=str(exit_code))
        if self._should_restart(live, exit_code):
            self._schedule_restart(live)
        elif live.record.config.auto_remove:
            with contextlib.suppress(SteelcupError):
                await self._remove(live, live.record.id, force=True, volumes=True)

    async def _end_run(self, live: _Live, machine: Machine, exit_code: int, error: str, *,
                       vm_lost: bool, cancelled: bool) -> int:
        """The run's VM is closed and its resources released; the container is exited with
        `exit_code` (or docker's code for an OOM kill, which is returned)."""
        oom_killed = False
        live.log_mark = None
        restore_module.forget(self.container_dir(live.record.id))  # nothing to re-attach
        if live.record.config.pod_of:  # the VM is the sandbox's: only the member's root goes
            live.pod_index = 0
            member_dir = self._member_dir(live.record)
            await asyncio.to_thread(podmounts.unbind_root, member_dir.parent, live.record.id)
            await asyncio.to_thread(podmounts.unbind,
                                    podmounts.mounts_dir(member_dir.parent, live.record.id))
        else:
            # A `--rm` container's VM is reaped after its waiters were answered (`_remove`
            # waits for it before unmounting its root): nothing of it is used again.
            reap_later = live.record.config.auto_remove and not cancelled
            with contextlib.suppress(Exception):
                await machine.close(reap_later=reap_later)
            if reap_later:
                live.vm_going = machine
                self._vms_going.add(machine)
        if vm_lost and machine.oom_killed:
            # The host's OOM killer ended the VM at its memory limit (docs/security.md):
            # docker's answer for a container killed at its `-m`.
            exit_code, error, oom_killed = 128 + signal_module.SIGKILL, "", True
            log.warning("container %s: its VM went over its memory limit and was killed",
                        live.record.id[:12])
        await self.resources.release_run(live.record.id)
        if cancelled or not live.record.config.auto_remove:
            # An auto-removed container's rootfs is unmounted by `remove` below, after its
            # waiters were answered: the unmount syncs the host filesystem, which takes
            # from milliseconds to a second depending on what else writes to it.
            await asyncio.to_thread(rootfs_module.release, self.container_dir(live.record.id))
        live.machine = None
        live.process = None
        live.started.clear()  # stdin attached from now on is for the next run
        self._apply(live, Op.EXITED, pid=0, exit_code=exit_code, error=error,
                    finished_at=now_rfc3339(), oom_killed=oom_killed)
        live.exit_seq += 1
        # The run's own fanout ended with its output (`_run`): attaches made since (the state
        # still said running) were told at once; from now on they are for the next run.
        live.fanout = Fanout()
        await self._notify(live)
        return exit_code

    # -- restart policies --------------------------------------------------------------------

    def _should_restart(self, live: _Live, exit_code: int) -> bool:
        """Docker's restart manager: policy, manual stops, on-failure's retry budget."""
        record = live.record
        if (isinstance(transition(record.state.status, Op.RESTART_DUE), Refusal)
                or self._shutting_down or record.state.manually_stopped):
            return False
        policy = record.config.restart_policy
        if policy in ("always", "unless-stopped"):
            return True
        if policy == "on-failure":
            maximum = record.config.restart_max_retries
            return exit_code != 0 and (maximum <= 0 or record.restart_count < maximum)
        return False

    def _schedule_restart(self, live: _Live) -> None:
        ran_s = time.monotonic() - live.started_mono
        if ran_s >= RESTART_RESET_AFTER_S or live.restart_delay_s <= 0:
            live.restart_delay_s = RESTART_DELAY_MIN_S
        else:
            live.restart_delay_s = min(live.restart_delay_s * 2, RESTART_DELAY_MAX_S)
        self._apply(live, Op.RESTART_DUE)
        live.restart_task = asyncio.create_task(
            self._restart_later(live, live.restart_delay_s), name=f"restart-{live.record.id[:12]}"
        )

    async def _restart_later(self, live: _Live, delay_s: float) -> None:
        try:
            await asyncio.sleep(delay_s)  # the back-off itself, not a synchronisation
            async with live.busy:
                # stopped, started by a client, or being removed meanwhile: not ours to start
                if live.record.state.status is not Status.RESTARTING:
                    return
                live.record = replace(live.record, restart_count=live.record.restart_count + 1)
                await self._start_locked(live)
            self.publish_event(live.record, "restart")
        except SteelcupError as exc:
            log.warning("container %s: restart failed: %s", live.record.id[:12], exc)
        finally:
            if live.restart_task is asyncio.current_task():
                live.restart_task = None

    def _cancel_restart(self, live: _Live) -> None:
        """Cancel a pending restart (the caller's transition says what the container is)."""
        task, live.restart_task = live.restart_task, None
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()

    async def autostart(self) -> None:
        """After `recover()`: start containers whose policy says so (always; unless-stopped
        unless a user stopped it), like dockerd does at boot."""
        for live in list(self._containers.values()):
            policy = live.record.config.restart_policy
            if live.record.state.suspended:  # stays suspended until asked
                continue
            if policy == "always" or (policy == "unless-stopped"
                                      and not live.record.state.manually_stopped):
                try:
                    await self.start(live.record.id)
                except SteelcupError as exc:
                    log.warning("container %s: autostart failed: %s", live.record.id[:12], exc)

    # -- pause -------------------------------------------------------------------------------

    async def pause(self, ref: str) -> None:
        """Freeze every vCPU of the container's VM (QMP `stop`)."""
        live = self._find(ref)
        if live.record.state.suspended:
            raise Conflict(f"container {live.record.name} is suspended (its VM is saved on "
                           "disk, nothing runs): resume it first")
        self._outcome(live, Op.PAUSE, ref)
        if live.record.config.pod_of:
            raise Conflict(f"container {live.record.id[:12]} shares its pod's VM, which "
                           "pauses as a whole: pause the pod's sandbox container")
        machine, _ = self._run_parts(live)
        await machine.pause()
        self._apply(live, Op.PAUSE, ref)
        self.publish_event(live.record, "pause")

    async def unpause(self, ref: str) -> None:
        live = self._find(ref)
        self._outcome(live, Op.UNPAUSE, ref)
        await self._resume(live)
        self.publish_event(live.record, "unpause")

    async def _resume(self, live: _Live) -> None:
        machine, _ = self._run_parts(live)
        await machine.resume()
        self._apply(live, Op.UNPAUSE)

    def _run_parts(self, live: _Live) -> tuple[Machine, GuestProcess]:
        """The current run's VM and process; a status that allowed the caller's operation has
        them (they are set and cleared with RUNNING)."""
        if live.machine is None or live.process is None:
            raise Conflict(f"Container {live.record.id} is not running")
        return live.machine, live.process

    # -- update, rename ----------------------------------------------------------------------

    def update(
        self, ref: str, *, restart_policy: tuple[str, int] | None = None,
        mem_mib: int | None = None, cpus: float | None = None, cpu_shares: int | None = None,
    ) -> builtins.list[str]:
        """Change settings; returns warnings. A VM's size is fixed while it runs, so memory and
        CPUs take effect at the next start (the warning says so)."""
        live = self._find(ref)
        self._outcome(live, Op.UPDATE, ref)
        config = live.record.config
        changes: dict[str, Any] = {}
        if restart_policy is not None:
            changes["restart_policy"], changes["restart_max_retries"] = restart_policy
        if mem_mib is not None:
            changes["mem_mib"] = mem_mib
        if cpus is not None:
            changes["cpus"] = cpus
        if cpu_shares is not None:
            changes["cpu_shares"] = cpu_shares
        new_config = replace(config, **changes)
        _check_restart_policy(new_config)
        warnings = []
        resized = (new_config.mem_mib, new_config.cpus) != (config.mem_mib, config.cpus)
        if resized and live.record.state.running:
            warnings.append("steelcup: memory/CPU changes of a running container take effect "
                            "when it next starts (a running VM is not resized)")
        self._save(live, replace(live.record, config=new_config))
        self.publish_event(live.record, "update")
        return warnings

    def rename(self, ref: str, new_name: str) -> None:
        """`docker rename`; Conflict if another container has the name."""
        live = self._find(ref)
        if not new_name:
            raise InvalidArgument("Neither old nor new names may be empty")
        name = validate_name(new_name)
        self._outcome(live, Op.RENAME, ref)
        old = live.record.name
        if name == old:
            raise InvalidArgument("Renaming a container with the same name as its current name")
        for other in self._containers.values():
            if other.record.name == name and other is not live and \
                    other.record.config.tenant == live.record.config.tenant:  # per tenant
                raise Conflict(
                    f'Conflict. The container name "/{name}" is already in use by container '
                    f'"{other.record.id}". You have to remove (or rename) that container to be '
                    "able to reuse that name."
                )
        self._save(live, replace(live.record, name=name))
        self.events.publish("container", "rename", live.record.id,
                            {"name": name, "oldName": "/" + old}, live.record.config.tenant)

    # -- signals, stop, wait -----------------------------------------------------------------

    async def kill(self, ref: str, signal: str | int = "SIGKILL") -> None:
        live = self._find(ref)
        signo = parse_signal(signal)
        if live.record.state.suspended:  # no process to signal: the run ends here
            await self._end_suspension(live, "kill")
            return
        outcome = self._outcome(live, Op.KILL, ref)
        if outcome is Status.EXITED:  # restarting: the kill cancels the pending restart
            await self._stop_restarting(live, Op.KILL)
            self.publish_event(live.record, "kill", signal=str(signo))
            return
        _, process = self._run_parts(live)
        if signo == signal_module.SIGKILL:
            live.stopping = True
            self._save(live, live.record.with_state(manually_stopped=True))
        if outcome is Status.PAUSED:
            await self._resume(live)  # a frozen guest cannot deliver the signal
        if signo != signal_module.SIGKILL:
            await process.signal(signo)
            self.publish_event(live.record, "kill", signal=str(signo))
            return
        # As dockerd: SIGKILL answers once the container is dead, so a `rm` or `inspect` right
        # after sees it exited.
        self.publish_event(live.record, "kill", signal=str(signo))
        await self._kill_run(live, live.exit_seq)

    async def _stop_restarting(self, live: _Live, op: Op) -> None:
        self._cancel_restart(live)
        self._apply(live, op, manually_stopped=True)
        await self._notify(live)

    async def stop(self, ref: str, timeout_s: int | None = None, signal: str = "") -> bool:
        """Stop signal, then SIGKILL after the timeout. False if it was not running."""
        live = self._find(ref)
        if live.record.state.suspended:  # stopped without running it on first
            await self._end_suspension(live, "stop")
            return True
        outcome = self._outcome(live, Op.STOP, ref)
        if outcome is NOT_MODIFIED:
            return False
        if outcome is Status.EXITED:  # restarting: the stop cancels the pending restart
            await self._stop_restarting(live, Op.STOP)
            return True
        _, process = self._run_parts(live)
        self._save(live, live.record.with_state(manually_stopped=True))
        if outcome is Status.PAUSED:
            await self._resume(live)
        seq = live.exit_seq
        timeout = timeout_s if timeout_s is not None else (
            live.record.config.stop_timeout_s
            if live.record.config.stop_timeout_s is not None else DEFAULT_STOP_TIMEOUT_S)
        signo = parse_signal(signal or live.record.config.stop_signal, signal_module.SIGTERM)
        with contextlib.suppress(GuestProtocolError):
            await process.signal(signo)
        if timeout != 0 and await self._wait_exit(live, seq, max(timeout, 0) if timeout >= 0
                                                  else None):
            return True
        await self._kill_run(live, seq)
        self.publish_event(live.record, "stop")
        return True

    async def _kill_run(self, live: _Live, seq: int) -> None:
        """SIGKILL the run of generation `seq`; pull the plug if the guest does not answer."""
        live.stopping = True
        if live.process is not None:
            with contextlib.suppress(GuestProtocolError):
                await live.process.signal(signal_module.SIGKILL)
        if not await self._wait_exit(live, seq, REMOVE_KILL_WAIT_S) and live.machine is not None:
            if not live.record.config.pod_of:  # a member's VM is its whole pod's
                await live.machine.close()  # the guest does not answer: pull the plug
            await self._wait_exit(live, seq, 10.0)

    async def _wait_exit(self, live: _Live, seq: int, timeout_s: float | None) -> bool:
        async def exited() -> None:
            async with live.changed:
                await live.changed.wait_for(lambda: live.ended(seq))

        try:
            await asyncio.wait_for(exited(), timeout_s)
        except TimeoutError:
            return False
        return True

    def waiter(self, ref: str, condition: str = "not-running") -> Coroutine[Any, Any, int]:
        """Docker's wait: `not-running` (default), `next-exit` or `removed`.

        The container and its exit generation are captured now, so a wait registered before
        `start` cannot miss a quick exit; the returned coroutine yields the exit code.
        """
        live = self._find(ref)
        if condition not in ("not-running", "next-exit", "removed"):
            raise InvalidArgument(f"invalid condition: {condition!r}")
        self._outcome(live, Op.WAIT, ref)
        seq = live.exit_seq
        # A suspended container is running to its clients: its run ends when it is stopped
        # or killed (_end_suspension) or, resumed, when its process exits.
        running = live.record.state.running or live.record.state.suspended

        async def wait() -> int:
            async with live.changed:
                if condition == "removed":
                    await live.changed.wait_for(lambda: live.removal_done)
                elif condition == "not-running" and not running:
                    pass
                else:
                    await live.changed.wait_for(lambda: live.ended(seq))
            return live.record.state.exit_code

        return wait()

    async def restart(self, ref: str, timeout_s: int | None = None) -> None:
        live = self._find(ref)
        self._outcome(live, Op.RESTART, ref)
        await self.stop(ref, timeout_s)
        if live.pump is not None:
            await asyncio.shield(live.pump)
        await self.start(ref)

    # -- remove ------------------------------------------------------------------------------

    async def remove(self, ref: str, force: bool = False, volumes: bool = False) -> None:
        """Delete the container; `volumes` (docker's -v) also removes its anonymous volumes."""
        live = self._find(ref)
        if live.record.state.suspended and not force:  # running, as its clients see it
            raise Conflict(f'cannot remove container "/{live.record.name}": container is '
                           "suspended: stop the container before removing or force remove")
        await self._remove(live, ref, force=force,
                           volumes=volumes or live.record.config.auto_remove)

    async def _remove(self, live: _Live, ref: str, *, force: bool, volumes: bool) -> None:
        was = live.record.state.status
        self._apply(live, Op.REMOVE_FORCE if force else Op.REMOVE, ref)
        self._cancel_restart(live)
        record = live.record
        try:
            if live.process is not None:  # running or paused: end the run first
                if was is Status.PAUSED and live.machine is not None:
                    await live.machine.resume()  # a frozen guest cannot deliver the signal
                self._save(live, record.with_state(manually_stopped=True))
                self.publish_event(record, "kill", signal=str(int(signal_module.SIGKILL)))
                await self._kill_run(live, live.exit_seq)
                if live.pump is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(asyncio.shield(live.pump), REMOVE_PUMP_WAIT_S)
            # A start in progress finds the container removing (the table refuses its
            # STARTED) and gives up its VM; file access finishes first.
            async with live.busy:
                self.resources.drop_held_ports(live.record.id)
                await self.resources.release_container(live.record, volumes)
                self.store.delete(record.id)
        except (SteelcupError, OSError) as exc:
            log.warning("container %s: removal failed, it is dead: %s", record.id[:12], exc)
            self._apply(live, Op.REMOVAL_FAILED, error=f"removal failed: {exc}")
            await self._notify(live)
            raise
        # Gone for every client (list, inspect, name, volumes): `wait --condition removed`
        # returns, so `run --rm` ends before the slow part below.
        live.removal_done = True
        self._containers.pop(record.id, None)
        await self._notify(live)
        self.publish_event(live.record, "destroy")
        # Its private directory last (unmounting the overlay syncs the host filesystem); if the
        # daemon stops before this, `recover` deletes the directory.
        # A member whose run is still ending may not have unbound its root from this sandbox's
        # share: never delete through it.
        if live.vm_going is not None:  # its QEMU holds files of the root until reaped
            try:
                await asyncio.wait_for(live.vm_going.wait_closed(), REAP_WAIT_S)
            except TimeoutError:
                log.warning("container %s: its VM was not reaped in %.0f s; removing its "
                            "files anyway", record.id[:12], REAP_WAIT_S)
            self._vms_going.discard(live.vm_going)
            live.vm_going = None
        await asyncio.to_thread(_unbind_members_of, self.container_dir(record.id))
        await asyncio.to_thread(rootfs_module.remove, self.container_dir(record.id))

    # -- extra processes, files --------------------------------------------------------------

    async def start_in(self, ref: str, op: Op, spec: ProcessSpec) -> GuestProcess:
        """Start an extra process (exec, a helper) in the container's VM if `op` is allowed
        now. ProcessStartError if the guest could not."""
        live = self._find(ref)
        self._outcome(live, op, ref)
        machine, _ = self._run_parts(live)
        return await machine.guest.start(replace(spec, container=live.pod_index))

    async def resolve_user_of(self, record: ContainerRecord, user: str,
                              group_add: Sequence[str] = ()) -> User:
        """`resolve_user` in the running container's root, for exec. A block root's host view
        caches what it looked up while the guest changed the writable layer (a user added
        since): a name it does not find is looked up again in a view mounted afresh."""
        root = self.container_dir(record.id) / "rootfs"
        try:
            return resolve_user(root, user, group_add)
        except InvalidArgument:
            if not record.config.block_root:
                raise
        async with self.holding_files(record.id, Op.EXEC):
            return await asyncio.to_thread(resolve_user, root, user, group_add)

    @contextlib.asynccontextmanager
    async def holding_files(self, ref: str, op: Op = Op.FILES) -> AsyncIterator[ContainerRecord]:
        """Hold the container for `op` on its files: a start waits, a removal waits. On the
        way out, a filesystem the caller mounted is unmounted unless the container runs."""
        live = self._find(ref)
        async with live.busy:
            self._outcome(live, op, ref)
            if live.machine is not None and live.rootfs_cache is RootfsCache.RAM:
                raise Conflict(
                    f"the root of container {live.record.name} is held in its VM's memory "
                    "while it runs (--checkpointable): the host's copy is the one it started "
                    "from, so cp, diff, export and commit are refused until it stops; read "
                    "its files with exec (e.g. exec CONTAINER tar -c PATH)")
            await self._sync_root(live, drop=False)  # the guest's writes reach the host
            if live.record.config.block_root:
                await asyncio.to_thread(self._refresh_block_view, live.record)
            try:
                yield live.record
            finally:
                if op is Op.FILES:  # cp may have written: the guest reads it afresh
                    await self._sync_root(live, drop=True)
                state = live.record.state
                if not state.running and state.status is not Status.REMOVING:
                    await asyncio.to_thread(rootfs_module.release,
                                            self.container_dir(live.record.id))

    async def _sync_root(self, live: _Live, *, drop: bool) -> None:
        """SYNC_ROOT to a running container whose guest caches its root (loose). A paused
        VM cannot answer: its cached writes stay unseen until it runs (logged); a guest that
        fails is logged too, the host's access goes on (the run may be ending)."""
        machine = live.machine
        if machine is None or live.rootfs_cache is RootfsCache.NONE:
            return
        if live.record.state.status is Status.PAUSED:
            log.info("container %s is paused: its guest's cached root is not synced",
                     live.record.id[:12])
            return
        try:
            await machine.guest.sync_root(drop=drop, timeout_s=SYNC_ROOT_TIMEOUT_S)
        except GuestRequestError as exc:
            if exc.errno_value != errno.ENOSYS:  # ENOSYS: an init before SYNC_ROOT, uncached
                log.warning("container %s: SYNC_ROOT failed: %s", live.record.id[:12], exc)
        except SteelcupError as exc:
            log.warning("container %s: SYNC_ROOT failed: %s", live.record.id[:12], exc)

    # -- I/O ---------------------------------------------------------------------------------

    def attach(self, ref: str, stdout: bool, stderr: bool) -> Attached:
        """Subscribe to the output of the current (or next) run of the container."""
        live = self._find(ref)
        self._outcome(live, Op.ATTACH, ref)
        # A chunk is logged and published in one step of the loop (`_run`): every later one
        # is stamped above the writer's last stamp and at or above the clock now.
        until_ns = max(live.log_last_ns, time.time_ns() - 1)
        return Attached(live.record, live.fanout.subscribe(stdout, stderr), live, until_ns)

    async def resize(self, ref: str, rows: int, cols: int) -> None:
        live = self._find(ref)
        self._outcome(live, Op.RESIZE, ref)
        _, process = self._run_parts(live)
        if rows <= 0 or cols <= 0 or rows > 65535 or cols > 65535:
            raise InvalidArgument("invalid terminal size")
        await process.resize(rows, cols)

    async def follow_logs(
        self, ref: str, *, follow: bool, want: logs_module.LogFilter
    ) -> AsyncIterator[logs_module.LogEntry]:
        """The entries `want` selects from the log files; with `follow`, then new ones until
        the container stops. Files are read in a worker thread a batch at a time, so a large
        log is never held in memory."""
        live = self._find(ref)
        cursor = logs_module.LogCursor(self.log_path(live.record.id))
        async for entry in _batches_in_thread(cursor.iter_selected(want)):
            yield entry
        if not follow:
            return
        while True:
            seq = live.exit_seq
            running = live.record.state.running or live.record.state.suspended
            async for entry in _batches_in_thread(cursor.iter_new()):
                yield entry
            if not running or live.removal_done:
                return
            await self._wait_exit(live, seq, 0.2)

    # -- checkpoints (docs/checkpoints.md) ---------------------------------------------------

    async def checkpoint_create(self, ref: str, name: str, *,
                                leave_running: bool = False) -> checkpoints_module.Checkpoint:
        """Save the running container's VM (all its RAM and device state) as checkpoint
        `name`; without `leave_running` the container is then exited (137, as docker's)."""
        live = self._find(ref)
        checkpoints_module.check_name(name)
        self._outcome(live, Op.CHECKPOINT, ref)
        if not live.record.config.checkpointable:
            raise InvalidArgument(checkpoints_module.NOT_CHECKPOINTABLE.format(
                name=live.record.name))
        if live.record.config.auto_remove and not leave_running:
            raise InvalidArgument(f"container {live.record.name} is removed when it exits "
                                  "(--rm), and its checkpoints with it: checkpoint it with "
                                  "--leave-running")
        async with live.busy:
            self._outcome(live, Op.CHECKPOINT, ref)
            saved, machine, process, saved_s = await self._save_run(
                live, name, checkpoints_module.CHECKPOINTS_DIR)
            self.publish_event(live.record, "checkpoint")
            if leave_running:
                await self._run_on(live, machine, process)
            else:
                # As a stop: a restart policy does not start it afresh (here or at the next
                # daemon's autostart); `start --checkpoint` runs it on.
                code = await self._end_saved_run(live, machine, manually_stopped=True)
                self.publish_event(live.record, "die", exitCode=str(code))
        log.info("container %s: checkpoint %s made (%d bytes; VM saved in %.2f s)%s",
                 live.record.id[:12], name, saved.state_bytes, saved_s,
                 ", left running" if leave_running else "")
        return saved

    async def _save_run(self, live: _Live, name: str, checkpoint_dir: str,
                        ) -> tuple[checkpoints_module.Checkpoint, Machine, GuestProcess, float]:
        """The running container's VM saved as checkpoint `name` in `checkpoint_dir` (the VM
        ends paused: `_run_on` or `_end_saved_run` next); on failure the run goes on and the
        error is raised. Under `live.busy`. Returns the checkpoint, the run's VM and process
        and the seconds the save took."""
        machine, process, pump = live.machine, live.process, live.pump
        if machine is None or process is None or pump is None or pump.done():
            raise Conflict(f"Container {live.record.id} is not running")
        cdir = self.container_dir(live.record.id)
        tmp = await asyncio.to_thread(checkpoints_module.begin, cdir, name, checkpoint_dir)
        saved = checkpoints_module.Checkpoint(
            name=name, created=now_rfc3339(), process_id=process.id,
            pid=live.record.state.pid, logged_bytes=0,
            vm=SavedVm.of(machine.spec, machine.limit_mib))
        # The output relay ends with the guest link (the guest keeps what it did not
        # credit); the run goes on, or ends, after.
        live.handing_over = True
        began = time.monotonic()
        try:
            try:
                await machine.checkpoint(tmp / checkpoints_module.STATE_FILE)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(pump), HAND_OVER_PUMP_WAIT_S)
            saved = replace(saved, logged_bytes=live.logged_bytes)
            saved = await asyncio.to_thread(checkpoints_module.commit, tmp, saved)
        except BaseException:
            await asyncio.to_thread(checkpoints_module.abandon, tmp)
            await self._run_on(live, machine, process)
            raise
        return saved, machine, process, time.monotonic() - began

    async def _end_saved_run(self, live: _Live, machine: Machine, *, manually_stopped: bool,
                             suspended: bool = False) -> int:
        """After `_save_run`: the VM is closed and the run ends (docker's 137 for a
        checkpointed container)."""
        live.handing_over = False
        live.stopping = True
        self._save(live, live.record.with_state(manually_stopped=manually_stopped,
                                                suspended=suspended))
        return await self._end_run(live, machine, EXIT_CODE_CHECKPOINTED, "",
                                   vm_lost=False, cancelled=False)

    # -- suspend (docs/checkpoints.md) -------------------------------------------------------

    async def suspend(self, ref: str) -> bool:
        """Save the running checkpointable container's VM to disk and end its QEMU; the
        container keeps its name, addresses and published ports, and clients see it running
        (suspended). False if it was suspended already."""
        live = self._find(ref)
        if live.record.state.suspended:
            return False
        self._outcome(live, Op.CHECKPOINT, ref)
        if not live.record.config.checkpointable:
            raise InvalidArgument(f"container {live.record.name} cannot be suspended: it "
                                  "was not created with --checkpointable (HostConfig."
                                  "SteelcupCheckpointable), and only such a container's VM "
                                  "can be saved")
        if live.record.config.auto_remove:
            raise InvalidArgument(f"container {live.record.name} is removed when its run "
                                  "ends (--rm), which a suspend is: it cannot be suspended")
        cid = live.record.id
        async with live.busy:
            if live.record.state.suspended:
                return False
            self._outcome(live, Op.CHECKPOINT, ref)
            _, ports = self.resources.kept_network(cid)
            self._suspending.add(cid)
            try:
                await self._tell_suspend_watchers(cid)
                # What comes during the save goes to the wake listeners (a resume waits for
                # `busy`), not to a VM that is being saved and will be gone.
                await self.resources.unpublish(cid)
                try:
                    saved, machine, _, saved_s = await self._save_run(
                        live, checkpoints_module.SUSPEND_NAME, checkpoints_module.SUSPEND_DIR)
                except BaseException:
                    if live.machine is not None:  # it runs on (or its end detached it)
                        await self.resources.publish(cid)
                    raise
                self.resources.hold_ports(cid, ports)  # no one else takes them meanwhile
                with contextlib.suppress(OSError):  # only what wakes it on a connection is lost
                    await asyncio.to_thread(checkpoints_module.save_suspended_ports,
                                            self.container_dir(cid), ports)
                await self._end_saved_run(live, machine, manually_stopped=True, suspended=True)
            except BaseException:
                self._suspending.discard(cid)
                await self._tell_suspend_watchers(cid)  # their listeners go: it runs on
                raise
            self._suspending.discard(cid)
        self.publish_event(live.record, "suspend")
        log.info("container %s: suspended (%d bytes; VM saved in %.2f s)", live.record.id[:12],
                 saved.state_bytes, saved_s)
        return True

    def suspending(self, ref: str) -> bool:
        """Whether the container's VM is being saved for a suspend now."""
        return self._find(ref).record.id in self._suspending

    async def _tell_suspend_watchers(self, container_id: str) -> None:
        for watcher in self.suspend_watchers:
            try:
                await watcher(container_id)
            except (SteelcupError, OSError) as exc:  # its listeners are late, not the save
                log.warning("container %s: a suspend watcher failed: %s", container_id[:12],
                            exc)

    async def resume(self, ref: str) -> bool:
        """Run a suspended container's VM on from where `suspend` saved it. False if it was
        not suspended (running already, or stopped: `start` it). A suspend under way is
        waited for (a wake listener's connection may come during its save)."""
        live = self._find(ref)
        if not (live.record.state.suspended or live.record.id in self._suspending):
            return False
        cdir = self.container_dir(live.record.id)
        async with live.busy:
            if not live.record.state.suspended:
                return False
            saved = await asyncio.to_thread(checkpoints_module.load, cdir,
                                            checkpoints_module.SUSPEND_NAME,
                                            checkpoints_module.SUSPEND_DIR)
            self._outcome(live, Op.START, ref)
            self._cancel_restart(live)
            await self._start_locked(live, saved, checkpoints_module.SUSPEND_DIR)
            # Under `busy`: a suspend right after would write the state this would delete.
            await asyncio.to_thread(checkpoints_module.drop_suspended, cdir)
        self.publish_event(live.record, "resume")
        return True

    def suspended_ports(self, ref: str) -> builtins.list[PublishedPort]:
        """The ports a suspended container's run had published (empty if not suspended)."""
        live = self._find(ref)
        if not live.record.state.suspended:
            return []
        return checkpoints_module.suspended_ports(self.container_dir(live.record.id))

    def run_ports(self, ref: str) -> builtins.list[PublishedPort]:
        """The ports the running container's run publishes (or holds, while it is saved)."""
        return list(self.resources.kept_network(self._find(ref).record.id)[1])

    def run_taps(self, ref: str) -> tuple[str, ...]:
        """The host side of the running container's NICs (empty when it does not run)."""
        return self.resources.kept_network(self._find(ref).record.id)[0]

    async def resume_if_suspended(self, ref: str) -> None:
        """Before what needs the container's VM (exec, attach): a suspended one runs on."""
        if self._find(ref).record.state.suspended:
            await self.resume(ref)

    async def _end_suspension(self, live: _Live, action: str) -> None:
        """stop/kill of a suspended container: its saved VM is dropped, unresumed; the
        container is exited as of now."""
        async with live.busy:
            if not live.record.state.suspended:
                return
            self._save(live, live.record.with_state(suspended=False, manually_stopped=True,
                                                    finished_at=now_rfc3339()))
            live.exit_seq += 1  # the run its clients saw ends now (a waiter wakes)
            self.resources.drop_held_ports(live.record.id)
            await asyncio.to_thread(checkpoints_module.drop_suspended,
                                    self.container_dir(live.record.id))
        self.publish_event(live.record, action)
        self.publish_event(live.record, "die", exitCode=str(live.record.state.exit_code))
        await self._notify(live)

    async def _run_on(self, live: _Live, machine: Machine, process: GuestProcess) -> None:
        """After a checkpoint (made or failed): the VM runs again, its guest link and the
        main process's output relay anew. A VM that does not answer ends the run (255)."""
        try:
            await machine.reattach()
            with contextlib.suppress(SteelcupError):  # it stood still: only a clock behind
                await machine.guest.fixup(realtime_ns=time.time_ns())
            resumed = await machine.guest.resume(process.id, live.logged_bytes, process.spec,
                                                 pid=live.record.state.pid)
        except SteelcupError as exc:
            live.handing_over = False
            code = await self._end_run(
                live, machine, EXIT_CODE_DAEMON_LOST,
                f"the container's VM did not run on after its checkpoint: {exc}",
                vm_lost=True, cancelled=False)
            self.publish_event(live.record, "die", exitCode=str(code))
            return
        live.handing_over = False
        live.process = resumed
        live.fanout = Fanout()
        live.pump = asyncio.create_task(self._run(live, machine, resumed),
                                        name=f"pump-{live.record.id[:12]}")
        await self._save_record(live)

    def checkpoints(self, ref: str) -> builtins.list[checkpoints_module.Checkpoint]:
        """The container's checkpoints, oldest first."""
        live = self._find(ref)
        return checkpoints_module.list_all(self.container_dir(live.record.id))

    async def checkpoint_remove(self, ref: str, name: str) -> None:
        live = self._find(ref)
        await asyncio.to_thread(checkpoints_module.remove, self.container_dir(live.record.id),
                                name)

    # -- shutdown ----------------------------------------------------------------------------

    async def shutdown(self, live_restore: bool = False) -> builtins.list[str]:
        """Stop every VM (the daemon is going away); records say the containers exited. With
        `live_restore`, running containers are left running for the next daemon instead (those
        it can keep, docs/live-restore.md); returns their ids."""
        self._shutting_down = True
        self.disks.close()  # the spare layer disks' loop devices
        for live in list(self._containers.values()):
            self._cancel_restart(live)
        kept = []
        if live_restore:
            lives = list(self._containers.values())
            outcomes = await asyncio.gather(*(self._hand_over(lv) for lv in lives),
                                            return_exceptions=True)
            for live, outcome in zip(lives, outcomes, strict=True):
                if outcome is True:
                    kept.append(live.record.id)
                elif isinstance(outcome, BaseException):  # a bug: stop it as before
                    log.error("container %s: leaving it running failed (%r); stopping it",
                              live.record.id[:12], outcome)
        for live in list(self._containers.values()):
            if live.record.id in kept:
                continue
            if live.machine is not None and not live.record.config.pod_of:  # the sandbox's
                live.stopping = True
                with contextlib.suppress(Exception):
                    await live.machine.close()
        pumps = [lv.pump for lv in self._containers.values()
                 if lv.pump is not None and lv.record.id not in kept]
        pumps += [asyncio.ensure_future(vm.wait_closed()) for vm in self._vms_going]
        if pumps:
            await asyncio.wait(pumps, timeout=15)
        return kept

    async def _hand_over(self, live: _Live) -> bool:
        """Leave the container running for the next daemon: its VM is released (not stopped),
        its output relay ends after the last chunk it took reached the log, and a restore
        record says where to pick it up. False (nothing changed) for a container that cannot
        be kept: not running or paused, or its process has ended."""
        record = live.record
        machine, process = live.machine, live.process
        if record.config.pod_sandbox and any(
                lv.record.config.pod_of == record.id and lv.machine is not None
                for lv in self._containers.values()):
            return False  # its members could not be re-attached: the pod stops (live-restore.md)
        if (record.state.status not in (Status.RUNNING, Status.PAUSED) or machine is None
                or process is None
                or process.exit_status is not None
                or live.log_mark is None or live.pump is None or live.pump.done()):
            return False
        live.handing_over = True
        try:
            handle = await machine.release()
        except SteelcupError as exc:
            live.handing_over = False
            log.info("container %s: not kept running: %s", record.id[:12], exc)
            return False
        with contextlib.suppress(Exception):  # it ends once the released link is drained
            await asyncio.wait_for(asyncio.shield(live.pump), HAND_OVER_PUMP_WAIT_S)
        try:
            # Written again (as at the start): the VM's handle and network are the same, the
            # log is what the next daemon counts the output in.
            await self._write_record(live, handle, process, live.log_mark)
        except Exception as exc:  # the next daemon would not find it: do not leave it behind
            log.error("container %s: cannot write its restore record (%s); its VM is killed",
                      record.id[:12], exc)
            await self._kill_released(handle)
            return False
        log.info("container %s: left running (VM pid %d) for the next daemon", record.id[:12],
                 handle.pid)
        return True

    async def _save_record(self, live: _Live) -> None:
        """(Re)write the restore record of the container's current run (docs/live-restore.md):
        if the daemon is killed, the next one finds the VM and re-attaches it. A record that
        cannot be written is logged: the container runs on, and would not outlive a kill."""
        machine, process, mark = live.machine, live.process, live.log_mark
        if machine is None or process is None or mark is None:
            return
        handle = machine.handle()
        if handle is None:
            return
        try:
            await self._write_record(live, handle, process, mark)
        except (OSError, SteelcupError) as exc:
            log.error("container %s: cannot write its restore record (%s); it will not "
                      "survive a daemon killed outright", live.record.id[:12], exc)

    async def _write_record(self, live: _Live, handle: VmHandle, process: GuestProcess,
                            mark: restore_module.LogMark) -> None:
        record = live.record
        taps, ports = self.resources.kept_network(record.id)
        kept = restore_module.Kept(
            container_id=record.id, vm=handle, process_id=process.id, pid=record.state.pid,
            log_mark=mark, slot_dir=live.slot_dir, taps=taps, ports=ports,
            volumes=self.resources.kept_volumes(record.id))
        cdir = self.container_dir(record.id)
        await asyncio.to_thread(restore_module.save, cdir, kept)
        if live.process is not process and not live.handing_over:
            restore_module.forget(cdir)  # the run ended while it was written

    @staticmethod
    async def _kill_released(handle: VmHandle) -> None:
        with contextlib.suppress(ProcessLookupError):
            proc = QemuProcess.adopt(handle.pid, handle.started)
            proc.kill()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), REMOVE_KILL_WAIT_S)

    async def restore(self, kept: dict[str, restore_module.Kept], adopt: Adopter) -> None:
        """After `recover(kept)`: re-attach each container the previous daemon left running
        (its VM, main process, log, network); one whose VM is gone or does not answer is
        exited (255: its exit status is lost with it). Every restore record is consumed.
        `RESTORE_CONCURRENCY` at a time: each waits mostly on its guest's answers."""
        slots = asyncio.Semaphore(RESTORE_CONCURRENCY)

        async def one(container_id: str, entry: restore_module.Kept) -> None:
            async with slots:
                await self._restore_entry(container_id, entry, adopt)

        await asyncio.gather(*(one(cid, entry) for cid, entry in kept.items()))

    async def _restore_entry(self, container_id: str, entry: restore_module.Kept,
                             adopt: Adopter) -> None:
        live = self._containers.get(container_id)
        cdir = self.container_dir(container_id)
        if live is None or live.record.state.status not in (Status.RUNNING, Status.PAUSED):
            await self._kill_released(entry.vm)  # nobody's container now
            await self.resources.release_run(container_id)
            restore_module.forget(cdir)
            return
        try:
            await self._restore_one(live, entry, adopt)
        except (SteelcupError, OSError) as exc:
            log.warning("container %s: cannot re-attach it: %s", container_id[:12], exc)
            restore_module.forget(cdir)
            await self._restore_failed(live, entry, str(exc))
            return
        if not self.live_restore:  # this daemon stops it when it stops: nothing to find later
            restore_module.forget(cdir)

    async def _restore_one(self, live: _Live, entry: restore_module.Kept,
                           adopt: Adopter) -> None:
        record = live.record
        config = record.config
        if not entry.alive():
            raise VmLaunchError("its VM ended while no daemon ran")
        machine = adopt(entry.vm, self.container_dir(record.id) / "console.log")
        if entry.slot_dir:
            slot = Path(entry.slot_dir)
            machine.on_close(lambda: release_slot(slot))
        try:
            await machine.adopt(entry.vm)
            # The log is the truth about what output the host has: what the previous daemon
            # wrote before it stopped or was killed (the guest kept everything not credited,
            # and nothing is credited before it is in the log).
            logged, not_before_ns = await asyncio.to_thread(
                self._logged_output, record.id, entry.log_mark)
            spec = ProcessSpec(args=(record.path, *record.args), env=config.env,
                               cwd=config.working_dir, tty=config.tty, stdin=config.open_stdin,
                               main=True, caps=config.caps)
            process = await machine.guest.resume(entry.process_id, logged, spec, pid=entry.pid)
            if record.state.status is Status.PAUSED:
                await machine.pause()  # it ran for the re-attach (`Machine.adopt`)
        except BaseException:
            await machine.close()
            raise
        live.machine = machine
        live.process = process
        live.logged_bytes = logged
        live.log_last_ns = not_before_ns - 1
        live.log_mark = entry.log_mark if self.live_restore else None
        live.slot_dir = entry.slot_dir
        # Unknown to this daemon (the previous one may have had another --rootfs-cache):
        # treated as loose, and a guest too old for SYNC_ROOT has an uncached root.
        live.rootfs_cache = (RootfsCache.BLOCK if config.block_root
                             else RootfsCache.LOOSE if not config.pod_of else RootfsCache.NONE)
        live.stopping = False
        live.started_mono = time.monotonic()
        live.started.set()
        live.pump = asyncio.create_task(self._run(live, machine, process),
                                        name=f"pump-{record.id[:12]}")
        log.info("container %s: re-attached (VM pid %d, %d output bytes logged before)",
                 record.id[:12], entry.vm.pid, logged)

    def _logged_output(self, container_id: str,
                       mark: restore_module.LogMark) -> tuple[int, int]:
        """The main process's output bytes in the container's log, and the time stamp its
        writer must stay above; a line torn by a killed daemon is cut off first. Blocking."""
        path = self.log_path(container_id)
        logs_module.trim_torn_end(path)
        return mark.logged_bytes(path)

    async def _restore_failed(self, live: _Live, entry: restore_module.Kept, why: str) -> None:
        await self._kill_released(entry.vm)
        if entry.slot_dir:
            await asyncio.to_thread(release_slot, Path(entry.slot_dir))
        await self.resources.release_run(live.record.id)
        await asyncio.to_thread(rootfs_module.release, self.container_dir(live.record.id))
        self._apply(live, Op.DAEMON_LOST, pid=0, exit_code=EXIT_CODE_DAEMON_LOST,
                    error=f"live restore failed: {why}", finished_at=now_rfc3339())


# Log entries handed from the reading thread at a time (each at most a 64 KiB line).
LOG_BATCH_ENTRIES = 64


async def _batches_in_thread(
    entries: Iterator[logs_module.LogEntry],
) -> AsyncIterator[logs_module.LogEntry]:
    """Drive a blocking iterator in worker threads, one batch per hop."""
    def take() -> builtins.list[logs_module.LogEntry]:
        return builtins.list(itertools.islice(entries, LOG_BATCH_ENTRIES))

    try:
        while batch := await asyncio.to_thread(take):
            for entry in batch:
                yield entry
    finally:
        close = getattr(entries, "close", None)
        if close is not None:
            close()  # a generator left early closes its open file now


def _unbind_members_of(container_dir: Path) -> None:
    """Unbind every member root and mount still bound in a sandbox's share (none for other
    containers)."""
    podmounts.unbind_all(container_dir / POD_DIR)


def _check_restart_policy(config: ContainerConfig) -> None:
    if config.restart_policy not in RESTART_POLICIES:
        raise InvalidArgument(f"invalid restart policy: {config.restart_policy!r}")
    if config.restart_max_retries < 0:
        raise InvalidArgument("invalid restart policy: maximum retry count can't be negative")
    if config.restart_max_retries and config.restart_policy != "on-failure":
        raise InvalidArgument("invalid restart policy: maximum retry count can only be used "
                              "with 'on-failure'")
    if config.auto_remove and config.restart_policy != "no":
        raise InvalidArgument("can't create 'AutoRemove' container with restart policy")
