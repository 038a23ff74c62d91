"""The `cache` VM source: template clones restored, staged and warmed before anyone asks.

Per class (tenant, NIC count) the cache keeps `size` ready VMs and refills in the background,
one VM at a time, 0.5 s after a hand-out and at a lower CPU priority (nice 10 until hand-out),
so that refills do not starve running containers. A ready VM is a
template clone (template.py) whose
- rootfs 9p device exports an empty slot (slots.py), staged in the guest (STAGE_ROOT);
- NICs sit on taps of its own (made by the cache, owned by QEMU's uid), on no bridge;
- guest has run the warm-up program once from the slot share. Under TCG every clone starts with
  an empty translation cache, so the first SETUP_ROOT and exec in a clone pay for translating
  the guest kernel's mount, exec, page-fault and 9p paths: measured 320 ms cold vs 120 ms
  after the warm-up (docs/benchmarks.md);
- guest has rehearsed each NIC's NET_CONFIG (an address of TEST-NET-1, its gateway, the
  announcement; then down without it), for the same reason: the container's NET_CONFIG
  took ~19 ms cold and ~2.5 ms once the path had run;
- guest has rehearsed the hand-out's FIXUP (clock, entropy, one vCPU: what a ready VM has):
  the hand-out's own took 4-6 ms cold and ~0.5 ms once the path had run (the entropy it mixes
  in then is fresh, so clones still never share random output);
- when its tenant's last container had a block root (an image's erofs on the root disk): the
  disk has that image and the guest has mounted it and read the image's hot files (the ones
  the host's page cache holds: what containers of the image read, `erofs.ErofsImages
  .hot_paths`), so a container of that image finds them in the guest's caches: a first
  `python3 -c pass` took 0.54 s against 0.66 s in an unstaged VM (docs/benchmarks.md).

Hand-out (`acquire`): take a ready VM of the request's class (never another tenant's: the class
includes the tenant; one staged for the request's image first), bind the container's rootfs
into its slot, give its taps the names, bridges and MTUs the network layer planned for the
container's NICs, then the template's hand-out fix-ups (clock, fresh entropy, vCPUs, memory).
A run never waits for a refill: with no ready VM, or a request the cache cannot serve
(volumes), `Incompatible` sends it on to a template clone. A ready VM found dead, or one whose
hand-out fails, is discarded and replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from steelcup.errors import SteelcupError
from steelcup.guest.client import ProcessSpec
from steelcup.guest.ops import GuestNic, net_config
from steelcup.guest.protocol import STAGED_SHARE_PATH, RootfsCache
from steelcup.net import links
from steelcup.pool import slots
from steelcup.pool.source import Incompatible, VmRequest
from steelcup.pool.template import (
    ENTROPY_BYTES,
    ROOTFS_TAG,
    TEMPLATE_TAP_PREFIX,
    TemplateSource,
    template_mac,
)
from steelcup.vm.machine import Machine
from steelcup.vm.qemu_args import NicSpec, Share

T = TypeVar("T")

log = logging.getLogger(__name__)

TAP_PREFIX = "scw"  # + the daemon's tap tag (3 hex) + 8 hex + NIC index: 15 characters
INITRD_WARM_PROGRAM = "/init"  # in the initrd: used when the assets have no init binary
WARM_DEADLINE_S = 20.0
REHEARSAL_MTU = 1500  # the default network's (a NIC's own MTU is set again at NET_CONFIG)
# A refill's QEMU runs at this priority until hand-out: on a busy host it yields the CPU to
# running containers (nice is relative: an idle host still gives it all it wants).
REFILL_NICE = 10
ROOT_IMAGE_NODE = "image"  # the block node of the image's erofs a hand-out gives a VM
STAGED_IMAGE_NODE = "staged-image"  # the one a refill gives a VM it stages for an image
# The hot files a ready VM reads ahead: at most this much, and at most this share of its RAM
# (they stay in its page cache, which is the VM's memory on the host).
STAGE_MAX_BYTES = 64 << 20
STAGE_RAM_DIVISOR = 4
READY_CPUS = 1  # a ready VM's vCPUs online (a clone's at restore); more: a template clone
REFILL_DELAY_S = 0.5  # after a hand-out: let the container start before a refill competes for CPU
RETRY_BASE_S = 1.0
RETRY_MAX_S = 30.0


@dataclass(frozen=True)
class CacheClass:
    """Ready VMs of one class are interchangeable."""

    tenant: str
    nics: int
    grows: bool = False  # memory that grows on demand (VmRequest.grows)


@dataclass
class Ready:
    machine: Machine
    slot: slots.Slot
    taps: tuple[str, ...]
    handed_out: bool = False  # its taps now carry a container's names


@dataclass
class _Class:
    ready: deque[Ready] = field(default_factory=deque)
    filling: int = 0
    handed_out: int = 0
    staged_hand_outs: int = 0  # of a VM whose lower was staged for the request's image
    misses: int = 0
    failures: int = 0  # in a row (reset by a good refill); drives the back-off
    discarded: int = 0
    warm_s: float = 0.0  # the last refill: clone + stage + warm-up


@dataclass(frozen=True)
class CacheStatus:
    tenant: str
    nics: int
    target: int
    ready: int
    filling: int
    handed_out: int
    misses: int
    discarded: int
    warm_s: float
    staged: int = 0  # ready VMs staged for an image
    staged_hand_outs: int = 0


class CacheSource:
    """Keeps `size` ready VMs per class; see the module docstring."""

    def __init__(
        self,
        template: TemplateSource,
        *,
        size: int,
        slot_dir: Path,
        warm_program: Path | None,
        tap_host: links.Host | None,
        stage_cache: RootfsCache = RootfsCache.NONE,
    ) -> None:
        self.template = template
        self.stage_cache = stage_cache
        self.size = max(0, size)
        self.slot_dir = slot_dir
        self.warm_program = warm_program
        self.tap_host = tap_host
        self._classes: dict[CacheClass, _Class] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._refill_lock = asyncio.Lock()  # one refill at a time, across classes
        self._closed = False
        # Each tenant's last block-root image: what its next ready VMs are staged for.
        self._images: dict[str, Path] = {}
        # Which files of an erofs image to read ahead (ErofsImages.hot_paths; blocking):
        # None stages nothing.
        self.hot_paths: Callable[[Path, int], list[str]] | None = None

    # -- hand-out ---------------------------------------------------------------------------
    def class_of(self, request: VmRequest) -> CacheClass:
        """The request's class; Incompatible if a ready VM cannot serve it."""
        self.template.check(request)
        if request.mem_mib < self.template.base_of(request.tenant):
            raise Incompatible("ready VMs are at the base size and never shrink")
        if request.cpus > READY_CPUS:
            raise Incompatible("ready VMs have one vCPU: more come from a template that has them")
        if len(request.shares) != 1:
            raise Incompatible("volumes are attached at restore: the cache serves rootfs only")
        if request.nics and self.tap_host is None:
            raise Incompatible("no network host to move a ready VM's taps on")
        if len(request.tap_places) != len(request.nics):
            raise Incompatible("the request's taps exist already: a ready VM brings its own")
        return CacheClass(request.tenant, len(request.nics), request.grows)

    async def acquire(self, request: VmRequest) -> Machine:
        if request.root_disk is not None:
            self._images[request.tenant] = request.root_disk
        cls = self.class_of(request)
        state = self._class(cls)
        try:
            while state.ready:
                ready = _take(state.ready, request.root_disk)
                if not _alive(ready.machine):
                    state.discarded += 1
                    log.warning("ready VM %s died while waiting; discarded", ready.machine)
                    await ready.machine.close()
                    continue
                try:
                    await self._hand_out(ready, request)
                except (SteelcupError, OSError) as exc:
                    state.discarded += 1
                    log.warning("hand-out of a ready VM for %s failed (%s); discarded",
                                request.name, str(exc).splitlines()[0])
                    await ready.machine.close()
                    continue
                state.handed_out += 1
                image = request.root_disk
                if image is not None and ready.machine.has_staged_lower(image):
                    state.staged_hand_outs += 1
                return ready.machine
            state.misses += 1
            raise Incompatible(f"no ready VM for tenant {cls.tenant!r} with {cls.nics} NICs")
        finally:
            self._fill(cls, delay_s=REFILL_DELAY_S)

    async def _hand_out(self, ready: Ready, request: VmRequest) -> None:
        machine = ready.machine
        await asyncio.to_thread(slots.bind_root, ready.slot, request.shares[0].host_path)
        machine.set_nice(0)
        machine.rootfs_subdir = slots.ROOT_SUBDIR
        if hasattr(machine, "keep_console_at"):
            machine.keep_console_at = request.console_log
        # Its placeholder until now (pool/template.py), or the image it was staged for.
        if request.root_disk is not None and not machine.has_staged_lower(request.root_disk):
            await machine.replace_root_disk(request.root_disk, ROOT_IMAGE_NODE)
        await self.template.hand_out(machine, request)
        # Taps last: until here a failure leaves the container's tap names free, so the request
        # can still go to a clone (take_place itself rolls back).
        host = self.tap_host
        for spare, nic, place in zip(ready.taps, request.nics, request.tap_places, strict=True):
            assert host is not None  # class_of refuses NICs without a host
            await asyncio.to_thread(links.take_place, host, spare, nic.tap, place.bridge,
                                    place.mtu, place.address)
        ready.handed_out = True

    # -- refill -----------------------------------------------------------------------------
    def _class(self, cls: CacheClass) -> _Class:
        return self._classes.setdefault(cls, _Class())

    def _fill(self, cls: CacheClass, delay_s: float = 0.0) -> None:
        """Start refills until ready + filling reaches the target (they queue on one lock),
        each after `delay_s`."""
        if self._closed:
            return
        state = self._class(cls)
        while len(state.ready) + state.filling < self.size:
            state.filling += 1
            task = asyncio.create_task(self._refill(cls, state, delay_s),
                                       name=f"cache-fill-{cls}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def fill(self, classes: list[CacheClass]) -> None:
        """Fill `classes` now and wait until they are full, or failing (then they go on
        retrying in the background with a back-off): the daemon's start-up."""
        for cls in classes:
            self._fill(cls)
        while not self._closed and any(
            self._class(cls).filling and not self._class(cls).failures for cls in classes
        ):
            await asyncio.sleep(0.05)

    async def _refill(self, cls: CacheClass, state: _Class, delay_s: float) -> None:
        try:
            if state.failures:
                delay_s = max(delay_s, min(RETRY_MAX_S, RETRY_BASE_S * 2 ** (state.failures - 1)))
            await asyncio.sleep(delay_s)
            async with self._refill_lock:
                started = time.monotonic()
                ready = await self._make(cls)
                state.warm_s = time.monotonic() - started
                state.failures = 0
            if self._closed:
                await ready.machine.close()
                return
            state.ready.append(ready)
        except asyncio.CancelledError:
            raise
        except (SteelcupError, OSError) as exc:
            state.failures += 1
            state.discarded += 1
            log.warning("warm cache: a VM for tenant %r failed to get ready (%s)", cls.tenant,
                        str(exc).splitlines()[0])
        finally:
            state.filling -= 1
        if state.failures and not self._closed:
            self._fill(cls)  # try again, after the back-off

    async def _make(self, cls: CacheClass) -> Ready:
        ids = self.template.ids_for(cls.tenant)
        owner = ids.base if ids is not None else None
        slot = await made_in_thread(
            functools.partial(slots.create, self.slot_dir, self.warm_program, owner),
            slots.release)
        token = secrets.token_hex(4)
        taps = tuple(f"{TAP_PREFIX}{self.template.tap_tag}{token}{i}" for i in range(cls.nics))
        try:
            # Made here, not by QEMU: QEMU may attach to a tap its uid owns, but it has no
            # CAP_NET_ADMIN to create one.
            for tap in taps:
                assert self.tap_host is not None  # class_of refuses NICs without a host
                # a cancelled refill's taps go in the `except` below, the last one made too
                await made_in_thread(functools.partial(links.create_tap, self.tap_host, tap))
        except BaseException:
            await asyncio.to_thread(self._delete_taps, taps)
            slots.release(slot)
            raise
        request = VmRequest(
            mem_mib=self.template.base_of(cls.tenant),
            cpus=1,
            shares=(Share(ROOTFS_TAG, slot.directory, remap_devices=True),),
            nics=tuple(NicSpec(tap, template_mac(i)) for i, tap in enumerate(taps)),
            tenant=cls.tenant,
            grows=cls.grows,
            name="cache",
        )
        try:
            machine = await self.template.clone(request, nice=REFILL_NICE)
        except BaseException:
            await asyncio.to_thread(self._delete_taps, taps)
            slots.release(slot)
            raise
        ready = Ready(machine, slot, taps)
        machine.on_close(lambda: self._release(ready))
        try:
            await warm_up(machine, slot, cls.nics, self.stage_cache)
            await self._stage_image(machine, cls.tenant)
        except BaseException:
            await machine.close()
            raise
        return ready

    async def _stage_image(self, machine: Machine, tenant: str) -> None:
        """Give the ready VM its tenant's last block-root image and have the guest read that
        image's hot files. Optional: a VM it fails for stays ready with its disk unstaged."""
        image = self._images.get(tenant)
        if image is None or self.hot_paths is None or machine.spec.root_disk is None:
            return
        limit = min(STAGE_MAX_BYTES,
                    (self.template.base_of(tenant) << 20) // STAGE_RAM_DIVISOR)
        began = time.monotonic()
        try:
            paths = await asyncio.to_thread(self.hot_paths, image, limit)
            await machine.replace_root_disk(image, STAGED_IMAGE_NODE)
            read = await machine.guest.stage_lower(paths, max_bytes=limit)
        except (SteelcupError, OSError) as exc:
            if isinstance(exc, FileNotFoundError) and self._images.get(tenant) == image:
                del self._images[tenant]  # the image was removed: stage nothing until the next
            log.info("warm cache: a ready VM of tenant %r stays unstaged (%s)", tenant,
                     str(exc).splitlines()[0])
            return
        machine.lower_staged_for = image
        log.debug("warm cache: ready VM staged for %s: %d files, %.1f MiB read in %.2f s",
                  image.name, len(paths), read / (1 << 20), time.monotonic() - began)

    def _release(self, ready: Ready) -> None:
        """A ready VM's QEMU is gone: its slot goes, and its taps unless a container took them
        over (then they carry the container's names and are the network layer's)."""
        slots.release(ready.slot)
        if not ready.handed_out:
            self._delete_taps(ready.taps)

    def _delete_taps(self, taps: tuple[str, ...]) -> None:
        if self.tap_host is None:
            return
        for tap in taps:
            with contextlib.suppress(links.LinkError):
                links.delete_link(self.tap_host, tap)

    def remove_leftover_taps(self) -> None:
        """Delete the spare and template taps this daemon (its run dir: `tap_tag`) left behind
        when it was killed (they are persistent); at start-up. Other daemons' are theirs."""
        if self.tap_host is None:
            return
        tag = self.template.tap_tag
        with contextlib.suppress(links.LinkError):
            for prefix in (TAP_PREFIX + tag, TEMPLATE_TAP_PREFIX + tag):
                self._delete_taps(tuple(links.list_links(self.tap_host, prefix)))

    # -- status and shutdown ----------------------------------------------------------------
    def ready_vms(self, cls: CacheClass) -> tuple[Machine, ...]:
        """The ready VMs of `cls`, oldest first (for inspection: they stay in the cache)."""
        state = self._classes.get(cls)
        return tuple(r.machine for r in state.ready) if state is not None else ()

    def status(self) -> list[CacheStatus]:
        return [
            CacheStatus(
                tenant=cls.tenant, nics=cls.nics, target=self.size, ready=len(s.ready),
                filling=s.filling, handed_out=s.handed_out, misses=s.misses,
                discarded=s.discarded, warm_s=round(s.warm_s, 3),
                staged=sum(1 for r in s.ready if r.machine.lower_staged_for is not None),
                staged_hand_outs=s.staged_hand_outs,
            )
            for cls, s in self._classes.items()
        ]

    async def close(self) -> None:
        """Stop refilling and power off every ready VM."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for state in self._classes.values():
            while state.ready:
                await state.ready.popleft().machine.close()
        with contextlib.suppress(OSError):
            self.slot_dir.rmdir()  # empty unless a VM handed out still runs


async def warm_up(machine: Machine, slot: slots.Slot, nics: int = 0,
                  stage_cache: RootfsCache = RootfsCache.NONE) -> None:
    """Stage the slot share (cached as `stage_cache` says), run the warm-up program once and
    rehearse each NIC's configuration and the hand-out's fix-ups (see the module docstring)."""
    await machine.guest.stage_root(ROOTFS_TAG, cache=stage_cache)
    program = (f"{STAGED_SHARE_PATH}/{slots.WARM_NAME}" if slot.has_warm
               else INITRD_WARM_PROGRAM)
    process = await machine.guest.start(ProcessSpec(args=(program,)))
    async for _ in process.output():
        pass
    status = await process.wait(WARM_DEADLINE_S)
    if status.status != 0:
        raise SteelcupError(f"warm-up program {program} exited {status.status}")
    for i in range(nics):
        await net_config(machine.guest, rehearsal(i))
    await machine.guest.fixup(realtime_ns=time.time_ns(), entropy=os.urandom(ENTROPY_BYTES),
                              cpus=READY_CPUS)


def rehearsal(i: int) -> GuestNic:
    """NIC i's NET_CONFIG rehearsal: what a container's NIC gets (the guest's name for it, an
    address, its gateway), with an address of TEST-NET-1 (RFC 5737), which nothing routes;
    the frames it sends (its announcement) go to a tap that is down and on no bridge."""
    return GuestNic(mac=template_mac(i), ifname=f"eth{i}", address=f"192.0.2.{2 + i}",
                    prefix=24, gateway="192.0.2.1", mtu=REHEARSAL_MTU, rehearse=True)


async def made_in_thread(make: Callable[[], T], undo: Callable[[T], None] | None = None) -> T:
    """`make()` in a worker thread. A caller cancelled meanwhile (the cache closing) would
    leave the thread running, and what it then makes behind (a slot, a tap): the cancellation
    waits for the thread, then `undo`es what it made (None: the caller undoes it, knowing what
    was being made) and goes on."""
    making = asyncio.ensure_future(asyncio.to_thread(make))
    try:
        return await asyncio.shield(making)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            made = await making
            if undo is not None:
                undo(made)
        raise


def _take(ready: deque[Ready], image: Path | None) -> Ready:
    """The ready VM to hand out: the oldest staged for `image`, else the oldest."""
    if image is not None:
        for i, candidate in enumerate(ready):
            if candidate.machine.has_staged_lower(image):
                del ready[i]
                return candidate
    return ready.popleft()


def _alive(machine: Machine) -> bool:
    if machine.returncode is not None:
        return False
    try:
        return not machine.guest.lost
    except SteelcupError:
        return False
