"""GuestClient against a scripted fake guest on a unix socket (the real guest: tests/vm)."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from steelcup.errors import GuestProtocolError, InvalidArgument, ProcessStartError
from steelcup.guest import client as client_module
from steelcup.guest import protocol as p
from steelcup.guest.client import (
    ExitStatus,
    GuestClient,
    GuestRequestError,
    ProcessSpec,
    Stream,
    start_error_message,
)
from steelcup.guest.protocol import Frame, Op, Tag

Guest = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def frames(reader: asyncio.StreamReader, dec: p.FrameDecoder) -> Frame:
    while True:
        pending = getattr(dec, "_ready", [])
        if pending:
            frame: Frame = pending.pop(0)
            return frame
        data = await reader.read(65536)
        if not data:
            raise EOFError
        dec._ready = pending + dec.feed(data)  # type: ignore[attr-defined]


def send(writer: asyncio.StreamWriter, op: Op, id_: int, fields: list[tuple[Tag, object]]) -> None:
    writer.write(p.make_frame(op, id_, fields))  # type: ignore[arg-type]


async def run_with_guest(
    guest: Guest, body: Callable[[GuestClient], Awaitable[None]], **connect_kw: float
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ctl.sock"
        server = await asyncio.start_unix_server(guest, str(path))
        try:
            client = await GuestClient.connect(path, 2.0, **connect_kw)
            try:
                await asyncio.wait_for(body(client), 10)
            finally:
                await client.close()
        finally:
            server.close()


def basic_guest(total_out: int = 0) -> Guest:
    """Answers HELLO (only the third one: earlier ones are 'dropped'), PING, SETUP_ROOT and
    START; a started process echoes stdin and then emits `total_out` bytes within credit."""

    async def guest(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        dec = p.FrameDecoder()
        hellos = 0
        credit = p.INITIAL_CREDIT_BYTES
        credit_event = asyncio.Event()
        tasks: list[asyncio.Task[None]] = []

        async def produce(pid: int) -> None:
            nonlocal credit
            left = total_out
            while left:
                if credit == 0:
                    credit_event.clear()
                    await credit_event.wait()
                    continue
                n = min(left, credit, 65536)
                credit -= n
                left -= n
                op = Op.STDOUT if left % 2 == 0 else Op.STDERR
                writer.write(p.encode_frame(Frame(op, pid, 0, b"x" * n)))
                await writer.drain()
            send(writer, Op.EXIT, pid, [(Tag.STATUS, 3), (Tag.SIGNAL, 0)])

        try:
            while True:
                f = await frames(reader, dec)
                if f.op == Op.HELLO:
                    hellos += 1
                    if hellos >= 3:
                        send(
                            writer,
                            Op.HELLO_OK,
                            f.id,
                            [(Tag.VERSION, 1), (Tag.KERNEL, "6.1-fake"), (Tag.INIT_VERSION, "t")],
                        )
                elif f.op in (Op.PING, Op.SETUP_ROOT):
                    src = p.get_str(f.fields(), Tag.SOURCE)
                    if src == "bad":
                        send(writer, Op.ERROR, f.id, [(Tag.ERRNO, errno.EIO), (Tag.MESSAGE, "x")])
                    else:
                        send(writer, Op.OK, f.id, [])
                elif f.op == Op.START:
                    args = p.get_all(f.fields(), Tag.ARG)
                    if args[0] == b"missing":
                        send(writer, Op.ERROR, f.id, [(Tag.ERRNO, errno.ENOENT)])
                    elif args[0] == b"noexec":
                        send(writer, Op.ERROR, f.id, [(Tag.ERRNO, errno.EACCES)])
                    elif args[0] == b"hang":
                        pass
                    else:
                        send(writer, Op.OK, f.id, [(Tag.PID, 42)])
                elif f.op == Op.STDIN:
                    credit -= len(f.payload)  # echo within the output window
                    writer.write(p.encode_frame(Frame(Op.STDOUT, f.id, 0, f.payload)))
                    send(writer, Op.CREDIT, f.id, [(Tag.BYTES, len(f.payload))])
                elif f.op == Op.CLOSE_STDIN:
                    tasks.append(asyncio.create_task(produce(f.id)))
                elif f.op == Op.CREDIT:
                    credit += p.require_u32(f.fields(), Tag.BYTES)
                    credit_event.set()
                elif f.op == Op.POWEROFF:
                    send(writer, Op.OK, f.id, [])
                    await writer.drain()
                    writer.close()
                    return
                await writer.drain()
        except (EOFError, ConnectionError):
            writer.close()

    return guest


def test_hello_resends_until_answered_and_requests_work() -> None:
    async def body(c: GuestClient) -> None:
        info = await c.hello(5.0, resend_s=0.05)
        assert (info.version, info.kernel, info.init_version) == (1, "6.1-fake", "t")
        await c.ping()
        await c.setup_root("rootfs", "h", True)
        with pytest.raises(GuestRequestError) as ei:
            await c.setup_root("bad")
        assert ei.value.errno_value == errno.EIO
        with pytest.raises(ProcessStartError) as es:
            await c.start(ProcessSpec(args=("missing",)))
        assert es.value.exit_code == 127
        assert str(es.value) == 'exec: "missing": executable file not found in $PATH'
        with pytest.raises(ProcessStartError) as es:
            await c.start(ProcessSpec(args=("noexec",)))
        assert es.value.exit_code == 126
        with pytest.raises(GuestProtocolError, match="did not answer"):
            await c.start(ProcessSpec(args=("hang",)), timeout_s=0.2)
        await c.poweroff()
        with pytest.raises(GuestProtocolError):
            await c.ping()

    asyncio.run(run_with_guest(basic_guest(), body))


def test_output_is_flow_controlled_and_stdin_echoes() -> None:
    total = 3 * 1024 * 1024

    async def body(c: GuestClient) -> None:
        await c.hello(5.0, resend_s=0.01)
        proc = await c.start(ProcessSpec(args=("gen",), stdin=True))
        assert proc.pid == 42
        await proc.write_stdin(b"hello")
        await proc.close_stdin()
        got = {Stream.STDOUT: 0, Stream.STDERR: 0}
        first: bytes | None = None
        peak = 0
        async for stream, data in proc:
            if first is None:
                first = data
            got[stream] += len(data)
            peak = max(peak, proc.buffered_bytes)
            await asyncio.sleep(0)  # a slow consumer
        assert first is not None and first.startswith(b"hello")
        assert got[Stream.STDOUT] + got[Stream.STDERR] == total + 5
        assert got[Stream.STDERR] > 0
        assert peak <= p.INITIAL_CREDIT_BYTES
        assert await proc.wait(1) == ExitStatus(3, 0)
        with pytest.raises(BrokenPipeError):
            await proc.write_stdin(b"late")
        await proc.close_stdin()  # idempotent

    asyncio.run(run_with_guest(basic_guest(total), body))


def test_dropped_connection_fails_every_waiter() -> None:
    async def guest(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        dec = p.FrameDecoder()
        while True:
            f = await frames(reader, dec)
            if f.op == Op.HELLO:
                send(writer, Op.HELLO_OK, f.id, [(Tag.VERSION, 1)])
            elif f.op == Op.START:
                send(writer, Op.OK, f.id, [(Tag.PID, 7)])
            elif f.op == Op.PING:
                writer.close()  # the VM "dies" while requests and processes wait
                return
            await writer.drain()

    async def body(c: GuestClient) -> None:
        await c.hello(2.0)
        proc = await c.start(ProcessSpec(args=("x",)))
        waiter = asyncio.create_task(proc.wait())

        async def first_chunk() -> tuple[Stream, bytes]:
            async for chunk in proc:
                return chunk
            raise AssertionError("output ended without an error")

        reader = asyncio.create_task(first_chunk())
        with pytest.raises(GuestProtocolError):
            await c.ping(timeout_s=5)
        with pytest.raises(GuestProtocolError):
            await asyncio.wait_for(waiter, 1)
        with pytest.raises(GuestProtocolError):
            await asyncio.wait_for(reader, 1)
        assert c.lost is not None

    asyncio.run(run_with_guest(guest, body))


def test_guest_exceeding_credit_is_fatal() -> None:
    async def guest(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        dec = p.FrameDecoder()
        while True:
            f = await frames(reader, dec)
            if f.op == Op.HELLO:
                send(writer, Op.HELLO_OK, f.id, [(Tag.VERSION, 1)])
            elif f.op == Op.START:
                send(writer, Op.OK, f.id, [(Tag.PID, 7)])
                for _ in range(5):  # 320 KiB > 256 KiB window, without waiting for credit
                    writer.write(p.encode_frame(Frame(Op.STDOUT, f.id, 0, b"y" * 65536)))
            await writer.drain()

    async def body(c: GuestClient) -> None:
        await c.hello(2.0)
        proc = await c.start(ProcessSpec(args=("x",)))
        with pytest.raises(GuestProtocolError, match="credit"):
            await proc.wait(5)

    asyncio.run(run_with_guest(guest, body))


def test_bad_magic_from_guest_is_fatal() -> None:
    async def guest(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"XXXX" + b"\0" * 12)
        await writer.drain()
        await reader.read(100)

    async def body(c: GuestClient) -> None:
        with pytest.raises(GuestProtocolError, match="magic"):
            await c.hello(2.0)

    asyncio.run(run_with_guest(guest, body))


def test_connect_deadline() -> None:
    async def body() -> None:
        with pytest.raises(GuestProtocolError, match="not reachable"):
            await GuestClient.connect("/nonexistent/ctl.sock", 0.2)

    asyncio.run(body())


# ---- a guest that stalls half-way through a frame, or forges messages -------------------------

FRAME_DEADLINE_S = 0.3


def stalling_guest(cut: int, rest: asyncio.Event | None = None) -> Guest:
    """Answers HELLO and START; then sends the first `cut` bytes of a STDOUT frame of the
    started process, and the rest only once `rest` is set (never without it)."""

    async def guest(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        dec = p.FrameDecoder()
        try:
            while True:
                f = await frames(reader, dec)
                if f.op == Op.HELLO:
                    send(writer, Op.HELLO_OK, f.id, [(Tag.VERSION, 1)])
                elif f.op == Op.START:
                    send(writer, Op.OK, f.id, [(Tag.PID, 7)])
                    frame = p.encode_frame(Frame(Op.STDOUT, f.id, 0, b"z" * 100))
                    writer.write(frame[:cut])
                    await writer.drain()
                    if rest is not None:
                        await rest.wait()
                        writer.write(frame[cut:])
                        send(writer, Op.EXIT, f.id, [(Tag.STATUS, 0), (Tag.SIGNAL, 0)])
                elif f.op == Op.PING:
                    send(writer, Op.OK, f.id, [])
                await writer.drain()
        except (EOFError, ConnectionError):
            writer.close()

    return guest


@pytest.mark.parametrize("cut", [5, p.HEADER_SIZE, p.HEADER_SIZE + 40])
def test_half_sent_frame_is_fatal_after_the_deadline(cut: int) -> None:
    """Issue #8: a guest that sent part of a frame (a header, or a header and some payload) and
    nothing more left its process 'running' for ever; now the link is lost at the deadline and
    every waiter fails (the Machine kills the VM, the container exits as for a lost guest)."""

    async def body(c: GuestClient) -> None:
        await c.hello(2.0)
        proc = await c.start(ProcessSpec(args=("x",)))
        started = time.monotonic()
        with pytest.raises(GuestProtocolError, match="of a frame and not the rest within 0.3s"):
            await proc.wait(5)
        assert time.monotonic() - started >= FRAME_DEADLINE_S * 0.9
        assert c.lost is not None

    asyncio.run(run_with_guest(stalling_guest(cut), body, frame_deadline_s=FRAME_DEADLINE_S))


def test_frames_slower_in_total_than_the_deadline_are_fine() -> None:
    """The deadline is per frame, from its first byte: a guest whose frames each complete in
    time is not cut off however long the stream runs, nor for being idle between frames."""

    async def guest(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        dec = p.FrameDecoder()
        while True:
            f = await frames(reader, dec)
            if f.op == Op.HELLO:
                send(writer, Op.HELLO_OK, f.id, [(Tag.VERSION, 1)])
            elif f.op == Op.START:
                send(writer, Op.OK, f.id, [(Tag.PID, 7)])
                await writer.drain()
                for i in range(4):
                    frame = p.encode_frame(Frame(Op.STDOUT, f.id, 0, bytes([65 + i]) * 50))
                    writer.write(frame[:30])  # the next frame begins right after the last
                    await writer.drain()
                    await asyncio.sleep(FRAME_DEADLINE_S / 2)
                    writer.write(frame[30:])
                    await writer.drain()
                await asyncio.sleep(FRAME_DEADLINE_S * 2)  # idle: no frame pending
                send(writer, Op.EXIT, f.id, [(Tag.STATUS, 0), (Tag.SIGNAL, 0)])
            await writer.drain()

    async def body(c: GuestClient) -> None:
        await c.hello(2.0)
        proc = await c.start(ProcessSpec(args=("x",)))
        out = b"".join([data async for _, data in proc])
        assert out == b"A" * 50 + b"B" * 50 + b"C" * 50 + b"D" * 50
        assert await proc.wait(1) == ExitStatus(0, 0)
        assert c.lost is None

    asyncio.run(run_with_guest(guest, body, frame_deadline_s=FRAME_DEADLINE_S))


def test_a_frozen_vm_does_not_run_out_the_frame_deadline() -> None:
    """`docker pause` may freeze the guest between two writes of one frame: while frozen the
    clock stands still, and after the VM runs again the guest has a full deadline."""
    rest = asyncio.Event()
    deadline_s = 1.0  # the check after the thaw has 0.7 s of slack on a loaded host

    async def body(c: GuestClient) -> None:
        await c.hello(2.0)
        c.set_frozen(True)
        proc = await c.start(ProcessSpec(args=("x",)))
        await asyncio.sleep(deadline_s * 1.5)
        assert c.lost is None
        c.set_frozen(False)
        await asyncio.sleep(deadline_s * 0.3)
        assert c.lost is None
        rest.set()
        out = b"".join([data async for _, data in proc])
        assert out == b"z" * 100
        assert await proc.wait(1) == ExitStatus(0, 0)

    asyncio.run(run_with_guest(stalling_guest(p.HEADER_SIZE + 40, rest), body,
                               frame_deadline_s=deadline_s))


def test_forged_exits_are_logged_and_ignored(caplog: pytest.LogCaptureFixture) -> None:
    """A second EXIT, an EXIT for a request id and output after EXIT change nothing: the first
    EXIT stands, the link stays up, each is a warning. An id the host never allocated is a
    protocol error: the link is lost (the Machine kills the VM)."""

    async def guest(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        dec = p.FrameDecoder()
        hello_id = 0
        while True:
            f = await frames(reader, dec)
            if f.op == Op.HELLO:
                hello_id = f.id
                send(writer, Op.HELLO_OK, f.id, [(Tag.VERSION, 1)])
            elif f.op == Op.START:
                send(writer, Op.OK, f.id, [(Tag.PID, 7)])
                send(writer, Op.EXIT, f.id, [(Tag.STATUS, 3), (Tag.SIGNAL, 0)])
                send(writer, Op.EXIT, f.id, [(Tag.STATUS, 42), (Tag.SIGNAL, 0)])
                send(writer, Op.EXIT, hello_id, [(Tag.STATUS, 42), (Tag.SIGNAL, 0)])
                writer.write(p.encode_frame(Frame(Op.STDOUT, f.id, 0, b"late")))
            elif f.op == Op.PING:
                send(writer, Op.OK, f.id, [])
                send(writer, Op.EXIT, 999, [(Tag.STATUS, 42), (Tag.SIGNAL, 0)])
            await writer.drain()

    async def body(c: GuestClient) -> None:
        await c.hello(2.0)
        proc = await c.start(ProcessSpec(args=("x",)))
        assert await proc.wait(1) == ExitStatus(3, 0)
        await c.ping()  # the forged frames came before this answer, and broke nothing
        assert c.lost is None or "999" in str(c.lost)
        assert c.ignored_frames == 3
        assert await proc.wait(1) == ExitStatus(3, 0)
        err = await asyncio.wait_for(c.wait_lost(), 2)
        assert "EXIT for id 999, which the host never allocated" in str(err)

    with caplog.at_level(logging.WARNING, logger="steelcup.guest.client"):
        asyncio.run(run_with_guest(guest, body))
    # (each line says which VM first: "vm <state dir>: ignoring ...")
    ignored = [m.split(": ", 1)[1] for m in (r.getMessage() for r in caplog.records)
               if m.split(": ", 1)[-1].startswith("ignoring")]
    assert ignored == [
        "ignoring EXIT from the guest for id 2: a process that is not running (exited or never "
        "started)",
        "ignoring EXIT from the guest for id 1: a process that is not running (exited or never "
        "started)",
        "ignoring STDOUT from the guest for id 2: a process that is not running (exited or "
        "never started)",
    ], ignored


def test_a_flood_of_rejected_frames_logs_little(caplog: pytest.LogCaptureFixture) -> None:
    """The attack: a guest sends ERROR frames with id 0 (each logged at WARNING, in full) as
    fast as it can: 120 MB of daemon log in 2 s before. Now a burst of clipped lines."""
    count = 2000

    async def guest(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        frame = p.make_frame(Op.ERROR, 0, [(Tag.ERRNO, errno.EINVAL),
                                           (Tag.MESSAGE, "z" * 60_000)])
        for _ in range(count):
            writer.write(frame)
            await writer.drain()
        await reader.read()

    async def body(client: GuestClient) -> None:
        while client.last_guest_error == "" or caplog_bytes() == 0:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)  # the rest of the flood arrives

    def ours() -> list[logging.LogRecord]:
        # asyncio may log the cancelled fake guest at teardown, depending on GC timing
        return [r for r in caplog.records if r.name == "steelcup.guest.client"]

    def caplog_bytes() -> int:
        return sum(len(r.getMessage()) for r in ours())

    with caplog.at_level(logging.WARNING, "steelcup.guest.client"):
        asyncio.run(run_with_guest(guest, body))
    assert 0 < caplog_bytes() < 20 * 1000
    assert "suppressed" in ours()[-1].getMessage()


def test_start_carries_caps_only_when_the_host_chose_a_set() -> None:
    """No CAPS field means docker's default to the init (and to an init that predates it)."""
    plain = p.decode_fields(p.encode_fields(ProcessSpec(args=("sh",)).fields()))
    assert p.get_u64(plain, Tag.CAPS) is None
    every = (1 << 41) - 1
    for caps in (0, every):
        fields = p.decode_fields(p.encode_fields(ProcessSpec(args=("sh",), caps=caps).fields()))
        assert p.get_u64(fields, Tag.CAPS) == caps


def test_start_error_messages_are_dockerds() -> None:
    """runc's wording (Go's exec.LookPath), which users and scripts match on."""
    assert start_error_message("nosuch", errno.ENOENT, "x") == (
        'exec: "nosuch": executable file not found in $PATH')
    assert start_error_message("/nope", errno.ENOENT, "x") == (
        'exec: "/nope": stat /nope: no such file or directory')
    assert start_error_message("/etc/passwd", errno.EACCES, "x") == (
        'exec: "/etc/passwd": permission denied')
    assert start_error_message("/bin/x", errno.ENOEXEC, "x") == (
        'exec: "/bin/x": exec format error')
    assert start_error_message("a", errno.EPERM, "setting capabilities failed") == (
        'unable to start container process: exec: "a": setting capabilities failed')


def resuming_guest(seen: list[Frame]) -> Guest:
    """A guest that an earlier host used up to id 5: process 5 wrote b"hello" (the host had
    3 bytes of it) and exited 7; RESUME of any other process is ESRCH."""

    async def guest(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        dec = p.FrameDecoder()
        while True:
            try:
                f = await frames(reader, dec)
            except EOFError:
                return
            seen.append(f)
            fields = f.fields()
            if f.op == Op.HELLO:
                send(writer, Op.HELLO_OK, f.id, [(Tag.VERSION, 1), (Tag.LAST_ID, 5)])
            elif f.op == Op.RESUME:
                if p.get_u32(fields, Tag.PROC) != 5:
                    send(writer, Op.ERROR, f.id, [(Tag.ERRNO, errno.ESRCH),
                                                  (Tag.MESSAGE, "no such process")])
                    continue
                received = p.get_u64(fields, Tag.RECEIVED) or 0
                send(writer, Op.OK, f.id, [])
                writer.write(p.encode_frame(Frame(Op.STDOUT, 5, 0, b"hello"[received:])))
                send(writer, Op.EXIT, 5, [(Tag.STATUS, 7), (Tag.SIGNAL, 0)])
            elif f.op == Op.PING:
                send(writer, Op.OK, f.id, [])
            await writer.drain()

    return guest


def test_resume_replays_what_the_host_lacks_and_ids_continue_above_last_id() -> None:
    seen: list[Frame] = []

    async def body(client: GuestClient) -> None:
        info = await client.hello(2.0)
        assert info.last_id == 5
        proc = await client.resume(5, 3, ProcessSpec(args=("sh",)), pid=1)
        chunks = [data async for _, data in proc.output()]
        assert b"".join(chunks) == b"lo"
        assert (await proc.wait(2.0)).status == 7
        assert proc.received_bytes == 5 and proc.pid == 1
        await client.ping()
        with pytest.raises(GuestRequestError) as err:
            await client.resume(4, 0, ProcessSpec(args=("sh",)))
        assert err.value.errno_value == errno.ESRCH

    asyncio.run(run_with_guest(resuming_guest(seen), body))
    resume = next(f for f in seen if f.op == Op.RESUME)
    assert p.get_u64(resume.fields(), Tag.RECEIVED) == 3
    later = [f.id for f in seen if f.op in (Op.PING, Op.RESUME)]
    assert later and all(i > 5 for i in later)  # requests after HELLO_OK allocate above 5


def test_frames_queued_for_an_earlier_connection_are_ignored_before_hello_ok() -> None:
    """A guest that was writing to the previous daemon when it left sends that output to the
    new connection first: not a protocol error (the id is not the new host's yet)."""

    async def guest(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(p.encode_frame(Frame(Op.STDOUT, 10, 0, b"stale")))
        send(writer, Op.EXIT, 10, [(Tag.STATUS, 0), (Tag.SIGNAL, 0)])
        dec = p.FrameDecoder()
        while True:
            try:
                f = await frames(reader, dec)
            except EOFError:
                return
            if f.op == Op.HELLO:
                send(writer, Op.HELLO_OK, f.id, [(Tag.VERSION, 1), (Tag.LAST_ID, 12)])
            elif f.op == Op.PING:
                send(writer, Op.OK, f.id, [])
            await writer.drain()

    async def body(client: GuestClient) -> None:
        await client.hello(2.0)
        await client.ping()
        assert client.lost is None and client.ignored_frames == 0

    asyncio.run(run_with_guest(guest, body))


def test_output_is_credited_only_once_the_consumer_is_done_with_it() -> None:
    """The guest forgets output the host credits; live restore needs each chunk in the log
    first: the credit for a chunk goes out when the consumer asks for the next one."""
    credits: list[int] = []

    async def guest(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        dec = p.FrameDecoder()
        try:
            while True:
                f = await frames(reader, dec)
                if f.op == Op.HELLO:
                    send(writer, Op.HELLO_OK, f.id, [(Tag.VERSION, 1)])
                elif f.op == Op.START:
                    send(writer, Op.OK, f.id, [(Tag.PID, 42)])
                    writer.write(p.encode_frame(Frame(Op.STDOUT, f.id, 0, b"0123456789")))
                elif f.op == Op.CREDIT:
                    credits.append(p.require_u32(f.fields(), Tag.BYTES))
                    send(writer, Op.EXIT, f.id, [(Tag.STATUS, 0), (Tag.SIGNAL, 0)])
                await writer.drain()
        except (EOFError, ConnectionError):
            writer.close()

    async def body(c: GuestClient) -> None:
        await c.hello(5.0)
        proc = await c.start(ProcessSpec(args=("x",)))
        chunks = proc.output()
        assert await chunks.__anext__() == (Stream.STDOUT, b"0123456789")
        await asyncio.sleep(0.2)  # the consumer is still writing it somewhere
        assert credits == []
        with pytest.raises(StopAsyncIteration):
            await chunks.__anext__()
        assert credits == [10]

    asyncio.run(run_with_guest(guest, body))


def test_a_pod_members_requests_name_its_container() -> None:
    assert (Tag.CONTAINER, 2) in ProcessSpec(args=("sh",), container=2).fields()
    assert all(tag is not Tag.CONTAINER for tag, _ in ProcessSpec(args=("sh",)).fields())

    async def body(c: GuestClient) -> None:
        await c.hello(5.0, resend_s=0.05)
        await c.setup_root("pod", subdir="m2", container=2)
        for bad in ({"subdir": ""}, {"subdir": "m2", "hostname": "h"},
                    {"subdir": "m2", "pids_max": 5}):
            with pytest.raises(InvalidArgument, match="pod member"):
                await c.setup_root("pod", container=2, **bad)  # type: ignore[arg-type]

    asyncio.run(run_with_guest(basic_guest(), body))


def answering_guest(op: Op, answer: Callable[[Frame], list[tuple[Tag, object]]]) -> Guest:
    """A guest that answers every `op` request with OK carrying `answer(frame)`'s fields (the
    test records what it saw there) and nothing else."""

    async def guest(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        dec = p.FrameDecoder()
        try:
            while True:
                f = await frames(reader, dec)
                if f.op == op:
                    send(writer, Op.OK, f.id, answer(f))
                    await writer.drain()
        except (EOFError, ConnectionError):
            writer.close()

    return guest


def test_setup_root_ram_sends_cache_2_and_a_member_cannot_ask_for_it() -> None:
    """CACHE 2 (docs/guest-protocol.md): the checkpointable root, copied into guest RAM."""
    seen: list[int | None] = []

    def answer(f: Frame) -> list[tuple[Tag, object]]:
        seen.append(p.get_u32(f.fields(), Tag.CACHE))
        return []

    guest = answering_guest(Op.SETUP_ROOT, answer)

    async def body(c: GuestClient) -> None:
        await c.setup_root("rootfs", cache=p.RootfsCache.RAM)
        await c.setup_root("rootfs")
        with pytest.raises(InvalidArgument, match="always uncached"):
            await c.setup_root("pod", subdir="m1", container=1, cache=p.RootfsCache.RAM)

    asyncio.run(run_with_guest(guest, body))
    assert seen == [2, None]


def test_root_cache_ram_is_not_a_daemon_mode() -> None:
    assert p.RootfsCache.from_name("loose") is p.RootfsCache.LOOSE
    with pytest.raises(InvalidArgument, match="none, loose or block"):
        p.RootfsCache.from_name("ram")


def test_stage_lower_splits_long_lists_and_stops_at_the_byte_cap() -> None:
    """STAGE_LOWER (docs/guest-protocol.md): paths in frames of at most
    STAGE_LOWER_BATCH_PATHS, the cap sent as what is left of it, the bytes read summed; no
    further frame once the guest has read the cap."""
    seen: list[tuple[list[bytes], int | None]] = []

    def answer(f: Frame) -> list[tuple[Tag, object]]:
        paths = p.get_all(f.fields(), Tag.PATH)
        cap = p.get_u32(f.fields(), Tag.BYTES)
        seen.append((paths, cap))
        return [(Tag.BYTES, len(paths) * 100 if cap is None else min(cap, len(paths) * 100))]

    guest = answering_guest(Op.STAGE_LOWER, answer)

    batch = client_module.STAGE_LOWER_BATCH_PATHS
    # An image's name that is not UTF-8 (the layout reader's surrogateescape) goes as its bytes.
    paths = [f"usr/lib/f{i}" for i in range(batch + 9)] + [b"usr/\xff\xfe".decode(
        "utf-8", "surrogateescape")]

    async def body(c: GuestClient) -> None:
        assert await c.stage_lower(paths) == len(paths) * 100
        assert await c.stage_lower(paths, max_bytes=batch * 100 - 50) == batch * 100 - 50
        assert await c.stage_lower([]) == 0  # no file: the mount all the same

    asyncio.run(run_with_guest(guest, body))
    assert [len(paths) for paths, _ in seen] == [batch, 10, batch, 0]
    assert [cap for _, cap in seen] == [None, None, batch * 100 - 50, None]
    assert b"".join(path for paths, _ in seen[:2] for path in paths) == b"".join(
        os.fsencode(path) for path in paths)
    assert seen[1][0][-1] == b"usr/\xff\xfe"


def test_path_batches_bound_the_frame_by_bytes_too() -> None:
    long = [b"d/" + b"x" * 4000 + bytes(str(i), "ascii") for i in range(200)]
    batches = list(client_module._path_batches(long))
    assert sum(len(b) for b in batches) == 200 and len(batches) > 1
    for b in batches:
        size = sum(len(path) + p.FIELD_HEADER_SIZE for path in b)
        assert size <= client_module.STAGE_LOWER_BATCH_BYTES
        p.make_frame(Op.STAGE_LOWER, 1, [(Tag.PATH, path) for path in b])  # within the caps


def test_a_staged_setup_root_is_a_block_roots_only() -> None:
    seen: list[tuple[int | None, int | None]] = []

    def answer(f: Frame) -> list[tuple[Tag, object]]:
        seen.append((p.get_u32(f.fields(), Tag.CACHE), p.get_u32(f.fields(), Tag.STAGED)))
        return []

    guest = answering_guest(Op.SETUP_ROOT, answer)

    async def body(c: GuestClient) -> None:
        await c.setup_root("rootfs", cache=p.RootfsCache.BLOCK, staged=True)
        await c.setup_root("rootfs", cache=p.RootfsCache.BLOCK)
        with pytest.raises(InvalidArgument, match="block root"):
            await c.setup_root("rootfs", cache=p.RootfsCache.LOOSE, staged=True)

    asyncio.run(run_with_guest(guest, body))
    assert seen == [(3, 1), (3, None)]
