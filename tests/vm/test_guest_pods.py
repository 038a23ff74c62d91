"""Pod members against the real init (protocol tag CONTAINER): a further container in a running
VM, its root a directory the host binds into the VM's `pod` share after boot; its own PID and
mount namespaces, the VM's UTS and network; its root detached when its PID 1 ends, so the host
can unbind it and the number can be set up again. One VM for the module."""

from __future__ import annotations

import asyncio
import errno
import shutil
import subprocess
import tempfile
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from steelcup import sysmount
from steelcup.errors import ProcessStartError
from steelcup.guest.client import ExitStatus, GuestProcess, GuestRequestError, ProcessSpec, Stream
from steelcup.guest.ops import GuestMount, mount
from steelcup.runtime import podmounts
from steelcup.vm.machine import Machine
from steelcup.vm.qemu_args import Share, VmSpec
from tests.vm.support import busybox_root, guest_assets

pytestmark = pytest.mark.vm

T = TypeVar("T")
BOOT_DEADLINE_S = 40.0
PATH_ENV = ("PATH=/bin",)


@dataclass
class Pod:
    loop: asyncio.AbstractEventLoop
    machine: Machine
    share: Path  # the host directory exported as `pod`
    member_root: Path  # a busybox root to bind below it

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 60.0) -> T:
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout_s))


def _applets() -> list[str]:
    if not Path("/bin/busybox").exists():
        return []
    return subprocess.run(["/bin/busybox", "--list"], check=True, capture_output=True,
                          text=True).stdout.split()


@pytest.fixture(scope="module")
def pod() -> Iterator[Pod]:
    assets = guest_assets()
    loop = asyncio.new_event_loop()
    state_dir = Path(tempfile.mkdtemp(prefix="scup-pod-"))
    share = Path(tempfile.mkdtemp(prefix="scup-podshare-"))
    share.chmod(0o755)
    with busybox_root("scup-first-", _applets(), ("tmp", "etc")) as first, \
            busybox_root("scup-member-", _applets(), ("tmp", "etc", "scratch")) as member:
        (member / "marker").write_text("member\n")
        spec = VmSpec(kernel=assets.kernel, initrd=assets.initrd, state_dir=state_dir,
                      shares=(Share("rootfs", first),
                              Share("pod", share, remap_devices=True)))
        machine = Machine(spec)
        try:
            loop.run_until_complete(machine.start(BOOT_DEADLINE_S))
            loop.run_until_complete(machine.guest.setup_root("rootfs", hostname="pod-vm"))
            loop.run_until_complete(machine.guest.start(ProcessSpec(
                args=("sleep", "1000000"), env=PATH_ENV, main=True)))
            yield Pod(loop, machine, share, member)
        finally:
            loop.run_until_complete(machine.close())
            loop.close()
            for bound in share.iterdir():
                sysmount.unmount_all(bound)
            shutil.rmtree(state_dir, ignore_errors=True)
            shutil.rmtree(share, ignore_errors=True)


async def collect(proc: GuestProcess) -> tuple[bytes, ExitStatus]:
    out = bytearray()
    async for stream, data in proc:
        if stream is Stream.STDOUT:
            out.extend(data)
    return bytes(out), await proc.wait(10)


def sh(script: str, **kw: Any) -> ProcessSpec:
    return ProcessSpec(args=("/bin/sh", "-c", script), env=PATH_ENV, **kw)


def _bind(pod: Pod, name: str) -> Path:
    target = pod.share / name
    target.mkdir()
    sysmount.bind(pod.member_root, target)  # after boot, as the runtime does
    return target


def _unbind_when_released(target: Path, deadline_s: float = 10.0) -> None:
    """A plain (not lazy) unmount: it succeeds only once QEMU holds nothing below it."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            sysmount.umount(target)
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_a_member_needs_its_root_first(pod: Pod) -> None:
    with pytest.raises(ProcessStartError) as start:
        pod.run(pod.machine.guest.start(sh("true", main=True, container=5)))
    assert start.value.errno_value == errno.EINVAL
    with pytest.raises(GuestRequestError) as setup:
        pod.run(pod.machine.guest.setup_root("pod", subdir="absent", container=64))
    assert setup.value.errno_value == errno.EINVAL


def test_a_member_is_its_own_container_in_the_vm_and_its_root_goes_with_it(pod: Pod) -> None:
    target = _bind(pod, "m1")
    guest = pod.machine.guest
    pod.run(guest.setup_root("pod", subdir="m1", container=1))
    with pytest.raises(GuestRequestError) as again:
        pod.run(guest.setup_root("pod", subdir="m1", container=1))
    assert again.value.errno_value == errno.EBUSY
    pod.run(mount(guest, GuestMount(target="/scratch", fstype="tmpfs", options="size=1m",
                                    container=1)))
    main = pod.run(guest.start(sh("read line; exit 7", main=True, stdin=True, container=1)))
    assert main.pid == 1
    out, status = pod.run(collect(pod.run(guest.start(sh(
        "cat /marker; cat /proc/1/comm; hostname; grep -c ' /scratch tmpfs' /proc/mounts; "
        "set -- /proc/[0-9]*; echo $#", container=1)))))
    assert status.status == 0
    # its own root and PID namespace (sh as its PID 1, then this shell), the VM's hostname
    assert out.decode().split() == ["member", "sh", "pod-vm", "1", "2"]
    out, _ = pod.run(collect(pod.run(guest.start(sh("test -e /marker || echo first")))))
    assert out == b"first\n"  # the first container does not see the member's root
    pod.run(main.write_stdin(b"go\n"))
    _, status = pod.run(collect(main))
    assert status == ExitStatus(7, 0)  # its own exit status
    _unbind_when_released(target)  # the guest let go of the member's root
    target.rmdir()
    # the number is free again, for a new root
    target = _bind(pod, "m1b")
    pod.run(guest.setup_root("pod", subdir="m1b", container=1, readonly=True))
    out, status = pod.run(collect(pod.run(guest.start(sh(
        "touch /x 2>/dev/null || echo read-only", main=True, container=1)))))
    assert (out, status.status) == (b"read-only\n", 0)
    _unbind_when_released(target)
    target.rmdir()


def test_a_member_binds_a_file_and_a_directory_from_the_share_and_no_symlink(pod: Pod) -> None:
    """MOUNT with FSTYPE bind: what the host bound below the `pod` share (here: plain files
    of it) reaches the member's target, a file as a file; a symlink in the share (which the
    guest's root could have planted) is refused, not followed."""
    target = _bind(pod, "m3")
    mounts = pod.share / "m3.mounts"
    (mounts / "0").mkdir(parents=True)
    (mounts / "0" / "token").write_text("tok")
    (mounts / "1").write_text("")
    (mounts / "evil").symlink_to("/")
    guest = pod.machine.guest
    try:
        pod.run(guest.setup_root("pod", subdir="m3", container=3))
        with pytest.raises(GuestRequestError) as refused:
            pod.run(mount(guest, GuestMount(target="/x", fstype="bind", source="pod",
                                            subdir="m3.mounts/evil", container=3)))
        assert refused.value.errno_value == errno.ELOOP
        with pytest.raises(GuestRequestError) as escape:
            pod.run(mount(guest, GuestMount(target="/x", fstype="bind", source="pod",
                                            subdir="m3.mounts/../m1", container=3)))
        assert escape.value.errno_value == errno.EINVAL
        pod.run(mount(guest, GuestMount(target="/var/run/sa", fstype="bind", source="pod",
                                        subdir="m3.mounts/0", readonly=True, container=3)))
        pod.run(mount(guest, GuestMount(target="/dev/termination-log", fstype="bind",
                                        source="pod", subdir="m3.mounts/1", container=3)))
        out, status = pod.run(collect(pod.run(guest.start(sh(
            "cat /var/run/sa/token; echo; touch /var/run/sa/x 2>/dev/null || echo ro; "
            "echo bye > /dev/termination-log; test -e /x || echo no-x", main=True,
            container=3)))))
        assert (out.decode().split(), status.status) == (["tok", "ro", "no-x"], 0)
        assert (mounts / "1").read_text() == "bye\n"
        assert not (mounts / "0" / "x").exists()
    finally:
        _unbind_when_released(target)
        target.rmdir()
        shutil.rmtree(mounts)


def test_a_symlink_the_guest_puts_where_a_member_was_bound_is_never_followed(
        pod: Pod, tmp_path: Path) -> None:
    """The guest's root can write in the `pod` share (here a member the init gave the whole
    share to, as a hostile guest root could reach it): it swaps a member's mount point for a
    symlink to a mount of the host's, and plants another. The host's unbinding (a member's
    end, the sandbox's removal) removes the symlinks, a member's next bind is on a fresh
    directory, and the host's mount is untouched throughout."""
    precious = tmp_path / "precious"
    precious.mkdir()
    sysmount.mount("tmpfs", precious, "tmpfs", 0, "size=1m")
    guest = pod.machine.guest
    attacker: GuestProcess | None = None
    try:
        (precious / "keep").write_text("host\n")
        podmounts.bind_root(pod.member_root, pod.share, "m6")
        pod.run(guest.setup_root("pod", subdir="m6", container=6))
        _, status = pod.run(collect(pod.run(guest.start(sh("true", main=True, container=6)))))
        assert status.status == 0
        podmounts.unbind_root(pod.share, "m6")  # the member's end
        podmounts.bind_root(pod.member_root, pod.share, "m7")
        pod.run(guest.setup_root("pod", subdir="m7", container=7))
        pod.run(mount(guest, GuestMount(target="/share", fstype="bind", source="pod",
                                        subdir=".", container=7)))
        attacker = pod.run(guest.start(sh("read line", main=True, stdin=True, container=7)))

        def swap() -> None:
            out, status = pod.run(collect(pod.run(guest.start(sh(
                f"cd /share && mkdir m6 && rmdir m6 && ln -s {precious} m6 && "
                f"ln -sfn {precious} planted && readlink m6", container=7)))))
            assert (out, status.status) == (f"{precious}\n".encode(), 0)
            assert (pod.share / "m6").is_symlink()

        def untouched() -> None:
            assert sysmount.is_mountpoint(precious)
            assert [p.name for p in precious.iterdir()] == ["keep"]

        swap()
        podmounts.unbind_root(pod.share, "m6")  # a member's end again
        assert not (pod.share / "m6").is_symlink()
        untouched()
        swap()
        podmounts.bind_root(pod.member_root, pod.share, "m6")  # the member started again
        bound = pod.share / "m6"
        assert bound.is_dir() and not bound.is_symlink() and sysmount.is_mountpoint(bound)
        assert (bound / "marker").read_text() == "member\n"
        untouched()
        podmounts.unbind_all(pod.share)  # the sandbox's removal
        assert not (pod.share / "planted").is_symlink() and not bound.exists()
        untouched()
    finally:
        if attacker is not None:
            pod.run(attacker.write_stdin(b"done\n"))
            pod.run(collect(attacker))
        podmounts.unbind_all(pod.share)
        sysmount.unmount_all(precious)
