"""System commands: version, info, daemon."""

from __future__ import annotations

import argparse
import os
import sys

from steelcup import __version__, defaults
from steelcup.cli.client import API_VERSION
from steelcup.cli.context import Context, report
from steelcup.errors import SteelcupError

TYPE_CHECKING = False  # the CLI does not import typing at run time (start-up cost)
if TYPE_CHECKING:
    from typing import Any


def register(sub: Any, name: str, help_text: str) -> None:
    """Add the parser of command `name` (one of this module's rows in `commands.COMMANDS`)."""
    if name == "version":
        p = sub.add_parser(name, help=help_text)
        p.add_argument("-f", "--format", default="",
                       help="Go-template subset over {Client, Server}")
        p.set_defaults(func=cmd_version)
    elif name == "info":
        p = sub.add_parser(name, help=help_text)
        p.add_argument("-f", "--format", default="", help="Go-template subset over the info object")
        p.set_defaults(func=cmd_info)
    elif name == "system":
        system = sub.add_parser(name, help=help_text)
        system_sub = system.add_subparsers(dest="system_command", metavar="COMMAND", required=True)
        p = system_sub.add_parser("info", help="system-wide information, accelerator and VM pool")
        p.add_argument("-f", "--format", default="", help="Go-template subset over the info object")
        p.set_defaults(func=cmd_info)
        p = system_sub.add_parser(
            "df", help="show disk usage: images (with their block-root disks), containers' "
                       "writable layers, volumes")
        p.add_argument("-v", "--verbose", action="store_true",
                       help="each image, container and volume with its size")
        p.add_argument("-f", "--format", default="",
                       help="Go-template subset over the daemon's answer (LayersSize, Images, "
                            "Containers, Volumes)")
        p.set_defaults(func=cmd_df)
    elif name == "pool":
        pool = sub.add_parser(name, help=help_text)
        pool_sub = pool.add_subparsers(dest="pool_command", metavar="COMMAND", required=True)
        p = pool_sub.add_parser(
            "ls", help="list VM templates (clones served) and the warm cache of ready VMs")
        p.set_defaults(func=cmd_pool_ls)
    elif name == "daemon":
        p = sub.add_parser(
            name,
            help=help_text,
            description="Run the daemon in the foreground: it owns the VMs and serves the API.",
        )
        p.add_argument(
            "--root", dest="daemon_root", default=None, metavar="ROOT",
            help="state directory, on a disk filesystem (VM templates keep their RAM files "
                 "in ROOT/templates; on tmpfs they would grow with every page their clones "
                 "write). VM sockets and ready VMs live apart from it, in "
                 "/run/steelcup/vms-HASH (HASH: the first 10 hex digits of the SHA-256 of "
                 "the resolved root; unix socket paths must stay short); ROOT/vm-run-dir links "
                 "to it and `docker info` shows it (Steelcup.VmRunDir)")
        p.add_argument("--socket", default=None, help="API unix socket path")
        p.add_argument(
            "--accel",
            choices=["auto", "kvm", "tcg"],
            default="auto",
            help="QEMU accelerator (auto probes KVM and falls back to TCG)",
        )
        p.add_argument("--assets", default=None, help="directory with the guest kernel and initrd")
        p.add_argument("--debug", action="store_true", help="verbose logging")
        p.add_argument(
            "--no-templates",
            dest="templates",
            action="store_false",
            help="boot every VM from scratch instead of cloning a template",
        )
        p.add_argument("--vm-max-mem", type=int, default=defaults.VM_MAX_MEM_MIB, metavar="MIB",
                       help="largest memory a container VM can be given (template RAM size; "
                            "default %(default)s)")
        p.add_argument("--no-memory-growth", dest="memory_grows", action="store_false",
                       help="a container with no -m gets exactly the default 256 MiB; by "
                            "default it starts there and grows on demand up to --vm-max-mem "
                            "(the host limits it to that), as a docker container without -m "
                            "may use what it needs"),
        p.add_argument("--vm-max-cpus", type=int, default=defaults.VM_MAX_CPUS, metavar="N",
                       help="vCPUs present in a cloned VM (onlined at hand-out; "
                            "default %(default)s)")
        p.add_argument("--pool-size", type=int, default=defaults.VM_POOL_SIZE, metavar="N",
                       help="ready VMs (restored from the template and warmed up) kept per tenant "
                            "and NIC count, so a run skips the restore; 0 turns the warm cache off "
                            "(default %(default)s)")
        p.add_argument("--tcg-tb-size", type=int, default=defaults.TCG_TB_MIB, metavar="MIB",
                       help="TCG translation cache per VM (no KVM): what a busy VM's QEMU may "
                            "grow by (an idle clone fills 12-14 MiB of it whatever the size); "
                            "smaller saves that memory, and code-heavy containers (Python, "
                            "nginx) retranslate more often: at 64 a clone's first Python start "
                            "overflows it (default %(default)s)")
        p.add_argument("--vm-mem-overhead", type=int, default=defaults.VM_MEM_OVERHEAD_MIB,
                       metavar="MIB",
                       help="memory each VM's QEMU may use beyond the container's -m before the "
                            "host kills it (0: QEMU's measured need plus the TCG cache; "
                            "default %(default)s)")
        p.add_argument("--layer-max-size", type=int, default=defaults.LAYER_MAX_GIB,
                       metavar="GIB", help="largest uncompressed size of one image layer "
                                           "(default %(default)s)")
        p.add_argument("--layer-max-ratio", type=int, default=defaults.LAYER_MAX_RATIO,
                       metavar="N", help="refuse a compressed layer that expands more than N "
                                         "times once past 64 MiB (decompression bombs); 0 turns "
                                         "the check off (default %(default)s)")
        p.add_argument("--storage-size-default", default=defaults.STORAGE_SIZE_DEFAULT,
                       metavar="SIZE", help="size of a container's writable layer unless it "
                                            "asks for one with --storage-opt size= (a guest "
                                            "writing more gets ENOSPC; default %(default)s)")
        p.add_argument("--volume-size-default", default=defaults.VOLUME_SIZE_DEFAULT,
                       metavar="SIZE", help="size of a new volume, named or anonymous, unless "
                                            "it asks for one with `volume create --opt size=` "
                                            "(a guest writing more gets ENOSPC; volumes made "
                                            "before volumes had a size stay unbounded; "
                                            "default %(default)s)")
        p.add_argument("--rootfs-cache", choices=("none", "loose", "block"), default="block",
                       help="how a container's guest gets its root filesystem: block gives the "
                            "guest the image's files as an erofs disk, made once per image "
                            "when the image arrives (a container created while it is being made "
                            "waits up to 20 s for it, else is loose), with the container's "
                            "writable layer over 9p; loose is the whole root over 9p with a "
                            "page cache in the guest (the daemon flushes and drops it around "
                            "cp, diff, commit and export); none reads every file from the host "
                            "(default %(default)s)")
        p.add_argument("--log-max-size", default=defaults.LOG_MAX_SIZE, metavar="SIZE",
                       help="container logs rotate at this size (json-file max-size); also "
                            "the most a container may ask for (default %(default)s)")
        p.add_argument("--log-max-file", type=int, default=defaults.LOG_MAX_FILE, metavar="N",
                       help="log files kept per container (json-file max-file); also the most "
                            "a container may ask for (default %(default)s)")
        p.add_argument("--tls-listen", metavar="HOST:PORT", default=None,
                       help="also serve the API over TLS; clients must present a certificate "
                            "signed by --tlscacert (dockerd's --tlsverify), or with "
                            "--multi-tenant authenticate as a tenant")
        p.add_argument("--multi-tenant", action="store_true",
                       help="the --tls-listen listener serves tenants: every request must "
                            "present a tenant's key (`steelcup tenant key create`) and sees "
                            "only that tenant's objects; the unix socket stays the "
                            "operator's. The daemon makes its own CA and server certificate "
                            "under ROOT/tls unless --tlscert/--tlskey are given")
        p.add_argument("--allow-tcg", action="store_true",
                       help="with --multi-tenant: serve tenants even without KVM (QEMU does "
                            "not treat TCG as a security boundary; info and every CLI "
                            "session say so)")
        p.add_argument("--tls-name", action="append", default=[], metavar="NAME",
                       help="with --multi-tenant: a host name or address tenants reach the "
                            "listener by, added to the certificate the daemon makes "
                            "(repeatable; localhost, 127.0.0.1 and this host's name are "
                            "always in it)")
        p.add_argument("--tlscacert", default=None, help="CA that signs client certificates")
        p.add_argument("--tlscert", default=None, help="the daemon's TLS certificate")
        p.add_argument("--tlskey", default=None, help="the daemon's TLS key")
        p.add_argument("--tcp-listen", metavar="HOST:PORT", default=None,
                       help="also serve the API over plain TCP (loopback addresses only)")
        p.add_argument("--func-listen", metavar="HOST:PORT", default=None,
                       help="serve the func gateway here (POST /call/NAME, GET /calls/ID; "
                            "each call authenticated by its func's secret or a tenant's "
                            "bearer token): TLS (--tlscert/--tlskey, else a certificate from "
                            "the daemon's CA) unless on loopback (docs/funcs.md)")
        p.add_argument("--func-listen-tls", action="store_true",
                       help="the func gateway speaks TLS on loopback too")
        p.add_argument("--userns-base", type=int, default=defaults.USERNS_BASE, metavar="UID",
                       help="QEMU runs as root of a user namespace: guest uid/gid k is host "
                            "id UID+k (k < 65536), for containers' files too; pick a range "
                            "no host user has (default %(default)s)")
        p.add_argument("--no-userns", dest="userns", action="store_false",
                       help="run QEMU as (jailed) host root with no id mapping: a guest's root "
                            "is then host root in bind-mounted directories, as with docker")
        p.add_argument(
            "--no-networking",
            dest="networking",
            action="store_false",
            help="no bridges/NAT/DNS: containers get loopback only (networks and ports refused)",
        )
        p.add_argument("--fip-pool", metavar="CIDR", default=None,
                       help="floating IPs: the pool of public addresses tenants allocate "
                            "(`steelcup fip`); needs --fip-interface (docs/networking.md)")
        p.add_argument("--fip-interface", metavar="IFACE", default=None,
                       help="the host interface the pool's addresses are routed to (or "
                            "answered on): the daemon holds each attached FIP there as a /32")
        p.add_argument("--metrics-listen", metavar="HOST:PORT", default=None,
                       help="also serve GET /metrics (Prometheus text, every tenant's figures) "
                            "as plain HTTP on HOST:PORT, for a scraper; the operator's socket "
                            "always serves it (docs/operations.md)")
        p.add_argument("--console-listen", metavar="HOST:PORT", default=None,
                       help="serve the web console and the API behind it on HOST:PORT: TLS "
                            "(--tlscert/--tlskey, else a certificate from the daemon's CA) "
                            "unless on loopback; log in with a tenant key's token (with "
                            "--multi-tenant) or the console token the daemon prints at start "
                            "(docs/console.md)")
        p.add_argument("--live-restore", action=argparse.BooleanOptionalAction, default=True,
                       help="keep running containers running while the daemon stops or after it "
                            "crashes (their VMs and published ports outlive it); the next daemon "
                            "re-attaches them (docs/live-restore.md), as dockerd's "
                            "live-restore; on by default, --no-live-restore stops them with the "
                            "daemon")
        p.set_defaults(func=cmd_daemon, needs_daemon=False)
    else:
        raise ValueError(f"{__name__} has no command {name!r}")


def _client_info() -> dict[str, Any]:
    return {
        "Version": __version__,
        "ApiVersion": API_VERSION,
        "PythonVersion": sys.version.split()[0],  # platform.python_version(), without platform
        "Os": sys.platform,
        "Arch": os.uname().machine,
    }


def cmd_version(ctx: Context, args: argparse.Namespace) -> int:
    client_info = _client_info()
    server: dict[str, Any] | None = None
    error: SteelcupError | None = None
    try:
        server = ctx.client().get_json("/version")
    except SteelcupError as exc:
        error = exc
    if args.format:
        from steelcup.cli.format import render_template

        print(render_template(args.format, {"Client": client_info, "Server": server}))
    else:
        print("Client:")
        print(f" Version:           {client_info['Version']}")
        print(f" API version:       {client_info['ApiVersion']}")
        print(f" Python version:    {client_info['PythonVersion']}")
        print(f" OS/Arch:           {client_info['Os']}/{client_info['Arch']}")
        if server is not None:
            print("\nServer:")
            print(" Engine:")
            print(f"  Version:          {server.get('Version', '')}")
            min_api = server.get("MinAPIVersion")
            api = server.get("ApiVersion", "")
            print(
                f"  API version:      {api}" + (f" (minimum version {min_api})" if min_api else "")
            )
            for label, key in (("Git commit", "GitCommit"), ("Built", "BuildTime")):
                if server.get(key):
                    print(f"  {label + ':':<18}{server[key]}")
            print(f"  OS/Arch:          {server.get('Os', '')}/{server.get('Arch', '')}")
            if server.get("KernelVersion"):
                print(f"  Kernel version:   {server['KernelVersion']}")
            for component in server.get("Components") or []:
                name = component.get("Name", "")
                if name and name != "Engine":
                    print(f" {name}:")
                    print(f"  Version:          {component.get('Version', '')}")
    if error is not None:
        report(error)
        return 1
    return 0


def _fetch(ctx: Context, path: str, template: str) -> tuple[Any, int | None]:
    """The daemon's JSON answer at `path`, and None; or, when the command is done, the exit
    code: 1 with the error reported, 0 with the answer printed through `template`
    (--format)."""
    try:
        answer = ctx.client().get_json(path)
    except SteelcupError as exc:
        report(exc)
        return None, 1
    if template:
        from steelcup.cli.format import render_template

        print(render_template(template, answer))
        return None, 0
    return answer, None


def cmd_info(ctx: Context, args: argparse.Namespace) -> int:
    info, done = _fetch(ctx, "/info", args.format)
    if done is not None:
        return done
    from steelcup.cli.format import human_size

    mem = info.get("MemTotal")
    rows = [
        ("Containers", info.get("Containers")),
        (" Running", info.get("ContainersRunning")),
        (" Paused", info.get("ContainersPaused")),
        (" Stopped", info.get("ContainersStopped")),
        ("Images", info.get("Images")),
        ("Server Version", info.get("ServerVersion")),
        ("Storage Driver", info.get("Driver")),
        ("Runtimes", ", ".join(info.get("Runtimes") or {}) or None),
        ("Default Runtime", info.get("DefaultRuntime")),
        ("Kernel Version", info.get("KernelVersion")),
        ("Operating System", info.get("OperatingSystem")),
        ("OSType", info.get("OSType")),
        ("Architecture", info.get("Architecture")),
        ("CPUs", info.get("NCPU")),
        ("Total Memory", human_size(mem) if isinstance(mem, int) else None),
        ("Name", info.get("Name")),
        ("ID", info.get("ID")),
        ("Docker Root Dir", info.get("DockerRootDir")),
        ("Debug Mode", info.get("Debug")),
    ]
    print("Server:")
    for label, value in rows:
        if value is None or value == "":
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        print(f" {label}: {value}")
    extra = info.get("Steelcup") or {}
    pool = extra.get("Pool") or {}
    print(f" Accelerator: {extra.get('Accelerator', '?')}")
    print(f" Networking: {'on' if extra.get('Networking') else 'off (loopback only)'}")
    print(f" VM templates: {'on' if pool.get('Templates') else 'off'}"
          f" ({len(pool.get('TemplateList') or [])} built, {pool.get('Clones', 0)} clones,"
          f" {pool.get('DirectBoots', 0)} direct boots, {pool.get('Fallbacks', 0)} fallbacks)")
    ready = sum(c.get("Ready", 0) for c in pool.get("Cache") or [])
    print(f" VM warm cache: {pool.get('CacheSize', 0)} per class"
          f" ({ready} ready, {pool.get('CacheHits', 0)} handed out)")
    for warning in info.get("Warnings") or []:
        print(warning, file=sys.stderr)
    return 0


def cmd_df(ctx: Context, args: argparse.Namespace) -> int:
    du, done = _fetch(ctx, "/system/df", args.format)
    if done is not None:
        return done
    import time

    from steelcup.cli import disk_usage

    sys.stdout.write(disk_usage.verbose(du, now=time.time()) if args.verbose
                     else disk_usage.summary(du))
    return 0


def cmd_pool_ls(ctx: Context, args: argparse.Namespace) -> int:
    from steelcup.cli.format import table

    try:
        pool = ctx.client().get_json("/steelcup/pool")
    except SteelcupError as exc:
        report(exc)
        return 1
    rows = [
        [t.get("Tenant") or "(default)", f"{t.get('BaseMemMiB')}MiB",
         f"{t.get('MaxMemMiB')}MiB", str(t.get("MaxCpus")), str(t.get("NicSlots", "")),
         str(t.get("VolumeSlots", "")), str(t.get("Clones")), str(t.get("Failures")),
         f"{t.get('BootSeconds')}s", f"{t.get('RamFileMiB')}MiB"]
        for t in pool.get("TemplateList") or []
    ]
    headers = ["TENANT", "BASE MEM", "MAX MEM", "MAX CPUS", "NICS", "VOLUMES", "CLONES",
               "FAILURES", "BOOT", "SHARED RAM"]
    sys.stdout.write(table(headers, rows))
    if not pool.get("Templates"):
        print("(templates are off: every VM boots from scratch)")
        return 0
    cache = [
        [c.get("Tenant") or "(default)", str(c.get("Nics")), f"{c.get('Ready')}/{c.get('Target')}",
         str(c.get("Filling")), str(c.get("HandedOut")), str(c.get("Misses")),
         str(c.get("Discarded")), f"{c.get('WarmSeconds')}s",
         f"{c.get('Staged', 0)}/{c.get('StagedHandOuts', 0)}"]
        for c in pool.get("Cache") or []
    ]
    print()
    if not pool.get("CacheSize"):
        print("(the warm cache is off: each run restores a clone)")
    else:
        sys.stdout.write(table(["TENANT", "NICS", "READY", "FILLING", "HANDED OUT", "MISSES",
                                "DISCARDED", "WARM-UP", "STAGED/USED"], cache))
    return 0


def _host_port(text: str | None) -> tuple[str, int] | None:
    if not text:
        return None
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise SystemExit(f"steelcup daemon: expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def cmd_daemon(ctx: Context, args: argparse.Namespace) -> int:
    from pathlib import Path

    from steelcup.cli.createspec import parse_memory
    from steelcup.config import DaemonOptions

    root = Path(args.daemon_root or ctx.root)
    sock = Path(args.socket or ctx.socket)
    options = DaemonOptions(
        root=root,
        socket=sock,
        accel=args.accel,
        assets_dir=Path(args.assets) if args.assets else None,
        debug=args.debug,
        networking=args.networking,
        live_restore=args.live_restore,
        userns=args.userns,
        userns_base=args.userns_base,
        vm_templates=args.templates,
        vm_max_mem_mib=args.vm_max_mem,
        vm_mem_grows=args.memory_grows,
        vm_max_cpus=args.vm_max_cpus,
        vm_pool_size=args.pool_size,
        layer_max_gib=args.layer_max_size,
        layer_max_ratio=args.layer_max_ratio,
        storage_default_bytes=parse_memory(args.storage_size_default),
        volume_default_bytes=parse_memory(args.volume_size_default),
        log_max_bytes=parse_memory(args.log_max_size),
        log_max_files=args.log_max_file,
        rootfs_cache=args.rootfs_cache,
        tcg_tb_mib=args.tcg_tb_size,
        vm_mem_overhead_mib=args.vm_mem_overhead,
        tls_listen=_host_port(args.tls_listen),
        tcp_listen=_host_port(args.tcp_listen),
        metrics_listen=_host_port(args.metrics_listen),
        tls_ca=Path(args.tlscacert) if args.tlscacert else None,
        tls_cert=Path(args.tlscert) if args.tlscert else None,
        tls_key=Path(args.tlskey) if args.tlskey else None,
        multi_tenant=args.multi_tenant,
        allow_tcg=args.allow_tcg,
        tls_names=tuple(args.tls_name),
        func_listen=_host_port(args.func_listen),
        func_listen_tls=args.func_listen_tls,
        fip_pool=args.fip_pool,
        fip_interface=args.fip_interface,
        console_listen=_host_port(args.console_listen),
    )
    if (options.fip_pool is None) != (options.fip_interface is None):
        print("steelcup daemon: --fip-pool and --fip-interface go together", file=sys.stderr)
        return 125
    if options.multi_tenant and not options.tls_listen:
        print("steelcup daemon: --multi-tenant needs --tls-listen ADDR:PORT", file=sys.stderr)
        return 125
    if options.tls_listen and not options.multi_tenant and not (
            options.tls_ca and options.tls_cert and options.tls_key):
        print("steelcup daemon: --tls-listen needs --tlscacert, --tlscert and --tlskey "
              "(or --multi-tenant, which makes its own)", file=sys.stderr)
        return 125
    import importlib  # here: ~0.3 ms of every other command's start (docs/benchmarks.md)

    daemon: Any = importlib.import_module("steelcup.daemon")  # written by the lead; heavy
    return int(daemon.run(options))
