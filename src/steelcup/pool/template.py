"""The `template` VM source: boot one VM per template key, save it, restore clones from it.

A template boots once with its RAM in a file (`memory-backend-file,share=on`), shrinks to the
base size with its balloon, and saves its device state (QMP `migrate` with `x-ignore-shared`, so
the state file holds no RAM). Its QEMU then exits; the RAM file stays. A clone maps that file
copy-on-write (`share=off`) and restores with `-incoming`: every clone of a template shares the
kernel, initrd and init pages. The 9p rootfs device exists in the template but is mounted only
at SETUP_ROOT, so each clone's `-fsdev path=` is its container's rootfs; the control socket is
per clone too. At hand-out a clone gets its fix-ups (clock, RNG reseed, vCPUs) and its memory.

Devices a clone cannot add are provided by the template as slots the clone re-points:
- NICs: a template boots with `nic_slots` virtio-net devices on placeholder backends; a clone
  restores the same devices on the container's taps (the device state migrates; the backend is
  the clone's). With a tap host the placeholders are taps of the template's own, down and on
  no bridge, opened with vnet headers: the guest negotiates checksum and segmentation offloads
  (TSO/GSO) at boot, which a hub port cannot offer, and its clones keep them on their taps
  (clones need vnet-header taps then). Without one they are hub ports with no peer. The guest
  still has the template's MAC: NET_CONFIG gives the NIC, selected by IFNAME, the container's
  MAC. Templates are kept per NIC count, so a `--network none` container sees no NIC at all.
- Volumes: a template for containers with volumes has `volume_slots` spare 9p devices (tags
  v0..v{K-1}, the volume manager's tags) exported from an empty read-only dir and never
  mounted; a clone exports each volume's dir under its tag and the rest from the empty dir.
  Containers without volumes come from a template without them (each costs a clone memory).
Requests with more NICs or other share tags than there are slots boot directly.

The template key includes the tenant: template memory is never shared across tenants.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from steelcup.errors import SteelcupError, VmLaunchError
from steelcup.idmap import IdRange, IdsFor, host_root
from steelcup.net import links
from steelcup.pool.direct import KeepConsoleMachine
from steelcup.pool.integrity import Fingerprint, content_digest, fingerprint
from steelcup.pool.source import Incompatible, VmRequest
from steelcup.vm.assets import GuestAssets
from steelcup.vm.cgroup import MemoryCgroups, VmCgroup
from steelcup.vm.machine import Machine
from steelcup.vm.qemu_args import NicSpec, Share, VmSpec

log = logging.getLogger(__name__)

ROOTFS_TAG = "rootfs"
VOLUME_TAG_PREFIX = "v"  # steelcup.volume.manager.SHARE_TAG_PREFIX (volumes get v0, v1, ...)
DEFAULT_VOLUME_SLOTS = 2
DEFAULT_NIC_SLOTS = 1


def template_mac(i: int) -> str:
    """The placeholder MAC of a template's NIC i (locally administered; clones get theirs from
    NET_CONFIG)."""
    return f"02:5c:00:00:00:{i:02x}"


def volume_tag(i: int) -> str:
    return f"{VOLUME_TAG_PREFIX}{i}"


TEMPLATE_TAP_PREFIX = "scp"  # + the daemon's tap tag + 7 hex of the template's dir + NIC index


TAP_TAG_DIGITS = 3


def tap_tag(run_dir: Path) -> str:
    """3 hex naming the daemon (by its VM run dir, one per state root) in the persistent taps
    its pool makes: its start-up sweep of leftovers deletes its own, never the taps of another
    daemon's running VMs in the same network namespace (a deleted tap leaves its QEMU spinning
    on a dead fd). The hash's: the tag a daemon with taps claims (`taptags.claim`) unless
    another run dir holds it."""
    return hashlib.sha256(str(run_dir).encode()).hexdigest()[:TAP_TAG_DIGITS]


def template_tap(tag: str, directory: Path, i: int) -> str:
    """The placeholder tap of NIC i of the template built in `directory` by the daemon tagged
    `tag` (unique per build: two daemons sharing a network namespace never pick the same
    name)."""
    token = hashlib.sha256(str(directory).encode()).hexdigest()[:7]
    return f"{TEMPLATE_TAP_PREFIX}{tag}{token}{i}"
TEMPLATE_BOOT_DEADLINE_S = 30.0
CLONE_DEADLINE_S = 10.0
BALLOON_DEADLINE_S = 20.0
ENTROPY_BYTES = 64
MIN_MEM_MIB = 64
BASE_STEP_MIB = 64  # templates for clones below the default base come in these steps
MIB = 1 << 20


@dataclass(frozen=True)
class TemplateKey:
    """What makes two VMs clonable from the same template."""

    kernel: Path
    initrd: Path
    accel: str
    tcg_tb_mib: int
    base_mem_mib: int  # what a clone has before resizing (the balloon holds the rest)
    max_mem_mib: int  # the template's RAM size: the most a clone can grow to
    max_cpus: int
    tenant: str
    nic_slots: int = 0  # NICs (placeholder-backed in the template, taps in clones)
    # The tenant's user namespace: its template's RAM file is its QEMU's, no other's.
    volume_slots: int = 0  # spare 9p devices v0..v{K-1}
    ids: IdRange | None = None
    grows: bool = False  # its balloon deflates when the guest runs out of memory
    # Its NICs negotiated offloads on vnet-header taps (its clones' taps need vnet headers).
    offloads: bool = False
    # It has a read-only root disk on the placeholder (--rootfs-cache block): its clones get
    # the image's erofs there (`Machine.replace_root_disk`, or on their command line).
    root_disk: bool = False

    def digest(self) -> str:
        return hashlib.sha256(repr(self).encode()).hexdigest()[:16]


@dataclass
class Template:
    key: TemplateKey
    directory: Path
    boot_s: float = 0.0
    clones: int = 0
    failures: int = 0
    created_at: float = field(default_factory=time.time)
    # The RAM file as saved (pool/integrity.py): clones are made only while it still matches.
    saved: Fingerprint | None = None
    digest: str = ""

    @property
    def mem_file(self) -> Path:
        return self.directory / "ram"

    @property
    def state_file(self) -> Path:
        return self.directory / "state"

    @property
    def empty_dir(self) -> Path:
        """Exported by every 9p slot a VM does not use (never mounted by the guest)."""
        return self.directory / "empty"


@dataclass(frozen=True)
class TemplateStatus:
    tenant: str
    base_mem_mib: int
    max_mem_mib: int
    max_cpus: int
    nic_slots: int
    volume_slots: int
    clones: int
    failures: int
    boot_s: float
    ram_file_mib: float  # allocated blocks of the RAM file (what all clones share)


class TemplateSource:
    """Clones VMs from per-key templates; builds a template on first use (one at a time)."""

    def __init__(
        self,
        *,
        assets: GuestAssets,
        accel: str,
        tcg_tb_mib: int,
        run_dir: Path,
        template_dir: Path,
        base_mem_mib: int = 256,
        max_mem_mib: int = 1024,
        max_cpus: int = 2,
        max_nics: int = DEFAULT_NIC_SLOTS,
        volume_slots: int = DEFAULT_VOLUME_SLOTS,
        cgroups: MemoryCgroups | None = None,
        ids_for: IdsFor = host_root,
        tenant_base_mib: Callable[[str], int] | None = None,
        outlive_daemon: bool = False,
        tap_host: links.Host | None = None,
        tag: str = "",
    ) -> None:
        if not 64 <= base_mem_mib <= max_mem_mib:
            raise ValueError("need 64 <= base_mem_mib <= max_mem_mib")
        self.assets = assets
        self.accel = accel
        self.tcg_tb_mib = tcg_tb_mib
        self.run_dir = run_dir
        # in the taps of its templates and its cache's spares (the factory claims it)
        self.tap_tag = tag or tap_tag(run_dir)
        self.template_dir = template_dir
        self.base_mem_mib = base_mem_mib
        self.max_mem_mib = max_mem_mib
        self.max_cpus = max(1, max_cpus)
        self.max_nics = max(0, max_nics)
        self.volume_slots = max(0, volume_slots)
        # Where the templates' placeholder taps are made (None: hub ports, no offloads).
        self.tap_host = tap_host
        # Each template and clone runs in a memory cgroup limited to its size (None: no limit).
        self.cgroups = cgroups
        # Each tenant's QEMUs run in its user namespace (steelcup.idmap); None: host root.
        self.ids_for = ids_for
        # A tenant's default size (its size class's memory): its clones start there, so its
        # usual container needs no resize at hand-out. None: every tenant's is base_mem_mib.
        self.tenant_base_mib = tenant_base_mib
        # Live restore: clones survive the daemon (templates do not: they are rebuilt).
        self.outlive_daemon = outlive_daemon
        # The empty file every template's root disk is on (--rootfs-cache block; the daemon
        # sets it, image/erofs.py); None: templates have no root disk.
        self.placeholder: Path | None = None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.template_dir.mkdir(parents=True, exist_ok=True)
        self._templates: dict[TemplateKey, Template] = {}
        self._locks: dict[TemplateKey, asyncio.Lock] = {}
        self._closed = False

    def base_of(self, tenant: str) -> int:
        """The base size of `tenant`'s clones: its default size (a multiple of 64 MiB within
        the template's RAM), or the daemon's base."""
        if self.tenant_base_mib is None or not tenant:
            return self.base_mem_mib
        wanted = self.tenant_base_mib(tenant) // BASE_STEP_MIB * BASE_STEP_MIB
        return min(self.max_mem_mib, max(MIN_MEM_MIB, wanted))

    def base_for(self, mem_mib: int, tenant: str = "") -> int:
        """The base size of the template that serves a `mem_mib` clone of `tenant`: its base
        (`base_of`), or for a smaller clone the next multiple of 64 MiB below its size. A
        clone only ever
        grows from its base (deflates its balloon): inflating one at hand-out would cost its
        start the balloon's time under TCG (the pages' discard itself is safe: the clone's
        seccomp filter keeps it off the template's file, vm/seccomp.py)."""
        base = self.base_of(tenant)
        if mem_mib >= base:
            return base
        return max(MIN_MEM_MIB, mem_mib // BASE_STEP_MIB * BASE_STEP_MIB)

    def key_for(self, request: VmRequest) -> TemplateKey:
        return TemplateKey(
            kernel=self.assets.kernel,
            initrd=self.assets.initrd,
            accel=self.accel,
            tcg_tb_mib=self.tcg_tb_mib,
            base_mem_mib=self.base_for(request.mem_mib, request.tenant),
            max_mem_mib=self.max_mem_mib,
            # A running VM's vCPUs are fixed (`update --cpus` applies at the next start), so
            # a one-vCPU container comes from a template with no offline vCPUs: each present
            # one cost an idle clone ~0.4 MiB of QEMU memory (docs/benchmarks.md, issue 19).
            max_cpus=1 if request.cpus <= 1 else self.max_cpus,
            tenant=request.tenant,
            nic_slots=len(request.nics),
            ids=self.ids_for(request.tenant),
            # Each spare 9p device costs a clone ~1.1 MiB of QEMU memory: containers without
            # volumes come from a template without the slots.
            volume_slots=self.volume_slots if len(request.shares) > 1 else 0,
            grows=request.grows,
            offloads=self.tap_host is not None and bool(request.nics),
            root_disk=self.placeholder is not None,
        )

    def check(self, request: VmRequest) -> None:
        """Incompatible unless a clone can serve `request`."""
        if request.mem_mib > self.max_mem_mib or request.mem_mib < MIN_MEM_MIB:
            raise Incompatible(f"memory {request.mem_mib} MiB outside {MIN_MEM_MIB}.."
                               f"{self.max_mem_mib}")
        if request.cpus > self.max_cpus:
            raise Incompatible(f"{request.cpus} vCPUs over the template's {self.max_cpus}")
        tags = [s.tag for s in request.shares]
        if tags[:1] != [ROOTFS_TAG]:
            raise Incompatible("a clone's first 9p device is the rootfs")
        slots = {volume_tag(i) for i in range(self.volume_slots)}
        if not set(tags[1:]) <= slots or len(set(tags)) != len(tags):
            raise Incompatible(f"share tags {tags[1:]} are not a subset of the template's "
                               f"volume slots {sorted(slots)}")
        if len(request.nics) > self.max_nics:
            raise Incompatible(f"{len(request.nics)} NICs over the template's {self.max_nics}")
        if request.extra_args:
            raise Incompatible("raw QEMU arguments cannot be added to a clone")
        if request.root_disk is not None and self.placeholder is None:
            raise Incompatible("the templates have no root disk (--rootfs-cache block)")

    def status(self) -> list[TemplateStatus]:
        out = []
        for t in self._templates.values():
            try:
                blocks_mib = os.stat(t.mem_file).st_blocks * 512 / MIB
            except OSError:
                blocks_mib = 0.0
            out.append(
                TemplateStatus(
                    tenant=t.key.tenant,
                    base_mem_mib=t.key.base_mem_mib,
                    max_mem_mib=t.key.max_mem_mib,
                    max_cpus=t.key.max_cpus,
                    nic_slots=t.key.nic_slots,
                    volume_slots=t.key.volume_slots,
                    clones=t.clones,
                    failures=t.failures,
                    boot_s=round(t.boot_s, 3),
                    ram_file_mib=round(blocks_mib, 1),
                )
            )
        return out

    # -- templates --
    def _base_spec(self, key: TemplateKey, state_dir: Path, t: Template,
                   request: VmRequest | None = None) -> VmSpec:
        """The template's VM, or with `request` a clone of it: same devices in the same order,
        the clone's rootfs, volume dirs and taps behind them."""
        given = {s.tag: s for s in request.shares} if request is not None else {}
        rootfs = given.get(ROOTFS_TAG, Share(ROOTFS_TAG, t.empty_dir, readonly=True))
        shares = [rootfs]
        for i in range(key.volume_slots):
            tag = volume_tag(i)
            shares.append(given.get(tag, Share(tag, t.empty_dir, readonly=True)))
        if request is not None:
            taps = [n.tap for n in request.nics]
        elif key.offloads:
            taps = [template_tap(self.tap_tag, t.directory, i) for i in range(key.nic_slots)]
        else:
            taps = []
        nics = tuple(
            NicSpec(taps[i] if i < len(taps) else "", template_mac(i))
            for i in range(key.nic_slots)
        )
        return VmSpec(
            kernel=key.kernel,
            initrd=key.initrd,
            state_dir=state_dir,
            mem_mib=key.max_mem_mib,
            cpus=1,
            max_cpus=key.max_cpus,
            balloon=True,
            balloon_grows=key.grows,
            accel=key.accel,
            tcg_tb_mib=key.tcg_tb_mib,
            mem_path=t.mem_file,
            shares=tuple(shares),
            nics=nics,
            nic_vnet_hdr=key.offloads,
            # Debian kernels zero every page they allocate (init_on_alloc=1): inflating the
            # balloon would then write the template's whole RAM file, and under TCG each
            # zeroed page costs. Clones run one container each; the zeroing buys little.
            cmdline_extra=("init_on_alloc=0",),
            ids=key.ids,
            root_disk=self._root_disk(key, request),
        )

    def _root_disk(self, key: TemplateKey, request: VmRequest | None) -> Path | None:
        """A template's root disk file: the placeholder, or for a clone the request's image
        (a pooled clone has none yet: it gets the image at hand-out)."""
        if not key.root_disk:
            return None
        if request is not None and request.root_disk is not None:
            return request.root_disk
        return self.placeholder  # set whenever a key has a root disk (key_for)

    def _cgroup(self, name: str) -> VmCgroup | None:
        return self.cgroups.vm(name) if self.cgroups is not None else None

    async def template(self, key: TemplateKey) -> Template:
        """The template for `key`, booting and saving it first if there is none."""
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            found = self._templates.get(key)
            if found is not None:
                return found
            built = await self._build(key)
            self._templates[key] = built
            return built

    async def _build(self, key: TemplateKey) -> Template:
        if self._closed:
            raise SteelcupError("template source is closed")
        # Short names: the VM's sockets live below and unix socket paths are limited.
        directory = Path(tempfile.mkdtemp(prefix=f"{key.digest()[:8]}-", dir=self.template_dir))
        t = Template(key, directory)
        t.empty_dir.mkdir()
        spec = self._base_spec(key, directory / "v", t)
        spec = replace(spec, mem_shared=True)
        # Limited to the base size like its clones: what it writes before the balloon is up
        # (kernel, initrd, the page array of max_mem) is a fraction of that.
        machine = Machine(spec, cgroup=self._cgroup(f"t-{directory.name}"),
                          limit_mib=key.base_mem_mib)
        taps = [n.tap for n in spec.nics if n.tap]
        started = time.monotonic()
        try:
            for tap in taps:
                assert self.tap_host is not None  # key.offloads needs one
                await asyncio.to_thread(links.create_tap, self.tap_host, tap)
            await machine.start(TEMPLATE_BOOT_DEADLINE_S)
            if key.base_mem_mib < key.max_mem_mib:
                await set_balloon(machine, key.base_mem_mib, BALLOON_DEADLINE_S)
            await machine.save_state(t.state_file)
        except BaseException:
            await machine.close()
            await self._delete_taps(taps)
            shutil.rmtree(directory, ignore_errors=True)
            raise
        await machine.close()
        await self._delete_taps(taps)
        for path in (t.mem_file, t.state_file):
            path.chmod(0o400)  # nothing writes them again (clones map the RAM copy-on-write)
        t.digest = await asyncio.to_thread(content_digest, t.mem_file)
        t.saved = fingerprint(t.mem_file)
        t.boot_s = time.monotonic() - started
        log.info("template %s (tenant %r) ready in %.2fs", key.digest(), key.tenant, t.boot_s)
        return t

    async def _delete_taps(self, taps: list[str]) -> None:
        if self.tap_host is None:
            return
        for tap in taps:
            try:
                await asyncio.to_thread(links.delete_link, self.tap_host, tap)
            except links.LinkError as exc:
                log.warning("template tap %s not deleted: %s", tap, exc)

    def _unchanged(self, t: Template) -> bool:
        """Whether the template's RAM file is the one it saved (one stat)."""
        try:
            now: Fingerprint | None = fingerprint(t.mem_file)
        except OSError:
            now = None
        if now == t.saved:
            return True
        log.error("template %s (tenant %r): its RAM file changed since it was saved (%s, now "
                  "%s); discarding it and booting a new one", t.key.digest(), t.key.tenant,
                  t.saved, now)
        return False

    async def _content_intact(self, t: Template) -> bool:
        """Whether the RAM file's data is still what was saved (reads its data extents)."""
        try:
            digest = await asyncio.to_thread(content_digest, t.mem_file)
        except OSError as exc:
            log.error("template %s: cannot read its RAM file (%s)", t.key.digest(), exc)
            return False
        if digest == t.digest and self._unchanged(t):
            return True
        log.error("template %s (tenant %r): RAM file content changed (sha256 %s, saved %s); "
                  "discarding it", t.key.digest(), t.key.tenant, digest[:16], t.digest[:16])
        return False

    async def verify(self) -> list[str]:
        """Check every template's RAM file content; discard the changed ones. Returns their
        digests (key digests), for the caller's log or test."""
        bad = []
        for t in list(self._templates.values()):
            if not await self._content_intact(t):
                bad.append(t.key.digest())
                await self._discard(t)
        return bad

    async def _discard(self, t: Template) -> None:
        lock = self._locks.setdefault(t.key, asyncio.Lock())
        async with lock:
            if self._templates.get(t.key) is t:
                del self._templates[t.key]
        # Running clones keep their mapping of the unlinked RAM file.
        shutil.rmtree(t.directory, ignore_errors=True)

    # -- clones --
    async def acquire(self, request: VmRequest) -> Machine:
        self.check(request)
        machine = await self.clone(request)
        try:
            await self.hand_out(machine, request)
        except BaseException:
            await machine.close()
            raise
        return machine

    async def clone(self, request: VmRequest, *, nice: int = 0) -> Machine:
        """A restored clone at the base size (not yet fixed up), its QEMU at priority `nice`. A
        clone that fails to restore is discarded; after two failures in a row the template is
        rebuilt on next use."""
        key = self.key_for(request)
        t = await self.template(key)
        if not self._unchanged(t):
            await self._discard(t)
            t = await self.template(key)
        state_dir = Path(tempfile.mkdtemp(prefix=(request.name or "clone")[:12] + "-",
                                          dir=self.run_dir))
        spec = self._base_spec(key, state_dir, t, request)
        spec = replace(spec, incoming=t.state_file)
        # Limited to the base size (its balloon holds the rest) until hand-out raises it.
        machine = KeepConsoleMachine(spec, keep_console_at=request.console_log, boot_attempts=1,
                                     nice=nice, cgroup=self._cgroup(state_dir.name),
                                     limit_mib=key.base_mem_mib,
                                     outlive_daemon=self.outlive_daemon)
        try:
            await machine.start(CLONE_DEADLINE_S)
        except BaseException as exc:
            await machine.close()
            if isinstance(exc, VmLaunchError):
                t.failures += 1
                log.warning("clone of template %s failed to restore: %s", key.digest(),
                            str(exc).splitlines()[0])
                if t.failures >= 2 or not await self._content_intact(t):
                    await self._discard(t)
            raise
        t.failures = 0
        t.clones += 1
        return machine

    async def hand_out(self, machine: Machine, request: VmRequest) -> None:
        """Fix-ups a clone needs before it runs anything: clock, RNG, vCPUs, memory. Refused
        (VmLaunchError) for a clone whose template was discarded or changed since: a ready VM
        restored earlier still maps that file."""
        t = next((t for t in self._templates.values() if t.mem_file == machine.spec.mem_path),
                 None)
        if t is None or not self._unchanged(t):
            if t is not None:
                await self._discard(t)
            raise VmLaunchError("the VM's template is gone or its RAM file changed",
                                argv=machine.argv)
        await machine.guest.fixup(
            realtime_ns=time.time_ns(), entropy=os.urandom(ENTROPY_BYTES), cpus=request.cpus
        )
        if request.mem_mib < t.key.base_mem_mib:
            raise Incompatible(f"a clone of a {t.key.base_mem_mib} MiB template cannot shrink "
                               f"to {request.mem_mib} MiB")
        if request.grows:
            # It starts at its size and takes memory back from its balloon when it runs out:
            # the host limit is the template's RAM.
            machine.set_memory_limit(t.key.max_mem_mib)
            if request.mem_mib != t.key.base_mem_mib:
                await set_balloon(machine, request.mem_mib, BALLOON_DEADLINE_S)
        elif request.mem_mib != t.key.base_mem_mib:
            # The host limit first: the guest may take all of `mem_mib` as soon as the balloon
            # lets go of it.
            machine.set_memory_limit(request.mem_mib)
            await set_balloon(machine, request.mem_mib, BALLOON_DEADLINE_S)

    async def close(self) -> None:
        """Forget every template and delete its files (running clones are unaffected)."""
        self._closed = True
        for t in list(self._templates.values()):
            await self._discard(t)
        shutil.rmtree(self.template_dir, ignore_errors=True)


async def set_balloon(machine: Machine, mem_mib: int, deadline_s: float) -> None:
    """Resize the guest to `mem_mib` with its balloon and wait until the guest has done it."""
    target = mem_mib * MIB
    try:
        await machine.qmp("balloon", {"value": target})
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline_s
        while True:
            actual = int((await machine.qmp("query-balloon"))["actual"])
            if actual == target:
                return
            if loop.time() > end:
                raise VmLaunchError(
                    f"balloon did not reach {mem_mib} MiB in {deadline_s}s "
                    f"(at {actual // MIB} MiB)", argv=machine.argv,
                )
            # Polled over the VM's QMP session (a round trip, no reconnect): QEMU throttles
            # BALLOON_CHANGE events to one a second, which would add up to a second here.
            await asyncio.sleep(0.005)
    except SteelcupError as exc:
        if isinstance(exc, VmLaunchError):
            raise
        raise VmLaunchError(f"resizing memory to {mem_mib} MiB failed: {exc}",
                            argv=machine.argv) from exc
