"""A cron run's container, through the same paths as any container: the stored create body
is decoded as `POST /containers/create` decodes one (api.docker_codec), sized and counted
against its tenant's quotas (runtime.admission), started by the runtime (VMs from the warm
pool like any run), waited for, its last log lines read, and removed."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
from dataclasses import replace
from typing import Protocol

from steelcup.api import docker_codec as codec
from steelcup.cron.model import LOG_LINES, CronSpec, tail_lines
from steelcup.errors import InvalidArgument, NotFound
from steelcup.runtime import logs as logs_module
from steelcup.runtime.admission import ContainerAdmission
from steelcup.runtime.containers import Runtime
from steelcup.runtime.model import ContainerConfig

CRON_LABEL = "sh.steelcup.cron"  # the cron's key, on each of its job containers
RUN_LABEL = "sh.steelcup.cron-run"  # the run's id
STOP_GRACE_S = 5  # SIGTERM to SIGKILL when the `replace` policy stops a run


class Jobs(Protocol):
    """What the scheduler asks of containers (a fake in the unit tests)."""

    def check(self, spec: CronSpec) -> None: ...  # what a run's create would refuse
    def create(self, spec: CronSpec, run_id: str) -> str: ...
    async def start(self, container_id: str) -> None: ...
    async def wait(self, container_id: str) -> int: ...
    def running(self, container_id: str) -> bool | None: ...  # None: no such container
    async def stop(self, container_id: str) -> None: ...
    async def logs(self, container_id: str) -> tuple[str, ...]: ...
    async def remove(self, container_id: str) -> None: ...
    def labelled(self) -> builtins.list[tuple[str, str]]: ...  # (container id, run id)


def job_config(body: object) -> ContainerConfig:
    """The container config of a cron's create body, refused now if it would be refused at
    its first run (the same decoding as POST /containers/create)."""
    config = codec.decode_create(body)
    if config.restart_policy not in ("", "no"):
        raise InvalidArgument("a cron job's container cannot have a restart policy: each "
                              "run is a new container (the schedule restarts it)")
    if isinstance(body, dict) and codec.endpoint_links(body):
        raise InvalidArgument("a cron job's container cannot have legacy links (--link)")
    return config


class RuntimeJobs:
    def __init__(self, runtime: Runtime, admission: ContainerAdmission) -> None:
        self.rt = runtime
        self.admission = admission

    def check(self, spec: CronSpec) -> None:
        """Refuse now, with the message a run would get, a job container whose mounts its
        tenant may not have (a bind of a host path, a volume it cannot use): the runtime's
        own check of a create's mounts."""
        config = replace(job_config(spec.container), tenant=spec.tenant)
        self.rt.resources.check_mounts(config)

    def create(self, spec: CronSpec, run_id: str) -> str:
        config = job_config(spec.container)
        labels = {**dict(config.labels), CRON_LABEL: spec.key, RUN_LABEL: run_id}
        # Removed by the scheduler once its logs are read (not by --rm); nobody attaches.
        config = replace(config, tenant=spec.tenant, auto_remove=False, open_stdin=False,
                         attach_stdin=False, labels=tuple(sorted(labels.items())))
        return self.admission.create(config, f"cron-{spec.name}-{run_id}").id

    async def start(self, container_id: str) -> None:
        await self.rt.start(container_id)

    async def wait(self, container_id: str) -> int:
        return await self.rt.waiter(container_id, "not-running")

    def running(self, container_id: str) -> bool | None:
        try:
            return self.rt.record(container_id).state.running
        except NotFound:
            return None

    async def stop(self, container_id: str) -> None:
        await self.rt.stop(container_id, STOP_GRACE_S)

    async def logs(self, container_id: str) -> tuple[str, ...]:
        cursor = logs_module.LogCursor(self.rt.log_path(container_id))

        def read() -> tuple[str, ...]:
            entries = cursor.iter_selected(logs_module.LogFilter(tail=LOG_LINES))
            text = b"".join(e.data for e in entries).decode("utf-8", "replace")
            return tail_lines(text)

        return await asyncio.to_thread(read)

    async def remove(self, container_id: str) -> None:
        with contextlib.suppress(NotFound):
            await self.rt.remove(container_id, force=True, volumes=True)

    def labelled(self) -> builtins.list[tuple[str, str]]:
        return [(r.id, dict(r.config.labels)[RUN_LABEL]) for r in self.rt.list()
                if RUN_LABEL in dict(r.config.labels)]
