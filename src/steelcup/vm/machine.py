"""`Machine`: the one owner of a QEMU process, its state dir, sockets, logs and guest link.

`start()` boots and completes the guest handshake (retrying a stalled boot), or raises
VmLaunchError and leaves nothing running. `close()` always works and is idempotent.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from contextlib import AsyncExitStack, ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from steelcup import namespaces, userns
from steelcup.cgroups import place as cgroup_place
from steelcup.errors import Conflict, GuestProtocolError, SteelcupError, VmLaunchError
from steelcup.guest.client import GuestClient, GuestInfo
from steelcup.guestlog import clip
from steelcup.vm import cputime, qmp, seccomp, tap
from steelcup.vm.caplog import CappedLog, drain
from steelcup.vm.cgroup import VmCgroup
from steelcup.vm.cputime import QemuCpuTime
from steelcup.vm.jail import jail_for
from steelcup.vm.process import QemuProcess, start_time
from steelcup.vm.qemu_args import ROOT_DISK_NODE, PassedFds, VmSpec, build_argv

log = logging.getLogger(__name__)
T = TypeVar("T")


_THREAD_NETNS = "/proc/thread-self/ns/net"


def _in_net_namespace_of_caller() -> Callable[[Callable[[], T]], T]:
    """A runner, for the spawner thread, of a call in the calling thread's network namespace
    (the QEMU must be where its taps are: a test's thread may have entered one of its own)."""
    fd = os.open(_THREAD_NETNS, os.O_RDONLY | os.O_CLOEXEC)
    inode = os.fstat(fd).st_ino

    def run(call: Callable[[], T]) -> T:
        try:
            if os.stat(_THREAD_NETNS).st_ino != inode:
                namespaces.enter_netns_fd(fd)
            return call()
        finally:
            os.close(fd)

    return run


def _kill_late_spawn(spawning: asyncio.Future[subprocess.Popen[bytes]]) -> None:
    """A spawn whose caller was cancelled while it ran: kill the QEMU it started, if any, and
    reap it off the event loop."""
    if spawning.cancelled() or spawning.exception() is not None:
        return
    popen = spawning.result()
    popen.kill()
    for pipe in (popen.stdout, popen.stderr):
        if pipe is not None:
            pipe.close()
    asyncio.get_running_loop().run_in_executor(None, popen.wait)


async def _await_spawn(spawning: asyncio.Future[subprocess.Popen[bytes]]
                       ) -> subprocess.Popen[bytes]:
    """The process the spawn thread starts. Cancelled, the thread goes on: the QEMU it may
    still start belongs to nobody and is killed once started (a warm-cache refill cancelled
    at shutdown left such a QEMU running)."""
    try:
        return await asyncio.shield(spawning)
    except asyncio.CancelledError:
        spawning.add_done_callback(_kill_late_spawn)
        raise


@functools.cache
def _spawner() -> concurrent.futures.ThreadPoolExecutor:
    """The one thread that forks every QEMU, for the daemon's life: a QEMU's death signal
    (jail: PR_SET_PDEATHSIG) fires when the thread that forked it ends, so that thread must
    not be a pool worker that could come and go."""
    return concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="qemu-spawn")

DEFAULT_BOOT_DEADLINE_S = 30.0
DEFAULT_BOOT_ATTEMPTS = 2  # one retry: an occasional TCG boot stalls
POWEROFF_DEADLINE_S = 3.0
REAP_DEADLINE_S = 10.0
EXIT_GRACE_S = 2.0  # after the guest link broke during boot, wait this long for QEMU's exit
LOG_TAIL_BYTES = 4000
# What a guest's console and QEMU's stderr may take on disk: the first and the last KiBs (a
# guest can print without end, or make QEMU print error lines about its devices without end).
CONSOLE_HEAD_BYTES = CONSOLE_TAIL_BYTES = 64 * 1024
QEMU_LOG_HEAD_BYTES = QEMU_LOG_TAIL_BYTES = 16 * 1024
LOG_DRAIN_GRACE_S = 1.0  # after QEMU died: wait this long for the last of its output
SAVE_STATE_DEADLINE_S = 30.0
CHECKPOINT_DEADLINE_S = 300.0  # all of a VM's RAM written under TCG
MIGRATE_MAX_BANDWIDTH = 64 * 1024**3  # bytes/s: no limit that matters for a file
RESUME_CLOCK_DEADLINE_S = 5.0
CGROUP_REMOVE_DEADLINE_S = 2.0
ADOPT_DEADLINE_S = 10.0  # a live VM's QMP and guest channel answer within this
ADOPT_HELLO_SHARE = 0.45  # of it for each of the two HELLO attempts (Machine._hello_adopted)


@dataclass(frozen=True)
class VmHandle:
    """What a daemon that starts later needs to adopt a VM that outlived the one before it
    (`Machine.release` / `Machine.adopt`); JSON-ready."""

    pid: int
    started: int  # the process's start time (/proc/PID/stat): a reused pid is not this QEMU
    state_dir: str  # its sockets (qmp.sock, ctl.sock, which QEMU listens on) and logs
    mem_mib: int
    limit_mib: int
    cgroup: str = ""  # its memory cgroup's path, "" = none
    rootfs_subdir: str = ""

    def to_json(self) -> dict[str, object]:
        return dict(asdict(self))

    @classmethod
    def from_json(cls, data: dict[str, object]) -> VmHandle:
        try:
            return cls(pid=int(data["pid"]), started=int(data["started"]),  # type: ignore[call-overload]
                       state_dir=str(data["state_dir"]),
                       mem_mib=int(data["mem_mib"]),  # type: ignore[call-overload]
                       limit_mib=int(data["limit_mib"]),  # type: ignore[call-overload]
                       cgroup=str(data.get("cgroup", "")),
                       rootfs_subdir=str(data.get("rootfs_subdir", "")))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"bad VM handle: {exc}") from exc

def _filter_for(spec: VmSpec, argv: list[str]) -> bytes | None:
    """The seccomp filter for a VM that maps a file it must not change (a template clone)."""
    if spec.mem_path is None or spec.mem_shared:
        return None
    try:
        return seccomp.program()
    except seccomp.SeccompUnsupported as exc:
        # Fail closed: the factory boots such VMs directly instead.
        raise VmLaunchError(f"cannot protect the template's RAM file from a clone: {exc}",
                            argv=argv) from exc


def _listen(path: Path, stack: ExitStack) -> int:
    sock = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
    sock.bind(str(path))
    sock.listen(1)
    return sock.fileno()


def _open(path: Path, flags: int, stack: ExitStack) -> int:
    fd = os.open(path, flags | os.O_CLOEXEC)
    stack.callback(os.close, fd)
    return fd


def _pass_to_qemu(spec: VmSpec, stack: ExitStack, netns: str | None) -> PassedFds:
    """For a QEMU without host root: open what it needs (kept open until `stack` closes) and
    name it by fd. Its sockets listen before it runs; its taps are attached here (they stay
    root's: no QEMU can open another VM's); a RAM file it is to fill is made here, owned by
    the VM's root."""
    assert spec.ids is not None
    mem = -1
    if spec.mem_path is not None:
        mem = _open(spec.mem_path, os.O_RDONLY | os.O_CREAT, stack)
        if os.fstat(mem).st_uid != spec.ids.base:
            os.fchown(mem, spec.ids.base, spec.ids.base)
            os.fchmod(mem, 0o600)
    taps = []
    for nic in spec.nics:
        taps.append(-1)
        if nic.tap:
            fd = tap.attach(nic.tap, vnet_hdr=spec.nic_vnet_hdr, netns=netns)
            stack.callback(os.close, fd)
            taps[-1] = fd
    return PassedFds(
        taps=tuple(taps),
        ctl=_listen(spec.ctl_socket, stack),
        qmp=_listen(spec.qmp_socket, stack),
        kernel=_open(spec.kernel, os.O_RDONLY, stack),
        initrd=_open(spec.initrd, os.O_RDONLY, stack),
        shares=tuple(_open(s.host_path, os.O_PATH | os.O_DIRECTORY, stack)
                     for s in spec.shares),
        mem=mem,
        disk=(-1 if spec.root_disk is None
              else _open(spec.root_disk, os.O_RDONLY, stack)),
    )


class _BootTimeout(Exception):
    pass


async def _finish_drains(tasks: list[asyncio.Task[None]]) -> None:
    """Let the log copies reach EOF (QEMU is dead), briefly; then stop them."""
    _, pending = await asyncio.wait(tasks, timeout=LOG_DRAIN_GRACE_S)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _tail(path: Path, max_bytes: int) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def migration_summary(info: dict[str, Any]) -> str:
    """What `query-migrate` says of a finished migration's RAM pass, in a log line. Pure."""
    ram = info.get("ram") or {}
    return (f"{ram.get('total', 0) // 2**20} MiB of RAM scanned: {ram.get('normal', 0)} pages "
            f"written, {ram.get('duplicate', 0)} zero; {ram.get('transferred', 0)} bytes")


class Machine:
    """One QEMU microVM. Not reusable: after `close()` create a new one."""

    def __init__(
        self,
        spec: VmSpec,
        *,
        boot_attempts: int = DEFAULT_BOOT_ATTEMPTS,
        remove_state_dir: bool = False,
        nice: int = 0,
        netns: str | None = None,
        cgroup: VmCgroup | None = None,
        limit_mib: int | None = None,
        outlive_daemon: bool = False,
        host_cgroups: tuple[Path, ...] = (),
    ) -> None:
        self.spec = spec
        # A container's cgroup (HostConfig.SteelcupCgroup) in the hierarchies other than the
        # memory one (that is `cgroup`, then borrowed): QEMU joins them before exec.
        self.host_cgroups = host_cgroups
        # Live restore: QEMU does not die with the daemon (no death signal), so a running
        # container's VM can be `release`d and `adopt`ed by the next daemon.
        self.outlive_daemon = outlive_daemon
        self._released = False
        self._drains: list[asyncio.Task[None]] = []
        self.netns = netns  # run QEMU in this named network namespace (its taps are there)
        # The memory cgroup QEMU runs in, limited to `limit_mib` of guest RAM (default: all of
        # it) plus the per-VM overhead; None = no host limit.
        self.cgroup = cgroup
        self.limit_mib = spec.mem_mib if limit_mib is None else limit_mib
        self.nice = nice  # QEMU's scheduling priority (a pooled VM warms up in the background)
        self.argv = build_argv(spec)
        self._filter = _filter_for(spec, self.argv)
        self._incoming_fd = -1  # the restore stream's fd number in QEMU
        self.boot_attempts = max(1, boot_attempts)
        self.remove_state_dir = remove_state_dir
        self.info: GuestInfo | None = None
        self._proc: QemuProcess | None = None
        self._exit_task: asyncio.Task[int] | None = None
        self._client: GuestClient | None = None
        self._qmp: qmp.QmpClient | None = None  # the VM's one monitor session
        self._stack: AsyncExitStack | None = None
        self._detached = False  # guest link dropped on purpose (template save)
        self._started = False
        self._closing = False
        self._closed = asyncio.Event()
        self._close_lock = asyncio.Lock()
        self._finishing: asyncio.Task[None] | None = None  # close(reap_later=True)'s rest
        self._on_close: list[Callable[[], None]] = []
        self._threads = cputime.ThreadTimes()  # QEMU's threads' CPU time, for cpu_time()
        # Where the container root is inside the rootfs share (SETUP_ROOT's SUBDIR): "" for a
        # VM whose share is the root itself, a subdirectory for a pooled VM's slot.
        self.rootfs_subdir = ""
        # The root disk's file node (replace_root_disk swaps it).
        self._root_disk_file = f"{ROOT_DISK_NODE}-file"
        # The file behind the root disk whose erofs the guest has mounted and read ahead
        # (GuestClient.stage_lower; pool/cache.py): a block root's SETUP_ROOT of that image
        # may take the guest's mount (`staged`). Cleared when the disk gets another file.
        self.lower_staged_for: Path | None = None

    def __repr__(self) -> str:
        return f"<Machine pid={self.pid} state_dir={self.spec.state_dir}>"

    # -- accessors --
    @property
    def guest(self) -> GuestClient:
        if self._client is None:
            raise Conflict("machine is not running (start() it first)")
        return self._client

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc is not None else None

    @property
    def oom_killed(self) -> bool:
        """Whether the host's OOM killer ended this VM's QEMU (it went over its limit)."""
        return self.cgroup is not None and self.cgroup.oom_kills() > 0

    def place_in_cgroup(self, path: str) -> None:
        """Move QEMU into the container's host cgroup `path` (made where missing) in every
        hierarchy below /sys/fs/cgroup. In the memory controller's hierarchy the cgroup
        becomes the VM's memory cgroup: it gets the VM's limit (guest RAM plus overhead) and
        the daemon's own for the VM is removed. A VM booted there already (`host_cgroups`)
        stays. Blocking; CgroupPlaceError if the host refuses (docs/oci-runtime.md, "The
        container's cgroup")."""
        pid = self.pid
        if pid is None:
            raise Conflict("machine is not running (start() it first)")
        placed = cgroup_place.make(path)
        vm_cgroup, old = self.cgroup, None
        if vm_cgroup is not None:
            memory = next((p for p in placed
                           if Path(p.hierarchy.mount) in vm_cgroup.path.parents), None)
            if memory is not None and memory.directory != vm_cgroup.path:  # not booted there
                try:
                    old = vm_cgroup.lend_to(memory.directory)
                except OSError as exc:
                    raise cgroup_place.CgroupPlaceError(
                        f"cannot set the VM's memory limit on the cgroup {path}: {exc}",
                        exc.errno or 0) from exc
        try:
            cgroup_place.enter(placed, pid)
        except cgroup_place.CgroupPlaceError:
            if vm_cgroup is not None and old is not None:
                vm_cgroup.take_back(old)
            raise
        if old is not None:
            try:
                old.rmdir()
            except OSError as exc:
                log.warning("vm %s: its former memory cgroup %s is left: %s",
                            self.spec.state_dir.name, old, exc)

    def set_memory_limit(self, mem_mib: int) -> None:
        """Limit the VM to `mem_mib` of guest RAM (plus overhead) from the host: before the
        guest is resized to it (VmLaunchError if the host refuses)."""
        if self.cgroup is not None:
            try:
                self.cgroup.set_limit(mem_mib)
            except OSError as exc:
                raise VmLaunchError(f"cannot limit the VM's memory: {exc}",
                                    argv=self.argv) from exc
        self.limit_mib = mem_mib

    @property
    def console_log(self) -> Path:
        return self.spec.console_log

    @property
    def qemu_log(self) -> Path:
        return self.spec.state_dir / "qemu.log"

    def log_tail(self, max_bytes: int = LOG_TAIL_BYTES) -> str:
        """Tail of the guest console, plus QEMU's own stderr if it said anything."""
        text = _tail(self.console_log, max_bytes)
        qemu = _tail(self.qemu_log, max_bytes // 2).strip()
        if qemu:
            text += "\n--- qemu stderr ---\n" + qemu
        return text

    # -- lifecycle --
    async def start(self, deadline_s: float = DEFAULT_BOOT_DEADLINE_S) -> GuestInfo:
        """Boot and handshake; each attempt gets `deadline_s`. VmLaunchError on failure."""
        if self._started:
            raise Conflict("a Machine can only be started once")
        self._started = True
        for attempt in range(1, self.boot_attempts + 1):
            try:
                info = await self._boot_once(deadline_s)
            except _BootTimeout:
                saved = self.console_log.with_name(f"console.attempt{attempt}.log")
                with contextlib.suppress(OSError):
                    self.console_log.replace(saved)
                if attempt < self.boot_attempts:
                    log.warning(
                        "guest boot stalled (no HELLO_OK in %.1fs); retrying, console in %s",
                        deadline_s,
                        saved,
                    )
                    continue
                raise VmLaunchError(
                    f"guest did not complete the handshake within {deadline_s}s "
                    f"({self.boot_attempts} attempt(s)); console logs in {self.spec.state_dir}",
                    argv=self.argv,
                    log_tail=_tail(saved, LOG_TAIL_BYTES),
                ) from None
            self.info = info
            return info
        raise AssertionError("unreachable")

    async def _boot_once(self, deadline_s: float) -> GuestInfo:
        state_dir = self.spec.state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        self._remove_sockets()
        procs_file = None
        if self.cgroup is not None:
            try:
                self.cgroup.create(self.limit_mib)
            except OSError as exc:
                raise VmLaunchError(f"cannot create the VM's memory cgroup: {exc}",
                                    argv=self.argv) from exc
            procs_file = self.cgroup.procs_file
        async with AsyncExitStack() as stack:
            with ExitStack() as passed:
                proc, incoming, (stdout, stderr) = await self._spawn(procs_file, passed, stack)
            self._incoming_fd = incoming
            drains = [
                asyncio.create_task(drain(stdout, CappedLog(
                    self.console_log, CONSOLE_HEAD_BYTES, CONSOLE_TAIL_BYTES))),
                asyncio.create_task(drain(stderr, CappedLog(
                    self.qemu_log, QEMU_LOG_HEAD_BYTES, QEMU_LOG_TAIL_BYTES))),
            ]
            self._drains = drains
            stack.push_async_callback(_finish_drains, drains)
            stack.push_async_callback(self._reap_unless_released, proc)
            exit_task = asyncio.create_task(proc.wait(), name=f"qemu-{proc.pid}-wait")
            stack.callback(exit_task.cancel)
            handshake = asyncio.create_task(self._handshake(stack, deadline_s))
            try:
                done, _ = await asyncio.wait(
                    {handshake, exit_task},
                    timeout=deadline_s,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                if not handshake.done():
                    handshake.cancel()
                    with contextlib.suppress(asyncio.CancelledError, SteelcupError):
                        await handshake
            if handshake.done() and not handshake.cancelled() and handshake.exception():
                # A link that drops during boot usually means QEMU is exiting: wait briefly
                # so the error carries its exit code and message.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(EXIT_GRACE_S):
                        await asyncio.shield(exit_task)
                if exit_task.done():
                    done = {exit_task}
            if exit_task in done:
                await asyncio.wait(drains, timeout=LOG_DRAIN_GRACE_S)  # QEMU's last words
                raise VmLaunchError(
                    "QEMU exited during boot" + (
                        f" (killed by the host's OOM killer: the memory limit of its cgroup "
                        f"{self.cgroup.path} or of a parent is below what the VM needs)"
                        if self.oom_killed and self.cgroup is not None else ""),
                    exit_code=proc.returncode,
                    argv=self.argv,
                    log_tail=self.log_tail(),
                )
            if handshake not in done:
                raise _BootTimeout()
            try:
                client, info = handshake.result()
            except GuestProtocolError as exc:
                raise VmLaunchError(
                    f"guest handshake failed: {exc}", argv=self.argv, log_tail=self.log_tail()
                ) from exc
            log.debug("vm %s up: kernel %s, init %s", proc.pid, info.kernel, info.init_version)
            client.add_lost_callback(self._on_guest_lost)
            self._proc = proc
            self._exit_task = exit_task
            self._client = client
            self._stack = stack.pop_all()
        return info

    async def _spawn(self, procs_file: str | None, passed: ExitStack, stack: AsyncExitStack
                     ) -> tuple[QemuProcess, int,
                                tuple[asyncio.StreamReader, asyncio.StreamReader]]:
        """Fork QEMU into its jail with the fds it inherits (open until `passed` closes);
        returns it, the fd number of its restore stream (-1: none) and readers of its stdout
        (the console) and stderr (their pipes close with `stack`)."""
        try:
            ns_fd = None
            fds: tuple[int, ...] = ()
            if self.spec.ids is not None:
                given = _pass_to_qemu(self.spec, passed, self.netns)
                self.argv = build_argv(self.spec, given)
                fds = (given.ctl, given.qmp, given.kernel, given.initrd, *given.shares,
                       *(fd for fd in given.taps if fd >= 0))
                fds += tuple(fd for fd in (given.mem, given.disk) if fd >= 0)
                ns_fd = userns.qemu_namespace_fd(self.spec.ids)
            # A clone restores from an fd it inherits (`migrate-incoming fd:N`), so its
            # sandbox can refuse to spawn processes (no `exec:cat`).
            incoming = -1
            if self.spec.incoming is not None:
                incoming = _open(self.spec.incoming, os.O_RDONLY, passed)
                fds += (incoming,)
        except OSError as exc:
            raise VmLaunchError(f"cannot prepare the VM's files: {exc}",
                                argv=self.argv) from exc
        jail = jail_for(nice=self.nice, filter_prog=self._filter, netns=self.netns,
                        cgroup_procs=procs_file, userns_fd=ns_fd,
                        die_with_daemon=not self.outlive_daemon,
                        more_cgroup_procs=tuple(str(d / cgroup_place.PROCS_FILE)
                                                for d in self.host_cgroups))
        argv = self.argv

        def spawn() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,  # the serial console (-serial stdio)
                stderr=subprocess.PIPE,
                start_new_session=True,  # its own process group: killpg, and no tty signals
                pass_fds=fds,
                preexec_fn=jail.enter,
            )

        # Off the event loop: Popen waits until the child has run the jail and exec'd, and
        # joining the VM's cgroup waits for an RCU grace period in the kernel (31 ms a spawn
        # measured with 400 VMs running), which held up every other request.
        spawning = asyncio.get_running_loop().run_in_executor(
            _spawner(), _in_net_namespace_of_caller(), spawn)
        try:
            popen = await _await_spawn(spawning)
        except (OSError, subprocess.SubprocessError) as exc:
            # SubprocessError: the pre-exec hook failed (seccomp filter, cgroup, namespace).
            raise VmLaunchError(f"cannot run {self.argv[0]}: {exc}", argv=self.argv) from exc
        assert popen.stdout is not None and popen.stderr is not None
        readers = []
        loop = asyncio.get_running_loop()
        try:
            proc = QemuProcess(popen.pid, popen)
            for pipe in (popen.stdout, popen.stderr):
                reader = asyncio.StreamReader()
                transport, _ = await loop.connect_read_pipe(
                    lambda r=reader: asyncio.StreamReaderProtocol(r), pipe)  # type: ignore[misc]
                stack.callback(transport.close)
                readers.append(reader)
        except BaseException:
            popen.kill()  # owned by nobody yet
            popen.wait()
            raise
        return proc, incoming, (readers[0], readers[1])

    async def _handshake(
        self, stack: AsyncExitStack, deadline_s: float
    ) -> tuple[GuestClient, GuestInfo]:
        loop = asyncio.get_running_loop()
        # The outer wait enforces deadline_s; the inner deadlines only keep these from hanging.
        end = loop.time() + deadline_s + 1.0
        try:
            session = await qmp.QmpClient.connect(self.spec.qmp_socket, deadline_s + 1.0)
        except qmp.QmpError as exc:
            raise GuestProtocolError(f"QEMU's monitor did not answer: {exc}") from exc
        stack.push_async_callback(session.close)
        self._qmp = session
        if self.spec.incoming is not None:
            await self._restore(session, deadline_s)
        client = await GuestClient.connect(self.spec.ctl_socket, deadline_s + 1.0)
        stack.push_async_callback(client.close)
        info = await client.hello(max(0.1, end - loop.time()))
        return client, info

    # -- live restore --
    async def release(self) -> VmHandle:
        """Let go of the running VM without stopping it (the daemon stops with live restore):
        the guest link and QMP session close, QEMU runs on with its sockets, cgroup and state
        dir, and the handle says how the next daemon finds it (`adopt`). The console is no
        longer collected. Conflict if the VM cannot outlive the daemon or is not running."""
        async with self._close_lock:
            proc = self._proc
            if not self.outlive_daemon:
                raise Conflict("this VM dies with the daemon (started without live restore)")
            if (self._closed.is_set() or self._finishing is not None or proc is None
                    or proc.returncode is not None):
                raise Conflict("machine is not running")
            handle = self.handle()
            if handle is None:
                raise Conflict("machine is not running")
            self._closing = True  # the guest link's drop below is on purpose
            self._released = True
            proc.release()
            for task in self._drains:
                task.cancel()
            stack, self._stack = self._stack, None
            if stack is not None:
                await stack.aclose()
            self._client = None
            self._qmp = None
            self._closed.set()
            self._on_close.clear()  # nothing is gone: what they would clean up is in use
            return handle

    def handle(self) -> VmHandle | None:
        """How a later daemon finds this running VM (`adopt`), without letting go of it: what
        a live restore record holds from the container's start on, so that a daemon killed
        outright leaves it too. None if the VM dies with the daemon or is not running."""
        proc = self._proc
        if (not self.outlive_daemon or self._closed.is_set() or proc is None
                or proc.returncode is not None):
            return None
        started = start_time(proc.pid)
        if started is None:
            return None
        return VmHandle(
            pid=proc.pid, started=started, state_dir=str(self.spec.state_dir),
            mem_mib=self.spec.mem_mib, limit_mib=self.limit_mib,
            cgroup=str(self.cgroup.path) if self.cgroup is not None else "",
            rootfs_subdir=self.rootfs_subdir,
        )

    async def adopt(self, handle: VmHandle, deadline_s: float = ADOPT_DEADLINE_S) -> GuestInfo:
        """Take over the running VM an earlier daemon `release`d (this Machine's spec names its
        state dir): check it is the same QEMU process, connect its QMP and guest channel and say
        HELLO. A VM left paused runs again for that (its vCPUs must answer): the caller pauses
        it again. VmLaunchError if it is gone or does not answer (it is then killed)."""
        if self._started:
            raise Conflict("a Machine can only be started once")
        self._started = True
        self.limit_mib = handle.limit_mib
        self.rootfs_subdir = handle.rootfs_subdir
        try:
            proc = QemuProcess.adopt(handle.pid, handle.started)
        except ProcessLookupError as exc:
            raise VmLaunchError(f"the VM's QEMU (pid {handle.pid}) is gone: {exc}",
                                argv=self.argv) from exc
        async with AsyncExitStack() as stack:
            stack.push_async_callback(self._reap_unless_released, proc)
            step = "connect to its QMP socket"
            try:
                async with asyncio.timeout(deadline_s):
                    session = await qmp.QmpClient.connect(self.spec.qmp_socket, deadline_s)
                    stack.push_async_callback(session.close)
                    step = "QMP query-status"
                    status = await session.execute("query-status")
                    paused = isinstance(status, dict) and status.get("status") == "paused"
                    # Connected before a paused guest runs again: it finds a host there, and
                    # never runs a moment with none.
                    step = "connect to its guest channel"
                    client = await GuestClient.connect(self.spec.ctl_socket, deadline_s)
                    stack.push_async_callback(client.close)  # idempotent
                    if paused:
                        step = "QMP cont"
                        await session.execute("cont")
                    step = "the guest's HELLO"
                    client, info = await self._hello_adopted(client, deadline_s)
                    stack.push_async_callback(client.close)
            except TimeoutError as exc:
                raise VmLaunchError(
                    f"the VM (pid {handle.pid}) does not answer: no answer to {step} within "
                    f"{deadline_s:g} s", argv=self.argv, log_tail=self.log_tail()) from exc
            except (qmp.QmpError, GuestProtocolError) as exc:
                raise VmLaunchError(f"the VM (pid {handle.pid}) does not answer: {step}: {exc}",
                                    argv=self.argv, log_tail=self.log_tail()) from exc
            client.add_lost_callback(self._on_guest_lost)
            self._proc = proc
            self._qmp = session
            self._client = client
            self.info = info
            self._stack = stack.pop_all()
        return info

    async def _hello_adopted(self, client: GuestClient,
                             deadline_s: float) -> tuple[GuestClient, GuestInfo]:
        """HELLO to an adopted VM's guest. Without an answer in `ADOPT_HELLO_SHARE` of the
        time, once more over a new connection: closing one makes QEMU drop what the port held
        for the last host (the released daemon's), which could keep the guest's answer from
        this one."""
        share = deadline_s * ADOPT_HELLO_SHARE
        try:
            return client, await client.hello(share)
        except GuestProtocolError as exc:
            await client.close()
            log.warning("VM %s: no answer to HELLO over the first connection (%s); "
                        "connecting again", self.spec.state_dir.name, exc)
        client = await GuestClient.connect(self.spec.ctl_socket, share)
        try:
            return client, await client.hello(share)
        except BaseException:
            await client.close()
            raise

    def _on_guest_lost(self, err: GuestProtocolError) -> None:
        # A broken or vanished guest link is fatal for the VM (docs/guest-protocol.md).
        if (
            self._closing
            or self._detached
            or self._proc is None
            or self._proc.returncode is not None
        ):
            return
        log.warning("guest link of vm %s lost (%s); killing it", self._proc.pid, clip(str(err)))
        self._kill(self._proc)

    @staticmethod
    def _kill(proc: QemuProcess) -> None:
        proc.kill()  # its session: pgid == pid

    async def _reap_unless_released(self, proc: QemuProcess) -> None:
        if not self._released:
            await self._reap(proc)

    async def _reap(self, proc: QemuProcess) -> None:
        self._kill(proc)
        try:
            async with asyncio.timeout(REAP_DEADLINE_S):
                await proc.wait()
        except TimeoutError:
            log.error("qemu pid %s did not die after SIGKILL", proc.pid)
        self._remove_sockets()

    def _remove_sockets(self) -> None:
        for sock in (self.spec.ctl_socket, self.spec.qmp_socket):
            with contextlib.suppress(FileNotFoundError):
                sock.unlink()

    async def _restore(self, session: qmp.QmpClient, deadline_s: float) -> None:
        # QEMU was started with `-incoming defer`: enable x-ignore-shared (the template's
        # stream has no RAM, the RAM file is mapped instead; a checkpoint's has all of it),
        # then load the device state. A template's clone runs by itself once the state is in
        # (its stream was saved from a running VM); a checkpoint was saved from a stopped VM
        # (`checkpoint`), so it stays paused until `cont`.
        try:
            await session.execute(
                "migrate-set-capabilities",
                {"capabilities": [{"capability": "x-ignore-shared",
                                   "state": not self.spec.incoming_full},
                                  {"capability": "events", "state": self.spec.incoming_full}]},
            )
            if not self.spec.incoming_full:
                await session.execute("migrate-incoming", {"uri": f"fd:{self._incoming_fd}"})
                return
            async with session.events() as events:
                await session.execute("migrate-incoming", {"uri": f"fd:{self._incoming_fd}"})
                done = await session.wait_event(
                    events, lambda e: e["event"] == "MIGRATION"
                    and e.get("data", {}).get("status") in ("completed", "failed"), deadline_s)
            if done["data"]["status"] != "completed":
                raise qmp.QmpError("the state could not be loaded (QEMU's log says why)")
            await session.execute("cont")  # running already if saved running (before 2026-12)
        except qmp.QmpError as exc:
            raise GuestProtocolError(f"restore from {self.spec.incoming} failed: {exc}") from exc

    # -- QMP --
    async def qmp(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run one QMP command on this VM (QmpError if QEMU refuses or does not answer)."""
        if self._proc is None or self._closing or self._qmp is None:
            raise Conflict("machine is not running")
        return await self._qmp.execute(command, arguments)

    def has_staged_lower(self, image: Path) -> bool:
        """Whether the root disk is still `image` and the guest has its erofs mounted and read
        ahead: a block root's SETUP_ROOT of that image then passes `staged`."""
        return self.lower_staged_for == image

    async def replace_root_disk(self, path: Path, node: str) -> None:
        """Point the root disk (`VmSpec.root_disk`, read-only) at the file `path`: QEMU gets
        the file as an fd (it opens nothing by path), a file node named `node` is added on it,
        the disk's raw node is reopened onto that node and the file node it had goes. The guest
        is not told: a disk whose file changes must keep its size (image/erofs.py makes every
        image and the placeholder one size), and the guest must not have read it before."""
        if self.spec.root_disk is None:
            raise Conflict("this VM has no root disk")
        if self._proc is None or self._closing or self._qmp is None:
            raise Conflict("machine is not running")
        session = self._qmp
        self.lower_staged_for = None  # a mount the guest has is of the file before
        fd = await asyncio.to_thread(os.open, path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fdset = await session.add_fd(fd)
        finally:
            os.close(fd)
        await session.execute("blockdev-add", {
            "driver": "file", "node-name": node, "filename": f"/dev/fdset/{fdset}",
            "read-only": True})
        await session.execute("blockdev-reopen", {"options": [{
            "driver": "raw", "node-name": ROOT_DISK_NODE, "file": node, "read-only": True}]})
        previous, self._root_disk_file = self._root_disk_file, node
        await session.execute("blockdev-del", {"node-name": previous})

    async def pause(self) -> None:
        """Stop every vCPU (QMP `stop`). The guest link's partial-frame deadline is held
        meanwhile: a guest frozen half-way through a frame is not a guest that stalls."""
        if self._client is not None:
            self._client.set_frozen(True)
        try:
            await self.qmp("stop")
        except BaseException:
            if self._client is not None:
                self._client.set_frozen(False)
            raise

    async def resume(self) -> None:
        """Run the vCPUs again (QMP `cont`); the partial-frame deadline restarts in full.

        The guest's clocks stood still while it was frozen (QEMU stops the TSC and the virtual
        clock with the vCPUs, under TCG and kvm-clock alike): its wall clock is set again, as
        for a clone restored from a template, or it would lag by the pause for good."""
        await self.qmp("cont")
        if self._client is not None:
            self._client.set_frozen(False)
            try:
                await self._client.fixup(realtime_ns=time.time_ns(),
                                         timeout_s=RESUME_CLOCK_DEADLINE_S)
            except SteelcupError as exc:  # running again is what was asked; say the rest
                log.warning("VM %s: setting the clock after resume failed: %s",
                            self.spec.state_dir.name, exc)

    async def save_state(self, path: Path, *, timeout_s: float = SAVE_STATE_DEADLINE_S) -> None:
        """Write the VM's device state to `path` for clones to restore; the VM ends paused.

        RAM is not written (`x-ignore-shared`: it lives in the share=on RAM file, which clones
        map copy-on-write). The guest link is dropped first, on purpose: clones connect anew
        and say HELLO. Close() the machine afterwards.
        """
        if self.spec.mem_path is None or not self.spec.mem_shared:
            raise Conflict("only a VM with shared file-backed RAM can be saved as a template")
        await self._drop_guest_link()
        await self._migrate_to(path, ignore_shared=True, timeout_s=timeout_s)

    async def checkpoint(self, path: Path, *,
                         timeout_s: float = CHECKPOINT_DEADLINE_S) -> None:
        """Write the VM's whole state, all of its RAM included, to `path` (a container
        checkpoint: a VM started with `incoming=path, incoming_full=True` and the same devices
        runs on from here). The guest link is dropped first (the restored VM's host connects
        anew); the VM ends paused: `reattach` it to run on, or close it. A clone's RAM maps
        its template's file copy-on-write: every page is written, so the checkpoint does not
        depend on that file. VmLaunchError if QEMU refuses (a 9p share still mounted in the
        guest blocks migration)."""
        await self._drop_guest_link()
        # Stopped first, not saved live: under TCG a vCPU's store that passed its TLB's dirty
        # check just before the migration thread cleaned that page and sent it is never sent
        # again (a busy host can preempt the vCPU between the two), and a stale page of a
        # guest kernel is a crash after the restore: the likely cause of two such crashes in
        # CI on a loaded host. The VM is paused for the whole save, as CRIU freezes a
        # container for its dump.
        await self.qmp("stop")
        await self._migrate_to(path, ignore_shared=False, timeout_s=timeout_s)

    async def reattach(self, deadline_s: float = ADOPT_DEADLINE_S) -> GuestInfo:
        """After `checkpoint` (done or failed): run the vCPUs again if the VM is stopped,
        connect the guest channel and say HELLO. The guest's clock is the caller's to fix
        (it stood still while the VM was stopped). VmLaunchError if the guest does not
        answer."""
        if self._proc is None or self._closing or self._stack is None:
            raise Conflict("machine is not running")
        try:
            async with asyncio.timeout(deadline_s):
                status = await self.qmp("query-status")
                if isinstance(status, dict) and status.get("status") != "running":
                    await self.qmp("cont")
                client = await GuestClient.connect(self.spec.ctl_socket, deadline_s)
                try:
                    info = await client.hello(deadline_s)
                except BaseException:
                    await client.close()
                    raise
        except (TimeoutError, qmp.QmpError, GuestProtocolError) as exc:
            raise VmLaunchError(f"the VM (pid {self.pid}) does not answer after its "
                                f"checkpoint: {exc}", argv=self.argv,
                                log_tail=self.log_tail()) from exc
        self._stack.push_async_callback(client.close)
        client.add_lost_callback(self._on_guest_lost)
        self._client = client
        self._detached = False
        self.info = info
        return info

    async def _drop_guest_link(self) -> None:
        """Close the guest channel on purpose: its loss does not kill the VM."""
        self._detached = True
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def _migrate_to(self, path: Path, *, ignore_shared: bool, timeout_s: float) -> None:
        """QMP `migrate` of the VM into the file `path` (written whole: a temp file renamed
        once QEMU reports completion); the VM ends paused."""
        tmp = path.with_name(path.name + ".part")
        try:
            # Not paused first: a stream saved from a running VM makes the clone run as soon as
            # its state is in (one QMP round trip less per clone than a `cont`).
            await self.qmp(
                "migrate-set-capabilities",
                {"capabilities": [{"capability": "x-ignore-shared", "state": ignore_shared},
                                  {"capability": "events", "state": True}]},
            )
            # Into a local file: QEMU's default cap (128 MiB/s, meant for a network link)
            # would make a checkpoint of all guest RAM take seconds for nothing.
            await self.qmp("migrate-set-parameters", {"max-bandwidth": MIGRATE_MAX_BANDWIDTH})
            assert self._qmp is not None  # qmp() above checked it
            # Straight into the file through an fd QEMU is handed (no `exec:cat` helper: QEMU
            # reports completion before such a helper has written the last of its pipe, and
            # its sandbox refuses to spawn one).
            out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                await self._qmp.send_fd("state", out)
            finally:
                os.close(out)
            async with self._qmp.events() as events:
                await self.qmp("migrate", {"uri": "fd:state"})
                done = await self._qmp.wait_event(
                    events,
                    lambda e: e["event"] == "MIGRATION"
                    and e.get("data", {}).get("status") in ("completed", "failed", "cancelled"),
                    timeout_s,
                )
            info = await self.qmp("query-migrate")
            if done["data"]["status"] != "completed":
                raise VmLaunchError(
                    f"saving VM state failed: {info.get('error-desc', info)}",
                    argv=self.argv, log_tail=self.log_tail()
                )
        except qmp.QmpError as exc:
            with contextlib.suppress(SteelcupError):  # a timed-out migration goes on otherwise
                await self.qmp("migrate_cancel")
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise VmLaunchError(f"saving VM state failed: {exc}", argv=self.argv) from exc
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        tmp.replace(path)
        log.info("VM %s: state saved in %s ms (%s)", self.spec.state_dir.name,
                 info.get("total-time"), migration_summary(info))

    def set_nice(self, nice: int) -> None:
        """Give every QEMU thread scheduling priority `nice` (nice is per thread in Linux)."""
        pid = self.pid
        if pid is None or self.returncode is not None:
            return
        with contextlib.suppress(OSError):  # threads come and go; a gone QEMU is closed later
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError):
                    os.setpriority(os.PRIO_PROCESS, int(tid), nice)
        self.nice = nice

    def cpu_time(self) -> QemuCpuTime | None:
        """The host CPU time QEMU has used (what the VM costs the host): exact ns from its
        threads' schedstat, ended threads included; the user/kernel split from /proc/PID/stat's
        ticks. None once QEMU is gone."""
        pid = self.pid
        if pid is None or self.returncode is not None:
            return None
        now: dict[int, int] = {}
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError):  # a thread that just ended
                    with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                        ns = cputime.schedstat_ns(f.read())
                    if ns is not None:
                        now[int(tid)] = ns
            with open(f"/proc/{pid}/stat") as f:
                user_ns, system_ns = cputime.user_system_ns(f.read())
        except OSError:
            return None
        self._threads = cputime.accumulate(self._threads, now)
        return QemuCpuTime(self._threads.total_ns, user_ns, system_ns)

    def on_close(self, callback: Callable[[], None]) -> None:
        """Run `callback` once QEMU is gone (after `close()`); callbacks must not raise."""
        self._on_close.append(callback)

    async def close(self, *, reap_later: bool = False) -> None:
        """Power off (briefly), then kill QEMU, reap it, remove sockets, run the `on_close`
        callbacks. Idempotent, never raises for a VM that already crashed.

        `reap_later`: return once QEMU is killed; the rest goes on in the background
        (`wait_closed`). A killed QEMU runs no more code, but its exit (the kernel freeing
        its memory and closing its tap, which waits for an RCU grace period) takes 8 ms with
        a few VMs and ~30 ms with hundreds: a caller that reuses nothing of the VM (a `--rm`
        container's end) need not wait for it."""
        finishing = None
        async with self._close_lock:
            if self._finishing is not None:
                finishing = self._finishing
            elif not self._closed.is_set():
                self._closing = True
                try:
                    await self._graceful_poweroff()
                finally:
                    if reap_later and self._proc is not None:
                        self._kill(self._proc)
                        self._finishing = asyncio.create_task(
                            self._finish_close(), name=f"close-vm-{self._proc.pid}")
                    else:
                        await self._finish_close()
        if finishing is not None and not reap_later:
            await asyncio.shield(finishing)

    async def wait_closed(self) -> None:
        """Until `close` (with `reap_later`: its background part) is done."""
        await self._closed.wait()

    async def _finish_close(self) -> None:
        """QEMU killed and reaped, its sessions, sockets, cgroup and state dir gone, the
        `on_close` callbacks run; the VM is closed even when a step fails (logged)."""
        try:
            stack, self._stack = self._stack, None
            if stack is not None:
                await stack.aclose()
            self._client = None
            await self._remove_cgroup()
        except Exception:
            log.exception("vm %s: closing it failed", self.spec.state_dir)
        finally:
            self._closed.set()
            if self.remove_state_dir:
                shutil.rmtree(self.spec.state_dir, ignore_errors=True)
            callbacks, self._on_close = self._on_close, []
            for callback in callbacks:
                try:
                    callback()
                except Exception:  # a cleanup must not stop the others
                    log.exception("vm %s: close callback failed", self.spec.state_dir)

    async def _remove_cgroup(self) -> None:
        if self.cgroup is None:
            return
        loop = asyncio.get_running_loop()
        end = loop.time() + CGROUP_REMOVE_DEADLINE_S
        try:
            while not self.cgroup.remove():  # EBUSY until the reaped QEMU has left it
                if loop.time() > end:
                    log.warning("memory cgroup %s still busy; left behind", self.cgroup.path)
                    return
                await asyncio.sleep(0.01)
        except OSError as exc:
            log.warning("cannot remove memory cgroup %s: %s", self.cgroup.path, exc)

    async def _graceful_poweroff(self) -> None:
        client, proc = self._client, self._proc
        if client is None or proc is None or proc.returncode is not None or client.lost:
            return
        try:
            await client.poweroff(timeout_s=POWEROFF_DEADLINE_S)
        except (SteelcupError, OSError) as exc:
            log.info("vm %s: poweroff request failed (%s); killing it", proc.pid, exc)
            return
        # The guest acknowledges POWEROFF after its processes ended and it synced (its writes
        # went to the host through 9p already): nothing is lost by not waiting the ~60 ms for
        # QEMU to notice the guest's reset; the caller's cleanup kills and reaps it.

    async def __aenter__(self) -> Machine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
