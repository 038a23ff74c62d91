"""`steelcup daemon`: owns every VM and serves the Docker Engine API on a unix socket."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import signal
import sqlite3
import sys
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from steelcup import sysmount, userns
from steelcup.api import func_routes, tenant_listener, tenant_routes
from steelcup.api.http import HttpServer, Principal, server_tls_context
from steelcup.api.router import Router
from steelcup.api.routes import Services, build_router, metrics_handler
from steelcup.api.swarm_routes import Swarm
from steelcup.api.tls import listener_tls
from steelcup.api.versions import DEFAULT_HEADERS
from steelcup.boundedfs import DiskMaker, check_size
from steelcup.config import DaemonOptions
from steelcup.console import auth as console_auth
from steelcup.console.server import STATIC_DIR, ConsoleRouter, StaticFiles, console_tls
from steelcup.cron.jobs import RuntimeJobs
from steelcup.cron.scheduler import Crons
from steelcup.cron.store import CronStore
from steelcup.errors import InvalidArgument, NotFound, SteelcupError
from steelcup.funcs.service import Funcs
from steelcup.funcs.store import FuncStore
from steelcup.guest.protocol import RootfsCache
from steelcup.idmap import IdRange, IdsFor
from steelcup.image.erofs import ErofsImages, make_placeholder
from steelcup.image.layers import GIB, LayerLimits
from steelcup.image.store import ImageStore
from steelcup.metrics import Metrics, StateCollector
from steelcup.net.keeper import PortKeeper
from steelcup.net.manager import NetworkManager
from steelcup.net.nft import PublishedPort
from steelcup.net.store import NetStore
from steelcup.pool.factory import PoolOptions, build_factory, reset_run_dir, reset_template_dir
from steelcup.runtime import restore as restore_module
from steelcup.runtime.admission import ContainerAdmission, metered_by
from steelcup.runtime.autosuspend import AutoSuspender
from steelcup.runtime.containers import Defaults, Runtime
from steelcup.runtime.events import EventBus
from steelcup.runtime.execs import ExecManager
from steelcup.runtime.health import HealthMonitor
from steelcup.runtime.inspection import CpuSampler
from steelcup.runtime.resources import Resources, volume_users
from steelcup.runtime.store import ContainerStore
from steelcup.services.addressing import ServiceAddressing
from steelcup.services.manager import ServiceManager
from steelcup.services.object_store import ObjectStore
from steelcup.services.objects import ObjectManager, users_of
from steelcup.services.orchestrator import Orchestrator
from steelcup.services.pull import puller
from steelcup.services.store import ServiceStore
from steelcup.services.waker import ServiceWaker
from steelcup.state.db import open_db
from steelcup.tenancy import objects as tenant_objects
from steelcup.tenancy.credentials import Authority
from steelcup.tenancy.manager import Tenants
from steelcup.tenancy.model import id_range, size_class
from steelcup.tenancy.sizing import HostCapacity
from steelcup.tenancy.store import TenantStore
from steelcup.tenancy.usage import Meter, UsageLedger
from steelcup.vm import cgroup
from steelcup.vm.accel import choose_accel
from steelcup.vm.assets import find_assets
from steelcup.volume.manager import VolumeManager

log = logging.getLogger("steelcup.daemon")


def run(options: DaemonOptions) -> int:
    """Run the daemon until SIGTERM/SIGINT; returns the process exit code."""
    logging.basicConfig(
        level=logging.DEBUG if options.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    make_private(options.root)
    # "a": a second daemon must not truncate the running one's pid before failing to lock.
    lock_file = open(options.root / "daemon.lock", "a")  # noqa: SIM115 - held for our lifetime
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"steelcup daemon: another daemon is already using {options.root}", file=sys.stderr)
        return 1
    lock_file.truncate(0)
    lock_file.write(f"{os.getpid()}\n")
    lock_file.flush()
    try:
        return asyncio.run(_serve(options))
    except SteelcupError as exc:
        print(f"steelcup daemon: {exc}", file=sys.stderr)
        return 1
    finally:
        lock_file.close()


def layer_limits(options: DaemonOptions) -> LayerLimits:
    """The operator's limits on image layers (size, expansion ratio) for the image store."""
    return LayerLimits(max_bytes=options.layer_max_gib * GIB, max_ratio=options.layer_max_ratio)


async def _serve(options: DaemonOptions) -> int:
    assets = find_assets(options.assets_dir)
    accel = await choose_accel(options.accel, options.root / "cache", assets=assets)
    db = open_db(options.root)
    images = ImageStore(options.root / "images", db, limits=layer_limits(options))
    events = EventBus(asyncio.get_running_loop())
    # Containers a live-restore stop left running: what they use survives the clean-ups below.
    # (Those whose VM has died meanwhile are exited by `runtime.restore`.)
    left = restore_module.load_all(options.root / "containers")
    kept = {cid: k for cid, k in left.items() if k.alive()}
    if left:
        log.info("live restore: %d container(s) left running by the previous daemon, %d of "
                 "them still running", len(left), len(kept))
    networks = await _start_networking(options, db,
                                       {cid: (k.taps, k.ports) for cid, k in kept.items()})
    ids = vm_ids(options)
    tenants = Tenants(TenantStore(db), Authority(options.root / "tls"),
                      usage=UsageLedger(db))
    ids_for = tenant_ids(ids, tenants)
    run_dir = vm_run_dir(options.root)
    reset_run_dir(run_dir, keep=[p for k in kept.values() for p in k.run_dir_paths()])
    make_private(run_dir)  # ready VMs' slots hold containers' root filesystems
    link_run_dir(options.root, run_dir)
    log.info("VM run dir %s (for root %s; %s links to it)", run_dir, options.root,
             options.root / RUN_DIR_LINK)
    template_dir = options.root / TEMPLATES_DIR
    await asyncio.to_thread(reset_template_dir, template_dir)
    warn_memory_filesystem(options.root)
    cgroups = memory_cgroups(options, accel, run_dir,
                             keep={Path(k.vm.state_dir).name for k in kept.values()})
    rootfs_cache = RootfsCache.from_name(options.rootfs_cache)
    vms = build_factory(
        assets=assets,
        accel=accel,
        tcg_tb_mib=options.tcg_tb_mib,
        run_dir=run_dir,
        options=PoolOptions(templates=options.vm_templates, base_mem_mib=options.vm_mem_mib,
                            max_mem_mib=options.vm_max_mem_mib, max_cpus=options.vm_max_cpus,
                            cache_size=options.vm_pool_size,
                            # block roots' writable layer is uncached, as a `none` root
                            stage_cache=(rootfs_cache if rootfs_cache is RootfsCache.LOOSE
                                         else RootfsCache.NONE)),
        warm_program=assets.init,
        tap_host=networks.host if networks is not None else None,
        cgroups=cgroups,
        ids_for=ids_for,
        tenant_base_mib=lambda t: size_class(tenants.get(t).size_default).mem_mib,
        outlive_daemon=options.live_restore,
        template_dir=template_dir,
    )
    erofs_images = None
    # A sparse empty file: a block daemon's pooled VMs' root disk until hand-out, and what a
    # checkpoint of a VM that had a root disk is restored with in any mode.
    vms.direct.placeholder = await asyncio.to_thread(
        make_placeholder, options.root / "cache" / "root-disk-placeholder")
    if rootfs_cache is RootfsCache.BLOCK:  # docs/architecture.md, "The root as a block device"
        erofs_images = ErofsImages(options.root / "images" / "erofs",
                                   options.root / "images" / "tmp")
        await asyncio.to_thread(erofs_images.prune, {i.id for i in images.list()})
        if vms.template is not None:
            vms.template.placeholder = vms.direct.placeholder
        if vms.cache is not None:  # ready VMs read their tenant's image ahead (pool/cache.py)
            vms.cache.hot_paths = erofs_images.hot_paths
    if vms.cache is not None:
        await asyncio.to_thread(vms.cache.remove_leftover_taps)  # a killed daemon's
    runtime_ref: list[Runtime] = []
    volumes = VolumeManager(
        options.root, in_use=lambda key: volume_users(runtime_ref[0].list(), key),
        disks=DiskMaker(options.root / "cache" / "volume-disk",
                        check_size(options.volume_default_bytes, "the default volume size"),
                        label="steelcup-vol", empty_root=True),
        ids=ids,
    )
    volumes.recover(keep={cid: k.volumes for cid, k in kept.items()})
    runtime = Runtime(
        options.root,
        ContainerStore(db),
        images,
        vms,
        events,
        Defaults(mem_mib=options.vm_mem_mib, cpus=options.vm_cpus,
                 mem_grows=options.vm_mem_grows and options.vm_templates,
                 storage_bytes=options.storage_default_bytes,
                 log_max_bytes=options.log_max_bytes, log_max_files=options.log_max_files,
                 ids=ids, rootfs_cache=rootfs_cache),
        Resources(networks, volumes, ids_for),
    )
    runtime.ids_for = ids_for
    runtime.erofs = erofs_images
    images.on_added = runtime.image_added
    if erofs_images is not None:
        images.on_deleted = erofs_images.forget
    runtime.live_restore = options.live_restore
    runtime.restorer = vms.restore  # container checkpoints (docs/checkpoints.md)
    runtime_ref.append(runtime)
    images.in_use = runtime.image_in_use
    runtime.recover(kept=set(left))
    await runtime.restore(left, vms.direct.adoptable)
    await asyncio.to_thread(runtime.queue_root_disks)
    # Cron jobs', funcs' and services' containers are made as POST /containers/create makes
    # them: one admission, sized and counted against their tenant's quotas.
    capacity = HostCapacity.probe()
    admission = ContainerAdmission(runtime, tenants, capacity)
    crons = Crons(CronStore(db), RuntimeJobs(runtime, admission), events)
    service_store = ServiceStore(db)
    service_manager = ServiceManager(service_store, events)
    # Swarm secrets and configs: their data in 0600 files under the (0700) root
    swarm_objects = ObjectManager(ObjectStore(db, options.root / "swarm-objects"), events)
    swarm_objects.users = users_of(service_manager)
    runtime.resources.swarm_data = lambda _kind, object_id: swarm_objects.data(object_id)
    tenant_objects.wire(tenants, runtime, images, networks, volumes, crons,
                        services=service_manager, swarm_objects=swarm_objects)
    meter = start_metering(runtime, tenants)
    await asyncio.to_thread(runtime.disks.template)  # off the first run's path
    runtime.disks.fill_spares()  # in the background
    if volumes.disks is not None:
        await asyncio.to_thread(volumes.disks.template)
    await runtime.remove_ended_auto_remove()  # before serving: clients never see them
    health = HealthMonitor.attach(runtime)  # probes health checks, driven by events
    # --auto-suspend: idle containers suspended, woken by a connection (docs/checkpoints.md)
    suspender = AutoSuspender(runtime, networks.host.netns if networks is not None else None)
    cpu_sampler = CpuSampler(runtime)
    funcs = Funcs(FuncStore(db), runtime, admission.create, events, tenants)
    await funcs.recover()
    tenant_objects.wire_funcs(tenants, funcs)
    # Services' tasks, reconciled from what the store and a live restore left (events-driven)
    orchestrator = Orchestrator(service_manager, service_store, runtime, admission.create,
                                pull_image=puller(images, options.root))
    # Their virtual IPs and published ports (a daemon with networking)
    addressing = (ServiceAddressing.attach(orchestrator, networks) if networks is not None
                  else None)
    # Services with --auto-suspend whose replicas all sleep wake on a connection
    waker = (ServiceWaker.attach(orchestrator, networks) if networks is not None else None)
    orchestrator.start()
    if addressing is not None:
        addressing.start()
    if waker is not None:
        waker.start()
    metrics = Metrics()
    metrics.watch(StateCollector(runtime, vms, tenants, networks))
    vms.observe = metrics.observe_vm_start
    services = Services(runtime=runtime, execs=ExecManager(runtime), images=images,
                        events=events, root=options.root, accel=accel, networks=networks,
                        volumes=volumes, pool=vms, tenants=tenants, vm_run_dir=run_dir,
                        cpu_sampler=cpu_sampler, capacity=capacity, metrics=metrics,
                        crons=crons, funcs=funcs, admission=admission,
                        swarm=Swarm(service_manager, orchestrator, runtime, swarm_objects,
                                    addressing=addressing))
    router = build_router(services)
    server = _server(options, accel, router, tenants)
    server.observe = metrics.observe_request
    metrics_server = _metrics_server(options, metrics)
    console = _console_server(options, router, tenants)
    if console is not None:
        console.observe = metrics.observe_request
    gateway = func_gateway(options, funcs, tenants)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signo in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signo, stop.set)
    await server.start()
    if metrics_server is not None:
        await metrics_server.start()
    if console is not None:
        await console.start()
    if gateway is not None:
        await gateway.start()
        log.info("func gateway on port %d", gateway.tcp_port or 0)
    autostart = asyncio.create_task(runtime.autostart(), name="autostart")
    sampler = asyncio.create_task(cpu_sampler.run(), name="cpu-sampler")
    heartbeats = asyncio.create_task(meter.heartbeats(), name="usage-heartbeats")
    loop_lag = asyncio.create_task(metrics.measure_loop_lag(), name="loop-lag")
    scheduler = asyncio.create_task(crons.run(), name="cron-scheduler")
    auto_suspend = asyncio.create_task(suspender.run(), name="auto-suspend")
    # The default network gives each container one NIC: build that template (and fill the
    # warm cache of its ready VMs) first.
    prewarm = asyncio.create_task(vms.prewarm((1,) if networks is not None else (0,),
                                              grows=options.vm_mem_grows),
                                  name="prewarm")
    log.info("steelcup daemon ready on %s (root %s, accelerator %s)", options.socket,
             options.root, accel)
    try:
        await stop.wait()
    finally:
        log.info("shutting down: stopping VMs")
        await server.close()
        if metrics_server is not None:
            await metrics_server.close()
        if gateway is not None:
            await gateway.close()
        if console is not None:
            await console.close()
        await funcs.close()
        # The scheduler first: no job container starts while the runtime stops them all.
        for task in (scheduler, auto_suspend, autostart, prewarm, sampler, heartbeats,
                     loop_lag):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await suspender.close()  # held connections end with the daemon
        if waker is not None:
            await waker.close()
        if addressing is not None:
            await addressing.close()  # the VIPs stay, with their services
        await orchestrator.close()  # the VMs stopping now are not tasks failing
        health.close()
        left_running = await runtime.shutdown(live_restore=runtime.live_restore)
        await vms.close()
        # Any run that did not end in time; the kept containers' volumes stay mounted.
        await asyncio.to_thread(volumes.recover, {cid: volumes.held_by(cid)
                                                  for cid in left_running})
        images.close()
        if erofs_images is not None:
            await asyncio.to_thread(erofs_images.close)  # a build under way is finished
        if cgroups is not None:
            cgroups.close()
            with contextlib.suppress(OSError):
                run_dir.rmdir()  # empty now that the hierarchy mounted in it (if any) is gone
        if networks is not None:
            await networks.close(keep=left_running)
        if left_running:
            log.info("live restore: %d container(s) left running", len(left_running))
        with contextlib.suppress(Exception):
            db.close()
    return 0


def _server(options: DaemonOptions, accel: str, router: Router, tenants: Tenants) -> HttpServer:
    """The unix socket (the operator's) and the TCP listener: the operator's with dockerd's
    --tlsverify, or with --multi-tenant the tenants' (docs/tenancy.md)."""
    if options.multi_tenant:
        if options.tls_listen is None:
            raise InvalidArgument("--multi-tenant needs --tls-listen ADDR:PORT (tenants reach "
                                  "the daemon only over TLS; the unix socket is the operator's)")
        why = tenant_listener.refusal(accel, options.allow_tcg, router.table)
        if why is not None:
            raise InvalidArgument(why)
        names = tenant_listener.server_names(options.tls_listen[0], list(options.tls_names))
        tls = tenant_listener.tls_for_tenants(tenants.authority, names, options.tls_ca,
                                              options.tls_cert, options.tls_key)
        headers = list(DEFAULT_HEADERS)
        if accel != "kvm":
            log.warning("serving tenants without KVM (--allow-tcg): %s",
                        tenant_listener.TCG_WARNING)
            headers.append((tenant_listener.WARNING_HEADER, tenant_listener.TCG_WARNING))
        log.info("tenant listener on %s:%d (certificate names: %s; CA %s)",
                 *options.tls_listen, ", ".join(names), tenants.authority.ca_pem_path)
        return HttpServer(router, unix_path=options.socket, tcp=options.tls_listen, tls=tls,
                          identify=tenant_routes.identify_with(tenants),
                          default_headers=headers)
    operator_tls = None
    if options.tls_listen is not None:
        if not (options.tls_ca and options.tls_cert and options.tls_key):
            raise InvalidArgument("--tls-listen needs --tlscacert, --tlscert and --tlskey "
                                  "(or --multi-tenant, which makes its own)")
        operator_tls = server_tls_context(options.tls_ca, options.tls_cert, options.tls_key)
    return HttpServer(router, unix_path=options.socket,
                      tcp=options.tls_listen or options.tcp_listen, tls=operator_tls)


def _metrics_server(options: DaemonOptions, metrics: Metrics) -> HttpServer | None:
    """`--metrics-listen`: a plain HTTP listener with one route, GET /metrics. Plain on any
    address (a scraper elsewhere needs it): the figures name every tenant's containers, so
    the operator puts it on an address only the scraper reaches."""
    if options.metrics_listen is None:
        return None
    router = Router()
    router.add("GET", "/metrics", metrics_handler(metrics), names_nothing=True)
    log.info("metrics on http://%s:%d/metrics", *options.metrics_listen)
    return HttpServer(router, tcp=options.metrics_listen, plain_tcp_anywhere=True)


def _console_server(options: DaemonOptions, router: Router,
                    tenants: Tenants) -> HttpServer | None:
    """`--console-listen`: the web console's pages and, behind each request's bearer token,
    the same API router (docs/console.md). Tenants' tokens log in only with --multi-tenant
    (whose refusals the router already passed); the console token, kept in ROOT and printed
    here, is the operator's (single-user installs)."""
    if options.console_listen is None:
        return None
    host, port = options.console_listen
    token = console_auth.load_or_create_token(options.root)

    def tenant_of(bearer: str) -> Principal | None:
        return tenant_routes.identify_with(tenants)(None, bearer)

    auth = console_auth.ConsoleAuth(token, tenant_of if options.multi_tenant else
                                    lambda _bearer: None)
    names = tenant_listener.server_names(host, list(options.tls_names))
    tls = console_tls(host, options.tls_cert, options.tls_key,
                      lambda: tenants.authority.server_files(names))
    scheme = "https" if tls is not None else "http"
    log.info("web console on %s://%s:%d/ (console token, the operator's: %s; kept in %s)",
             scheme, host, port, token, options.root / console_auth.TOKEN_FILE)
    return HttpServer(ConsoleRouter(router, auth, StaticFiles(STATIC_DIR)),
                      tcp=options.console_listen, tls=tls)


def func_gateway(options: DaemonOptions, funcs: Funcs, tenants: Tenants) -> HttpServer | None:
    """`--func-listen`: the func gateway (docs/funcs.md). Its callers say who they are with a
    func's secret or a tenant's token, which must not cross a network in the clear: TLS as
    the console has it (the operator's --tlscert/--tlskey, else a certificate of the daemon's
    CA under ROOT/tls for the listener's names), plain HTTP only on loopback, unless
    --func-listen-tls."""
    if options.func_listen is None:
        return None
    host, port = options.func_listen
    names = tenant_listener.server_names(host, list(options.tls_names))
    tls = listener_tls(host, options.tls_cert, options.tls_key,
                       lambda: tenants.authority.server_files(names), what="the func gateway",
                       force=options.func_listen_tls)
    log.info("func gateway on %s://%s:%d/%s", "https" if tls is not None else "http", host,
             port, f" (CA {tenants.authority.ca_pem_path})" if tls is not None
             and options.tls_cert is None else "")
    return HttpServer(func_routes.gateway_router(funcs, tenants), tcp=options.func_listen,
                      tls=tls, default_headers=())


def start_metering(runtime: Runtime, tenants: Tenants) -> Meter:
    """After `recover()`: end the usage rows a crashed daemon left open (at their last
    heartbeat; a container still running keeps its row), then meter every start and stop."""
    assert tenants.usage is not None
    ledger = tenants.usage

    def running(container_id: str) -> bool:
        try:
            return runtime.record(container_id).state.running
        except NotFound:
            return False

    ended = ledger.reconcile(running)
    if ended:
        log.info("usage: ended %d runs at their last heartbeat (the previous daemon stopped "
                 "without ending them)", ended)
    meter = Meter(ledger, metered_by(runtime))
    runtime.events.listen(meter.observe)
    return meter


def tenant_ids(ids: IdRange | None, tenants: Tenants) -> IdsFor:
    """Each tenant's VMs in its own id range (its slot above the daemon's); the operator's
    containers in the daemon's."""
    def ids_for(tenant: str) -> IdRange | None:
        if ids is None or not tenant:
            return ids
        return id_range(ids.base, tenants.get(tenant).id_slot)
    return ids_for


def vm_ids(options: DaemonOptions) -> IdRange | None:
    """The user namespace every QEMU runs in (docs/security.md); None, said loudly, if it
    is turned off or this host cannot."""
    if not options.userns:
        log.warning("--no-userns: QEMU runs as host root; a guest's root is host root in "
                    "bind-mounted directories")
        return None
    try:
        ids = IdRange(options.userns_base)
    except ValueError as exc:
        raise InvalidArgument(f"--userns-base: {exc}") from exc
    if not userns.supported():
        log.error("this host has no idmapped mounts or user namespaces: QEMU runs as host "
                  "root (a guest's root is host root in bind-mounted directories)")
        return None
    return ids


async def _start_networking(
    options: DaemonOptions, db: sqlite3.Connection,
    kept: Mapping[str, tuple[Sequence[str], Sequence[PublishedPort]]],
) -> NetworkManager | None:
    """Bridges, NAT and DNS for container networks; None (loopback-only containers) if the
    host does not allow it, with the reason in the log."""
    if not options.networking:
        log.info("networking disabled: containers get loopback only")
        return None
    # Loopback proxies live in the port keeper, which outlives the daemon (live restore).
    networks = NetworkManager(NetStore(db), ports=PortKeeper(options.root / "ports", None),
                              fip_pool=options.fip_pool, fip_interface=options.fip_interface)
    try:
        await networks.startup(kept)
    except (SteelcupError, OSError) as exc:
        log.error("networking unavailable (%s); containers get loopback only", exc)
        return None
    return networks


def memory_cgroups(options: DaemonOptions, accel: str, run_dir: Path,
                   keep: Collection[str] = ()) -> cgroup.MemoryCgroups | None:
    """Where each VM's memory limit is enforced (docs/security.md), with what a previous
    daemon on this root left there removed; None, said loudly, if this host cannot."""
    overhead = options.vm_mem_overhead_mib or cgroup.overhead_mib(accel, options.tcg_tb_mib)
    # `mount_at`: in a mount namespace without /sys/fs/cgroup (`ip netns exec`).
    # One instance per VM run dir (per state root), like the run dir itself.
    cgroups = cgroup.MemoryCgroups.discover(run_dir.name, overhead, mount_at=run_dir / "cg")
    if cgroups is None:
        log.error("no memory cgroup controller: container memory limits are NOT enforced "
                  "from the host (a guest that unbinds its balloon driver can take up to "
                  "--vm-max-mem)")
        return None
    try:
        cgroups.setup(keep)
    except OSError as exc:
        log.error("%s: container memory limits are NOT enforced from the host", exc)
        return None
    log.info("VM memory limits in %s cgroup %s (guest RAM + %d MiB each)",
             cgroups.layout.value, cgroups.parent, overhead)
    return cgroups


def make_private(path: Path) -> None:
    """Create `path` (or take it over) as root-only, 0700: below it are containers' writable
    layers and root filesystems, whose files a guest's root chose (setuid bits among them),
    and host users must not be able to reach them (docs/security.md)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


VM_RUN_BASE = Path("/run/steelcup")
RUN_DIR_LINK = "vm-run-dir"  # in the state root: which run dir is this root's
# In the state root, not the run dir: a template's RAM file must be on a disk filesystem
# (warn_memory_filesystem).
TEMPLATES_DIR = "templates"


def warn_memory_filesystem(root: Path) -> None:
    """Templates keep their RAM files in the state root. A clone maps its template's file
    copy-on-write, and the first write to a page the template never wrote reads the file's
    hole: on a disk filesystem that is a clean page of page cache the kernel may drop again,
    on tmpfs a page of the file itself, kept as long as the template is (and refused with
    SIGBUS, killing the clone, once the tmpfs is full)."""
    kind = sysmount.memory_filesystem(root)
    if kind is not None:
        log.warning("the state root %s is on %s: each template's RAM file there grows by a "
                    "page of memory for every page its clones first write, up to the "
                    "template's RAM; give --root a disk filesystem", root, kind)


def vm_run_dir(root: Path) -> Path:
    """Where VM sockets live: short (unix socket paths are limited to 107 bytes) and unique
    per state root, so two daemons never share it. `--help` and `<root>/vm-run-dir` say so."""
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:10]
    return VM_RUN_BASE / f"vms-{digest}"


def link_run_dir(root: Path, run_dir: Path) -> None:
    """`<root>/vm-run-dir` -> the run dir, so an operator tells two daemons' run dirs (and
    what to clean up after one) apart without hashing paths."""
    link = root / RUN_DIR_LINK
    tmp = root / f".{RUN_DIR_LINK}.tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(run_dir)
    tmp.replace(link)


def socket_dir_ok(path: Path) -> bool:
    """Whether the socket's directory can be created (for a clear error before starting)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(path.parent, os.W_OK)
