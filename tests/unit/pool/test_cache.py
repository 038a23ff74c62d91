"""The warm cache's bookkeeping with a fake template source (no QEMU): classes per tenant and
NIC count, refills, discards, fallbacks. tests/vm/test_pool.py covers it with real VMs."""

from __future__ import annotations

import asyncio
import threading
import time
import types
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from steelcup.errors import VmLaunchError
from steelcup.guest.client import ExitStatus, ProcessSpec
from steelcup.guest.protocol import RootfsCache
from steelcup.pool import cache as cache_module
from steelcup.pool import slots
from steelcup.pool.cache import CacheClass, CacheSource
from steelcup.pool.source import Incompatible, VmRequest
from steelcup.pool.template import ENTROPY_BYTES
from steelcup.vm.qemu_args import NicSpec, Share


class FakeProcess:
    async def output(self) -> AsyncIterator[tuple[Any, bytes]]:
        yield "stdout", b"steelcup-init test\n"

    async def wait(self, timeout_s: float | None = None) -> ExitStatus:
        return ExitStatus(0, 0)


class FakeGuest:
    def __init__(self) -> None:
        self.lost: Exception | None = None
        self.calls: list[str] = []

    async def stage_root(self, source: str, *, cache: RootfsCache) -> None:
        self.calls.append(f"stage:{source}:{cache.name.lower()}")

    async def fixup(self, *, realtime_ns: int, entropy: bytes, cpus: int) -> int:
        assert abs(realtime_ns - time.time_ns()) < 60e9 and len(entropy) == ENTROPY_BYTES
        self.calls.append(f"fixup:{cpus}")
        return cpus

    async def start(self, spec: ProcessSpec) -> FakeProcess:
        self.calls.append(f"start:{spec.args[0]}")
        return FakeProcess()

    async def stage_lower(self, paths: list[str], *, max_bytes: int) -> int:
        self.calls.append(f"stage_lower:{','.join(paths)}:{max_bytes}")
        return 1000 * len(paths)


class FakeMachine:
    def __init__(self, request: VmRequest) -> None:
        self.request = request
        self.guest = FakeGuest()
        self.returncode: int | None = None
        self.rootfs_subdir = ""
        self.keep_console_at: Path | None = None
        self.closed = False
        self.nice = 0
        self._on_close: list[Any] = []
        self.spec = types.SimpleNamespace(root_disk=Path("/placeholder"))
        self.disks: list[tuple[Path, str]] = []  # replace_root_disk's calls
        self.lower_staged_for: Path | None = None

    def has_staged_lower(self, image: Path) -> bool:
        return self.lower_staged_for == image

    async def replace_root_disk(self, path: Path, node: str) -> None:
        self.lower_staged_for = None
        self.disks.append((path, node))

    def set_nice(self, nice: int) -> None:
        self.nice = nice

    def on_close(self, callback: Any) -> None:
        self._on_close.append(callback)

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            for callback in self._on_close:
                callback()


class FakeTemplate:
    base_mem_mib = 256

    @staticmethod
    def ids_for(_tenant: str) -> None:  # QEMU as host root: slots keep the daemon's uid
        return None

    def base_of(self, tenant: str) -> int:  # tenant "big"'s default size is 512 MiB
        return 512 if tenant == "big" else self.base_mem_mib

    def __init__(self) -> None:
        self.clones: list[FakeMachine] = []
        self.fail_clones = 0
        self.handed_out: list[tuple[FakeMachine, VmRequest]] = []

    def check(self, request: VmRequest) -> None:
        if request.mem_mib > 1024:
            raise Incompatible("too big")

    async def clone(self, request: VmRequest, *, nice: int = 0) -> FakeMachine:
        await asyncio.sleep(0)
        if self.fail_clones:
            self.fail_clones -= 1
            raise VmLaunchError("restore failed", argv=[])
        machine = FakeMachine(request)
        machine.nice = nice
        self.clones.append(machine)
        return machine

    async def hand_out(self, machine: FakeMachine, request: VmRequest) -> None:
        self.handed_out.append((machine, request))


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[CacheSource, FakeTemplate]:
    bound: dict[Path, Path] = {}

    def bind_root(slot: slots.Slot, rootfs: Path) -> None:
        bound[slot.directory] = rootfs
        slot.bound = True

    def release(slot: slots.Slot) -> None:
        slot.bound = False

    monkeypatch.setattr(slots, "bind_root", bind_root)
    monkeypatch.setattr(slots, "release", release)
    monkeypatch.setattr(cache_module, "REFILL_DELAY_S", 0.0)
    monkeypatch.setattr(cache_module, "RETRY_BASE_S", 0.01)
    template = FakeTemplate()
    warm = tmp_path / "init"
    warm.write_bytes(b"\x7fELF")
    source = CacheSource(template, size=2, slot_dir=tmp_path / "slots",  # type: ignore[arg-type]
                         warm_program=warm, tap_host=None, stage_cache=RootfsCache.LOOSE)
    return source, template


def _req(tmp_path: Path, tenant: str = "", **kw: Any) -> VmRequest:
    return VmRequest(mem_mib=256, cpus=1, shares=(Share("rootfs", tmp_path / "root"),),
                     tenant=tenant, name="c", **kw)


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_ready_vms_are_staged_warmed_and_handed_out_per_tenant(
    env: tuple[CacheSource, FakeTemplate], tmp_path: Path
) -> None:
    source, template = env

    async def main() -> None:
        await source.fill([CacheClass("alice", 0)])
        alices = source.ready_vms(CacheClass("alice", 0))
        assert len(alices) == 2
        for m in alices:
            # staged as the daemon's roots are cached, warmed, the hand-out's FIXUP rehearsed
            assert m.guest.calls == ["stage:rootfs:loose", "start:/run/share/warm",  # type: ignore
                                     "fixup:1"]
            assert m.request.shares[0].remap_devices  # type: ignore[attr-defined]
        with pytest.raises(Incompatible):  # bob never gets alice's VMs: a miss...
            await source.acquire(_req(tmp_path, "bob"))
        assert all(m.nice == 10 for m in alices)  # they warmed up in the background
        got = await source.acquire(_req(tmp_path, "alice"))
        assert got is alices[0] and got.rootfs_subdir == "root" and got.nice == 0
        assert template.handed_out[-1][0] is got
        await asyncio.sleep(0.05)  # ... and both classes refill in the background
        assert len(source.ready_vms(CacheClass("alice", 0))) == 2
        assert len(source.ready_vms(CacheClass("bob", 0))) == 2
        (alice, bob) = sorted(source.status(), key=lambda s: s.tenant)
        assert (alice.handed_out, alice.misses, bob.misses) == (1, 0, 1)
        await source.close()
        assert all(m.closed for m in template.clones if m is not got)

    run(main())


def test_requests_the_cache_cannot_serve(
    env: tuple[CacheSource, FakeTemplate], tmp_path: Path
) -> None:
    source, _ = env
    volume = VmRequest(256, 1, shares=(Share("rootfs", tmp_path), Share("v0", tmp_path)))
    with pytest.raises(Incompatible, match="volumes"):
        source.class_of(volume)
    with pytest.raises(Incompatible, match="network host"):  # NICs but no host for taps
        source.class_of(_req(tmp_path, nics=(NicSpec("t0", "02:00:00:00:00:01"),)))
    with pytest.raises(Incompatible, match="one vCPU"):  # ready VMs come from a 1-vCPU template
        source.class_of(VmRequest(256, 2, shares=(Share("rootfs", tmp_path),)))
    with pytest.raises(Incompatible, match="too big"):
        source.class_of(VmRequest(4096, 1, shares=(Share("rootfs", tmp_path),)))
    # a tenant's ready VMs start at its default size and never shrink below it
    big = VmRequest(256, 1, shares=(Share("rootfs", tmp_path),), tenant="big")
    with pytest.raises(Incompatible, match="never shrink"):
        source.class_of(big)
    assert source.class_of(VmRequest(512, 1, shares=(Share("rootfs", tmp_path),),
                                     tenant="big")) == CacheClass("big", 0)


def test_dead_ready_vm_is_discarded_and_a_failing_refill_backs_off(
    env: tuple[CacheSource, FakeTemplate], tmp_path: Path
) -> None:
    source, template = env
    cls = CacheClass("", 0)

    async def main() -> None:
        await source.fill([cls])
        dead, alive = source.ready_vms(cls)
        dead.returncode = -9  # type: ignore[misc]
        template.fail_clones = 2  # the next two refills fail to restore
        got = await source.acquire(_req(tmp_path))
        assert got is alive and dead.closed  # type: ignore[attr-defined]
        (status,) = source.status()
        assert status.discarded == 1
        await asyncio.sleep(0.3)  # two failures, then back-off retries succeed
        (status,) = source.status()
        assert status.ready == 2 and status.discarded == 3, status
        await source.close()

    run(main())


def test_fill_returns_when_refills_keep_failing(
    env: tuple[CacheSource, FakeTemplate], tmp_path: Path
) -> None:
    source, template = env
    template.fail_clones = 10**6

    async def main() -> None:
        await source.fill([CacheClass("", 0)])  # returns (does not hang) ...
        (status,) = source.status()
        assert status.ready == 0 and status.discarded >= 1  # ... and says what happened
        await source.close()

    run(main())


def test_a_refill_cancelled_while_its_slot_is_made_leaves_no_slot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`close` cancels a refill whose slot a worker thread is making: the thread runs on, and
    what it makes is removed then (a daemon's stop left a slot with the warm-up program in its
    run dir behind)."""
    real_create = slots.create
    making = threading.Event()

    def slow_create(*args: Any, **kw: Any) -> slots.Slot:
        making.set()
        time.sleep(0.3)
        return real_create(*args, **kw)

    monkeypatch.setattr(slots, "create", slow_create)
    monkeypatch.setattr(cache_module, "REFILL_DELAY_S", 0.0)
    warm = tmp_path / "init"
    warm.write_bytes(b"\x7fELF")
    source = CacheSource(FakeTemplate(), size=1, slot_dir=tmp_path / "slots",  # type: ignore[arg-type]
                         warm_program=warm, tap_host=None, stage_cache=RootfsCache.LOOSE)

    async def main() -> None:
        source._fill(CacheClass("", 0))
        assert await asyncio.to_thread(making.wait, 5)
        await source.close()
        await asyncio.sleep(0.5)  # the thread has long finished

    run(main())
    left = list((tmp_path / "slots").iterdir()) if (tmp_path / "slots").exists() else []
    assert not left


def test_ready_vms_are_staged_for_their_tenants_last_image_and_preferred_for_it(
    env: tuple[CacheSource, FakeTemplate], tmp_path: Path
) -> None:
    """A refill after a block-root hand-out gives the ready VM that image and has the guest
    read its hot files (at most a quarter of the VM's RAM, 64 MiB); a request for the image
    takes a VM staged for it before older ones and keeps its disk; another image's request
    swaps the disk (and the SETUP_ROOT then says the lower is not staged)."""
    source, template = env
    img1, img2 = tmp_path / "one.erofs", tmp_path / "two.erofs"
    asked: list[tuple[Path, int]] = []

    def hot_paths(image: Path, limit: int) -> list[str]:
        asked.append((image, limit))
        if image == img2:
            raise OSError(2, "No such file or directory")  # deleted meanwhile
        return ["usr/bin/python3", "etc/passwd"]

    source.hot_paths = hot_paths

    async def main() -> None:
        alice = CacheClass("alice", 0)
        await source.fill([alice])
        old = source.ready_vms(alice)
        assert [m.lower_staged_for for m in old] == [None, None]  # no image known yet
        first = await source.acquire(_req(tmp_path, "alice", root_disk=img1))
        assert first is old[0] and first.disks == [(img1, "image")]  # type: ignore[attr-defined]
        await asyncio.sleep(0.05)
        unstaged, staged = source.ready_vms(alice)
        assert unstaged is old[1] and staged.lower_staged_for == img1
        assert staged.disks == [(img1, "staged-image")]  # type: ignore[attr-defined]
        assert staged.guest.calls[-1] == (  # type: ignore[attr-defined]
            f"stage_lower:usr/bin/python3,etc/passwd:{64 << 20}")
        assert asked == [(img1, 64 << 20)]
        assert (source.status()[0].staged, source.status()[0].staged_hand_outs) == (1, 0)

        got = await source.acquire(_req(tmp_path, "alice", root_disk=img1))
        assert got is staged and got.disks == [(img1, "staged-image")]  # type: ignore
        assert got.has_staged_lower(img1)
        assert source.status()[0].staged_hand_outs == 1
        await asyncio.sleep(0.05)

        other = await source.acquire(_req(tmp_path, "alice", root_disk=img2))
        assert other.disks[-1] == (img2, "image") and not other.has_staged_lower(img2)  # type: ignore
        await asyncio.sleep(0.05)  # the refill for img2 fails to stage: the VM stays ready
        assert len(source.ready_vms(alice)) == 2
        assert asked[-1][0] == img2 and source.ready_vms(alice)[-1].lower_staged_for is None
        before = len(asked)
        await source.acquire(_req(tmp_path, "alice"))  # a 9p root: its refill stages nothing
        await asyncio.sleep(0.05)
        assert len(asked) == before  # the removed image is forgotten

        big = CacheClass("big", 0)  # a tenant whose VMs have 512 MiB: the 64 MiB cap holds
        await source.fill([big])
        await source.acquire(VmRequest(mem_mib=512, cpus=1, shares=(Share("rootfs", tmp_path),),
                                       tenant="big", root_disk=img1, name="c"))
        await asyncio.sleep(0.05)
        assert asked[-1] == (img1, 64 << 20)
        await source.close()

    run(main())


def test_a_small_vm_reads_ahead_at_most_a_quarter_of_its_ram(
    env: tuple[CacheSource, FakeTemplate], tmp_path: Path
) -> None:
    source, template = env
    template.base_mem_mib = 128
    limits: list[int] = []
    source.hot_paths = lambda image, limit: limits.append(limit) or ["bin/sh"]

    async def main() -> None:
        await source.fill([CacheClass("", 0)])
        await source.acquire(VmRequest(mem_mib=128, cpus=1, shares=(Share("rootfs", tmp_path),),
                                       root_disk=tmp_path / "i.erofs", name="c"))
        await asyncio.sleep(0.05)
        assert limits == [32 << 20]
        await source.close()

    run(main())
