"""A fake of `cron.jobs.Jobs` for the scheduler's unit tests: containers are records the test
ends by hand (`exit`), with the output it gives them."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from steelcup.cron.model import CronSpec
from steelcup.errors import Conflict, Forbidden, NotFound, SteelcupError


@dataclass
class FakeContainer:
    spec: CronSpec
    run_id: str
    started: bool = False
    exited: asyncio.Future[int] | None = None
    output: str = ""
    removed: bool = False
    stops: int = 0
    events: list[str] = field(default_factory=list)


class FakeJobs:
    def __init__(self) -> None:
        self.containers: dict[str, FakeContainer] = {}
        self.fail_create: str = ""  # an error message to refuse creates with
        self.crash_for: str = ""  # the name of a cron whose creates hit a bug (RuntimeError)
        self.refuse_check: str = ""  # an error message to refuse `check` with (Forbidden)

    def _get(self, container_id: str) -> FakeContainer:
        c = self.containers.get(container_id)
        if c is None or c.removed:
            raise NotFound(f"No such container: {container_id}")
        return c

    def check(self, spec: CronSpec) -> None:
        if self.refuse_check:
            raise Forbidden(self.refuse_check)

    def create(self, spec: CronSpec, run_id: str) -> str:
        if self.fail_create:
            raise SteelcupError(self.fail_create)
        if spec.name == self.crash_for:
            raise RuntimeError("a bug")
        cid = f"c{len(self.containers) + 1:02d}"
        self.containers[cid] = FakeContainer(spec, run_id,
                                             exited=asyncio.get_running_loop().create_future())
        return cid

    async def start(self, container_id: str) -> None:
        self._get(container_id).started = True

    async def wait(self, container_id: str) -> int:
        c = self._get(container_id)
        if not c.started:
            return 0 if c.exited is None or not c.exited.done() else c.exited.result()
        assert c.exited is not None
        return await asyncio.shield(c.exited)

    def running(self, container_id: str) -> bool | None:
        c = self.containers.get(container_id)
        if c is None or c.removed:
            return None
        return c.started and c.exited is not None and not c.exited.done()

    async def stop(self, container_id: str) -> None:
        c = self._get(container_id)
        c.stops += 1
        self.exit(container_id, 143, "terminated\n")

    async def logs(self, container_id: str) -> tuple[str, ...]:
        return tuple(self._get(container_id).output.splitlines())

    async def remove(self, container_id: str) -> None:
        """As the runtime's forced removal: a second removal of one container is refused
        (the runtime's "removal ... already in progress"), one that is gone is a no-op."""
        c = self.containers.get(container_id)
        if c is None:
            return
        if c.removed:
            raise Conflict(f"removal of container {container_id} is already in progress")
        self.exit(container_id, 137, "")
        c.removed = True

    def labelled(self) -> list[tuple[str, str]]:
        return [(cid, c.run_id) for cid, c in self.containers.items() if not c.removed]

    # -- the test's hands --------------------------------------------------------------------
    def exit(self, container_id: str, code: int, output: str) -> None:
        c = self.containers[container_id]
        c.output += output
        if c.exited is not None and not c.exited.done():
            c.exited.set_result(code)

    def live(self) -> list[str]:
        return [cid for cid, c in self.containers.items()
                if c.started and not c.removed and c.exited is not None
                and not c.exited.done()]
