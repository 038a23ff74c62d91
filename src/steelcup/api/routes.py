"""Docker Engine API routes: decode the request, call the runtime, encode the answer.

Handlers are thin: no lifecycle logic lives here, and the runtime never sees a Request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import platform
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from steelcup import __version__, stdcopy
from steelcup.api import (
    build_routes,
    checkpoint_routes,
    cron_routes,
    fip_routes,
    fs_routes,
    func_routes,
    image_codec,
    image_routes,
    net_routes,
    sg_routes,
    snapshot_routes,
    swarm_routes,
    system_info,
    tenant_routes,
    volume_routes,
)
from steelcup.api import docker_codec as codec
from steelcup.api.detach_keys import DetachScanner, parse_detach_keys
from steelcup.api.filters import time_param as _time_param
from steelcup.api.http import (
    API_VERSION,
    MIN_API_VERSION,
    EmptyResponse,
    HijackedStream,
    HijackResponse,
    JsonResponse,
    Principal,
    RawResponse,
    Request,
    Response,
    Router,
    StreamResponse,
)
from steelcup.cron.scheduler import Crons
from steelcup.defaults import FIP_LABEL
from steelcup.errors import (
    Conflict,
    InvalidArgument,
    NotFound,
    NotInSwarm,
    SteelcupError,
    Unsupported,
)
from steelcup.funcs.service import Funcs
from steelcup.guest.client import ProcessSpec
from steelcup.image.credentials import TenantCredentials
from steelcup.image.store import ImageStore
from steelcup.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from steelcup.metrics import Metrics
from steelcup.net.manager import NetworkManager
from steelcup.net.model import VipRecord
from steelcup.net.sgmanager import requested as requested_groups
from steelcup.pool.factory import Factory
from steelcup.runtime import inspection
from steelcup.runtime import logs as logs_module
from steelcup.runtime.admission import ContainerAdmission
from steelcup.runtime.containers import Attached, Runtime
from steelcup.runtime.events import EventBus
from steelcup.runtime.execs import Exec, ExecManager
from steelcup.runtime.fs_paths import writable_layer
from steelcup.runtime.model import ContainerConfig, Status
from steelcup.runtime.vmstats import VmSample
from steelcup.tenancy.manager import Tenants
from steelcup.tenancy.model import size_class
from steelcup.tenancy.objects import Teardown
from steelcup.tenancy.sizing import HostCapacity
from steelcup.volume.manager import VolumeManager

log = logging.getLogger(__name__)

STATS_INTERVAL_S = 1.0  # dockerd's collector period; also the gap of a two-sample one-shot
# A single (stream=false) answer's CPU figure spans at least PRECPU_MIN_S: the daemon's sampler
# has a reading from before the request; without one, it measures PRECPU_WINDOW_S itself.
PRECPU_MIN_S = 0.2
PRECPU_WINDOW_S = 0.25


def _own_exec(svc: Services, who: Principal, exec_id: str) -> str:
    """An exec is its container's: another tenant's is as missing as a missing one."""
    exec_ = svc.execs.get(exec_id)
    try:
        svc.runtime.resolve(exec_.config.container_id, who.tenant)
    except NotFound:
        raise NotFound(f"No such exec instance: {exec_id}") from None
    return exec_id


@dataclass(frozen=True)
class Services:
    """What the routes need; passed in explicitly by the daemon."""

    runtime: Runtime
    execs: ExecManager
    images: ImageStore
    events: EventBus
    root: Path
    accel: str
    networks: NetworkManager | None = None
    volumes: VolumeManager | None = None
    pool: Factory | None = None
    tenants: Tenants | None = None  # the operator's tenant administration
    vm_run_dir: Path | None = None
    cpu_sampler: inspection.CpuSampler | None = None
    # The largest VM the host can give (size classes beyond it are refused); None: probed.
    capacity: HostCapacity | None = None
    crons: Crons | None = None  # cron jobs (docs/cron.md)
    funcs: Funcs | None = None  # HTTP-triggered containers (docs/funcs.md)
    metrics: Metrics | None = None  # GET /metrics (the operator's)
    # Container creates' sizes and quotas (the daemon's one, shared with the services'
    # orchestrator); None: the routes make their own.
    admission: ContainerAdmission | None = None
    swarm: swarm_routes.Swarm | None = None  # swarm mode (services, tasks); None: refused


def metrics_handler(metrics: Metrics) -> Callable[[Request], Awaitable[Response]]:
    """`GET /metrics`: the Prometheus text of `metrics` (read in a thread: a scrape reads
    /proc and /sys for every running container)."""
    async def handler(req: Request) -> Response:
        return RawResponse(await asyncio.to_thread(metrics.render), METRICS_CONTENT_TYPE)
    return handler


def build_router(svc: Services) -> Router:
    r = Router()
    api = _Api(svc)
    # The tenancy spine (docs/tenancy.md): every route naming a container or an exec gets it
    # resolved for the caller first; another tenant's is answered as a missing one.
    r.scope("/containers/{id}", "id", "container",
            lambda who, ref: svc.runtime.resolve(ref, who.tenant))
    r.scope("/exec/{id}", "id", "exec", lambda who, ref: _own_exec(svc, who, ref))
    for prefix in ("/images/{name", "/distribution/{name"):  # {name:path}; images/json etc. not
        r.scope(prefix, "name", "image", lambda who, ref: svc.images.scoped_ref(ref, who.tenant))
    if svc.volumes is not None:
        volume_routes.scope(r, svc.volumes)
        snapshot_routes.scope(r, svc.volumes)
    if svc.crons is not None:
        cron_routes.scope(r, svc.crons)
    if svc.funcs is not None:
        func_routes.scope(r, svc.funcs)
    r.add("GET", "/_ping", api.ping)
    r.add("HEAD", "/_ping", api.ping)
    r.add("GET", "/version", api.version)
    if svc.metrics is not None:
        r.add("GET", "/metrics", metrics_handler(svc.metrics), operator=True)
    r.add("GET", "/info", api.info)
    # steelcup extension: VM template/pool state, every tenant's: the operator's
    r.add("GET", "/steelcup/pool", api.pool, operator=True)
    if svc.tenants is not None:
        tenant_routes.register(r, svc.tenants, Teardown(
            svc.runtime, svc.images, svc.networks, svc.volumes, TenantCredentials(svc.root),
            crons=svc.crons, funcs=svc.funcs,
            services=svc.swarm.manager if svc.swarm is not None else None,
            swarm_objects=svc.swarm.objects if svc.swarm is not None else None))
    r.add("GET", "/events", api.events)
    r.add("POST", "/containers/create", api.create)
    r.add("GET", "/containers/json", api.list_containers)
    r.add("GET", "/containers/{id}/json", api.inspect)
    r.add("POST", "/containers/{id}/start", api.start)
    r.add("POST", "/containers/{id}/stop", api.stop)
    r.add("POST", "/containers/{id}/restart", api.restart)
    r.add("POST", "/containers/{id}/kill", api.kill)
    r.add("POST", "/containers/{id}/wait", api.wait)
    r.add("POST", "/containers/{id}/resize", api.resize)
    r.add("POST", "/containers/{id}/attach", api.attach)
    r.add("GET", "/containers/{id}/logs", api.logs)
    r.add("DELETE", "/containers/{id}", api.remove)
    r.add("POST", "/containers/{id}/pause", api.pause)
    r.add("POST", "/containers/{id}/unpause", api.unpause)
    r.add("GET", "/containers/{id}/top", api.top)
    r.add("GET", "/containers/{id}/stats", api.stats)
    r.add("POST", "/containers/{id}/update", api.update)
    r.add("GET", "/containers/{id}/attach/ws", api.attach_ws)
    r.add("GET", "/system/df", api.system_df)
    r.add("POST", "/containers/{id}/exec", api.exec_create)
    r.add("POST", "/exec/{id}/start", api.exec_start)
    r.add("POST", "/exec/{id}/resize", api.exec_resize)
    r.add("GET", "/exec/{id}/json", api.exec_inspect)
    r.add("GET", "/exec/{id}/start/ws", api.exec_start_ws)  # steelcup extension (browsers)
    r.add("GET", "/images/{name:path}/json", api.inspect_image)
    r.add("POST", "/images/{name:path}/tag", api.tag_image)
    r.add("DELETE", "/images/{name:path}", api.remove_image)
    for method, path, what in _UNSUPPORTED:
        r.add(method, path, _unsupported(what))
    if svc.swarm is not None:
        swarm_routes.register(r, svc.swarm)
    else:
        for method, path, what in _UNSUPPORTED_SWARM:
            r.add(method, path, _unsupported(what))
        r.add("POST", "/swarm/leave", _not_in_swarm)
        r.add("GET", "/swarm", _not_a_manager)
    image_routes.register(r, svc.images, svc.events, svc.root)
    build_routes.register(r, svc.runtime, svc.root, api.admission.create)
    fs_routes.register(r, svc.runtime, svc.images, svc.events)
    checkpoint_routes.register(r, svc.runtime)
    if svc.networks is not None:
        rt = svc.runtime
        addressing = svc.swarm.addressing if svc.swarm is not None else None
        net_routes.register(r, svc.networks,
                            lambda ref, tenant: rt.record(rt.resolve(ref, tenant)),
                            settle=addressing.settle_network if addressing else None)
        sg_routes.scope(r, svc.networks)
        sg_routes.register(r, svc.networks, lambda cid: rt.record(cid).config.tenant)
        fip_routes.register(r, svc.networks.fips, rt.resolve, svc.events,
                            _service_vip(svc.swarm) if svc.swarm is not None else None)
    else:
        # Without networking there are no networks: lookups answer as for any missing one
        # (`docker inspect NAME` tries every kind), changes say why they cannot be made.
        r.add("GET", "/networks", _no_networks)
        r.add("GET", "/networks/{id:path}", _no_such_network, names_nothing=True)
        for path in ("/networks", "/networks/{id:path}"):
            for method in ("POST", "DELETE"):
                r.add(method, path, _unsupported_because(
                    "networks: networking failed to start (see the daemon log)"),
                    names_nothing=True)
    if svc.volumes is not None:
        volume_routes.register(r, svc.volumes)
        snapshot_routes.register(r, svc.volumes)
    if svc.crons is not None:
        cron_routes.register(r, svc.crons)
    if svc.funcs is not None:
        func_routes.register(r, svc.funcs)
    return r


def _service_vip(swarm: swarm_routes.Swarm) -> fip_routes.ServiceResolver | None:
    """The VIP a floating IP attached to a service goes to (`fip attach IP SERVICE`)."""
    addressing = swarm.addressing
    if addressing is None:
        return None

    async def resolve(ref: str, tenant: str | None) -> tuple[str, VipRecord]:
        service_id = swarm.manager.resolve(ref, tenant)
        return service_id, await addressing.vip_for_fip(service_id)
    return resolve


_UNSUPPORTED = [
    ("GET", "/plugins", "plugins"),
    ("POST", "/session", "build sessions"),
    ("GET", "/distribution/{name:path}/json", "distribution inspect"),
]


# Without the services layer (a router built without `Services.swarm`)
_UNSUPPORTED_SWARM = [
    ("POST", "/swarm/init", "swarm mode"),
    ("POST", "/swarm/join", "swarm mode"),
    ("GET", "/nodes", "swarm mode (nodes)"),
    ("GET", "/services", "swarm mode (services)"),
    ("GET", "/tasks", "swarm mode (tasks)"),
    ("GET", "/secrets", "swarm mode (secrets)"),
    ("GET", "/configs", "swarm mode (configs)"),
]


async def _not_in_swarm(req: Request) -> Response:
    """dockerd's answer to leaving a swarm this node is not part of (503)."""
    raise NotInSwarm("This node is not part of a swarm")


async def _not_a_manager(req: Request) -> Response:
    """dockerd's answer to inspecting the swarm from a node outside one (503)."""
    raise NotInSwarm('This node is not a swarm manager. Use "docker swarm init" or "docker '
                     'swarm join" to connect this node to swarm and try again.')


async def _no_networks(req: Request) -> Response:
    return JsonResponse([])


async def _no_such_network(req: Request) -> Response:
    raise NotFound(f"network {req.params['id']} not found")


def _unsupported_because(why: str) -> Any:
    async def handler(req: Request) -> Response:
        raise Unsupported(f"steelcup cannot serve {why}")

    return handler


def _unsupported(what: str) -> Any:
    async def handler(req: Request) -> Response:
        raise Unsupported(f"steelcup does not support {what} yet")

    return handler


class _Api:
    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.rt = svc.runtime
        # Sizes and quotas of creates and resizes (it registers the container quota counts).
        self.admission = svc.admission or ContainerAdmission(
            svc.runtime, svc.tenants, svc.capacity or HostCapacity.probe())

    # -- system ------------------------------------------------------------------------------

    async def ping(self, req: Request) -> Response:
        headers = [("Cache-Control", "no-cache, no-store, must-revalidate")]
        if self.svc.swarm is not None:
            headers.append(("Swarm", self.svc.swarm.ping_header(req.principal)))
        return RawResponse(b"OK", "text/plain; charset=utf-8", headers=headers)

    async def version(self, req: Request) -> Response:
        go_version = "python" + platform.python_version()
        return JsonResponse({
            "Platform": {"Name": "steelcup"},
            "Components": [{"Name": "Engine", "Version": __version__,
                            "Details": {"ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION,
                                        "Arch": "amd64", "Os": "linux",
                                        "KernelVersion": platform.release(),
                                        "GoVersion": go_version, "GitCommit": "",
                                        "BuildTime": "", "Experimental": "false",
                                        "Runtime": "steelcup-qemu",
                                        "Accelerator": self.svc.accel}}],
            "Version": __version__,
            "ApiVersion": API_VERSION,
            "MinAPIVersion": MIN_API_VERSION,
            "Os": "linux",
            "Arch": "amd64",
            "KernelVersion": platform.release(),
            "GoVersion": go_version,
            "GitCommit": "",
            "BuildTime": "",
        })

    async def info(self, req: Request) -> Response:
        records = self.rt.list(req.principal.tenant)
        count = {s: sum(1 for r in records if r.state.status is s) for s in Status}
        networks = self.svc.networks
        pool = str(networks.pool) if networks is not None else ""
        facts = await asyncio.to_thread(system_info.host_facts)
        info = {
            **system_info.fixed_facts(pool, self.svc.events.listeners,
                                      self.svc.runtime.live_restore),
            **facts,
            "ID": "steelcup",
            "Containers": len(records),
            "ContainersRunning": count[Status.RUNNING],
            "ContainersPaused": count[Status.PAUSED],
            "ContainersStopped": count[Status.EXITED] + count[Status.CREATED],
            "Images": len(self.svc.images.list(req.principal.tenant)),
            "DockerRootDir": str(self.svc.root),
            "OperatingSystem": "steelcup (QEMU microVMs)",
            "ServerVersion": __version__,
            "DefaultRuntime": "steelcup",
            "Runtimes": {"steelcup": {"path": "qemu-system-x86_64"}},
            "Isolation": "vm",
            "SecurityOptions": [f"name=vm,accel={self.svc.accel}"],
            "Warnings": [] if self.svc.accel == "kvm" else [
                "WARNING: guests run under QEMU TCG (no usable KVM): slower, and QEMU does not "
                "treat TCG as a security boundary"],
        }
        if networks is None:
            info["DefaultAddressPools"] = []
        if self.svc.swarm is not None:
            info["Swarm"] = self.svc.swarm.info(req.principal)
        info["Labels"] = [self._default_size_label(req.principal.tenant)]
        return JsonResponse({
            **{key: info[key] for key in system_info.SCHEMA_KEYS},
            "Steelcup": {"Accelerator": self.svc.accel, "Pool": self._pool_status(),
                         "Networking": self.svc.networks is not None,
                         "VmRunDir": str(self.svc.vm_run_dir or "")},
        })

    def _default_size_label(self, tenant: str | None) -> str:
        """What a container that asks for no size gets, as `docker info` lists it."""
        if tenant and self.svc.tenants is not None:
            name = self.svc.tenants.get(tenant).size_default
            size = size_class(name)
            return (f"sh.steelcup.default-size={name} ({size.cpus} vCPU, {size.mem_mib} MiB; "
                    "--size or -m/--cpus ask for another)")
        defaults = self.rt.defaults
        template = self.svc.pool.template if self.svc.pool is not None else None
        if defaults.mem_grows and template is not None:
            return (f"sh.steelcup.default-memory={defaults.mem_mib} MiB, growing on demand up "
                    f"to {template.max_mem_mib} MiB (-m sets a limit)")
        return f"sh.steelcup.default-memory={defaults.mem_mib} MiB (-m asks for another)"

    def _pool_status(self) -> dict[str, Any]:
        if self.svc.pool is None:
            return {"Templates": False}
        status = self.svc.pool.status()
        return {
            "Templates": status.templates_enabled,
            "CacheSize": status.cache_size,
            "CacheHits": status.cache_hits,
            "Clones": status.clones,
            "DirectBoots": status.direct_boots,
            "Fallbacks": status.fallbacks,
            "TemplateList": [
                {"Tenant": t.tenant, "BaseMemMiB": t.base_mem_mib, "MaxMemMiB": t.max_mem_mib,
                 "MaxCpus": t.max_cpus, "NicSlots": t.nic_slots, "VolumeSlots": t.volume_slots,
                 "Clones": t.clones, "Failures": t.failures,
                 "BootSeconds": round(t.boot_s, 3), "RamFileMiB": round(t.ram_file_mib, 1)}
                for t in status.templates
            ],
            "Cache": [
                {"Tenant": c.tenant, "Nics": c.nics, "Target": c.target, "Ready": c.ready,
                 "Filling": c.filling, "HandedOut": c.handed_out, "Misses": c.misses,
                 "Discarded": c.discarded, "WarmSeconds": c.warm_s, "Staged": c.staged,
                 "StagedHandOuts": c.staged_hand_outs}
                for c in status.cache
            ],
        }

    async def pool(self, req: Request) -> Response:
        return JsonResponse(self._pool_status())

    async def events(self, req: Request) -> Response:
        filters = codec.decode_filters(req.q("filters"), codec.EVENT_FILTERS)
        since_ns = _time_param(req.q("since"))
        until_ns = _time_param(req.q("until"))
        bus = self.svc.events
        # Subscribe before reading the history, so nothing published in between is lost.
        tenant = req.principal.tenant
        queue = bus.subscribe(tenant)
        history = bus.history(tenant) if req.q("since") else []

        def wanted(event: dict[str, Any]) -> bool:
            return codec.event_matches(event, filters)

        async def chunks() -> AsyncIterator[bytes]:
            try:
                last_ns = 0
                for event in history:
                    if event["timeNano"] < since_ns:
                        continue
                    if until_ns and event["timeNano"] > until_ns:
                        return
                    last_ns = event["timeNano"]
                    if wanted(event):
                        yield json.dumps(event).encode() + b"\n"
                while True:
                    timeout = None
                    if until_ns:
                        timeout = (until_ns - time.time_ns()) / 1e9
                        if timeout <= 0:
                            return
                    try:
                        event = await asyncio.wait_for(queue.get(), timeout)
                    except TimeoutError:
                        return
                    if event["timeNano"] <= last_ns:
                        continue  # already sent from the history
                    if until_ns and event["timeNano"] > until_ns:
                        return
                    if wanted(event):
                        yield json.dumps(event).encode() + b"\n"
            finally:
                bus.unsubscribe(queue)

        return StreamResponse(chunks())

    # -- containers --------------------------------------------------------------------------

    async def create(self, req: Request) -> Response:
        body = await req.json()
        config = codec.decode_create(body)
        config = replace(config, tenant=req.principal.tenant or "")
        config = replace(config, network_links=self._link_targets(codec.endpoint_links(body),
                                                                  config.tenant))
        name = req.q("name") or None
        groups = self._security_groups(config)
        fip = self._floating_ip(config)
        # an image's first container after its pull has a block root too (--rootfs-cache
        # block); one its quotas refuse is refused before it waits
        self.admission.check(config)
        await self.rt.wait_for_root_disk(config)
        # quick, and counted against the tenant's quotas atomically; it touches loop-owned state
        record = self.admission.create(config, name)
        if groups and self.svc.networks is not None:  # no await since the check: still there
            await self.svc.networks.security_groups.join(record.id, config.tenant, groups)
        if fip and self.svc.networks is not None:
            try:
                await self.svc.networks.fips.attach(fip, record.id, config.tenant)
            except BaseException:
                await self.svc.runtime.remove(record.id, force=True)  # all or nothing
                raise
        return JsonResponse({"Id": record.id, "Warnings": []}, status=201)

    def _floating_ip(self, config: ContainerConfig) -> str:
        """The FIP a create asks for (`run --fip IP`: a label), one of the tenant's that is
        not attached yet; "" if none."""
        address = dict(config.labels).get(FIP_LABEL, "").strip()
        if not address:
            return ""
        if self.svc.networks is None:
            raise InvalidArgument("floating IPs need networks, and networking is off on this "
                                  "daemon")
        rec = self.svc.networks.fips.get(address, config.tenant)
        if rec.attached:
            raise Conflict(f"floating IP {rec.address} is attached to {rec.holder}: detach "
                           "it first")
        return rec.address

    def _security_groups(self, config: ContainerConfig) -> list[str]:
        """The groups the create asks for (`run --sg`: a label), each one of the tenant's."""
        names = requested_groups(dict(config.labels))
        if not names:
            return []
        if self.svc.networks is None:
            raise InvalidArgument("security groups need networks, and networking is off on "
                                  "this daemon")
        return self.svc.networks.security_groups.check(names, config.tenant)

    def _link_targets(self, links: dict[str, tuple[tuple[str, str], ...]], tenant: str
                      ) -> tuple[tuple[str, str, str], ...]:
        """Each network's legacy links of a create as (network, target id, alias)
        (NetworkManager.link_targets)."""
        if not links:
            return ()
        networks = self.svc.networks
        if networks is None:
            raise InvalidArgument("links need networks, and networking is off on this daemon")

        def container_of(ref: str) -> tuple[str, str]:
            record = self.rt.record(self.rt.resolve(ref, tenant))
            return record.id, record.name

        return tuple((network, target, alias) for network, network_links in links.items()
                     for target, alias in networks.link_targets(
                         "bridge" if network == "default" else network, tenant,
                         network_links, container_of))

    async def list_containers(self, req: Request) -> Response:
        filters = codec.decode_filters(req.q("filters"))
        all_ = req.q_bool("all")
        limit = req.q_int("limit", -1)
        if limit is not None and limit > 0:
            all_ = True  # docker: a limit includes stopped containers (ps -n)
        records = codec.select_containers(self.rt.list(req.principal.tenant), filters,
                                          all_=all_)
        if limit is not None and limit > 0:
            records = records[:limit]
        net_view = self.rt.resources.net_view
        return JsonResponse([codec.encode_summary(r, net_view(r)) for r in records])

    async def inspect(self, req: Request) -> Response:
        record = self.rt.record(req.params["id"])
        return JsonResponse(codec.encode_inspect(record, str(self.rt.log_path(record.id)),
                                                 self.rt.resources.net_view(record)))

    async def start(self, req: Request) -> Response:
        checkpoint_routes.check_no_dir(req)
        started = await self.rt.start(req.params["id"], req.q("checkpoint"))
        return EmptyResponse(204 if started else 304)

    async def stop(self, req: Request) -> Response:
        stopped = await self.rt.stop(req.params["id"], req.q_int("t"), req.q("signal"))
        return EmptyResponse(204 if stopped else 304)

    async def restart(self, req: Request) -> Response:
        await self.rt.restart(req.params["id"], req.q_int("t"))
        return EmptyResponse(204)

    async def kill(self, req: Request) -> Response:
        await self.rt.kill(req.params["id"], req.q("signal", "SIGKILL"))
        return EmptyResponse(204)

    async def wait(self, req: Request) -> Response:
        condition = req.q("condition", "not-running") or "not-running"
        waiter = self.rt.waiter(req.params["id"], condition)

        async def chunks() -> AsyncIterator[bytes]:
            code = await waiter
            yield json.dumps({"StatusCode": code, "Error": None}).encode() + b"\n"

        return StreamResponse(chunks())

    async def resize(self, req: Request) -> Response:
        await self.rt.resize(req.params["id"], req.q_int("h", 0) or 0, req.q_int("w", 0) or 0)
        return EmptyResponse(200)

    async def remove(self, req: Request) -> Response:
        await self.rt.remove(req.params["id"], force=req.q_bool("force"),
                             volumes=req.q_bool("v"))
        return EmptyResponse(204)

    async def attach(self, req: Request) -> Response:
        want_stdin = req.q_bool("stdin")
        want_stdout = req.q_bool("stdout")
        want_stderr = req.q_bool("stderr")
        replay_logs = req.q_bool("logs")
        # dockerd's default: without stream=1 the attach only replays the logs (if asked)
        stream = req.q_bool("stream")
        keys = parse_detach_keys(req.q("detachKeys"))
        attached = self.rt.attach(req.params["id"], want_stdout, want_stderr)
        await self.rt.resume_if_suspended(req.params["id"])  # subscribed: nothing missed
        tty = attached.record.config.tty
        rt = self.rt

        async def run(conn: HijackedStream) -> None:
            stdin_task = None
            if stream and want_stdin and attached.record.config.open_stdin:
                stdin_task = asyncio.create_task(
                    _pump_stdin(attached, conn, keys if tty else b""))
            try:
                if replay_logs:  # up to where the subscription's stream takes over
                    want = logs_module.LogFilter(stdout=want_stdout, stderr=want_stderr,
                                                 until_ns=attached.logged_until_ns)
                    async for entry in rt.follow_logs(attached.record.id, follow=False,
                                                      want=want):
                        await conn.write(_frame(tty, entry.stream, entry.data))
                while stream:
                    item = await attached.subscriber.queue.get()
                    if item is None:
                        break
                    await conn.write(_frame(tty, *item))
            except (ConnectionError, OSError):
                pass
            finally:
                attached.detach()
                if stdin_task is not None:
                    stdin_task.cancel()
                await conn.close()

        return HijackResponse(run)

    async def logs(self, req: Request) -> Response:
        record = self.rt.record(req.params["id"])
        want_stdout, want_stderr = req.q_bool("stdout"), req.q_bool("stderr")
        if not (want_stdout or want_stderr):
            raise InvalidArgument("Bad parameters: you must choose at least one stream")
        follow = req.q_bool("follow")
        timestamps = req.q_bool("timestamps")
        tail_text = req.q("tail", "all")
        tail = None if tail_text in ("", "all") else _int(tail_text, "tail")
        since_ns = _time_param(req.q("since"))
        until_ns = _time_param(req.q("until"))
        tty = record.config.tty

        want = logs_module.LogFilter(stdout=want_stdout, stderr=want_stderr,
                                     since_ns=since_ns, until_ns=until_ns, tail=tail)
        entries = self.rt.follow_logs(record.id, follow=follow, want=want)

        async def chunks() -> AsyncIterator[bytes]:
            async for entry in entries:
                if not ((entry.stream == "stdout" and want_stdout) or
                        (entry.stream == "stderr" and want_stderr)):
                    continue
                if until_ns and entry.time_ns > until_ns:
                    return
                data = entry.data
                if timestamps:
                    data = logs_module.format_time_ns(entry.time_ns).encode() + b" " + data
                yield _frame(tty, entry.stream, data)

        content = stdcopy_type(tty)
        return StreamResponse(chunks(), content_type=content)

    async def attach_ws(self, req: Request) -> Response:
        """The websocket attach: raw (never multiplexed) output, binary frames since 1.42."""
        want_stdin = req.q_bool("stdin")
        want_stdout = req.q_bool("stdout")
        want_stderr = req.q_bool("stderr")
        keys = parse_detach_keys(req.q("detachKeys"))
        attached = self.rt.attach(req.params["id"], want_stdout, want_stderr)
        await self.rt.resume_if_suspended(req.params["id"])  # subscribed: nothing missed
        tty = attached.record.config.tty

        async def run(conn: HijackedStream) -> None:
            stdin_task = None
            if want_stdin and attached.record.config.open_stdin:
                stdin_task = asyncio.create_task(
                    _pump_stdin(attached, conn, keys if tty else b""))
            try:
                while True:
                    item = await attached.subscriber.queue.get()
                    if item is None:
                        break
                    await conn.write(item[1])
            except (ConnectionError, OSError):
                pass
            finally:
                attached.detach()
                if stdin_task is not None:
                    stdin_task.cancel()
                await conn.close()

        return HijackResponse(run, websocket=True)

    async def pause(self, req: Request) -> Response:
        await self.rt.pause(req.params["id"])
        return EmptyResponse(204)

    async def unpause(self, req: Request) -> Response:
        await self.rt.unpause(req.params["id"])
        return EmptyResponse(204)

    async def top(self, req: Request) -> Response:
        titles, rows = await inspection.top(self.rt, req.params["id"], req.q("ps_args"))
        return JsonResponse(codec.encode_top(titles, rows))

    async def stats(self, req: Request) -> Response:
        record = self.rt.record(req.params["id"])
        stream = req.q_bool("stream", True)
        one_shot = req.q_bool("one-shot")
        if one_shot and stream:
            raise InvalidArgument("cannot have stream=true and one-shot=true")
        rt = self.rt
        ref = record.id
        # The host's CPU reading comes before the guest is asked anything: the guest's helpers
        # keep QEMU busy, and that is the stats call's cost, not the container's.
        host_now = inspection.with_host_cpu(rt, ref, VmSample(time_ns=time.time_ns()))
        precpu = None
        if not stream and not one_shot and host_now.host_cpu is not None:
            sampler = self.svc.cpu_sampler
            precpu = sampler.previous(ref, PRECPU_MIN_S) if sampler is not None else None
            if precpu is None:  # nothing sampled it yet: measure a window now
                precpu = host_now
                await asyncio.sleep(PRECPU_WINDOW_S)  # the measuring window itself
                host_now = inspection.with_host_cpu(rt, ref, VmSample(time_ns=time.time_ns()))
        # Errors (no `cat` in the image, ...) become a JSON 4xx/5xx before streaming starts.
        first = await inspection.sample(rt, ref)

        def encode(cur: Any, pre: Any) -> bytes:
            return json.dumps(codec.encode_stats(rt.record(ref), cur, pre)).encode() + b"\n"

        if not stream:
            pre = None
            cur = first
            if first is not None and not one_shot:
                if precpu is not None and host_now.host_cpu is not None:
                    pre = precpu
                    cur = replace(first, time_ns=host_now.time_ns, host_cpu=host_now.host_cpu)
                else:
                    await asyncio.sleep(STATS_INTERVAL_S)  # a second reading for precpu_stats
                    pre, cur = first, await inspection.sample(rt, ref)
            return RawResponse(encode(cur, pre), "application/json")

        async def chunks() -> AsyncIterator[bytes]:
            pre, cur = None, first
            while True:
                yield encode(cur, pre)
                if cur is None:
                    return  # not running: one zeroed reading, like dockerd
                await asyncio.sleep(STATS_INTERVAL_S)
                try:
                    pre, cur = cur, await inspection.sample(rt, ref)
                except SteelcupError:
                    return  # stopped or removed meanwhile

        return StreamResponse(chunks())

    async def update(self, req: Request) -> Response:
        changes = codec.decode_update(await req.json())
        warnings = self.admission.update(req.params["id"], **changes)
        return JsonResponse({"Warnings": warnings})

    async def system_df(self, req: Request) -> Response:
        images = await asyncio.to_thread(self.svc.images.list, req.principal.tenant)
        records = self.rt.list(req.principal.tenant)
        # The disk an image takes is its layers and, with block roots, its erofs image (the
        # same files a second time); "RootDiskSize" says how much of it that is.
        erofs = self.rt.erofs
        root_disks = {} if erofs is None else await asyncio.to_thread(
            lambda: {image.id: erofs.disk_bytes(image.id) for image in images})
        image_rows = []
        for image in images:
            row = image_codec.encode_summary(image)
            row["Containers"] = sum(1 for r in records if r.config.image_id == image.id)
            root_disk = root_disks.get(image.id, 0)
            row["Size"] = row["VirtualSize"] = row["Size"] + root_disk
            row["RootDiskSize"] = root_disk
            image_rows.append(row)
        containers = []
        for record in records:
            row = codec.encode_summary(record)
            try:
                async with writable_layer(self.rt, record.id) as upper:
                    row["SizeRw"] = await asyncio.to_thread(_dir_size, upper)
            except (NotFound, Conflict):
                continue  # being removed, or removed meanwhile
            row["SizeRootFs"] = row["SizeRw"]
            containers.append(row)
        volumes = []
        if self.svc.volumes is not None:
            manager = self.svc.volumes
            for vol in await asyncio.to_thread(manager.list, req.principal.tenant):
                row = volume_routes.volume_json(vol, req.principal)
                row["UsageData"] = {"Size": await asyncio.to_thread(manager.usage, vol),
                                    "RefCount": len(manager.in_use(vol.key))}
                volumes.append(row)
        return JsonResponse({
            "LayersSize": sum(int(row.get("Size", 0)) for row in image_rows),
            "Images": image_rows,
            "Containers": containers,
            "Volumes": volumes,
            "BuildCache": [],
        })

    # -- exec --------------------------------------------------------------------------------

    async def exec_create(self, req: Request) -> Response:
        config = codec.decode_exec(req.params["id"], await req.json())
        await self.rt.resume_if_suspended(req.params["id"])  # an exec needs its VM
        exec_ = self.svc.execs.create(config)
        return JsonResponse({"Id": exec_.id}, status=201)

    async def exec_start(self, req: Request) -> Response:
        body = await req.json(allow_empty=True)
        detach = body.get("Detach", False)
        tty = body.get("Tty")
        if not isinstance(detach, bool) or (tty is not None and not isinstance(tty, bool)):
            raise InvalidArgument("Detach and Tty must be booleans")
        execs = self.svc.execs
        if detach:
            exec_ = await execs.start(req.params["id"])
            asyncio.create_task(_drain_exec(execs, exec_))
            return EmptyResponse(200)
        exec_, spec = await execs.prepare(req.params["id"])
        # The process's terminal was decided at create; start's Tty says how the client wants
        # the output framed (dockerd: raw with Tty, multiplexed without).
        use_tty = exec_.config.tty if tty is None else tty
        return HijackResponse(_exec_runner(execs, exec_, spec, use_tty))

    async def exec_start_ws(self, req: Request) -> Response:
        """steelcup extension: start an exec over a websocket (a browser cannot hijack a
        POST): raw output in binary frames, as the websocket attach, input from its frames."""
        execs = self.svc.execs
        exec_, spec = await execs.prepare(req.params["id"])
        return HijackResponse(_exec_runner(execs, exec_, spec, exec_.config.tty),
                              websocket=True)

    async def exec_resize(self, req: Request) -> Response:
        await self.svc.execs.resize(req.params["id"], req.q_int("h", 0) or 0,
                                    req.q_int("w", 0) or 0)
        return EmptyResponse(200)

    async def exec_inspect(self, req: Request) -> Response:
        exec_ = self.svc.execs.get(req.params["id"])
        c = exec_.config
        return JsonResponse({
            "ID": exec_.id,
            "Running": exec_.running,
            "ExitCode": exec_.exit_code,
            "ProcessConfig": {"tty": c.tty, "entrypoint": c.cmd[0], "arguments": list(c.cmd[1:]),
                              "privileged": c.privileged, "user": c.user},
            "OpenStdin": c.attach_stdin,
            "OpenStdout": c.attach_stdout,
            "OpenStderr": c.attach_stderr,
            "CanRemove": False,
            "ContainerID": c.container_id,
            "DetachKeys": "",
            "Pid": exec_.pid,
        })

    # -- images ------------------------------------------------------------------------------

    async def inspect_image(self, req: Request) -> Response:
        image = await asyncio.to_thread(self.svc.images.get, req.params["name"],
                                        req.principal.tenant)
        return JsonResponse(image_codec.encode_inspect(image))

    async def tag_image(self, req: Request) -> Response:
        repo = req.q("repo")
        if not repo:
            raise InvalidArgument("repository name must have at least one component")
        tag = req.q("tag")
        ref = f"{repo}:{tag}" if tag else repo
        await asyncio.to_thread(self.svc.images.tag, req.params["name"], ref,
                                req.principal.tenant)
        return EmptyResponse(201)

    async def remove_image(self, req: Request) -> Response:
        removed = await asyncio.to_thread(self.svc.images.remove, req.params["name"],
                                          req.q_bool("force"), req.principal.tenant)
        entries = []
        for line in removed:  # "Untagged: X" / "Deleted: sha256:..."
            kind, _, what = line.partition(": ")
            entries.append({kind: what})
        return JsonResponse(entries)


# -- helpers -----------------------------------------------------------------------------------


def stdcopy_type(tty: bool) -> str:
    if tty:
        return "application/vnd.docker.raw-stream"
    return "application/vnd.docker.multiplexed-stream"


def _frame(tty: bool, stream: str, data: bytes) -> bytes:
    if tty:
        return data
    return stdcopy.frame(stdcopy.STDERR if stream == "stderr" else stdcopy.STDOUT, data)


def _dir_size(path: Path) -> int:
    """Bytes used by regular files under `path` (not following symlinks); 0 if absent."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(dirpath, name))
                total += st.st_size
    return total


def _int(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InvalidArgument(f"invalid value for {name}: {text!r}") from None


async def _pump_stdin(attached: Attached, conn: HijackedStream, detach_keys: bytes) -> None:
    """The client's stdin to the container's. `detach_keys` (a terminal's; b"": none) end the
    client's session and leave the container running, as dockerd."""
    scanner = DetachScanner(detach_keys)
    while True:
        data = await conn.read()
        if not data:
            break
        data, detach = scanner.feed(data)
        if data and not await attached.write_stdin(data):
            return
        if detach:
            attached.detach()
            attached.subscriber.queue.put_nowait(None)  # ends the output relay: the session
            return
    # As dockerd: a terminal's input stays open when its client goes (it may attach again).
    if attached.record.config.stdin_once and not attached.record.config.tty:
        await attached.close_stdin()


def _exec_runner(execs: ExecManager, exec_: Exec, spec: ProcessSpec, use_tty: bool
                 ) -> Callable[[HijackedStream], Awaitable[None]]:
    """What runs an exec on the client's upgraded stream (a hijacked POST or a websocket):
    started once the client has the stream (as dockerd does); a start failure goes into the
    stream, its exit code (126/127) to exec inspect."""

    async def run(conn: HijackedStream) -> None:
        try:
            await execs.launch(exec_, spec)
        except SteelcupError as exc:
            with contextlib.suppress(ConnectionError, OSError):
                await conn.write(_frame(use_tty, "stderr", f"{exc}\r\n".encode()))
            await conn.close()
            return
        await _relay_exec(execs, exec_, conn, use_tty)

    return run


async def _relay_exec(execs: ExecManager, exec_: Exec, conn: HijackedStream, tty: bool) -> None:
    assert exec_.process is not None
    process = exec_.process
    stdin_task = None
    detached = asyncio.Event()
    if exec_.config.attach_stdin:
        async def pump() -> None:
            # On a terminal, the detach keys end the client's session (the process runs on,
            # its output drained), and its input stays open when the client goes: dockerd's.
            scanner = DetachScanner(exec_.config.detach_keys if exec_.config.tty else b"")
            with contextlib.suppress(SteelcupError):
                while data := await conn.read():
                    data, detach = scanner.feed(data)
                    if data:
                        await process.write_stdin(data)
                    if detach:
                        detached.set()
                        await conn.close()
                        return
                if not exec_.config.tty:
                    await process.close_stdin()

        stdin_task = asyncio.create_task(pump())
    try:
        async for stream, data in process.output():
            if detached.is_set():
                continue  # drained: the process must not block on its output
            with contextlib.suppress(ConnectionError, OSError):
                await conn.write(_frame(tty, stream.value, data))
    except SteelcupError as exc:
        log.warning("exec %s: %s", exec_.id[:12], exc)
    finally:
        await execs.finish(exec_)
        if stdin_task is not None:
            stdin_task.cancel()
        await conn.close()


async def _drain_exec(execs: ExecManager, exec_: Exec) -> None:
    assert exec_.process is not None
    with contextlib.suppress(SteelcupError):
        async for _ in exec_.process.output():
            pass
    await execs.finish(exec_)
