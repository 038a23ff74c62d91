"""`exec`: extra processes inside a running container's VM (kept in memory, like docker)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from steelcup.errors import Conflict, GuestProtocolError, NotFound, ProcessStartError
from steelcup.guest.client import GuestProcess, ProcessSpec
from steelcup.runtime.capabilities import ALL_CAPS
from steelcup.runtime.containers import Runtime
from steelcup.runtime.lifecycle import Op
from steelcup.runtime.model import ContainerRecord, ExecConfig
from steelcup.runtime.names import new_id
from steelcup.runtime.spec import merge_env

MAX_EXECS = 4096


@dataclass(eq=False)
class Exec:
    id: str
    config: ExecConfig
    process: GuestProcess | None = None
    running: bool = False
    exit_code: int | None = None
    pid: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)


class ExecManager:
    """Creates and runs execs; the API streams their I/O."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._execs: dict[str, Exec] = {}

    def create(self, config: ExecConfig) -> Exec:
        record = self.runtime.check(config.container_id, Op.EXEC)
        if not config.cmd:
            raise Conflict("No exec command specified")
        if len(self._execs) >= MAX_EXECS:
            finished = [e.id for e in self._execs.values() if e.done.is_set()]
            for exec_id in finished[: len(finished) // 2 + 1]:
                del self._execs[exec_id]
        exec_ = Exec(new_id(), ExecConfig(**{**config.__dict__, "container_id": record.id}))
        self._execs[exec_.id] = exec_
        self.runtime.publish_event(record, f"exec_create: {' '.join(config.cmd)}",
                                   execID=exec_.id)
        return exec_

    def get(self, exec_id: str) -> Exec:
        try:
            return self._execs[exec_id]
        except KeyError:
            raise NotFound(f"No such exec instance: {exec_id}") from None

    async def start(self, exec_id: str) -> Exec:
        """Start the process; afterwards `exec_.process` streams its output."""
        exec_, spec = await self.prepare(exec_id)
        return await self.launch(exec_, spec)

    async def prepare(self, exec_id: str) -> tuple[Exec, ProcessSpec]:
        """Check that the exec may start now (NotFound, Conflict) and what it will run; `launch`
        starts it. Apart so that an attached client's stream is set up in between: a process
        that had already written would otherwise have its output follow the HTTP upgrade in
        the same read, where clients that parse the response with a buffered reader (docker-py)
        lose it."""
        exec_ = self.get(exec_id)
        record = self._startable(exec_)
        config = exec_.config
        user = await self.runtime.resolve_user_of(
            record, config.user or record.config.user, record.config.group_add)
        spec = ProcessSpec(
            args=config.cmd,
            env=record.config.process_env(user.home, config.tty,
                                          merge_env(record.config.env, config.env)),
            cwd=config.working_dir or record.config.working_dir,
            uid=user.uid,
            gid=user.gid,
            groups=user.groups,
            tty=config.tty,  # decided at create, as dockerd; start's Tty only frames output
            rows=24,
            cols=80,
            stdin=config.attach_stdin,
            main=False,
            # docker exec --privileged: every capability, whatever the container was given
            caps=ALL_CAPS if config.privileged else record.config.caps,
            rlimits=record.config.rlimits(),  # runc gives an exec the container's rlimits
        )
        return exec_, spec

    def _startable(self, exec_: Exec) -> ContainerRecord:
        """The exec's container, if the exec may start in it now; Conflict as docker says."""
        if exec_.running or exec_.done.is_set():
            raise Conflict(f"Error: Exec command {exec_.id} has already run")
        return self.runtime.check(exec_.config.container_id, Op.EXEC)

    async def launch(self, exec_: Exec, spec: ProcessSpec) -> Exec:
        """Start what `prepare` checked; ProcessStartError (exit code 126/127 recorded) if the
        guest could not."""
        record = self._startable(exec_)  # again: the client's stream was set up meanwhile
        config = exec_.config
        try:
            exec_.process = await self.runtime.start_in(record.id, Op.EXEC, spec)
        except ProcessStartError as exc:
            exec_.exit_code = exc.exit_code
            exec_.done.set()
            raise
        exec_.running = True
        exec_.pid = exec_.process.pid
        self.runtime.publish_event(record, f"exec_start: {' '.join(config.cmd)}",
                                   execID=exec_.id)
        return exec_

    async def finish(self, exec_: Exec) -> int:
        """Wait for the exit status after its output was drained."""
        assert exec_.process is not None
        try:
            status = await exec_.process.wait()
            exec_.exit_code = status.status
        except GuestProtocolError:
            exec_.exit_code = 137
        exec_.running = False
        exec_.done.set()
        with contextlib.suppress(NotFound):
            record = self.runtime.record(exec_.config.container_id)
            self.runtime.publish_event(record, "exec_die", execID=exec_.id,
                                       exitCode=str(exec_.exit_code))
        return exec_.exit_code

    async def resize(self, exec_id: str, rows: int, cols: int) -> None:
        exec_ = self.get(exec_id)
        if exec_.process is None:
            raise Conflict(f"exec {exec_id} is not running")
        with contextlib.suppress(GuestProtocolError):
            await exec_.process.resize(rows, cols)
