"""asyncio client of the guest init: requests, processes and their stdio over `steelcup.ctl`.

One reader task per connection decodes frames and dispatches them: replies to the future of their
request id, stdio and exit events to their `GuestProcess`. If the connection drops or the guest
breaks the protocol, every waiter fails with GuestProtocolError. A frame the guest begins must be
complete within `frame_deadline_s` (the clock stands still while the VM is frozen): a guest that
stops half-way through a frame has broken the protocol, it does not get to stall its waiters.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from steelcup.errors import (
    GuestProtocolError,
    InvalidArgument,
    ProcessStartError,
    SteelcupError,
)
from steelcup.guest import protocol as p
from steelcup.guest.protocol import Frame, Op, RootfsCache, Tag
from steelcup.guestlog import GuestLog, clip

log = logging.getLogger(__name__)

READ_CHUNK_BYTES = 1 << 18
HELLO_RESEND_S = 0.25
REQUEST_TIMEOUT_S = 30.0
STAGE_LOWER_TIMEOUT_S = 60.0  # a batch of files read from the root disk under TCG
STAGE_LOWER_BATCH_PATHS = 512  # paths per STAGE_LOWER frame
STAGE_LOWER_BATCH_BYTES = 256 * 1024  # of path bytes per frame (the payload cap is 1 MiB)
ROOT_COPY_TIMEOUT_S = 300.0  # SETUP_ROOT with CACHE RAM: a large root read over 9p under TCG
PING_TIMEOUT_S = 5.0
POWEROFF_TIMEOUT_S = 5.0
# From a frame's first byte to its last. The guest writes a frame (at most 1 MiB) in one go from
# a buffer, so only a stuck or hostile guest takes seconds; generous for a TCG guest on a busy host.
FRAME_DEADLINE_S = 10.0
# Frames for ids that are allocated but not (or no longer) waiting are ignored; the first few of
# a connection are logged as warnings, the rest at debug level (a guest must not flood the log).
IGNORED_FRAME_WARNINGS = 5
FIXUP_MAX_ENTROPY_BYTES = 512
# Return output credit in batches of this size (and whenever the consumer has caught up).
CREDIT_BATCH_BYTES = 65536
_MAX_ID = 0xFFFFFFFF
# A HELLO_OK's LAST_ID must leave this many ids to allocate (a guest cannot exhaust them).
LAST_ID_HEADROOM = 1 << 24
_GUEST_TO_HOST = frozenset({Op.HELLO_OK, Op.OK, Op.ERROR, Op.STDOUT, Op.STDERR, Op.CREDIT, Op.EXIT})


class Stream(Enum):
    STDOUT = "stdout"
    STDERR = "stderr"


@dataclass(frozen=True)
class GuestInfo:
    version: int
    kernel: str
    init_version: str
    # The highest id any host used on this guest (0: none, or an init that predates LAST_ID):
    # this connection allocates above it, so a re-attached process keeps its id.
    last_id: int = 0


@dataclass(frozen=True)
class ExitStatus:
    """`status` is the exit code, or 128+signal; `signal` is 0 if the process exited."""

    status: int
    signal: int


@dataclass(frozen=True)
class ProcessSpec:
    args: tuple[str, ...]
    env: tuple[str, ...] = ()
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    groups: tuple[int, ...] = ()
    tty: bool = False
    rows: int = 24
    cols: int = 80
    stdin: bool = False
    main: bool = False
    caps: int | None = None  # capability mask (runtime.capabilities); None: docker's default
    rlimits: tuple[str, ...] = ()  # "NAME=SOFT:HARD" each (docker's ulimit names; -1: unlimited)
    container: int = 0  # 0: the VM's first container; n > 0: the pod member set up as n

    def fields(self) -> list[tuple[Tag, p.FieldValue]]:
        if not self.args:
            raise InvalidArgument("a process needs at least one argument (the program)")
        out: list[tuple[Tag, p.FieldValue]] = [(Tag.ARG, a) for a in self.args]
        out += [(Tag.ENV, e) for e in self.env]
        out += [(Tag.CWD, self.cwd), (Tag.UID, self.uid), (Tag.GID, self.gid)]
        out += [(Tag.GROUP, g) for g in self.groups]
        out += [
            (Tag.TTY, int(self.tty)),
            (Tag.ROWS, self.rows),
            (Tag.COLS, self.cols),
            (Tag.STDIN, int(self.stdin)),
            (Tag.MAIN, int(self.main)),
        ]
        if self.caps is not None:
            out.append((Tag.CAPS, self.caps))
        out += [(Tag.RLIMIT, r) for r in self.rlimits]
        if self.container:
            out.append((Tag.CONTAINER, self.container))
        return out


class GuestRequestError(SteelcupError):
    """The guest answered a request with ERROR (e.g. SETUP_ROOT could not mount)."""

    def __init__(self, message: str, *, errno_value: int) -> None:
        super().__init__(message)
        self.errno_value = errno_value


def start_error_exit_code(errno_value: int) -> int:
    """Docker's exit codes for a failed exec: 127 not found, 126 not executable, else 125."""
    if errno_value == errno.ENOENT:
        return 127
    if errno_value in (errno.EACCES, errno.ENOEXEC, errno.EPERM, errno.EISDIR):
        return 126
    return 125


def start_error_message(program: str, errno_value: int, guest_message: str) -> str:
    """What dockerd (runc, Go's exec.LookPath) says when a process cannot start, so users and
    scripts see the same text: `exec: "x": executable file not found in $PATH`."""
    quoted = json.dumps(program, ensure_ascii=False)
    if errno_value == errno.ENOENT and "/" not in program:
        return f"exec: {quoted}: executable file not found in $PATH"
    if errno_value in (errno.ENOENT, errno.ENOTDIR):
        return f"exec: {quoted}: stat {program}: {os.strerror(errno_value).lower()}"
    if errno_value in (errno.EACCES, errno.EISDIR):
        return f"exec: {quoted}: permission denied"
    if errno_value == errno.ENOEXEC:
        return f"exec: {quoted}: exec format error"
    return f"unable to start container process: exec: {quoted}: {guest_message}"


def _mark_retrieved(fut: asyncio.Future[Frame]) -> None:
    # A send can fail after the connection-loss handler already failed this future.
    if fut.done() and not fut.cancelled():
        fut.exception()


def _path_batches(paths: Sequence[bytes]) -> Iterator[list[bytes]]:
    """`paths` in runs that fit a STAGE_LOWER frame (`STAGE_LOWER_BATCH_PATHS` paths and
    `STAGE_LOWER_BATCH_BYTES` of them at most; a path alone over that is its own run)."""
    batch: list[bytes] = []
    size = 0
    for path in paths:
        n = len(path) + p.FIELD_HEADER_SIZE
        if batch and (len(batch) == STAGE_LOWER_BATCH_PATHS
                      or size + n > STAGE_LOWER_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(path)
        size += n
    if batch:
        yield batch


def _error_text(frame: Frame) -> tuple[int, str]:
    fields = frame.fields()
    err = p.get_u32(fields, Tag.ERRNO, 0) or 0
    msg = p.get_str(fields, Tag.MESSAGE, "") or ""
    return err, msg or (errno.errorcode.get(err, f"errno {err}"))


class GuestProcess:
    """A process running in the guest. Consume `output()` (or `async for` on the object).

    The host buffers at most the credit window of output per process: the guest may only send
    what the host has credited, and credit goes back as the consumer takes chunks. A process that
    writes more than the window blocks in the guest until its output is consumed, so callers must
    drain the output (or not ask for it) to see the process exit.
    """

    def __init__(self, client: GuestClient, id_: int, spec: ProcessSpec) -> None:
        self._client = client
        self.id = id_
        self.spec = spec
        self.pid = 0
        self._chunks: deque[tuple[Stream, bytes]] = deque()
        self._buffered = 0
        self._out_credit = p.INITIAL_CREDIT_BYTES  # bytes the guest may still send us
        # Output bytes received from the guest since the process started (over every
        # connection): what a host that re-attaches says it has (RESUME's RECEIVED).
        self.received_bytes = 0
        self._unreported = 0  # consumed, not yet credited back
        self._stdin_credit = p.INITIAL_CREDIT_BYTES
        self._stdin_lock = asyncio.Lock()
        self._stdin_closed = False
        self._exit: ExitStatus | None = None
        self._error: GuestProtocolError | None = None
        self._out_event = asyncio.Event()
        self._stdin_event = asyncio.Event()
        self._done_event = asyncio.Event()  # exit or error

    def __repr__(self) -> str:
        return f"<GuestProcess id={self.id} pid={self.pid} args={self.spec.args!r}>"

    @property
    def buffered_bytes(self) -> int:
        """Output bytes received and not yet taken by the consumer (never above the window)."""
        return self._buffered

    @property
    def exit_status(self) -> ExitStatus | None:
        return self._exit

    # -- called by the client's reader --
    def _on_data(self, stream: Stream, data: bytes) -> None:
        if len(data) > self._out_credit:
            raise GuestProtocolError(
                f"guest sent {len(data)} output bytes for process {self.id} "
                f"with only {self._out_credit} credit"
            )
        self._out_credit -= len(data)
        self.received_bytes += len(data)
        if data:
            self._chunks.append((stream, data))
            self._buffered += len(data)
            self._out_event.set()

    def _on_credit(self, nbytes: int) -> None:
        self._stdin_credit += nbytes
        if self._stdin_credit > p.INITIAL_CREDIT_BYTES:
            raise GuestProtocolError(f"guest returned more stdin credit than sent ({self.id})")
        self._stdin_event.set()

    def _on_exit(self, status: ExitStatus) -> None:
        self._exit = status
        self._wake()

    def _fail(self, err: GuestProtocolError) -> None:
        if self._exit is None and self._error is None:
            self._error = err
            self._wake()

    def _wake(self) -> None:
        self._out_event.set()
        self._stdin_event.set()
        self._done_event.set()

    # -- output --
    def __aiter__(self) -> AsyncIterator[tuple[Stream, bytes]]:
        return self.output()

    async def output(self) -> AsyncIterator[tuple[Stream, bytes]]:
        """Ordered `(stream, bytes)` chunks until the process exited and its output is drained.
        A chunk is credited to the guest when the consumer asks for the next one.

        Raises GuestProtocolError if the guest connection is lost first.
        """
        while True:
            if self._chunks:
                stream, data = self._chunks.popleft()
                self._buffered -= len(data)
                yield stream, data
                # Credited only once the consumer is done with the chunk (the runtime has
                # written it to the log): the guest forgets what is credited, so a host that
                # dies before then gets the chunk again from the guest (docs/live-restore.md).
                await self._consumed(len(data))
                continue
            if self._exit is not None:
                return
            if self._error is not None:
                raise self._error
            self._out_event.clear()
            await self._out_event.wait()

    async def _consumed(self, nbytes: int) -> None:
        if self._exit is not None or self._error is not None:
            return  # nothing more will come
        self._unreported += nbytes
        if self._unreported >= CREDIT_BATCH_BYTES or not self._chunks:
            credit, self._unreported = self._unreported, 0
            self._out_credit += credit
            # A lost connection surfaces at the next read: the chunk taken is still handed to
            # the consumer (live restore counts what reached the log).
            with contextlib.suppress(GuestProtocolError):
                await self._client._send(p.make_frame(Op.CREDIT, self.id, [(Tag.BYTES, credit)]))

    # -- input and control --
    async def write_stdin(self, data: bytes) -> None:
        """Send `data` to the process's stdin, waiting for the guest's credit as needed.

        Raises BrokenPipeError if the process exited or stdin was closed, GuestProtocolError if
        the connection is lost, InvalidArgument if the process was started without stdin.
        """
        if not self.spec.stdin:
            raise InvalidArgument("process was started without stdin")
        view = memoryview(data)
        async with self._stdin_lock:
            pos = 0
            while pos < len(view):
                if self._error is not None:
                    raise self._error
                if self._exit is not None or self._stdin_closed:
                    raise BrokenPipeError(f"stdin of guest process {self.id} is closed")
                if self._stdin_credit <= 0:
                    self._stdin_event.clear()
                    await self._stdin_event.wait()
                    continue
                n = min(p.MAX_DATA_BYTES, self._stdin_credit, len(view) - pos)
                self._stdin_credit -= n
                chunk = bytes(view[pos : pos + n])
                await self._client._send(p.encode_frame(Frame(Op.STDIN, self.id, 0, chunk)))
                pos += n

    async def close_stdin(self) -> None:
        """Signal end of stdin (VEOF on a tty). Idempotent; a no-op once the process exited."""
        async with self._stdin_lock:
            if self._stdin_closed or self._exit is not None or self._error is not None:
                return
            self._stdin_closed = True
            await self._client._send(p.make_frame(Op.CLOSE_STDIN, self.id))

    async def signal(self, signo: int) -> None:
        """Deliver `signo` to the process (its group when it leads one). No-op after exit."""
        if self._exit is None:
            await self._client._send(p.make_frame(Op.SIGNAL, self.id, [(Tag.SIGNO, signo)]))

    async def resize(self, rows: int, cols: int) -> None:
        """Set the pty window size of a tty process."""
        if self._exit is None:
            fields: list[tuple[Tag, p.FieldValue]] = [(Tag.ROWS, rows), (Tag.COLS, cols)]
            await self._client._send(p.make_frame(Op.RESIZE, self.id, fields))

    async def wait(self, timeout_s: float | None = None) -> ExitStatus:
        """The exit status; TimeoutError after `timeout_s`, GuestProtocolError if the link drops."""
        async with asyncio.timeout(timeout_s):
            await self._done_event.wait()
        if self._exit is not None:
            return self._exit
        assert self._error is not None
        raise self._error


class GuestClient:
    """One connection to a guest's init. Create with `await GuestClient.connect(...)`."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        frame_deadline_s: float = FRAME_DEADLINE_S,
        label: str = "",
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._decoder = p.FrameDecoder()
        self._frame_deadline_s = frame_deadline_s
        self._partial_since = 0.0  # loop time the incomplete frame's first byte arrived
        self._frozen = False  # the VM's vCPUs are stopped: no frame can progress
        self._last_id = 0
        self._pending: dict[int, asyncio.Future[Frame]] = {}
        self._procs: dict[int, GuestProcess] = {}
        self._lost: GuestProtocolError | None = None
        self._lost_event = asyncio.Event()
        self._lost_callbacks: list[Callable[[GuestProtocolError], None]] = []
        self.info: GuestInfo | None = None
        self.last_guest_error: str = ""  # last ERROR with id 0 (a frame the guest rejected)
        self.ignored_frames = 0  # output, CREDIT or EXIT for a process that is not running
        # What the guest can make us log (rejected frames, stray ids): rate-limited, clipped.
        self.guest_log = GuestLog(log, label or "?")
        self._reader_task = asyncio.create_task(self._read_loop(), name="guest-reader")

    @classmethod
    async def connect(
        cls,
        path: Path | str,
        deadline_s: float,
        *,
        retry_interval_s: float = 0.02,
        frame_deadline_s: float = FRAME_DEADLINE_S,
    ) -> GuestClient:
        """Connect to QEMU's chardev socket, retrying until it appears or `deadline_s` passes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deadline_s
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(str(path))
                return cls(reader, writer, frame_deadline_s=frame_deadline_s,
                           label=Path(path).parent.name)
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                if loop.time() + retry_interval_s >= deadline:
                    raise GuestProtocolError(
                        f"guest control socket {path} not reachable within {deadline_s}s: {exc}"
                    ) from exc
            await asyncio.sleep(retry_interval_s)

    # -- connection state --
    @property
    def lost(self) -> GuestProtocolError | None:
        """Why the connection ended, or None while it is up."""
        return self._lost

    def add_lost_callback(self, callback: Callable[[GuestProtocolError], None]) -> None:
        self._lost_callbacks.append(callback)

    def set_frozen(self, frozen: bool) -> None:
        """Tell the client the VM's vCPUs are stopped (`docker pause`) or running again.

        A frozen guest cannot finish a frame it began, so the partial-frame clock stands still
        while frozen and restarts in full when the VM runs again.
        """
        self._frozen = frozen
        if not frozen:
            self._partial_since = asyncio.get_running_loop().time()

    async def wait_lost(self) -> GuestProtocolError:
        await self._lost_event.wait()
        assert self._lost is not None
        return self._lost

    def _lose(self, err: GuestProtocolError) -> None:
        if self._lost is not None:
            return
        self._lost = err
        self._lost_event.set()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(err)
        for proc in self._procs.values():
            proc._fail(err)
        self._procs.clear()
        self._writer.close()
        for cb in self._lost_callbacks:
            try:
                cb(err)
            except Exception:  # a callback must not break the others
                log.exception("guest lost-callback failed")

    async def close(self) -> None:
        """Drop the connection; every waiter fails with GuestProtocolError. Idempotent."""
        self._lose(GuestProtocolError("guest connection closed by the host"))
        self.guest_log.close()
        self._reader_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader_task
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            async with asyncio.timeout(1.0):
                await self._writer.wait_closed()

    # -- I/O --
    def _alloc_id(self) -> int:
        if self._last_id >= _MAX_ID:
            raise GuestProtocolError("request id space exhausted; reconnect")
        self._last_id += 1
        return self._last_id

    async def _send(self, data: bytes) -> None:
        if self._lost is not None:
            raise self._lost
        try:
            self._writer.write(data)
            await self._writer.drain()
        except (OSError, RuntimeError) as exc:
            err = GuestProtocolError(f"guest connection failed on write: {exc}")
            self._lose(err)
            raise err from exc

    async def _read_chunk(self) -> bytes:
        """The next bytes from the guest; GuestProtocolError if a frame it began is not complete
        within the frame deadline (not counting time the VM was frozen)."""
        loop = asyncio.get_running_loop()
        looked_again = False
        while True:
            if not self._decoder.buffered:
                return await self._reader.read(READ_CHUNK_BYTES)
            try:
                async with asyncio.timeout_at(self._partial_since + self._frame_deadline_s):
                    return await self._reader.read(READ_CHUNK_BYTES)
            except TimeoutError:
                pass
            if self._frozen:
                self._partial_since = loop.time()  # the clock does not run while frozen
            elif loop.time() >= self._partial_since + self._frame_deadline_s:
                # Once more with the deadline passed: bytes that arrived while this loop was too
                # busy to read them are already buffered, and a read returns them at once.
                if looked_again:
                    raise GuestProtocolError(
                        f"guest sent {self._decoder.buffered} bytes of a frame and not the rest "
                        f"within {self._frame_deadline_s:g}s"
                    )
                looked_again = True

    async def _read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await self._read_chunk()
                if not data:
                    raise GuestProtocolError("guest connection closed (VM gone?)")
                had_partial = self._decoder.buffered > 0
                frames = self._decoder.feed(data)
                if self._decoder.buffered and (frames or not had_partial):
                    self._partial_since = loop.time()  # a new frame began in this chunk
                for frame in frames:
                    self._dispatch(frame)
        except GuestProtocolError as err:
            self._lose(err)
        except OSError as exc:
            self._lose(GuestProtocolError(f"guest connection failed: {exc}"))
        except asyncio.CancelledError:
            self._lose(GuestProtocolError("guest connection closed by the host"))
            raise
        except Exception as exc:  # a bug here must not leave waiters hanging
            log.exception("guest reader crashed")
            self._lose(GuestProtocolError(f"guest reader crashed: {exc!r}"))

    def _dispatch(self, frame: Frame) -> None:
        op = frame.op
        if self.info is None and frame.id != 0 and frame.id not in self._pending:
            # Before the handshake: what the guest had queued for an earlier connection
            # (docs/guest-protocol.md, Transport); the guest replays it on RESUME if wanted.
            self.guest_log.log(logging.DEBUG, "ignoring %s for id %d before HELLO_OK",
                               Op(op).name if op in Op.__members__.values() else op, frame.id)
            return
        if op not in _GUEST_TO_HOST:
            if op in Op.__members__.values():
                raise GuestProtocolError(f"guest sent host-only opcode {Op(op).name}")
            self.guest_log.log(logging.DEBUG, "ignoring unknown opcode %d from guest", op)
            return
        if op in (Op.STDOUT, Op.STDERR):
            proc = self._procs.get(frame.id)
            if proc is None:
                self._ignore(frame, "a process that is not running (exited or never started)")
                return
            proc._on_data(Stream.STDOUT if op == Op.STDOUT else Stream.STDERR, frame.payload)
            return
        fields = frame.fields()  # validates the payload
        if op in (Op.OK, Op.HELLO_OK, Op.ERROR):
            if frame.id == 0:
                if op != Op.ERROR:
                    raise GuestProtocolError(f"guest sent {Op(op).name} with id 0")
                _, msg = _error_text(frame)
                self.last_guest_error = clip(msg)
                self.guest_log.log(logging.WARNING, "guest rejected a frame: %s", msg)
                return
            fut = self._pending.get(frame.id)
            if fut is None or fut.done():
                # A late reply (the request timed out) or the answer to a resent HELLO.
                self._ignore(frame, "a request that is not waiting", expected=True)
            else:
                fut.set_result(frame)
            return
        proc = self._procs.get(frame.id)
        if proc is None:
            self._ignore(frame, "a process that is not running (exited or never started)")
            return
        if op == Op.CREDIT:
            proc._on_credit(p.require_u32(fields, Tag.BYTES))
        elif op == Op.EXIT:
            status = ExitStatus(
                p.require_i32(fields, Tag.STATUS), p.get_u32(fields, Tag.SIGNAL, 0) or 0
            )
            del self._procs[frame.id]
            proc._on_exit(status)

    def _ignore(self, frame: Frame, why: str, *, expected: bool = False) -> None:
        """A frame for an id with nobody waiting for it: a late reply (`expected`), or output,
        CREDIT or EXIT after the process's EXIT, which the init never sends: a forged or
        confused message, logged and dropped (the first EXIT stands). An id the host never
        allocated is a protocol error (fatal for the VM)."""
        if frame.id > self._last_id:
            raise GuestProtocolError(
                f"guest sent {Op(frame.op).name} for id {frame.id}, which the host never "
                "allocated"
            )
        level = logging.DEBUG
        if not expected:
            self.ignored_frames += 1
            if self.ignored_frames <= IGNORED_FRAME_WARNINGS:
                level = logging.WARNING
        self.guest_log.log(level, "ignoring %s from the guest for id %d: %s", Op(frame.op).name,
                           frame.id, why)

    async def _request(
        self,
        op: Op,
        fields: Iterable[tuple[Tag, p.FieldValue]],
        timeout_s: float,
        *,
        id_: int | None = None,
    ) -> Frame:
        id_ = self._alloc_id() if id_ is None else id_
        fut: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._pending[id_] = fut
        try:
            await self._send(p.make_frame(op, id_, fields))
            async with asyncio.timeout(timeout_s):
                return await fut
        except TimeoutError:
            msg = f"guest did not answer {op.name} within {timeout_s}s"
            raise GuestProtocolError(msg) from None
        finally:
            self._pending.pop(id_, None)
            _mark_retrieved(fut)

    # -- requests --
    async def hello(
        self, deadline_s: float = REQUEST_TIMEOUT_S, *, resend_s: float = HELLO_RESEND_S
    ) -> GuestInfo:
        """Handshake. HELLO is resent every `resend_s` until the guest answers any of them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deadline_s
        fut: asyncio.Future[Frame] = loop.create_future()
        ids: list[int] = []
        fields = [(Tag.VERSION, p.PROTOCOL_VERSION)]
        try:
            while not fut.done():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise GuestProtocolError(f"guest did not answer HELLO within {deadline_s}s")
                id_ = self._alloc_id()
                ids.append(id_)
                self._pending[id_] = fut
                await self._send(p.make_frame(Op.HELLO, id_, fields))
                await asyncio.wait({fut}, timeout=min(resend_s, remaining))
            frame = fut.result()
        finally:
            for id_ in ids:
                self._pending.pop(id_, None)
            _mark_retrieved(fut)
        if frame.op == Op.ERROR:
            _, msg = _error_text(frame)
            raise GuestProtocolError(f"guest refused HELLO (version {p.PROTOCOL_VERSION}): {msg}")
        if frame.op != Op.HELLO_OK:
            raise GuestProtocolError(f"guest answered HELLO with {Op(frame.op).name}")
        f = frame.fields()
        info = GuestInfo(
            version=p.require_u32(f, Tag.VERSION),
            kernel=p.get_str(f, Tag.KERNEL, "") or "",
            init_version=p.get_str(f, Tag.INIT_VERSION, "") or "",
            last_id=p.get_u32(f, Tag.LAST_ID, 0) or 0,
        )
        if info.version != p.PROTOCOL_VERSION:
            raise GuestProtocolError(f"guest speaks protocol version {info.version}, host 1")
        if info.last_id > _MAX_ID - LAST_ID_HEADROOM:
            raise GuestProtocolError(f"guest says ids up to {info.last_id} are used: no room")
        # A HELLO detaches the guest's processes from any connection (RESUME re-attaches one);
        # ids continue above every id an earlier host used.
        self._last_id = max(self._last_id, info.last_id)
        self.info = info
        return info

    async def _simple(
        self, op: Op, fields: Iterable[tuple[Tag, p.FieldValue]], timeout_s: float
    ) -> Frame:
        frame = await self._request(op, fields, timeout_s)
        if frame.op == Op.ERROR:
            err, msg = _error_text(frame)
            raise GuestRequestError(f"guest {op.name} failed: {msg}", errno_value=err)
        if frame.op != Op.OK:
            raise GuestProtocolError(f"guest answered {op.name} with {Op(frame.op).name}")
        return frame

    async def setup_root(
        self,
        source: str,
        hostname: str | None = None,
        readonly: bool = False,
        *,
        subdir: str = "",
        pids_max: int = 0,
        container: int = 0,
        cache: RootfsCache = RootfsCache.NONE,
        staged: bool = False,
        timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> None:
        """Mount the 9p share `source` (or the directory `subdir` inside it: a pooled VM's slot)
        as the container root (once per VM); `pids_max` > 0 puts the container's processes in
        a pids cgroup of that limit. With `container` n > 0, the root of pod member n instead:
        the directory `subdir` of the share (the VM's hostname and pids cgroup stay the first
        container's, so neither is sent). `cache` is how the guest caches the first
        container's root (RootfsCache; BLOCK: the VM's root disk holds the image's files
        and `source` (or `subdir`) the writable layer's `upper/` and `work/`); a member's
        root is always uncached. With RAM the
        guest copies the root into its memory before it answers (the deadline grows to
        `ROOT_COPY_TIMEOUT_S`: the copy reads the whole root over 9p). `staged` (BLOCK only):
        the root disk is still the file `stage_lower` read, whose mount the overlay takes."""
        if container:
            if not subdir or hostname is not None or pids_max:
                raise InvalidArgument("a pod member's root is a SUBDIR of a share, without a "
                                      "hostname or pids limit of its own")
        if staged and cache is not RootfsCache.BLOCK:
            raise InvalidArgument("only a block root has a staged lower")
        fields: list[tuple[Tag, p.FieldValue]] = [(Tag.SOURCE, source)]
        if hostname is not None:
            fields.append((Tag.HOSTNAME, hostname))
        fields.append((Tag.READONLY, int(readonly)))
        if subdir:
            fields.append((Tag.SUBDIR, subdir))
        if pids_max:
            fields.append((Tag.PIDS_MAX, pids_max))
        if container:
            fields.append((Tag.CONTAINER, container))
        if cache is not RootfsCache.NONE:
            if container:
                raise InvalidArgument("a pod member's root is always uncached")
            fields.append((Tag.CACHE, int(cache)))
        if staged:
            fields.append((Tag.STAGED, 1))
        if cache is RootfsCache.RAM:
            timeout_s = max(timeout_s, ROOT_COPY_TIMEOUT_S)
        await self._simple(Op.SETUP_ROOT, fields, timeout_s)

    async def stage_lower(self, paths: Sequence[str], *, max_bytes: int = 0,
                          timeout_s: float = STAGE_LOWER_TIMEOUT_S) -> int:
        """Before SETUP_ROOT: have the guest mount the root disk's erofs (once; it keeps the
        mount for a `setup_root(..., staged=True)`) and read each of `paths` (files of the
        image, relative to its root; a name that is not UTF-8 goes as the bytes it stands for,
        `os.fsencode`) to its end, at most `max_bytes` in all (0: the guest's own cap); what
        cannot be read is skipped. The bytes read. Long lists go in several frames; an empty one
        in one frame all the same (the mount is what `staged` needs)."""
        total = 0
        left = max_bytes
        for batch in list(_path_batches([os.fsencode(path) for path in paths])) or [[]]:
            fields: list[tuple[Tag, p.FieldValue]] = [(Tag.PATH, path) for path in batch]
            if max_bytes:
                fields.append((Tag.BYTES, left))
            frame = await self._simple(Op.STAGE_LOWER, fields, timeout_s)
            read = p.get_u32(frame.fields(), Tag.BYTES, 0) or 0
            total += read
            if max_bytes:
                left -= read
                if left <= 0:
                    break
        return total

    async def sync_root(self, *, drop: bool = False,
                        timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        """SYNC_ROOT: the guest's cached writes to the root reach the host (before the host
        reads it); with `drop`, the guest also forgets its clean caches, so what the host wrote
        into the root since is read afresh."""
        fields: list[tuple[Tag, p.FieldValue]] = [(Tag.DROP, 1)] if drop else []
        await self._simple(Op.SYNC_ROOT, fields, timeout_s)

    async def sysctl(
        self, settings: Iterable[str], *, timeout_s: float = REQUEST_TIMEOUT_S
    ) -> None:
        """Write "KEY=VALUE" sysctls of the VM, in order (GuestRequestError names the first
        that fails)."""
        await self._simple(Op.SYSCTL, [(Tag.SYSCTL, s) for s in settings], timeout_s)

    async def stage_root(self, source: str, *, cache: RootfsCache = RootfsCache.NONE,
                         timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        """Mount the 9p share `source` at the guest's staging point ahead of time (a pooled VM's
        slot), cached as `cache` says (NONE or LOOSE), and rehearse the root's mounts;
        SETUP_ROOT with a SUBDIR of it then only binds when it asks for that cache mode (else
        the guest mounts the share afresh first)."""
        if cache not in (RootfsCache.NONE, RootfsCache.LOOSE):
            raise InvalidArgument(f"a share is staged uncached or loose, not {cache.name}")
        fields: list[tuple[Tag, p.FieldValue]] = [(Tag.SOURCE, source)]
        if cache is not RootfsCache.NONE:
            fields.append((Tag.CACHE, int(cache)))
        await self._simple(Op.STAGE_ROOT, fields, timeout_s)

    async def start(
        self, spec: ProcessSpec, *, timeout_s: float = REQUEST_TIMEOUT_S
    ) -> GuestProcess:
        """Start a process; ProcessStartError (exit_code 127/126/125) if it could not exec."""
        fields = spec.fields()
        id_ = self._alloc_id()
        proc = GuestProcess(self, id_, spec)
        self._procs[id_] = proc  # output may arrive right after OK
        try:
            frame = await self._request(Op.START, fields, timeout_s, id_=id_)
        except BaseException:
            self._procs.pop(id_, None)
            raise
        if frame.op == Op.ERROR:
            self._procs.pop(id_, None)
            err, msg = _error_text(frame)
            raise ProcessStartError(
                start_error_message(spec.args[0], err, msg),
                errno_value=err,
                exit_code=start_error_exit_code(err),
            )
        if frame.op != Op.OK:
            self._procs.pop(id_, None)
            raise GuestProtocolError(f"guest answered START with {Op(frame.op).name}")
        proc.pid = p.require_u32(frame.fields(), Tag.PID)
        return proc

    async def resume(
        self, process_id: int, received_bytes: int, spec: ProcessSpec, *, pid: int = 0,
        timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> GuestProcess:
        """Re-attach to a process an earlier connection started (after `hello`): the guest
        replays its output after the first `received_bytes` bytes, then its EXIT if it ended.
        GuestRequestError (ESRCH) if the guest no longer knows it."""
        if not 0 < process_id <= self._last_id:
            raise InvalidArgument(f"process id {process_id} was not used on this guest")
        if process_id in self._procs:
            raise InvalidArgument(f"process {process_id} is attached already")
        proc = GuestProcess(self, process_id, spec)
        proc.pid = pid
        proc.received_bytes = received_bytes
        self._procs[process_id] = proc  # the replay follows the OK at once
        fields: list[tuple[Tag, p.FieldValue]] = [(Tag.PROC, process_id),
                                                  (Tag.RECEIVED, received_bytes)]
        try:
            await self._simple(Op.RESUME, fields, timeout_s)
        except BaseException:
            if self._procs.get(process_id) is proc:
                del self._procs[process_id]
            raise
        return proc

    async def fixup(
        self,
        *,
        realtime_ns: int | None = None,
        entropy: bytes = b"",
        cpus: int = 0,
        timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> int:
        """Per-VM fix-ups (FIXUP): set the wall clock, mix `entropy` into the kernel RNG and
        reseed it, online exactly `cpus` vCPUs (0 = leave them). Returns the vCPUs online (0 if
        not asked)."""
        if len(entropy) > FIXUP_MAX_ENTROPY_BYTES:
            raise InvalidArgument(f"at most {FIXUP_MAX_ENTROPY_BYTES} bytes of entropy")
        fields: list[tuple[Tag, p.FieldValue]] = []
        if realtime_ns is not None:
            sec, nsec = divmod(realtime_ns, 1_000_000_000)
            fields += [(Tag.REALTIME_S, sec), (Tag.REALTIME_NS, nsec)]
        if entropy:
            fields.append((Tag.ENTROPY, entropy.hex()))
        if cpus:
            fields.append((Tag.CPUS, cpus))
        frame = await self._simple(Op.FIXUP, fields, timeout_s)
        return p.get_u32(frame.fields(), Tag.CPUS, 0) or 0

    async def net_config(
        self, fields: Iterable[tuple[Tag, p.FieldValue]], *, timeout_s: float = REQUEST_TIMEOUT_S
    ) -> None:
        """NET_CONFIG: configure one NIC (or only loopback) from `fields` (MAC, IFNAME, ...)."""
        await self._simple(Op.NET_CONFIG, fields, timeout_s)

    async def mount(
        self, fields: Iterable[tuple[Tag, p.FieldValue]], *, timeout_s: float = REQUEST_TIMEOUT_S
    ) -> None:
        """MOUNT: a 9p share or tmpfs inside the container root (after SETUP_ROOT)."""
        await self._simple(Op.MOUNT, fields, timeout_s)

    async def ping(self, *, timeout_s: float = PING_TIMEOUT_S) -> None:
        await self._simple(Op.PING, [], timeout_s)

    async def poweroff(self, *, timeout_s: float = POWEROFF_TIMEOUT_S) -> None:
        """Ask the guest to stop everything, sync and power off. Connection loss counts as done."""
        try:
            await self._simple(Op.POWEROFF, [], timeout_s)
        except GuestProtocolError:
            if self._lost is None:
                raise
