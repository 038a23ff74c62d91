"""System commands: version, info, daemon."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

from steelcup import __version__
from steelcup.cli.client import API_VERSION
from steelcup.cli.context import Context, report
from steelcup.errors import SteelcupError


def register(sub: Any) -> None:
    p = sub.add_parser("version", help="show client and daemon versions")
    p.add_argument("-f", "--format", default="", help="Go-template subset over {Client, Server}")
    p.set_defaults(func=cmd_version)

    p = sub.add_parser("info", help="show system-wide information")
    p.add_argument("-f", "--format", default="", help="Go-template subset over the info object")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "daemon",
        help="run the steelcup daemon (serves the Docker Engine API)",
        description="Run the daemon in the foreground: it owns the VMs and serves the API.",
    )
    p.add_argument("--root", dest="daemon_root", default=None, help="state directory")
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
        "--no-networking",
        dest="networking",
        action="store_false",
        help="no bridges/NAT/DNS: containers get loopback only (networks and ports refused)",
    )
    p.set_defaults(func=cmd_daemon, needs_daemon=False)


def _client_info() -> dict[str, Any]:
    import platform

    return {
        "Version": __version__,
        "ApiVersion": API_VERSION,
        "PythonVersion": platform.python_version(),
        "Os": sys.platform,
        "Arch": platform.machine(),
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


def cmd_info(ctx: Context, args: argparse.Namespace) -> int:
    try:
        info = ctx.client().get_json("/info")
    except SteelcupError as exc:
        report(exc)
        return 1
    if args.format:
        from steelcup.cli.format import render_template

        print(render_template(args.format, info))
        return 0
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
    for warning in info.get("Warnings") or []:
        print(warning, file=sys.stderr)
    return 0


def cmd_daemon(ctx: Context, args: argparse.Namespace) -> int:
    from steelcup.config import DaemonOptions

    root = Path(args.daemon_root) if args.daemon_root else ctx.root
    sock = Path(args.socket) if args.socket else ctx.socket
    options = DaemonOptions(
        root=root,
        socket=sock,
        accel=args.accel,
        assets_dir=Path(args.assets) if args.assets else None,
        debug=args.debug,
        networking=args.networking,
    )
    daemon: Any = importlib.import_module("steelcup.daemon")  # written by the lead; heavy
    return int(daemon.run(options))
