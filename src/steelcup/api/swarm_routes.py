"""Docker Engine API routes of swarm mode on one node: /swarm, /nodes, /services, /tasks.
Thin adapters from docker's JSON (api/swarm_codec.py) to the services layer; every service
and task route resolves its object for the caller's tenant first (docs/services.md)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any

from steelcup import __version__, stdcopy
from steelcup.api import object_codec, object_routes
from steelcup.api import swarm_codec as codec
from steelcup.api.filters import parse_filters
from steelcup.api.filters import time_param as _time_param
from steelcup.api.http import (
    EmptyResponse,
    JsonResponse,
    Request,
    Response,
    Router,
    StreamResponse,
)
from steelcup.api.http_types import Principal
from steelcup.errors import InvalidArgument, NotFound, SteelcupError, Unsupported
from steelcup.runtime import logs as logs_module
from steelcup.runtime.containers import Runtime
from steelcup.services.addressing import ServiceAddressing
from steelcup.services.manager import ServiceManager
from steelcup.services.model import Mode, TaskRecord, TaskState
from steelcup.services.objects import ObjectManager
from steelcup.services.orchestrator import Orchestrator, task_name

DETAIL_KEYS = ("com.docker.swarm.node.id", "com.docker.swarm.service.id",
               "com.docker.swarm.task.id")


@dataclass(frozen=True)
class Swarm:
    """What the swarm routes need: the services' manager and the tasks' orchestrator."""

    manager: ServiceManager
    orchestrator: Orchestrator
    runtime: Runtime
    objects: ObjectManager  # secrets and configs
    # Services' virtual IPs (a daemon with networking; None: ports are not published)
    addressing: ServiceAddressing | None = None

    def node(self) -> dict[str, Any]:
        return codec.encode_node(self.manager.swarm, hostname=platform.node(),
                                 ncpu=os.cpu_count() or 1,
                                 mem_bytes=os.sysconf("SC_PAGE_SIZE")
                                 * os.sysconf("SC_PHYS_PAGES"),
                                 engine_version=__version__)

    def ping_header(self, who: Principal) -> str:
        """The `Swarm` header of /_ping (the docker CLI shows swarm commands by it)."""
        return "active/manager" if self.manager.active(who.tenant) else "inactive"

    def info(self, who: Principal) -> dict[str, Any]:
        return codec.info_section(self.manager.swarm, self.manager.active(who.tenant),
                                  tenant=not who.is_operator)


def register(router: Router, swarm: Swarm) -> None:
    api = _SwarmApi(swarm)
    manager = swarm.manager

    def service_ref(who: Principal, ref: str) -> str:
        manager.require(who.tenant)
        return manager.resolve(ref, who.tenant)

    def task_ref(who: Principal, ref: str) -> str:
        manager.require(who.tenant)
        return swarm.orchestrator.resolve(ref, who.tenant)

    def node_ref(who: Principal, ref: str) -> str:
        manager.require(who.tenant)
        node = swarm.node()
        if ref and (node["ID"].startswith(ref) or ref == node["Description"]["Hostname"]):
            return str(node["ID"])
        raise NotFound(f"node {ref} not found")

    router.scope("/services/{id}", "id", "service", service_ref)
    router.scope("/tasks/{id}", "id", "task", task_ref)
    router.scope("/nodes/{id}", "id", "node", node_ref)
    router.add("POST", "/swarm/init", api.swarm_init)
    router.add("POST", "/swarm/join", api.swarm_join)
    router.add("POST", "/swarm/leave", api.swarm_leave, operator=True)
    router.add("GET", "/swarm", api.swarm_inspect)
    router.add("POST", "/swarm/update", api.swarm_update, operator=True)
    router.add("GET", "/swarm/unlockkey", api.swarm_unlockkey)
    router.add("POST", "/swarm/unlock", api.swarm_unlock)
    router.add("GET", "/nodes", api.node_list)
    router.add("GET", "/nodes/{id}", api.node_inspect)
    router.add("POST", "/nodes/{id}/update", api.node_change)
    router.add("DELETE", "/nodes/{id}", api.node_change)
    router.add("GET", "/services", api.service_list)
    router.add("POST", "/services/create", api.service_create)
    router.add("GET", "/services/{id}", api.service_inspect)
    router.add("POST", "/services/{id}/update", api.service_update)
    router.add("DELETE", "/services/{id}", api.service_remove)
    router.add("GET", "/services/{id}/logs", api.service_logs)
    object_routes.register(router, swarm.objects, manager)
    router.add("GET", "/tasks", api.task_list)
    router.add("GET", "/tasks/{id}", api.task_inspect)
    router.add("GET", "/tasks/{id}/logs", api.task_logs)


class _SwarmApi:
    def __init__(self, swarm: Swarm) -> None:
        self.swarm = swarm
        self.manager = swarm.manager
        self.tasks = swarm.orchestrator
        self.rt = swarm.runtime

    # -- swarm -------------------------------------------------------------------------------

    async def swarm_init(self, req: Request) -> Response:
        listen, advertise, spec = codec.decode_swarm_init(await req.json(allow_empty=True))
        node_id = self.manager.init(req.principal.tenant, listen_addr=listen,
                                    advertise_addr=advertise, spec_doc=spec,
                                    history_limit=codec.history_limit(spec))
        return JsonResponse(node_id)

    async def swarm_join(self, req: Request) -> Response:
        raise Unsupported("steelcup's swarm has one node, this one: joining other swarms or "
                          "nodes is not supported (use `docker swarm init` here)")

    async def swarm_leave(self, req: Request) -> Response:
        self.manager.leave(req.q_bool("force"))
        return EmptyResponse(200)

    async def swarm_inspect(self, req: Request) -> Response:
        self.manager.require(req.principal.tenant)
        return JsonResponse(codec.encode_swarm(self.manager.swarm,
                                               tenant=not req.principal.is_operator))

    async def swarm_update(self, req: Request) -> Response:
        self.manager.require(None)
        version = req.q_int("version")
        if version is None:
            raise InvalidArgument("swarm update needs ?version= (the version it was read at)")
        spec = codec.merge_swarm_spec(self.manager.swarm.spec_doc or codec.DEFAULT_SWARM_SPEC,
                                      await req.json())
        self.manager.update_swarm(version, spec, codec.history_limit(spec))
        return EmptyResponse(200)

    async def swarm_unlockkey(self, req: Request) -> Response:
        self.manager.require(req.principal.tenant)
        return JsonResponse({"UnlockKey": ""})

    async def swarm_unlock(self, req: Request) -> Response:
        raise InvalidArgument("swarm is not locked (steelcup does not lock its swarm)")

    # -- nodes -------------------------------------------------------------------------------

    async def node_list(self, req: Request) -> Response:
        self.manager.require(req.principal.tenant)
        filters = parse_filters(req.q("filters"), codec.NODE_FILTERS)
        node = self.swarm.node()
        return JsonResponse([node] if codec.node_matches(node, filters) else [])

    async def node_inspect(self, req: Request) -> Response:
        return JsonResponse(self.swarm.node())

    async def node_change(self, req: Request) -> Response:
        raise Unsupported("steelcup's swarm has this one node, always an active manager: it "
                          "cannot be removed, drained, demoted or relabelled")

    # -- services ----------------------------------------------------------------------------

    async def service_list(self, req: Request) -> Response:
        self.manager.require(req.principal.tenant)
        filters = parse_filters(req.q("filters"), codec.SERVICE_FILTERS)
        for mode in filters.get("mode", []):
            if mode not in ("replicated", "global"):
                raise InvalidArgument(f"Invalid filter: 'mode'='{mode}'")
        with_status = req.q_bool("status")
        out = []
        for service in self.manager.list(req.principal.tenant):
            if codec.service_matches(service, filters):
                out.append(codec.encode_service(
                    service, self._status(service.id) if with_status else None))
        return JsonResponse(out)

    def _status(self, service_id: str) -> dict[str, int]:
        service = self.manager.get(service_id)
        tasks = [t for t in self.tasks.list(None) if t.service_id == service_id]
        running = sum(1 for t in tasks if t.state is TaskState.RUNNING
                      and t.desired is TaskState.RUNNING)
        desired = 1 if service.plan.mode is Mode.GLOBAL else service.plan.replicas
        return {"RunningTasks": running, "DesiredTasks": desired, "CompletedTasks": 0}

    async def service_create(self, req: Request) -> Response:
        self.manager.require(req.principal.tenant)
        decoded = self._decode(await req.json(), req.principal.tenant or "")
        service = self.manager.create(
            req.principal.tenant or "", decoded.name, spec_doc=decoded.spec_doc,
            task_doc=decoded.task_doc, plan=decoded.plan, labels=decoded.labels,
            endpoint_mode=decoded.endpoint_mode)
        if self.swarm.addressing is not None:
            try:  # its address and ports now: a port already taken fails the create
                await self.swarm.addressing.sync(service.id, strict=True)
            except SteelcupError:
                self.manager.remove(service.id)  # its tasks and VIPs go with it
                raise
        warnings = []
        if not self.swarm.addressing and decoded.spec_doc.get("EndpointSpec", {}).get("Ports"):
            warnings.append("steelcup: this daemon runs without networking: the service's "
                            "ports are recorded, not published")
        return JsonResponse({"ID": service.id, "Warnings": warnings or None}, status=201)

    def _decode(self, body: Any, tenant: str) -> codec.DecodedService:
        """A ServiceSpec, its secrets and configs resolved among its tenant's."""
        decoded = codec.decode_service(body, self.swarm.node())
        files = decoded.plan.template.swarm_files
        if not files:
            return decoded
        resolved = object_routes.resolve_files(self.swarm.objects, files, tenant)
        template = replace(decoded.plan.template, swarm_files=resolved)
        object_codec.fill_ids(decoded.task_doc["ContainerSpec"], resolved)
        object_codec.fill_ids(decoded.spec_doc["TaskTemplate"]["ContainerSpec"], resolved)
        return replace(decoded, plan=replace(decoded.plan, template=template))

    async def service_inspect(self, req: Request) -> Response:
        return JsonResponse(codec.encode_service(self.manager.get(req.params["id"])))

    async def service_update(self, req: Request) -> Response:
        version = req.q_int("version")
        if version is None:
            raise InvalidArgument("service update needs ?version= (the Version.Index it was "
                                  "read at)")
        old = self.manager.get(req.params["id"])
        if req.q("rollback") == "previous":  # `docker service rollback`
            self.manager.rollback(old.id, version, "manually requested rollback")
            return JsonResponse({"Warnings": None})
        decoded = self._decode(await req.json(), old.tenant)
        old_force = int(old.task_doc.get("ForceUpdate") or 0)
        self.manager.update(old.id, version, spec_doc=decoded.spec_doc,
                            task_doc=decoded.task_doc, plan=decoded.plan,
                            force_changed=decoded.force_update != old_force,
                            labels=decoded.labels, endpoint_mode=decoded.endpoint_mode)
        return JsonResponse({"Warnings": None})

    async def service_remove(self, req: Request) -> Response:
        self.manager.remove(req.params["id"])
        return EmptyResponse(200)

    async def service_logs(self, req: Request) -> Response:
        service = self.manager.get(req.params["id"])
        tasks = [t for t in self.tasks.list(None) if t.service_id == service.id]
        return self._logs(req, tasks, bool(service.plan.template.tty), service.id)

    # -- tasks -------------------------------------------------------------------------------

    async def task_list(self, req: Request) -> Response:
        self.manager.require(req.principal.tenant)
        tenant = req.principal.tenant
        filters = parse_filters(req.q("filters"), codec.TASK_FILTERS)
        codec.check_desired_states(filters.get("desired-state", []))
        if "service" in filters:  # names and prefixes, as dockerd resolves them
            filters["service"] = [self.manager.resolve(ref, tenant)
                                  for ref in filters["service"]]
        if "node" in filters:
            node = self.swarm.node()
            filters["node"] = [node["ID"] if ref in (node["Description"]["Hostname"], "self")
                               or node["ID"].startswith(ref) else ref
                               for ref in filters["node"]]
        out = []
        for task in self.tasks.list(tenant):
            service = self.manager.services.get(task.service_id)
            name = task_name(service, task) if service is not None else task.id
            if codec.task_matches(task, name, filters,
                                  service.generation if service is not None else None,
                                  dict(service.labels) if service is not None else None):
                out.append(codec.encode_task(task, pid=self._pid(task)))
        return JsonResponse(out)

    async def task_inspect(self, req: Request) -> Response:
        task = self.tasks.get(req.params["id"])
        return JsonResponse(codec.encode_task(task, pid=self._pid(task)))

    async def task_logs(self, req: Request) -> Response:
        task = self.tasks.get(req.params["id"])
        return self._logs(req, [task], bool(task.task_doc.get("ContainerSpec", {}).get("TTY")))

    def _pid(self, task: TaskRecord) -> int:
        if not task.container_id:
            return 0
        try:
            return self.rt.record(task.container_id).state.pid
        except NotFound:
            return 0

    # -- logs --------------------------------------------------------------------------------

    def _logs(self, req: Request, tasks: list[TaskRecord], tty: bool,
              service_id: str = "") -> Response:
        """The output of the tasks' containers, merged in time order; each line prefixed
        with its node, service and task ids when `details` is asked (the docker CLI does)."""
        want_stdout, want_stderr = req.q_bool("stdout"), req.q_bool("stderr")
        if not (want_stdout or want_stderr):
            raise InvalidArgument("Bad parameters: you must choose at least one stream")
        follow, details = req.q_bool("follow"), req.q_bool("details")
        timestamps = req.q_bool("timestamps")
        tail_text = req.q("tail", "all")
        try:
            tail = None if tail_text in ("", "all") else int(tail_text)
        except ValueError:
            raise InvalidArgument(f"invalid value for tail: {tail_text!r}") from None
        want = logs_module.LogFilter(stdout=want_stdout, stderr=want_stderr,
                                     since_ns=_time_param(req.q("since")), tail=tail)
        sources = [t for t in tasks if self._exists(t.container_id)]
        multiplexed = not tty and (req.api_version is None or _at_least(req.api_version,
                                                                         "1.42"))
        rt = self.rt

        def line(task: TaskRecord, entry: logs_module.LogEntry) -> bytes:
            data = entry.data
            if details:
                context = ",".join(f"{k}={v}" for k, v in zip(
                    DETAIL_KEYS, (task.node_id, task.service_id, task.id), strict=True))
                data = context.encode() + b" " + data
            if timestamps:
                data = logs_module.format_time_ns(entry.time_ns).encode() + b" " + data
            if not multiplexed:
                return data
            return stdcopy.frame(stdcopy.STDERR if entry.stream == "stderr"
                                 else stdcopy.STDOUT, data)

        async def chunks() -> AsyncIterator[bytes]:
            if not follow:
                entries: list[tuple[int, int, bytes]] = []
                for order, task in enumerate(sources):
                    with contextlib.suppress(NotFound):
                        async for entry in rt.follow_logs(task.container_id, follow=False,
                                                          want=want):
                            entries.append((entry.time_ns, order, line(task, entry)))
                for _time, _order, data in sorted(entries):
                    yield data
                return
            queue: asyncio.Queue[bytes | None] = asyncio.Queue(256)
            readers: dict[str, asyncio.Task[None]] = {}

            def read(task: TaskRecord) -> None:
                if task.container_id and task.container_id not in readers:
                    readers[task.container_id] = asyncio.create_task(
                        _pump(rt, task, want, queue, line))

            for task in sources:
                read(task)
            # A service's logs follow its new tasks too, until the service is removed.
            gone = asyncio.Event()
            watcher = (asyncio.create_task(self._new_tasks(service_id, read, queue, gone))
                       if service_id else None)
            try:
                ended = 0
                while True:
                    item = await queue.get()
                    if item is not None:
                        yield item
                    elif gone.is_set():
                        return
                    else:
                        ended += 1
                        if watcher is None and ended == len(readers):
                            return
            finally:
                for reader in (*readers.values(), *([watcher] if watcher else [])):
                    reader.cancel()

        content = ("application/vnd.docker.multiplexed-stream" if multiplexed
                   else "application/vnd.docker.raw-stream")
        return StreamResponse(chunks(), content_type=content)

    async def _new_tasks(self, service_id: str, read: Callable[[TaskRecord], None],
                         queue: asyncio.Queue[bytes | None], gone: asyncio.Event) -> None:
        """Hand each task container the service starts to `read`; end the stream when the
        service is removed. Driven by the daemon's events."""
        events = self.rt.events.subscribe(None)
        try:
            while True:
                event = await events.get()
                attributes = event["Actor"]["Attributes"]
                if event["Type"] == "service" and event["Action"] == "remove" and event[
                        "Actor"]["ID"] == service_id:
                    gone.set()
                    await queue.put(None)
                    return
                if (event["Type"] == "container" and event["Action"] == "start"
                        and attributes.get("com.docker.swarm.service.id") == service_id):
                    with contextlib.suppress(NotFound):
                        read(self.tasks.get(attributes.get("com.docker.swarm.task.id", "")))
        finally:
            self.rt.events.unsubscribe(events)

    def _exists(self, container_id: str) -> bool:
        if not container_id:
            return False
        try:
            self.rt.record(container_id)
        except NotFound:
            return False
        return True


async def _pump(rt: Runtime, task: TaskRecord, want: logs_module.LogFilter,
                queue: asyncio.Queue[bytes | None],
                line: Callable[[TaskRecord, logs_module.LogEntry], bytes]) -> None:
    try:
        async for entry in rt.follow_logs(task.container_id, follow=True, want=want):
            await queue.put(line(task, entry))
    except SteelcupError:
        pass  # removed meanwhile: its output ends here
    finally:
        await queue.put(None)


def _at_least(version: str, minimum: str) -> bool:
    def parts(text: str) -> tuple[int, ...]:
        return tuple(int(p) for p in text.split("."))
    try:
        return parts(version) >= parts(minimum)
    except ValueError:
        return True
