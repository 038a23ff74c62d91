"""Looking inside a running container's VM: `top` and `stats` run helper commands in the guest.

The figures come from the guest itself (its /proc), so they describe the VM, not the host. The
helpers run in the container's PID namespace: `ps` sees the container's processes only.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal as signal_module
import time
from dataclasses import replace

from steelcup.errors import InvalidArgument, ProcessStartError, SteelcupError, Unsupported
from steelcup.guest.client import ProcessSpec, Stream
from steelcup.runtime.containers import Runtime
from steelcup.runtime.lifecycle import Op, allows
from steelcup.runtime.vmstats import PS_DEFAULT_FIELDS, STAT_FILES, VmSample, parse_ps, parse_sample

GUEST_EXEC_TIMEOUT_S = 20.0
GUEST_EXEC_OUTPUT_MAX = 4 << 20



async def guest_exec(
    rt: Runtime, ref: str, argv: list[str], *, timeout_s: float = GUEST_EXEC_TIMEOUT_S
) -> tuple[int, bytes, bytes, int]:
    """Run a helper command in the container (as root); (exit code, stdout, stderr, pid)."""
    record = rt.check(ref, Op.TOP)
    # The container's own capabilities: the helper is the image's binary, which the container
    # may have replaced, so it must not run with more than the container has.
    spec = ProcessSpec(args=tuple(argv), env=record.config.env, cwd="/", uid=0, gid=0,
                       groups=(), tty=False, rows=24, cols=80, stdin=False, main=False,
                       caps=record.config.caps)
    try:
        process = await rt.start_in(record.id, Op.TOP, spec)
    except ProcessStartError as exc:
        raise Unsupported(f"cannot run {argv[0]!r} in the container ({exc}); this needs "
                          f"{argv[0]} in the container's image") from exc
    out, err = bytearray(), bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            async for stream, data in process.output():
                buf = out if stream is Stream.STDOUT else err
                if len(buf) < GUEST_EXEC_OUTPUT_MAX:
                    buf += data
            status = await process.wait()
    except TimeoutError:
        with contextlib.suppress(SteelcupError):
            await process.signal(signal_module.SIGKILL)
        raise SteelcupError(f"{argv[0]} in the container did not finish in {timeout_s}s"
                            ) from None
    return status.status, bytes(out), bytes(err), process.pid

async def top(rt: Runtime, ref: str, ps_args: str = "") -> tuple[list[str], list[list[str]]]:
    """`ps` in the container's PID namespace, without the ps itself."""
    args = ps_args.split()
    if not args or args == ["-ef"]:
        args = ["-o", PS_DEFAULT_FIELDS]  # busybox ps has no -ef; these are its columns
    code, out, err, pid = await guest_exec(rt, ref, ["ps", *args])
    if code != 0:
        raise InvalidArgument(f"ps failed ({code}): {err.decode(errors='replace').strip()}")
    return parse_ps(out.decode(errors="replace"), frozenset({pid}))

async def sample(rt: Runtime, ref: str) -> VmSample | None:
    """The VM's CPU/memory/network counters; None if the container is not running."""
    if not allows(rt.record(ref).state.status, Op.TOP):
        return None
    code, out, err, _ = await guest_exec(rt, ref, ["cat", *STAT_FILES])
    if code != 0 and not out:
        raise SteelcupError(f"reading /proc in the container failed: {err!r}")
    sample = parse_sample(out.decode(errors="replace"), time.time_ns())
    # /proc/loadavg counts the VM's processes and kernel threads too; ps tells the container's.
    with contextlib.suppress(SteelcupError):
        code, out, _, pid = await guest_exec(rt, ref, ["ps", "-o", "pid,ppid"])
        if code == 0:
            _, rows = parse_ps(out.decode(errors="replace"), frozenset({pid}))
            sample = replace(sample, pids=len(rows))
    return sample
