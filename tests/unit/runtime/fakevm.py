"""A VM source with the pool's interface (`acquire(request) -> Machine`, `close()`) and no
QEMU: machines whose guest starts scripted processes. For unit tests of the runtime above it.

A process runs until the test ends it (`exit`) or a signal does: any signal ends it with
128+signal unless the signal is in `FakeVms.ignored`; SIGKILL always does. Closing a machine
ends its processes the way a dead VM does (the output stream fails).
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import signal as signal_module
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from steelcup.errors import GuestProtocolError, ProcessStartError, SteelcupError
from steelcup.guest.client import (
    ExitStatus,
    GuestProcess,
    GuestRequestError,
    ProcessSpec,
    Stream,
)
from steelcup.guest.protocol import RootfsCache
from steelcup.pool.source import VmRequest, VmSource
from steelcup.vm.machine import Machine
from steelcup.vm.qemu_args import VmSpec
from steelcup.vm.saved import SavedVm

_pids = itertools.count(100)
_ids = itertools.count(1)


class FakeProcess:
    def __init__(self, machine: FakeMachine, spec: ProcessSpec, id_: int = 0,
                 pid: int = 0) -> None:
        self.machine = machine
        self.spec = spec
        self.id = id_ or next(_ids)  # the guest protocol's process id
        self.pid = pid or next(_pids)
        self.stdin = bytearray()
        self.stdin_closed = False
        self.signals: list[int] = []
        self._output: asyncio.Queue[tuple[Stream, bytes] | None] = asyncio.Queue()
        self._status: asyncio.Future[ExitStatus] = asyncio.get_running_loop().create_future()
        self._lost = False

    def write(self, data: bytes, stream: Stream = Stream.STDOUT) -> None:
        self._output.put_nowait((stream, data))

    def exit(self, code: int, signo: int = 0) -> None:
        if not self._status.done():
            self._status.set_result(ExitStatus(code, signo))
            self._output.put_nowait(None)

    def lose(self) -> None:
        """The VM went away under the process."""
        self._lost = True
        self._output.put_nowait(None)

    async def output(self) -> AsyncIterator[tuple[Stream, bytes]]:
        while (item := await self._output.get()) is not None:
            yield item
        if self._lost:
            raise GuestProtocolError("the guest went away")

    async def wait(self) -> ExitStatus:
        return await self._status

    async def signal(self, signo: int) -> None:
        if self.machine.closed:
            raise GuestProtocolError("the guest went away")
        assert not self.machine.paused, "a signal sent to a frozen VM"
        self.signals.append(signo)
        if signo == signal_module.SIGKILL or signo not in self.machine.vms.ignored:
            self.exit(128 + signo, signo)

    async def write_stdin(self, data: bytes) -> None:
        self.stdin += data

    async def close_stdin(self) -> None:
        self.stdin_closed = True

    async def resize(self, rows: int, cols: int) -> None:
        pass


class FakeGuest:
    def __init__(self, machine: FakeMachine) -> None:
        self.machine = machine

    async def setup_root(self, source: str, hostname: str | None = None, readonly: bool = False,
                         subdir: str = "", pids_max: int = 0, container: int = 0,
                         cache: RootfsCache = RootfsCache.NONE, staged: bool = False) -> None:
        if container:  # a pod member's root: (CONTAINER, SOURCE, SUBDIR, READONLY)
            self.machine.member_roots.append((container, source, subdir, readonly))
            return
        if staged and self.machine.vms.refuse_staged:
            raise GuestRequestError("guest SETUP_ROOT failed: no staged lower",
                                    errno_value=errno.EINVAL)
        self.machine.root_readonly = readonly
        self.machine.pids_max = pids_max
        self.machine.root_cache = cache
        self.machine.root_staged = staged

    async def sync_root(self, *, drop: bool = False, timeout_s: float = 30.0) -> None:
        if self.machine.sync_error is not None:
            raise self.machine.sync_error
        self.machine.syncs.append(drop)

    async def sysctl(self, settings: Iterable[str], *, timeout_s: float = 30.0) -> None:
        self.machine.sysctls.extend(settings)

    async def net_config(self, fields: object, *, timeout_s: float) -> None:
        self.machine.nics.append(fields)  # NET_CONFIG as the guest got it

    async def mount(self, fields: object, *, timeout_s: float) -> None:
        self.machine.mounts.append(fields)

    async def fixup(self, *, realtime_ns: int | None = None, entropy: bytes = b"",
                    cpus: int = 0, timeout_s: float = 30.0) -> int:
        self.machine.fixups.append((realtime_ns is not None, len(entropy)))
        return 0

    async def resume(self, process_id: int, received_bytes: int, spec: ProcessSpec, *,
                     pid: int = 0) -> GuestProcess:
        """RESUME: the same guest process on a new link (`FakeMachine.resumes` says with how
        many output bytes the host had)."""
        self.machine.resumes.append((process_id, received_bytes))
        process = FakeProcess(self.machine, spec, process_id, pid)
        self.machine.processes.append(process)
        self.machine.vms.started.put_nowait(process)
        return cast(GuestProcess, process)

    async def start(self, spec: ProcessSpec) -> GuestProcess:
        vms = self.machine.vms
        if vms.start_gate is not None:
            await vms.start_gate.wait()
        name = spec.args[0]
        if name in vms.missing:
            raise ProcessStartError(f"cannot start {name!r}: {name}: No such file or directory",
                                    errno_value=errno.ENOENT, exit_code=127)
        process = FakeProcess(self.machine, spec)
        self.machine.processes.append(process)
        vms.started.put_nowait(process)
        return cast(GuestProcess, process)


@dataclass(eq=False)
class FakeMachine:
    vms: FakeVms
    request: VmRequest
    rootfs_subdir: str = ""
    oom_killed: bool = False
    closed: bool = False
    paused: bool = False
    processes: list[FakeProcess] = field(default_factory=list)
    nics: list[object] = field(default_factory=list)
    mounts: list[object] = field(default_factory=list)
    root_readonly: bool | None = None  # as SETUP_ROOT got it (None: not set up)
    pids_max: int = 0
    sysctls: list[str] = field(default_factory=list)  # SYSCTL requests, in order
    root_cache: RootfsCache | None = None  # SETUP_ROOT's CACHE (None: not set up)
    root_staged: bool | None = None  # SETUP_ROOT's STAGED
    lower_staged_for: Path | None = None  # the image a warm cache staged it for
    syncs: list[bool] = field(default_factory=list)  # SYNC_ROOT requests: their DROP
    sync_error: SteelcupError | None = None  # what SYNC_ROOT raises
    member_roots: list[tuple[int, str, str, bool]] = field(default_factory=list)
    pid: int | None = None  # no QEMU: no host figures (steelcup.metrics)
    # Checkpoints: the machine's devices, what `checkpoint` raises (a VM QEMU cannot save),
    # how often it was reattached, its FIXUPs (clock set, entropy bytes), RESUMEs (process id,
    # bytes the host had) and the stream a restored machine was started from.
    spec: VmSpec = field(default_factory=lambda: VmSpec(Path("/k"), Path("/i"), Path("/s")))
    limit_mib: int = 256
    checkpoint_error: SteelcupError | None = None
    reattached: int = 0
    fixups: list[tuple[bool, int]] = field(default_factory=list)
    resumes: list[tuple[int, int]] = field(default_factory=list)
    restored_from: Path | None = None
    cgroups: list[str] = field(default_factory=list)  # place_in_cgroup calls, in order
    reaped_later: bool = False  # closed with reap_later (a `--rm` run's end)

    def __post_init__(self) -> None:
        self.guest = FakeGuest(self)

    async def checkpoint(self, path: Path) -> None:
        """The guest link goes (the processes' output streams fail; the processes live on),
        then the state is written, or `checkpoint_error` raised."""
        for process in self.processes:
            process.lose()
        if self.checkpoint_error is not None:
            raise self.checkpoint_error
        path.write_bytes(b"fake VM state")

    async def reattach(self) -> None:
        self.reattached += 1

    def has_staged_lower(self, image: Path) -> bool:
        return self.lower_staged_for == image

    def place_in_cgroup(self, path: str) -> None:
        self.cgroups.append(path)

    def cpu_time(self) -> None:
        return None

    async def pause(self) -> None:
        self.paused = True

    async def resume(self) -> None:
        self.paused = False

    async def close(self, *, reap_later: bool = False) -> None:
        """As Machine.close; `reap_later` is recorded (a fake has no QEMU to reap later).
        With the source's `close_gate`, it waits for that first (a VM that takes its time
        to stop)."""
        if reap_later:
            self.reaped_later = True
        if self.vms.close_gate is not None:
            await self.vms.close_gate.wait()
        if not self.closed:
            self.closed = True
            for process in self.processes:
                process.lose()

    async def wait_closed(self) -> None:
        assert self.closed, "wait_closed before close"


@dataclass(eq=False)
class FakeVms:
    """The VM source. `fail_with` makes `acquire` fail (a VM that does not boot), `missing`
    names commands the guest cannot find (exit 127), `start_gate` holds every process start
    until set, `ignored` are signals processes survive."""

    fail_with: SteelcupError | None = None
    missing: set[str] = field(default_factory=set)
    start_gate: asyncio.Event | None = None
    close_gate: asyncio.Event | None = None
    ignored: set[int] = field(default_factory=set)
    # Machines are handed out staged for their request's root disk (a warm cache's), and
    # with `refuse_staged` their guest has no such mount after all.
    staged: bool = False
    refuse_staged: bool = False
    machines: list[FakeMachine] = field(default_factory=list)
    started: asyncio.Queue[FakeProcess] = field(default_factory=asyncio.Queue)

    async def acquire(self, request: VmRequest) -> Machine:
        if self.fail_with is not None:
            raise self.fail_with
        machine = FakeMachine(self, request)
        if self.staged:
            machine.lower_staged_for = request.root_disk
        self.machines.append(machine)
        return cast(Machine, machine)

    async def restore(self, request: VmRequest, saved: SavedVm, stream: Path) -> Machine:
        """The Restorer (`Runtime.restorer`): a machine that runs on from `stream`."""
        if self.fail_with is not None:
            raise self.fail_with
        assert stream.read_bytes() == b"fake VM state"
        machine = FakeMachine(self, request, restored_from=stream, limit_mib=saved.limit_mib)
        self.machines.append(machine)
        return cast(Machine, machine)

    async def close(self) -> None:
        for machine in self.machines:
            await machine.close()

    def source(self) -> VmSource:
        return self

    async def next_process(self, timeout_s: float = 5.0) -> FakeProcess:
        return await asyncio.wait_for(self.started.get(), timeout_s)
