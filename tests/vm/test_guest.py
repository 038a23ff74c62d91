"""Real QEMU guests (TCG here): the host side of the guest protocol against the real init.

One booted Machine is shared by the tests that do not need a fresh VM. Skips only when the
guest assets (`make guest`) are missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import resource
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import pytest

from steelcup.errors import GuestProtocolError, ProcessStartError, VmLaunchError
from steelcup.guest.client import (
    ExitStatus,
    GuestProcess,
    GuestRequestError,
    ProcessSpec,
    Stream,
)
from steelcup.guest.protocol import INITIAL_CREDIT_BYTES, RootfsCache
from steelcup.image import erofs
from steelcup.vm.accel import choose_accel
from steelcup.vm.assets import GuestAssets
from steelcup.vm.machine import Machine, VmHandle
from steelcup.vm.qemu_args import Share, VmSpec
from tests.vm.support import busybox_root, guest_assets

pytestmark = pytest.mark.vm

T = TypeVar("T")
BOOT_DEADLINE_S = 40.0
PATH_ENV = ("PATH=/bin:/sbin:/usr/bin:/usr/sbin", "HOME=/root")


@dataclass
class Vm:
    loop: asyncio.AbstractEventLoop
    machine: Machine
    state_dir: Path
    main: GuestProcess  # the container's main process: the others are execs beside it

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 60.0) -> T:
        return run(self.loop, coro, timeout_s)


def run(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T], timeout_s: float) -> T:
    return loop.run_until_complete(asyncio.wait_for(coro, timeout_s))


@pytest.fixture(scope="module")
def assets() -> GuestAssets:
    return guest_assets()


@pytest.fixture(scope="module")
def rootfs() -> Iterator[Path]:
    """A busybox-only container root: the host's static /bin/busybox plus applet symlinks."""
    applets = subprocess.run(
        ["/bin/busybox", "--list"], check=True, capture_output=True, text=True
    ).stdout.split() if Path("/bin/busybox").exists() else []
    with busybox_root("scup-rootfs-", applets, ("root", "tmp", "etc")) as root:
        (root / "tmp").chmod(0o1777)
        notexec = root / "notexec"
        notexec.write_text("#!/bin/sh\necho never\n")
        notexec.chmod(stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)
        yield root


def make_spec(assets: GuestAssets, state_dir: Path, rootfs: Path | None) -> VmSpec:
    shares = (Share("rootfs", rootfs),) if rootfs is not None else ()
    return VmSpec(kernel=assets.kernel, initrd=assets.initrd, state_dir=state_dir, shares=shares)


def new_state_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="scup-vm-"))  # short: unix socket paths


@pytest.fixture(scope="module")
def vm(assets: GuestAssets, rootfs: Path) -> Iterator[Vm]:
    loop = asyncio.new_event_loop()
    state_dir = new_state_dir()
    machine = Machine(make_spec(assets, state_dir, rootfs))
    try:
        run(loop, machine.start(BOOT_DEADLINE_S), 3 * BOOT_DEADLINE_S)
        run(loop, machine.guest.setup_root("rootfs", hostname="scup-test"), 30)
        main = run(loop, machine.guest.start(ProcessSpec(
            args=("sh", "-c", "echo main=$$; exec sleep 1000000"), env=PATH_ENV, main=True)),
            30)
        yield Vm(loop, machine, state_dir, main)
    finally:
        run(loop, machine.close(), 30)
        loop.close()
        shutil.rmtree(state_dir, ignore_errors=True)


async def collect(
    proc: GuestProcess, stdin: bytes | None = None
) -> tuple[bytes, bytes, ExitStatus]:
    out = bytearray()
    err = bytearray()

    async def feed() -> None:
        if stdin is not None:
            await proc.write_stdin(stdin)
            await proc.close_stdin()

    feeder = asyncio.create_task(feed())
    async for stream, data in proc:
        (out if stream is Stream.STDOUT else err).extend(data)
    await feeder
    status = await proc.wait(10)
    return bytes(out), bytes(err), status


def sh(script: str, **kw: Any) -> ProcessSpec:
    return ProcessSpec(args=("/bin/sh", "-c", script), env=PATH_ENV, **kw)


async def run_proc(
    vm: Vm, spec: ProcessSpec, stdin: bytes | None = None
) -> tuple[bytes, bytes, ExitStatus]:
    proc = await vm.machine.guest.start(spec)
    return await collect(proc, stdin)


# ---- handshake and identity -------------------------------------------------------------------


def test_hello_reports_guest_kernel(vm: Vm) -> None:
    info = vm.machine.info
    assert info is not None and info.version == 1
    assert info.kernel and info.kernel != os.uname().release
    assert info.init_version
    vm.run(vm.machine.guest.ping())


def test_proc_version_is_the_guest_kernel(vm: Vm) -> None:
    out, _, status = vm.run(run_proc(vm, ProcessSpec(args=("cat", "/proc/version"), env=PATH_ENV)))
    assert status == ExitStatus(0, 0)
    assert out.startswith(b"Linux version")
    assert out != Path("/proc/version").read_bytes()
    info = vm.machine.info
    assert info is not None and info.kernel.encode() in out


def test_hostname_and_second_setup_root_is_refused(vm: Vm) -> None:
    out, _, _ = vm.run(run_proc(vm, ProcessSpec(args=("hostname",), env=PATH_ENV)))
    assert out.strip() == b"scup-test"
    with pytest.raises(GuestRequestError):
        vm.run(vm.machine.guest.setup_root("rootfs"))


# ---- processes ---------------------------------------------------------------------------------


def test_main_is_pid_1_and_other_processes_join_its_namespaces(vm: Vm) -> None:
    """Docker's layout: the MAIN process is PID 1 of a PID namespace of its own (its /proc
    shows the container's processes, nothing of the VM's), and every other process joins it."""
    assert vm.main.pid == 1  # as the container sees it
    out, err, status = vm.run(run_proc(vm, sh(
        "echo $$; cat /proc/1/comm; set -- /proc/[0-9]*; echo $#; readlink /proc/1/root; "
        "test -e /init || echo no-initramfs")))
    assert status.status == 0, err
    pid, comm, count, root, initramfs = out.decode().split()
    assert int(pid) > 1
    # the main process (sleep) and this shell; not the init, its launcher, kernel threads
    assert (comm, count, root, initramfs) == ("sleep", "2", "/", "no-initramfs"), out


@pytest.mark.parametrize(
    "script,expected",
    [
        ("exit 0", ExitStatus(0, 0)),
        ("exit 7", ExitStatus(7, 0)),
        ("kill -9 $$", ExitStatus(128 + 9, 9)),
    ],
)
def test_exit_codes(vm: Vm, script: str, expected: ExitStatus) -> None:
    _, _, status = vm.run(run_proc(vm, sh(script)))
    assert status == expected


def test_sigterm_via_signal(vm: Vm) -> None:
    async def body() -> ExitStatus:
        proc = await vm.machine.guest.start(ProcessSpec(args=("sleep", "1000"), env=PATH_ENV))
        assert proc.pid > 1
        await proc.signal(signal.SIGTERM)
        _, _, status = await collect(proc)
        return status

    assert vm.run(body()) == ExitStatus(128 + 15, 15)


def test_stdout_and_stderr_are_separate(vm: Vm) -> None:
    out, err, status = vm.run(run_proc(vm, sh("echo out; echo err >&2; echo out2")))
    assert (out, err, status.status) == (b"out\nout2\n", b"err\n", 0)


def test_env_cwd_uid(vm: Vm) -> None:
    spec = ProcessSpec(
        args=("/bin/sh", "-c", 'echo "$FOO $(pwd) $(id -u):$(id -g)"'),
        env=(*PATH_ENV, "FOO=bar"),
        cwd="/tmp",
        uid=1000,
        gid=1001,
    )
    out, err, status = vm.run(run_proc(vm, spec))
    assert status.status == 0, err
    assert out == b"bar /tmp 1000:1001\n"


def test_stdin_through_cat(vm: Vm) -> None:
    data = os.urandom(1_000_000)  # several stdin credit windows
    out, err, status = vm.run(
        run_proc(vm, ProcessSpec(args=("cat",), env=PATH_ENV, stdin=True), data)
    )
    assert status.status == 0, err
    assert len(out) == len(data)
    assert out == data


def test_tty_and_resize(vm: Vm) -> None:
    out, _, status = vm.run(run_proc(vm, ProcessSpec(args=("tty",), env=PATH_ENV, tty=True)))
    assert status.status == 0
    assert out.strip().startswith(b"/dev/pts/"), out

    async def resize() -> bytes:
        proc = await vm.machine.guest.start(
            ProcessSpec(args=("/bin/sh",), env=PATH_ENV, tty=True, stdin=True, rows=24, cols=80)
        )
        await proc.resize(40, 100)
        await proc.write_stdin(b"stty size\nexit 3\n")
        buf = bytearray()
        async for stream, data in proc:
            assert stream is Stream.STDOUT  # a pty has one stream
            buf += data
        assert (await proc.wait(5)).status == 3
        return bytes(buf)

    out = vm.run(resize())
    assert b"40 100" in out, out


def test_missing_binary_is_127(vm: Vm) -> None:
    with pytest.raises(ProcessStartError) as ei:
        vm.run(vm.machine.guest.start(ProcessSpec(args=("/no/such/binary",), env=PATH_ENV)))
    assert ei.value.exit_code == 127
    with pytest.raises(ProcessStartError) as ei:
        vm.run(vm.machine.guest.start(ProcessSpec(args=("nosuchcommand",), env=PATH_ENV)))
    assert ei.value.exit_code == 127


def test_non_executable_is_126(vm: Vm) -> None:
    with pytest.raises(ProcessStartError) as ei:
        vm.run(vm.machine.guest.start(ProcessSpec(args=("/notexec",), env=PATH_ENV)))
    assert ei.value.exit_code == 126


def test_rlimits_are_set_in_wire_order_and_a_malformed_one_is_einval(vm: Vm) -> None:
    spec = sh("ulimit -n; ulimit -H -n; ulimit -c", uid=1000, gid=1000,
              rlimits=("nofile=100:200", "nofile=300:400", "core=-1:-1"))
    out, err, status = vm.run(run_proc(vm, spec))
    assert status.status == 0, err
    assert out.split() == [b"300", b"400", b"unlimited"]  # the last one wins, past the uid
    with pytest.raises(ProcessStartError) as ei:
        vm.run(vm.machine.guest.start(sh("true", rlimits=("nofile=2:1",))))
    assert ei.value.errno_value == errno.EINVAL and "RLIMIT" in str(ei.value)


def test_sysctl_writes_in_order_and_names_the_one_that_fails(vm: Vm) -> None:
    vm.run(vm.machine.guest.sysctl(["net.core.somaxconn=777", "kernel.shmmni=1234"]))
    out, _, _ = vm.run(run_proc(vm, sh("cat /proc/sys/net/core/somaxconn "
                                       "/proc/sys/kernel/shmmni")))
    assert out.split() == [b"777", b"1234"]
    with pytest.raises(GuestRequestError) as ei:
        vm.run(vm.machine.guest.sysctl(["net.core.somaxconn=778", "net.core.nope=1"]))
    assert ei.value.errno_value == errno.ENOENT and "net/core/nope" in str(ei.value)
    for bad in ("net..core=1", "net/core/somaxconn=1", "net.core.somaxconn="):
        with pytest.raises(GuestRequestError) as ei:
            vm.run(vm.machine.guest.sysctl([bad]))
        assert ei.value.errno_value == errno.EINVAL


def test_50mb_output_streams_in_bounded_memory(vm: Vm) -> None:
    total = 50_000_000
    pattern = b"abcdefghijklmnopqrstuvwxyz0123456789\n"
    expected = hashlib.sha256((pattern * (total // len(pattern) + 1))[:total]).hexdigest()

    async def body() -> tuple[int, str, int, ExitStatus]:
        proc = await vm.machine.guest.start(sh(f"yes {pattern[:-1].decode()} | head -c {total}"))
        digest = hashlib.sha256()
        n = 0
        peak = 0
        async for stream, data in proc:
            assert stream is Stream.STDOUT
            digest.update(data)
            n += len(data)
            peak = max(peak, proc.buffered_bytes)
        return n, digest.hexdigest(), peak, await proc.wait(10)

    rss_before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.monotonic()
    n, digest, peak, status = vm.run(body(), timeout_s=300)
    elapsed = time.monotonic() - t0
    rss_growth_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before_kib) / 1024
    print(f"50 MB in {elapsed:.1f}s ({total / elapsed / 1e6:.1f} MB/s), peak buffered {peak}")
    assert status.status == 0
    assert n == total
    assert digest == expected
    assert peak <= INITIAL_CREDIT_BYTES
    assert rss_growth_mib < 20, f"host RSS grew {rss_growth_mib:.0f} MiB"


# ---- failure and cleanup: fresh VMs ------------------------------------------------------------


def qemu_pids_for(state_dir: Path) -> list[int]:
    """Live processes whose command line mentions `state_dir` (i.e. our QEMU)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if str(state_dir).encode() in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def test_killed_qemu_fails_waiters_fast_and_close_cleans_up(
    assets: GuestAssets, rootfs: Path
) -> None:
    state_dir = new_state_dir()
    machine = Machine(make_spec(assets, state_dir, rootfs))

    async def body() -> None:
        try:
            await machine.start(BOOT_DEADLINE_S)
            await machine.guest.setup_root("rootfs")
            proc = await machine.guest.start(ProcessSpec(args=("sleep", "1000"), env=PATH_ENV))
            waiter = asyncio.create_task(proc.wait())
            assert machine.pid is not None
            os.kill(machine.pid, signal.SIGKILL)
            t0 = time.monotonic()
            with pytest.raises(GuestProtocolError):
                await asyncio.wait_for(waiter, 5)
            with pytest.raises(GuestProtocolError):
                await machine.guest.ping()
            assert time.monotonic() - t0 < 5
        finally:
            await machine.close()
            await machine.close()  # idempotent

    try:
        asyncio.run(body())
        assert qemu_pids_for(state_dir) == []
        assert not (state_dir / "ctl.sock").exists()
        assert not (state_dir / "qmp.sock").exists()
        assert (state_dir / "console.log").exists()
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


def test_a_loose_root_is_synced_and_dropped_by_sync_root(
    assets: GuestAssets, rootfs: Path
) -> None:
    """SETUP_ROOT with CACHE loose (a directly booted VM: the share is not staged); SYNC_ROOT
    is refused before it, then makes the guest's writes reach the host and, with DROP, makes
    the guest read a file the host replaced."""
    state_dir = new_state_dir()
    machine = Machine(make_spec(assets, state_dir, rootfs))

    async def guest_out(script: str) -> bytes:
        proc = await machine.guest.start(sh(script))
        out, _, status = await collect(proc)
        assert status.status == 0
        return out

    async def body() -> None:
        try:
            await machine.start(BOOT_DEADLINE_S)
            with pytest.raises(GuestRequestError) as refused:
                await machine.guest.sync_root()
            assert refused.value.errno_value == errno.EINVAL
            await machine.guest.setup_root("rootfs", cache=RootfsCache.LOOSE)
            mounts = (await guest_out("cat /proc/mounts")).decode().splitlines()
            root = next(m for m in mounts if m.split()[1] == "/")
            assert "loose" in root.split()[3].split(","), root
            await guest_out("echo written-in-guest > /tmp/loose; cat /tmp/loose")
            await machine.guest.sync_root()
            assert (rootfs / "tmp" / "loose").read_text() == "written-in-guest\n"
            (rootfs / "tmp" / "loose").unlink()
            (rootfs / "tmp" / "loose").write_text("replaced on the host, longer\n")
            await machine.guest.sync_root(drop=True)
            assert await guest_out("cat /tmp/loose") == b"replaced on the host, longer\n"
        finally:
            await machine.close()

    try:
        asyncio.run(body())
    finally:
        (rootfs / "tmp" / "loose").unlink(missing_ok=True)
        shutil.rmtree(state_dir, ignore_errors=True)


def test_a_block_root_is_the_disks_erofs_under_the_shares_upper(
    assets: GuestAssets, rootfs: Path, tmp_path: Path
) -> None:
    """SETUP_ROOT with CACHE block: the image's files as erofs on the root disk
    (image/erofs.py), the writable layer the share's upper/ and work/, overlaid in the guest.
    The VM boots with the empty placeholder (as a pooled VM does) and gets the image by
    `replace_root_disk`; a SETUP_ROOT before that fails on the placeholder and leaves nothing
    behind, and the one after reads the image, not a buffer of the placeholder. The guest's
    writes reach the host's upper/, a deleted image file as a whiteout's stand-in."""
    layer = tmp_path / "layer"
    shutil.copytree(rootfs, layer, symlinks=True)
    (layer / "etc" / "marker").write_text("from the image\n")
    image = tmp_path / "image.erofs"
    erofs.build([layer], image, tmp_path / "scratch")
    rw = tmp_path / "rw"
    for name in ("upper", "work"):
        (rw / name).mkdir(parents=True)
    state_dir = new_state_dir()
    machine = Machine(replace(make_spec(assets, state_dir, rw),
                              root_disk=erofs.make_placeholder(tmp_path / "placeholder")))

    async def guest_out(script: str) -> bytes:
        out, err, status = await collect(await machine.guest.start(sh(script)))
        assert status.status == 0, err
        return out

    async def body() -> None:
        await machine.start(BOOT_DEADLINE_S)
        with pytest.raises(GuestRequestError) as placeholder:
            await machine.guest.setup_root("rootfs", cache=RootfsCache.BLOCK)
        assert "mount erofs /dev/vda" in str(placeholder.value)
        await machine.replace_root_disk(image, "image1")
        await machine.guest.setup_root("rootfs", cache=RootfsCache.BLOCK)
        assert await guest_out("cat /etc/marker") == b"from the image\n"
        mounts = (await guest_out("cat /proc/mounts")).decode().splitlines()
        assert [m.split()[2] for m in mounts if m.split()[1] == "/"] == ["overlay"]
        assert not [m for m in mounts if m.split()[2] in ("erofs", "9p")], mounts
        await guest_out("echo written > /etc/new; rm /etc/marker; ls /etc")
        await machine.guest.sync_root()
        assert (rw / "upper" / "etc" / "new").read_text() == "written\n"
        marker = rw / "upper" / "etc" / "marker"
        assert stat.S_ISREG(marker.lstat().st_mode) and marker.lstat().st_size == 0
        assert os.getxattr(marker, "user.steelcup.node", follow_symlinks=False) == b"whiteout"
        assert await guest_out("ls /etc/marker 2>&1 || true") != b"/etc/marker\n"

    async def checked() -> None:
        try:
            await body()
        finally:
            await machine.close()

    try:
        asyncio.run(checked())
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


def test_a_staged_lower_is_the_overlays_lower_and_a_swapped_disk_is_mounted_afresh(
    assets: GuestAssets, rootfs: Path, tmp_path: Path
) -> None:
    """STAGE_LOWER (a ready VM made for an image, pool/cache.py): the guest mounts the root
    disk's erofs, keeps the mount and reads the files it is given (what it cannot read
    beneath the mount is skipped); SETUP_ROOT with STAGED takes that mount as the overlay's
    lower. A disk swapped after staging (a hand-out for another image) is mounted afresh by a
    SETUP_ROOT without STAGED: the container sees the new image, not the staged one's caches."""
    images = {}
    for name in ("one", "two"):
        layer = tmp_path / f"layer-{name}"
        shutil.copytree(rootfs, layer, symlinks=True)
        (layer / "etc" / "marker").write_text(f"image {name}\n")
        (layer / "etc" / "big").write_bytes(os.urandom(300_000))
        os.symlink("/etc/marker", layer / "etc" / "link")
        images[name] = tmp_path / f"{name}.erofs"
        erofs.build([layer], images[name], tmp_path / "scratch")
    rw = tmp_path / "rw"
    for sub in ("upper", "work"):
        (rw / sub).mkdir(parents=True)
    placeholder = erofs.make_placeholder(tmp_path / "placeholder")
    state_dirs = [new_state_dir(), new_state_dir()]
    machines = [Machine(replace(make_spec(assets, d, rw), root_disk=placeholder))
                for d in state_dirs]

    async def guest_out(machine: Machine, script: str) -> bytes:
        out, err, status = await collect(await machine.guest.start(sh(script)))
        assert status.status == 0, err
        return out

    async def staged(machine: Machine) -> None:
        await machine.replace_root_disk(images["one"], "image1")
        # No hot file known yet (a new image): the mount is staged all the same.
        assert await machine.guest.stage_lower([]) == 0
        await machine.guest.setup_root("rootfs", cache=RootfsCache.BLOCK, staged=True)
        assert await guest_out(machine, "cat /etc/marker") == b"image one\n"
        mounts = (await guest_out(machine, "cat /proc/mounts")).decode().splitlines()
        assert [m.split()[2] for m in mounts if m.split()[1] == "/"] == ["overlay"]
        assert not [m for m in mounts if m.split()[2] == "erofs"], mounts
        with pytest.raises(GuestRequestError) as after_root:
            await machine.guest.stage_lower(["etc/marker"])
        assert after_root.value.errno_value == errno.EBUSY

    async def swapped(machine: Machine) -> None:
        await machine.replace_root_disk(images["one"], "image1")
        with pytest.raises(GuestRequestError) as nothing_staged:
            await machine.guest.setup_root("rootfs", cache=RootfsCache.BLOCK, staged=True)
        assert nothing_staged.value.errno_value == errno.EINVAL
        read = await machine.guest.stage_lower(
            ["etc/marker", "/etc/big", "etc/link", "../etc/marker", "etc/../etc/big", "etc",
             "no/such/file", ""])
        assert read == len("image one\n") + 300_000  # the two regular files, once each
        assert await machine.guest.stage_lower(["etc/big"], max_bytes=1000) == 1000
        await machine.replace_root_disk(images["two"], "image2")
        await machine.guest.setup_root("rootfs", cache=RootfsCache.BLOCK)
        assert await guest_out(machine, "cat /etc/marker") == b"image two\n"
        big = (await guest_out(machine, "md5sum /etc/big")).split()[0].decode()
        assert big == hashlib.md5((tmp_path / "layer-two" / "etc" / "big").read_bytes()).hexdigest()

    async def body() -> None:
        try:
            await asyncio.gather(*(m.start(BOOT_DEADLINE_S) for m in machines))
            await staged(machines[0])
            await swapped(machines[1])
        finally:
            await asyncio.gather(*(m.close() for m in machines))

    try:
        asyncio.run(body())
    finally:
        for d in state_dirs:
            shutil.rmtree(d, ignore_errors=True)


def _run_and_check_nothing_left(body: Coroutine[Any, Any, None], machine: Machine,
                                state_dir: Path) -> None:
    """Run `body`, close `machine` whatever happened, then: no QEMU, no state dir."""
    try:
        asyncio.run(body)
    finally:
        asyncio.run(machine.close())
    assert qemu_pids_for(state_dir) == []
    assert not state_dir.exists()


def test_close_leaves_no_qemu(assets: GuestAssets) -> None:
    state_dir = new_state_dir()
    machine = Machine(make_spec(assets, state_dir, None), remove_state_dir=True)

    async def body() -> None:
        await machine.start(BOOT_DEADLINE_S)
        pid = machine.pid
        assert pid is not None and qemu_pids_for(state_dir) == [pid]
        await machine.guest.ping()
        t0 = time.monotonic()
        await machine.close()
        print(f"close took {time.monotonic() - t0:.2f}s")

    _run_and_check_nothing_left(body(), machine, state_dir)


def _killed(pid: int) -> bool:
    """`pid` is gone, a zombie, or has SIGKILL pending (the kernel is tearing it down)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    pending = int(fields["ShdPnd"], 16) | int(fields["SigPnd"], 16)
    return fields["State"].split()[0] in ("Z", "X") or bool(pending & (1 << (signal.SIGKILL - 1)))


def test_close_can_leave_the_reaping_to_the_background(assets: GuestAssets) -> None:
    """close(reap_later=True) returns once QEMU is killed; the reaping, the sockets, the
    state dir and the on_close callbacks follow (wait_closed), and a plain close meanwhile
    waits for them."""
    state_dir = new_state_dir()
    machine = Machine(make_spec(assets, state_dir, None), remove_state_dir=True)
    closed: list[bool] = []
    machine.on_close(lambda: closed.append(True))

    async def body() -> None:
        await machine.start(BOOT_DEADLINE_S)
        pid = machine.pid
        assert pid is not None
        await machine.close(reap_later=True)
        assert _killed(pid)
        assert closed == []  # the rest has not run yet: nothing awaited since
        await machine.close()  # waits for it
        assert closed == [True]
        await asyncio.wait_for(machine.wait_closed(), 1)
        await machine.close(reap_later=True)  # idempotent
        assert closed == [True]

    _run_and_check_nothing_left(body(), machine, state_dir)


def test_qemu_failing_to_start_is_a_launch_error(assets: GuestAssets, tmp_path: Path) -> None:
    state_dir = new_state_dir()
    spec = VmSpec(kernel=tmp_path / "no-kernel", initrd=assets.initrd, state_dir=state_dir)
    machine = Machine(spec)
    try:
        with pytest.raises(VmLaunchError) as ei:
            asyncio.run(machine.start(10))
        assert ei.value.exit_code not in (None, 0)
        assert ei.value.argv[0] == "qemu-system-x86_64"
        assert "no-kernel" in str(ei.value)
        assert qemu_pids_for(state_dir) == []
        assert not (state_dir / "ctl.sock").exists()
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


def test_stalled_boot_is_retried_then_reported(assets: GuestAssets) -> None:
    state_dir = new_state_dir()
    machine = Machine(make_spec(assets, state_dir, None), boot_attempts=2)
    try:
        t0 = time.monotonic()
        with pytest.raises(VmLaunchError) as ei:
            asyncio.run(machine.start(0.3))  # far too short for a TCG boot: a "stall"
        assert time.monotonic() - t0 < 10
        assert "2 attempt" in str(ei.value)
        assert (state_dir / "console.attempt1.log").exists()
        assert (state_dir / "console.attempt2.log").exists()
        assert qemu_pids_for(state_dir) == []
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


def test_accel_auto_probes_once_per_boot(assets: GuestAssets, tmp_path: Path) -> None:
    notices: list[str] = []
    cache = Path(tempfile.mkdtemp(prefix="scup-accel-"))
    try:
        t0 = time.monotonic()
        first = asyncio.run(choose_accel("auto", cache, assets=assets, notice=notices.append))
        probe_s = time.monotonic() - t0
        assert first in ("kvm", "tcg")
        assert probe_s < 20
        t0 = time.monotonic()
        second = asyncio.run(choose_accel("auto", cache, assets=assets, notice=notices.append))
        assert second == first
        assert time.monotonic() - t0 < 1  # cached
        if first == "tcg":
            assert len(notices) == 2 and "TCG" in notices[0]
        assert qemu_pids_for(cache) == []
        assert asyncio.run(choose_accel("tcg", cache)) == "tcg"
    finally:
        shutil.rmtree(cache, ignore_errors=True)


# ---- re-attach (live restore) -----------------------------------------------------------------


def test_a_new_connection_resumes_a_process_without_losing_or_doubling_output(
    assets: GuestAssets, rootfs: Path
) -> None:
    """The init keeps a process's uncredited output and its EXIT while no host listens; RESUME
    on a new connection (a new Machine adopting the released VM) replays exactly the rest."""
    loop = asyncio.new_event_loop()
    state_dir = new_state_dir()
    spec = make_spec(assets, state_dir, rootfs)
    first = Machine(spec, outlive_daemon=True)
    second: Machine | None = None
    released: VmHandle | None = None
    script = "i=0; while [ $i -lt 60 ]; do echo n$i; i=$((i+1)); usleep 20000; done; exit 7"
    try:
        run(loop, first.start(BOOT_DEADLINE_S), 3 * BOOT_DEADLINE_S)
        run(loop, first.guest.setup_root("rootfs"), 30)
        proc = run(loop, first.guest.start(sh(script, main=True)), 30)

        async def take_some() -> tuple[bytes, int]:
            got = bytearray()
            chunks = 0
            async for _, data in proc:
                got += data
                chunks += 1
                if b"n5\n" in got and chunks >= 2:  # at least one chunk is credited
                    return bytes(got), len(data)
            raise AssertionError(f"ended early: {bytes(got)!r}")

        # The last chunk taken is not credited yet (a chunk is credited once its consumer asks
        # for the next: after the runtime wrote it to the log), so the guest still has it.
        head, last = run(loop, take_some(), 60)
        credited = len(head) - last
        released = run(loop, first.release(), 30)
        time.sleep(3)  # the process ends while no host is connected
        second = Machine(spec, outlive_daemon=True)
        info = run(loop, second.adopt(released), 30)
        assert info.last_id >= proc.id
        # Below what the host already credited: the guest no longer has it.
        with pytest.raises(GuestRequestError) as err:
            run(loop, second.guest.resume(proc.id, credited - 1, sh(script)), 30)
        assert err.value.errno_value == errno.ERANGE
        with pytest.raises(GuestRequestError) as err:
            run(loop, second.guest.resume(1, 0, sh(script)), 30)  # HELLO's id, never a process
        assert err.value.errno_value == errno.ESRCH
        again = run(loop, second.guest.resume(proc.id, len(head), sh(script), pid=proc.pid), 30)
        tail, _, status = run(loop, collect(again), 60)
        assert head + tail == b"".join(b"n%d\n" % i for i in range(60))
        assert status.status == 7
        # The connection works on as any other: a new process gets an id above the old ones.
        extra = run(loop, second.guest.start(sh("echo more")), 30)
        assert extra.id > info.last_id
        assert run(loop, collect(extra), 30)[0] == b"more\n"
    finally:
        for machine in (second, first):
            if machine is not None:
                run(loop, machine.close(), 30)
        if released is not None and second is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(released.pid, signal.SIGKILL)
        loop.close()
        shutil.rmtree(state_dir, ignore_errors=True)
