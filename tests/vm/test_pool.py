"""VM tier: template clones and the factory, with real QEMU guests (no daemon).

One template is built per module (its boot is the slow part); every test clones from it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import shutil
import tarfile
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from steelcup.guest.client import ProcessSpec
from steelcup.pool.factory import Factory, PoolOptions, build_factory
from steelcup.pool.source import VmRequest
from steelcup.vm.assets import find_assets
from steelcup.vm.machine import Machine
from steelcup.vm.qemu_args import Share
from tests.vm.support import ASSETS, BUSYBOX_TAR, need_assets, our_qemus

pytestmark = pytest.mark.vm


def _unpack_busybox(dest: Path) -> Path:
    dest.mkdir(parents=True)
    with tarfile.open(BUSYBOX_TAR) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))  # type: ignore[arg-type]
        for layer in manifest[0]["Layers"]:
            with tarfile.open(fileobj=outer.extractfile(layer)) as inner:
                inner.extractall(dest, filter="tar")
    return dest


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    need_assets()
    # Short: unix socket paths are limited to 107 bytes.
    path = tmp_path_factory.mktemp("pool")
    yield path
    leftovers = our_qemus(str(path))
    assert not leftovers, "QEMU left behind:\n" + "\n".join(leftovers)


@pytest.fixture(scope="module")
def rootfs_src(base: Path) -> Path:
    return _unpack_busybox(base / "busybox")


def _rootfs(base: Path, src: Path, name: str) -> Path:
    dest = base / "roots" / name
    shutil.copytree(src, dest, symlinks=True)
    (dest / "marker").write_text(name)
    return dest


def _factory(base: Path, **kw: object) -> Factory:
    options = PoolOptions(**{"base_mem_mib": 256, "max_mem_mib": 768, "max_cpus": 2, **kw})
    return build_factory(assets=find_assets(ASSETS), accel="tcg", tcg_tb_mib=32,
                         run_dir=base / "run", options=options)  # type: ignore[arg-type]


_loop: asyncio.AbstractEventLoop | None = None


@pytest.fixture(scope="module")
def shared(base: Path) -> Iterator[Factory]:
    """One event loop and one template source for the module (templates are slow to boot)."""
    global _loop
    _loop = asyncio.new_event_loop()
    f = _factory(base)
    try:
        yield f
    finally:
        _loop.run_until_complete(f.close())
        _loop.close()
        _loop = None


@pytest.fixture
def factory(shared: Factory) -> Factory:
    """A factory with fresh counters over the module's shared templates."""
    return Factory(direct=shared.direct, template=shared.template)


def on_loop(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        assert _loop is not None
        _loop.run_until_complete(asyncio.wait_for(fn(*args, **kwargs), 240))

    return wrapper


def _req(root: Path, mem: int = 256, cpus: int = 1, tenant: str = "") -> VmRequest:
    return VmRequest(mem_mib=mem, cpus=cpus, shares=(Share("rootfs", root),), tenant=tenant)


async def _sh(machine: Machine, script: str) -> str:
    proc = await machine.guest.start(ProcessSpec(args=("sh", "-c", script), main=True))
    out = b""
    async for _, data in proc:
        out += data
    status = await proc.wait(30)
    assert status.status == 0, out
    return out.decode()


@on_loop
async def test_clones_get_their_own_rootfs_socket_clock_and_randomness(
    factory: Factory, base: Path, rootfs_src: Path
) -> None:
    template = factory.template
    assert template is not None
    await template.template(template.key_for(_req(rootfs_src)))
    await asyncio.sleep(3)  # a clone's clock would lag by this much without FIXUP
    outs, machines, host_times = [], [], []
    try:
        for name in ("a", "b"):
            m = await factory.acquire(_req(_rootfs(base, rootfs_src, name)))
            machines.append(m)
            await m.guest.setup_root("rootfs", f"host-{name}")
            outs.append(await _sh(m, "cat /marker; echo; hostname; date +%s; "
                                     "head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'"))
            host_times.append(time.time())
        assert factory.clones == 2 and factory.direct_boots == 0
        assert machines[0].spec.ctl_socket != machines[1].spec.ctl_socket
        (m_a, h_a, t_a, r_a), (m_b, h_b, t_b, r_b) = (o.split() for o in outs)
        assert (m_a, h_a, m_b, h_b) == ("a", "host-a", "b", "host-b")
        assert 0 <= host_times[0] - int(t_a) < 2.5, (t_a, host_times)
        assert 0 <= host_times[1] - int(t_b) < 2.5, (t_b, host_times)
        assert len(r_a) == 64 and r_a != r_b
    finally:
        for m in machines:
            await m.close()


@on_loop
async def test_resize_at_hand_out(factory: Factory, base: Path, rootfs_src: Path) -> None:
    sizes = {}
    for mem, cpus in ((256, 1), (512, 2)):
        m = await factory.acquire(_req(_rootfs(base, rootfs_src, f"r{mem}"), mem, cpus))
        try:
            await m.guest.setup_root("rootfs")
            out = await _sh(m, "nproc; awk '/MemTotal/ {print $2}' /proc/meminfo")
            nproc, mem_kib = map(int, out.split())
            sizes[mem] = (nproc, mem_kib)
        finally:
            await m.close()
    assert factory.direct_boots == 0
    assert sizes[256][0] == 1 and sizes[512][0] == 2
    grown_mib = (sizes[512][1] - sizes[256][1]) / 1024
    assert 250 <= grown_mib <= 260, sizes  # the balloon gave back exactly 256 MiB


@on_loop
async def test_too_big_or_extra_shares_boot_directly(
    factory: Factory, base: Path, rootfs_src: Path
) -> None:
    root = _rootfs(base, rootfs_src, "big")
    m = await factory.acquire(_req(root, mem=1024))
    await m.close()
    extra = VmRequest(256, 1, shares=(Share("rootfs", root), Share("vol0", root)))
    m = await factory.acquire(extra)
    await m.close()
    assert factory.direct_boots == 2 and factory.clones == 0


@on_loop
async def test_tenants_never_share_template_memory(
    factory: Factory, base: Path, rootfs_src: Path
) -> None:
    root = _rootfs(base, rootfs_src, "ten")
    a = await factory.acquire(_req(root, tenant="alice"))
    b = await factory.acquire(_req(root, tenant="bob"))
    a2 = await factory.acquire(_req(root, tenant="alice"))
    try:
        assert a.spec.mem_path is not None and b.spec.mem_path is not None
        assert a.spec.mem_path != b.spec.mem_path
        assert a.spec.mem_path == a2.spec.mem_path
        assert not a.spec.mem_shared and not b.spec.mem_shared  # clones map it copy-on-write
        assert {"alice", "bob"} <= {t.tenant for t in factory.status().templates}
    finally:
        for m in (a, b, a2):
            await m.close()


@on_loop
async def test_failed_restore_is_discarded_and_replaced(
    factory: Factory, base: Path, rootfs_src: Path
) -> None:
    root = _rootfs(base, rootfs_src, "bad")
    template = factory.template
    assert template is not None
    t = await template.template(template.key_for(_req(root)))
    t.state_file.write_bytes(b"not a migration stream")
    for _ in range(2):  # each failed clone is discarded; the run still gets a VM
        m = await factory.acquire(_req(root))
        await m.close()
    assert factory.fallbacks == 2 and factory.direct_boots == 2
    assert not t.directory.exists()  # two failures in a row: the template is dropped
    m = await factory.acquire(_req(root))  # ... and rebuilt on next use
    try:
        await m.guest.setup_root("rootfs")
        assert (await _sh(m, "cat /marker")) == "bad"
    finally:
        await m.close()
    assert factory.clones == 1
    assert not [q for q in our_qemus(str(base)) if "/bad-" in q or "incoming" in q]


@on_loop
async def test_concurrent_clones_all_succeed_and_close_leaves_no_qemu(
    shared: Factory, base: Path, rootfs_src: Path
) -> None:
    f = _factory(base)
    root = _rootfs(base, rootfs_src, "many")
    try:
        async def one(i: int) -> str:
            m = await f.acquire(_req(root))
            try:
                await m.guest.setup_root("rootfs", f"c{i}", readonly=True)
                return (await _sh(m, "hostname")).strip()
            finally:
                await m.close()

        names = await asyncio.gather(*(one(i) for i in range(20)))
        assert sorted(names) == sorted(f"c{i}" for i in range(20))
        assert f.clones == 20
    finally:
        await f.close()
    assert not our_qemus(str(base / "run"))
