"""One call of a func: a fresh container (so a fresh VM from the pool) made from the func's
create body by the same decoding as `POST /containers/create`, run like `docker run -i --rm`:
the call's input is its stdin, its stdout (within the cap) the call's output. The container is
removed when the call ends, whatever its end; past the timeout it is removed at once, which
ends its VM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from steelcup.api import docker_codec as codec
from steelcup.errors import SteelcupError
from steelcup.funcs.model import CALL_LABEL, FUNC_LABEL, STDERR_KEEP
from steelcup.runtime.containers import Attached, Runtime
from steelcup.runtime.model import ContainerConfig, ContainerRecord

log = logging.getLogger(__name__)
STDIN_CHUNK = 32 * 1024
# A container create with its tenant's sizes and quotas (runtime.admission.ContainerAdmission)
Create = Callable[[ContainerConfig, str | None], ContainerRecord]


@dataclass(frozen=True)
class Outcome:
    exit_code: int | None  # None: it did not exit by itself (timed out, failed to start)
    stdout: bytes
    stderr: bytes  # the last STDERR_KEEP bytes
    timed_out: bool = False
    output_over: bool = False  # stdout went past the cap: the container was killed
    error: str = ""
    container_id: str = ""


def call_config(spec: Mapping[str, Any], tenant: str, env: list[str], func: str,
                call_id: str) -> ContainerConfig:
    """The container of one call: the func's create body decoded as the API decodes one,
    with stdin open for the input, no terminal and no restarts, labelled with its func."""
    config = codec.decode_create(dict(spec))
    labels = dict(config.labels)
    labels.update({FUNC_LABEL: func, CALL_LABEL: call_id})
    return replace(config, tenant=tenant, env=(*config.env, *env), open_stdin=True,
                   stdin_once=True, attach_stdin=True, attach_stdout=True, attach_stderr=True,
                   tty=False, auto_remove=False, restart_policy="no", restart_max_retries=0,
                   labels=tuple(sorted(labels.items())))


async def run_call(runtime: Runtime, create: Create, config: ContainerConfig, body: bytes,
                   timeout_s: float, max_output_bytes: int,
                   started: Callable[[str], None] = lambda _cid: None) -> Outcome:
    """Create, start, feed and collect one call's container, then remove it."""
    try:
        record = create(config, None)
    except SteelcupError as exc:
        return Outcome(None, b"", b"", error=str(exc))
    cid = record.id
    stdout = bytearray()
    stderr = bytearray()
    over = False
    try:
        attached = runtime.attach(cid, True, True)
        exited = runtime.waiter(cid, "next-exit")
        try:
            async with asyncio.timeout(timeout_s):
                feeder = asyncio.create_task(_feed(attached, body))
                try:
                    await runtime.start(cid)
                    started(cid)
                    while (item := await attached.subscriber.queue.get()) is not None:
                        stream, data = item
                        if stream == "stdout":
                            stdout += data
                            if len(stdout) > max_output_bytes:
                                over = True
                                break
                        else:
                            stderr += data
                            del stderr[:-STDERR_KEEP]
                    if over:
                        attached.detach()  # the pump must not wait on this reader
                        await runtime.kill(cid)
                    code = await exited
                finally:
                    feeder.cancel()
                    with contextlib.suppress(asyncio.CancelledError, SteelcupError):
                        await feeder
                    attached.detach()
        except TimeoutError:
            exited.close()
            return Outcome(None, bytes(stdout), bytes(stderr), timed_out=True,
                           error=f"the call ran past its timeout of {timeout_s:g}s and was "
                                 "killed (its VM with it)", container_id=cid)
        except SteelcupError as exc:
            exited.close()
            return Outcome(None, bytes(stdout), bytes(stderr), error=str(exc),
                           container_id=cid)
        if over:
            return Outcome(code, bytes(stdout[:max_output_bytes]), bytes(stderr),
                           output_over=True, container_id=cid,
                           error=f"the output went past the func's cap of {max_output_bytes} "
                                 "bytes; the call was stopped")
        return Outcome(code, bytes(stdout), bytes(stderr), container_id=cid)
    finally:
        try:
            await runtime.remove(cid, force=True, volumes=True)
        except SteelcupError as exc:
            log.warning("func call container %s not removed: %s", cid[:12], exc)


async def _feed(attached: Attached, body: bytes) -> None:
    """The call's input to the container's stdin, then its end (EOF)."""
    for pos in range(0, len(body), STDIN_CHUNK):
        if not await attached.write_stdin(body[pos:pos + STDIN_CHUNK]):
            return
    await attached.close_stdin()
