"""The `direct` VM source: boot a fresh VM for every request (the fallback of every factory)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from pathlib import Path

from steelcup.cgroups import place as cgroup_place
from steelcup.errors import InvalidArgument
from steelcup.idmap import IdsFor, host_root
from steelcup.pool.source import VmRequest
from steelcup.vm.assets import GuestAssets
from steelcup.vm.cgroup import MemoryCgroups, VmCgroup
from steelcup.vm.machine import Machine, VmHandle
from steelcup.vm.qemu_args import VmSpec
from steelcup.vm.saved import ROOTFS_TAG, SavedVm

RESTORE_DEADLINE_S = 60.0  # a checkpoint's RAM read back and the guest's HELLO, under TCG


class DirectSource:
    """Boots one QEMU microVM per `acquire`; sockets live in a short per-VM dir under run_dir."""

    def __init__(self, *, assets: GuestAssets, accel: str, tcg_tb_mib: int, run_dir: Path,
                 cgroups: MemoryCgroups | None = None, ids_for: IdsFor = host_root,
                 outlive_daemon: bool = False) -> None:
        self.assets = assets
        self.outlive_daemon = outlive_daemon  # live restore: VMs survive the daemon
        # Each tenant's QEMUs run in its user namespace (steelcup.idmap); None: host root.
        self.ids_for = ids_for
        self.cgroups = cgroups  # None: VMs run without a host memory limit
        self.accel = accel
        self.tcg_tb_mib = tcg_tb_mib
        self.run_dir = run_dir
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # The empty disk a restored VM gets behind the root disk its checkpointed VM had
        # (image/erofs.make_placeholder; the daemon sets it). None: such a restore fails.
        self.placeholder: Path | None = None

    async def acquire(self, request: VmRequest) -> Machine:
        host_cgroups: tuple[Path, ...] = ()
        borrowed: VmCgroup | None = None
        if request.cgroup_path:  # booted in the container's cgroup: all it uses is counted there
            host_cgroups, borrowed = await asyncio.to_thread(self._container_cgroup,
                                                             request.cgroup_path)
        # Unix socket paths are limited to 107 bytes: keep the state dir short.
        state_dir = Path(tempfile.mkdtemp(prefix=(request.name or "vm")[:12] + "-",
                                          dir=self.run_dir))
        spec = VmSpec(
            kernel=self.assets.kernel,
            initrd=self.assets.initrd,
            state_dir=state_dir,
            mem_mib=request.mem_mib,
            cpus=request.cpus,
            accel=self.accel,
            tcg_tb_mib=self.tcg_tb_mib,
            shares=request.shares,
            nics=request.nics,
            extra_args=request.extra_args,
            ids=self.ids_for(request.tenant),
            root_disk=request.root_disk,
        )
        cgroup = self.cgroups.vm(state_dir.name) if self.cgroups is not None else None
        machine = KeepConsoleMachine(spec, keep_console_at=request.console_log,
                                     cgroup=borrowed or cgroup,
                                     outlive_daemon=self.outlive_daemon,
                                     host_cgroups=host_cgroups)
        try:
            await machine.start()
        except BaseException:
            await machine.close()
            raise
        return machine

    async def restore(self, request: VmRequest, saved: SavedVm, stream: Path) -> Machine:
        """A VM that runs on from the checkpoint `stream` of a VM with the devices `saved`
        (docs/checkpoints.md): the request's rootfs share and taps behind them; handshaken
        (HELLO), not yet fixed up. VmLaunchError if QEMU cannot load the checkpoint."""
        rootfs = next((s.host_path for s in request.shares if s.tag == ROOTFS_TAG), None)
        if rootfs is None:
            raise InvalidArgument("a restored VM needs the container's rootfs share")
        state_dir = Path(tempfile.mkdtemp(prefix=(request.name or "vm")[:12] + "-",
                                          dir=self.run_dir))
        empty = state_dir / "empty"
        empty.mkdir()
        try:
            spec = saved.restore_spec(
                kernel=self.assets.kernel, initrd=self.assets.initrd, state_dir=state_dir,
                incoming=stream, rootfs=rootfs, empty_dir=empty,
                taps=tuple(n.tap for n in request.nics), ids=self.ids_for(request.tenant),
                placeholder=self.placeholder)
        except BaseException:
            shutil.rmtree(state_dir, ignore_errors=True)
            raise
        host_cgroups: tuple[Path, ...] = ()
        borrowed: VmCgroup | None = None
        if request.cgroup_path:  # as a boot: restored in the container's cgroup
            host_cgroups, borrowed = await asyncio.to_thread(self._container_cgroup,
                                                             request.cgroup_path)
        cgroup = self.cgroups.vm(state_dir.name) if self.cgroups is not None else None
        machine = KeepConsoleMachine(spec, keep_console_at=request.console_log,
                                     cgroup=borrowed or cgroup, limit_mib=saved.limit_mib,
                                     boot_attempts=1, outlive_daemon=self.outlive_daemon,
                                     host_cgroups=host_cgroups)
        try:
            await machine.start(RESTORE_DEADLINE_S)
        except BaseException:
            await machine.close()
            raise
        return machine

    def _container_cgroup(self, path: str) -> tuple[tuple[Path, ...], VmCgroup | None]:
        """The container's cgroup `path`, made in every hierarchy: its directories but the
        memory one, and the memory one as the VM's (borrowed) memory cgroup. Blocking."""
        placed = cgroup_place.make(path)
        memory = None
        if self.cgroups is not None:
            parent = self.cgroups.parent
            memory = next((p for p in placed if Path(p.hierarchy.mount) in parent.parents),
                          None)
        borrowed = None
        if memory is not None and self.cgroups is not None:
            borrowed = VmCgroup(memory.directory, self.cgroups.layout, self.cgroups.overhead_mib,
                                borrowed=True)
        return tuple(p.directory for p in placed if p is not memory), borrowed

    def adoptable(self, handle: VmHandle, keep_console_at: Path) -> Machine:
        """A Machine (to `adopt`) for the VM an earlier daemon left running, whatever source
        made it: its state dir and memory cgroup are named as this source names them."""
        state_dir = Path(handle.state_dir)
        spec = VmSpec(kernel=self.assets.kernel, initrd=self.assets.initrd, state_dir=state_dir,
                      mem_mib=handle.mem_mib, accel=self.accel, tcg_tb_mib=self.tcg_tb_mib)
        cgroup = None
        if handle.cgroup and self.cgroups is not None:
            cgroup = self.cgroups.vm(state_dir.name)
            if handle.cgroup != str(cgroup.path):  # a container's cgroup it was moved to
                cgroup = VmCgroup(Path(handle.cgroup), cgroup.layout, cgroup.overhead_mib,
                                  borrowed=True)
        return KeepConsoleMachine(spec, keep_console_at=keep_console_at, cgroup=cgroup,
                                  limit_mib=handle.limit_mib, outlive_daemon=True)

    async def close(self) -> None:
        """Nothing is pooled here; VMs handed out are owned by their callers."""


class KeepConsoleMachine(Machine):
    """A Machine whose console log is copied next to the container when it closes (a pooled VM
    learns where at hand-out: `keep_console_at` is public)."""

    def __init__(
        self, spec: VmSpec, *, keep_console_at: Path | None, boot_attempts: int = 2,
        nice: int = 0, cgroup: VmCgroup | None = None, limit_mib: int | None = None,
        outlive_daemon: bool = False, host_cgroups: tuple[Path, ...] = (),
    ) -> None:
        super().__init__(spec, remove_state_dir=True, boot_attempts=boot_attempts, nice=nice,
                         cgroup=cgroup, limit_mib=limit_mib, outlive_daemon=outlive_daemon,
                         host_cgroups=host_cgroups)
        self.keep_console_at = keep_console_at

    async def close(self, *, reap_later: bool = False) -> None:
        if self.keep_console_at is not None and self.spec.console_log.exists():
            with contextlib.suppress(OSError):
                shutil.copyfile(self.spec.console_log, self.keep_console_at)
        await super().close(reap_later=reap_later)
