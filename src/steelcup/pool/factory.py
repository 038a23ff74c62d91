"""The VM factory: pooled sources first, a fresh boot (`direct`) when they cannot serve.

`build_factory` stacks the sources from the daemon's options: the warm cache of ready clones
(cache.py), then a template clone made for the request, then a direct boot. Each step passes the
request on when it cannot serve it (no ready VM, volumes for the cache; size over the template's
maximum, more NICs or volumes than it has slots for a clone) or when its VM fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from steelcup import sysmount
from steelcup.errors import SteelcupError
from steelcup.guest.protocol import RootfsCache
from steelcup.idmap import IdsFor, host_root
from steelcup.net import links
from steelcup.net.links import Host
from steelcup.pool import taptags
from steelcup.pool.cache import CacheClass, CacheSource, CacheStatus
from steelcup.pool.direct import DirectSource
from steelcup.pool.source import Incompatible, VmRequest
from steelcup.pool.template import TemplateSource, TemplateStatus
from steelcup.vm.assets import GuestAssets
from steelcup.vm.cgroup import MemoryCgroups
from steelcup.vm.machine import Machine
from steelcup.vm.saved import SavedVm

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolOptions:
    """Daemon settings of the VM factory."""

    templates: bool = True
    base_mem_mib: int = 256  # a clone's size before resizing
    max_mem_mib: int = 2048  # the most a clone can be resized to (template RAM)
    max_cpus: int = 4  # the most vCPUs a clone has (`--cpus`; one-vCPU clones have one present)
    max_nics: int = 1  # NICs a clone can have (templates are kept per NIC count 0..max_nics)
    volume_slots: int = 2  # spare 9p devices per template: volumes a clone can have
    cache_size: int = 0  # ready (restored, warmed) VMs kept per class; 0 = no warm cache
    # How ready VMs stage their rootfs share: the cache mode most containers' roots get (a
    # SETUP_ROOT that asks for another one has the guest mount the share afresh: ~5 ms).
    stage_cache: RootfsCache = RootfsCache.NONE


@dataclass(frozen=True)
class FactoryStatus:
    accel: str
    templates_enabled: bool
    templates: tuple[TemplateStatus, ...]
    cache_size: int
    cache: tuple[CacheStatus, ...]
    cache_hits: int
    clones: int
    direct_boots: int
    fallbacks: int


class Factory:
    """`acquire` from the warm cache, else a new template clone, else a direct boot."""

    def __init__(
        self,
        *,
        direct: DirectSource,
        template: TemplateSource | None,
        cache: CacheSource | None = None,
        tap_host: Host | None = None,
    ) -> None:
        self.direct = direct
        self.template = template
        self.cache = cache
        self.tap_host = tap_host  # where the taps of `VmRequest.tap_places` are made
        self.cache_hits = 0
        self.clones = 0
        self.direct_boots = 0
        self.fallbacks = 0
        # Told each VM start: source (cache, clone, direct), seconds, whether it worked
        # (steelcup.metrics); a failed clone is followed by the direct boot that replaces it.
        self.observe: Callable[[str, float, bool], None] = lambda _s, _t, _ok: None

    async def acquire(self, request: VmRequest) -> Machine:
        began = time.monotonic()
        if self.cache is not None:
            try:
                machine = await self.cache.acquire(request)
                self.cache_hits += 1
                self.observe("cache", time.monotonic() - began, True)
                return machine
            except SteelcupError as exc:  # Incompatible, or nothing ready
                log.debug("no ready VM for %s: %s", request.name, exc)
        await self._make_taps(request)
        if self.template is not None:
            try:
                machine = await self.template.acquire(request)
                self.clones += 1
                self.observe("clone", time.monotonic() - began, True)
                return machine
            except Incompatible as exc:
                log.debug("direct boot for %s: %s", request.name, exc)
            except SteelcupError as exc:
                # A clone or template that cannot start (VmLaunchError, or e.g. a run dir too
                # deep for its sockets) is not the request's fault: boot it directly.
                self.fallbacks += 1
                self.observe("clone", time.monotonic() - began, False)
                log.warning("clone for %s failed (%s); booting directly", request.name,
                            str(exc).splitlines()[0])
        try:
            machine = await self.direct.acquire(request)
        except SteelcupError:
            self.observe("direct", time.monotonic() - began, False)
            raise
        self.direct_boots += 1
        self.observe("direct", time.monotonic() - began, True)
        return machine

    async def restore(self, request: VmRequest, saved: SavedVm, stream: Path) -> Machine:
        """A VM restored from a container checkpoint (always a fresh QEMU: `direct`), its taps
        made where the network layer planned them."""
        await self._make_taps(request)
        return await self.direct.restore(request, saved, stream)

    async def _make_taps(self, request: VmRequest) -> None:
        """The request's taps where the network layer planned them: a clone or a fresh boot
        opens them by name (a ready VM brought its own)."""
        if not request.tap_places:
            return
        if self.tap_host is None:
            raise SteelcupError("taps were planned but this pool has no network host")
        for nic, place in zip(request.nics, request.tap_places, strict=True):
            await asyncio.to_thread(links.ensure_tap, self.tap_host, nic.tap, place.bridge,
                                    place.mtu, place.address)

    async def prewarm(self, nic_slots: Sequence[int] = (0,), grows: bool = False) -> None:
        """Build the default tenant's templates now, then fill its warm cache, so the first
        `run` already gets a ready VM (`grows`: the daemon's default memory grows on demand,
        VmRequest.grows)."""
        if self.template is None:
            return
        base = self.template.key_for(VmRequest(mem_mib=self.template.base_mem_mib, cpus=1,
                                               grows=grows))
        for slots in nic_slots:
            try:
                await self.template.template(replace(base, nic_slots=slots))
            except SteelcupError as exc:
                log.warning("template prewarm failed (%s); runs will build it on demand",
                            str(exc).splitlines()[0])
        if self.cache is not None:
            await self.cache.fill([CacheClass("", slots, grows) for slots in nic_slots])
        # Then the templates of containers with volumes (a first `-v` run need not wait).
        if self.template.volume_slots:
            for slots in nic_slots:
                with contextlib.suppress(SteelcupError):
                    await self.template.template(
                        replace(base, nic_slots=slots, volume_slots=self.template.volume_slots))

    def status(self) -> FactoryStatus:
        return FactoryStatus(
            accel=self.direct.accel,
            templates_enabled=self.template is not None,
            templates=tuple(self.template.status()) if self.template is not None else (),
            cache_size=self.cache.size if self.cache is not None else 0,
            cache=tuple(self.cache.status()) if self.cache is not None else (),
            cache_hits=self.cache_hits,
            clones=self.clones,
            direct_boots=self.direct_boots,
            fallbacks=self.fallbacks,
        )

    async def close(self) -> None:
        if self.cache is not None:
            await self.cache.close()
        if self.template is not None:
            await self.template.close()
        await self.direct.close()
        with contextlib.suppress(OSError):
            self.direct.run_dir.rmdir()  # empty now unless VMs handed out still run


def reset_run_dir(run_dir: Path, keep: Collection[Path] = ()) -> None:
    """Empty the VM run dir a previous daemon on this root left behind (it owned it alone): a
    crash leaves sockets, state dirs and ready VMs' slot binds there (and, for a factory whose
    templates live in it, their RAM files). `keep`: the state dirs and slots of VMs that
    outlived that daemon (live restore) stay, with the mounts below them; a template RAM file
    their clones map is only unlinked."""
    kept = [Path(k) for k in keep]

    def holds_kept(path: Path) -> bool:  # is, is below or is above something kept
        return any(path == k or k in path.parents or path in k.parents for k in kept)

    for point in sysmount.mounts_under(run_dir):
        if holds_kept(point):
            continue
        with contextlib.suppress(OSError):
            sysmount.umount(point, sysmount.MNT_DETACH)
    if not run_dir.exists():
        return
    if not kept:
        if not sysmount.mounts_under(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)
        return
    _remove_except(run_dir, kept)


def _remove_except(directory: Path, kept: list[Path]) -> None:
    for child in directory.iterdir():
        if child in kept:
            continue
        if any(child in k.parents for k in kept):
            _remove_except(child, kept)
        elif child.is_dir() and not child.is_symlink():
            if not sysmount.mounts_under(child):  # never through a mount still there
                shutil.rmtree(child, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                child.unlink()


def reset_template_dir(template_dir: Path) -> None:
    """Delete the templates a previous daemon left (a crash leaves their RAM files; templates
    are built anew by each daemon). A clone that outlived that daemon keeps its template's
    RAM through its mapping: the file is only unlinked."""
    shutil.rmtree(template_dir, ignore_errors=True)


def build_factory(
    *,
    assets: GuestAssets,
    accel: str,
    tcg_tb_mib: int,
    run_dir: Path,
    options: PoolOptions,
    warm_program: Path | None = None,
    tap_host: Host | None = None,
    cgroups: MemoryCgroups | None = None,
    ids_for: IdsFor = host_root,
    tenant_base_mib: Callable[[str], int] | None = None,
    outlive_daemon: bool = False,
    template_dir: Path | None = None,
) -> Factory:
    """The sources `options` ask for. `warm_program`: a static program ready VMs run once
    (the guest init binary); `tap_host`: where the network layer's taps live (None: no
    networking, the cache serves only NIC-less VMs); `cgroups`: where each VM's memory limit
    is enforced (None: nowhere, the guest's balloon driver is trusted); `ids`: the user
    namespace each tenant's QEMUs run in (None: QEMU runs as host root); `template_dir`:
    where templates keep their RAM files (the daemon's is on its state root, a disk
    filesystem: docs/architecture.md; None: `run_dir`/t)."""
    direct = DirectSource(assets=assets, accel=accel, tcg_tb_mib=tcg_tb_mib, run_dir=run_dir,
                          cgroups=cgroups, ids_for=ids_for, outlive_daemon=outlive_daemon)
    template = None
    if options.templates:
        # A daemon with taps claims its tag among the run dirs beside its own (pool/taptags.py)
        tag = taptags.claim(run_dir) if tap_host is not None else ""
        template = TemplateSource(
            assets=assets,
            accel=accel,
            tcg_tb_mib=tcg_tb_mib,
            run_dir=run_dir,
            template_dir=template_dir if template_dir is not None else run_dir / "t",
            base_mem_mib=options.base_mem_mib,
            max_mem_mib=max(options.base_mem_mib, options.max_mem_mib),
            max_cpus=options.max_cpus,
            max_nics=options.max_nics,
            volume_slots=options.volume_slots,
            cgroups=cgroups,
            ids_for=ids_for,
            tenant_base_mib=tenant_base_mib,
            outlive_daemon=outlive_daemon,
            tap_host=tap_host,
            tag=tag,
        )
    cache = None
    if template is not None and options.cache_size > 0:
        cache = CacheSource(template, size=options.cache_size, slot_dir=run_dir / "s",
                            warm_program=warm_program, tap_host=tap_host,
                            stage_cache=options.stage_cache)
    return Factory(direct=direct, template=template, cache=cache, tap_host=tap_host)
