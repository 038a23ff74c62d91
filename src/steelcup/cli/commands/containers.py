"""Container commands: run, create, start, exec, logs, ps, inspect, stop, kill, rm, wait..."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack

from steelcup.cli.client import ApiClient, HijackedSocket, StreamedResponse, path_quote
from steelcup.cli.context import Context, report
from steelcup.cli.createspec import (
    ContainerOptions,
    create_body,
    exec_body,
    expand_env,
    health_config,
    parse_env_file,
)
from steelcup.defaults import FIP_LABEL, SECURITY_GROUPS_LABEL, SIZE_LABEL
from steelcup.errors import InvalidArgument, NotFound, SteelcupError

TYPE_CHECKING = False  # the CLI does not import typing at run time (start-up cost)
if TYPE_CHECKING:
    from typing import Any


def _c(name: str) -> str:
    return f"/containers/{path_quote(name)}"


# ----------------------------------------------------------------- argument definitions


def add_container_flags(p: argparse.ArgumentParser, *, run: bool, job: bool = False) -> None:
    """The flags of `run` (`create`: no -d); `job`: those of a container nobody attaches to
    and steelcup names and removes (a cron job's): no -d, --rm, -a, -i, -t, --name."""
    from steelcup.cli import netflags

    netflags.add_flags(p)
    if not job:
        _add_attach_flags(p, run=run)
    p.add_argument(
        "-e",
        "--env",
        action="append",
        default=[],
        metavar="KEY=VAL",
        help="set an environment variable (KEY alone: copy from here)",
    )
    p.add_argument(
        "--env-file",
        action="append",
        default=[],
        metavar="FILE",
        help="read environment variables from a file",
    )
    p.add_argument("-w", "--workdir", default="", help="working directory inside the container")
    p.add_argument("-u", "--user", default="", help="user name or UID[:GID]")
    p.add_argument("--entrypoint", default=None, help="override the image's ENTRYPOINT")
    p.add_argument("-h", "--hostname", default="", help="container host name")
    p.add_argument("--cpus", default=None, help="number of CPUs (e.g. 1.5)")
    p.add_argument("-m", "--memory", default=None, help="memory limit (e.g. 512m, 1g)")
    p.add_argument("--size", default=None, metavar="CLASS",
                   help="the VM's size class instead of -m/--cpus: s1 (1 vCPU, 64 MiB), s2 "
                        "(128 MiB), s3 (256 MiB), s4 (512 MiB), m1 (1 GiB), m2 (2 vCPUs, 2 GiB),"
                        " m3 (2, 4 GiB), l1 (4, 4 GiB), l2 (4, 8 GiB), l3 (8, 16 GiB); sent as "
                        "the label sh.steelcup.size. A tenant's default: its --size-default")
    p.add_argument(
        "-l", "--label", action="append", default=[], metavar="KEY=VAL", help="set a label"
    )
    p.add_argument("--sg", action="append", default=[], metavar="GROUP",
                   help="join a security group (repeatable); sent as the label "
                        f"{SECURITY_GROUPS_LABEL}")
    p.add_argument("--fip", default="", metavar="IP",
                   help="attach one of your floating IPs (steelcup fip allocate); sent as the "
                        f"label {FIP_LABEL}")
    p.add_argument("--stop-signal", default="", help="signal to stop the container")
    p.add_argument("--health-cmd", default="", metavar="CMD",
                   help="command to run in the container to check its health (by /bin/sh -c; "
                        "exit 0: healthy)")
    p.add_argument("--health-interval", default="", metavar="DURATION",
                   help="time between health checks (e.g. 30s, 1m; default 30s)")
    p.add_argument("--health-timeout", default="", metavar="DURATION",
                   help="longest a health check may run before it counts as failed "
                        "(default 30s)")
    p.add_argument("--health-retries", type=int, default=0, metavar="N",
                   help="consecutive failures that make the container unhealthy (default 3)")
    p.add_argument("--health-start-period", default="", metavar="DURATION",
                   help="time after start in which failures do not count (default 0s)")
    p.add_argument("--health-start-interval", default="", metavar="DURATION",
                   help="time between health checks during the start period (default 5s)")
    p.add_argument("--no-healthcheck", action="store_true",
                   help="disable any health check, the image's HEALTHCHECK included")
    p.add_argument("--storage-opt", action="append", default=[], metavar="size=SIZE",
                   help="storage driver options: size of the writable layer (e.g. size=20G)")
    p.add_argument("--log-driver", default="", help="logging driver (json-file only)")
    p.add_argument("--log-opt", action="append", default=[], metavar="KEY=VAL",
                   help="log driver options: max-size=SIZE, max-file=N (rotation)")
    p.add_argument(
        "--cap-add", action="append", default=[], metavar="CAP",
        help="add a Linux capability to docker's default set (e.g. NET_ADMIN, SYS_PTRACE; "
        "ALL for every one); repeatable",
    )
    p.add_argument(
        "--cap-drop", action="append", default=[], metavar="CAP",
        help="drop a Linux capability from the default set (e.g. CHOWN; ALL: keep only "
        "--cap-add's); repeatable",
    )
    p.add_argument("--add-host", action="append", default=[], metavar="NAME:IP",
                   help="add a line to the container's /etc/hosts (IP may be host-gateway: "
                        "its network's gateway); repeatable")
    p.add_argument("--dns", action="append", default=[], metavar="IP",
                   help="a nameserver for the container (after its network's); repeatable")
    p.add_argument("--dns-search", action="append", default=[], metavar="DOMAIN",
                   help="a DNS search domain; repeatable")
    p.add_argument("--dns-option", action="append", default=[], metavar="OPT",
                   help="a resolv.conf option (e.g. ndots:2); repeatable")
    p.add_argument("--group-add", action="append", default=[], metavar="GROUP",
                   help="a supplementary group (a name of the image's /etc/group, or a gid) "
                        "for the container's processes; repeatable")
    p.add_argument(
        "--privileged", action="store_true",
        help="give the container's processes every Linux capability",
    )
    p.add_argument(
        "--read-only", action="store_true",
        help="mount the container's root filesystem read-only (volumes, binds and tmpfs "
             "mounts stay as they are)",
    )
    p.add_argument(
        "--checkpointable", action="store_true",
        help="hold the container's root in its VM's memory (copied at start; changes are lost "
        "when it exits) so that `steelcup checkpoint create` can save the running container; "
        "no volumes or bind mounts (sent as HostConfig.SteelcupCheckpointable)",
    )
    p.add_argument(
        "--auto-suspend", default="", metavar="IDLE",
        help="with --checkpointable: suspend the container after IDLE (e.g. 30s, 5m) without "
        "network traffic; a connection or datagram to a published port (TCP or UDP) resumes "
        "it (sent as HostConfig.SteelcupAutoSuspend, seconds)",
    )
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND [ARG...]")


def _add_attach_flags(p: argparse.ArgumentParser, *, run: bool) -> None:
    if run:
        p.add_argument("-d", "--detach", action="store_true", help="run in background, print id")
    p.add_argument("--rm", action="store_true", help="remove the container when it exits")
    p.add_argument(
        "-a",
        "--attach",
        action="append",
        default=[],
        metavar="STREAM",
        help="attach to STDIN, STDOUT or STDERR",
    )
    p.add_argument("-i", "--interactive", action="store_true", help="keep STDIN open")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-TTY")
    p.add_argument("--name", default="", help="assign a name to the container")


def options(args: argparse.Namespace, *, run: bool, job: bool = False) -> ContainerOptions:
    """The parsed flags of `add_container_flags` as ContainerOptions (`job`: a detached
    container of no name of its own)."""
    if job:
        return _options(argparse.Namespace(**{
            **vars(args), "detach": True, "interactive": False, "tty": False, "rm": False,
            "name": "", "attach": []}), run=run)
    return _options(args, run=run)


def _options(args: argparse.Namespace, *, run: bool) -> ContainerOptions:
    lookup = dict(os.environ)
    env: list[str] = []
    for path in args.env_file:
        try:
            with open(path, encoding="utf-8") as fh:
                env += parse_env_file(fh.read(), lookup)
        except OSError as exc:
            raise InvalidArgument(f"cannot read env file {path}: {exc.strerror}") from None
    env += expand_env(args.env, lookup)
    console = None
    if args.tty:
        from steelcup.cli.tty import terminal_size

        console = terminal_size(1)
    return ContainerOptions(
        image=args.image,
        command=list(args.command),
        detach=bool(getattr(args, "detach", False)),
        interactive=args.interactive,
        tty=args.tty,
        auto_remove=args.rm,
        name=args.name,
        env=env,
        workdir=args.workdir,
        user=args.user,
        entrypoint=args.entrypoint,
        hostname=args.hostname,
        cpus=args.cpus,
        memory=args.memory,
        labels=args.label + ([f"{SIZE_LABEL}={args.size}"] if args.size else [])
        + ([f"{SECURITY_GROUPS_LABEL}={','.join(args.sg)}"] if args.sg else [])
        + ([f"{FIP_LABEL}={args.fip}"] if args.fip else []),
        stop_signal=args.stop_signal,
        attach=args.attach,
        console_size=console,
        storage_opts=args.storage_opt,
        log_driver=args.log_driver,
        log_opts=args.log_opt,
        cap_add=args.cap_add,
        add_hosts=args.add_host,
        dns=args.dns,
        dns_search=args.dns_search,
        dns_options=args.dns_option,
        group_add=args.group_add,
        cap_drop=args.cap_drop,
        privileged=args.privileged,
        read_only=args.read_only,
        checkpointable=args.checkpointable,
        auto_suspend=args.auto_suspend,
        healthcheck=health_config(
            cmd=args.health_cmd, interval=args.health_interval, timeout=args.health_timeout,
            start_period=args.health_start_period, start_interval=args.health_start_interval,
            retries=args.health_retries, disabled=args.no_healthcheck),
    )


def register(sub: Any, name: str, help_text: str) -> None:
    """Add the parser of command `name` (one of this module's rows in `commands.COMMANDS`)."""
    if name in ("run", "create"):
        p = sub.add_parser(
            name,
            help=help_text,
            add_help=False,
            description="Create a container from IMAGE and run COMMAND in it." if name == "run"
            else "Create a container from IMAGE without starting it.",
        )
        p.add_argument("--help", action="help", help="show this help message and exit")
        add_container_flags(p, run=name == "run")
        p.set_defaults(func=cmd_run if name == "run" else cmd_create)
    elif name == "start":
        p = sub.add_parser(name, help=help_text)
        p.add_argument("-a", "--attach", action="store_true", help="attach STDOUT/STDERR")
        p.add_argument("-i", "--interactive", action="store_true", help="attach STDIN")
        p.add_argument("--checkpoint", default="", metavar="NAME",
                       help="run the container on from its checkpoint NAME (steelcup "
                            "checkpoint create) instead of starting it afresh")
        p.add_argument("containers", nargs="+", metavar="CONTAINER")
        p.set_defaults(func=cmd_start)
    elif name == "exec":
        p = sub.add_parser(name, help=help_text)
        p.add_argument("-d", "--detach", action="store_true",
                       help="run the command in the background")
        p.add_argument("-i", "--interactive", action="store_true", help="keep STDIN open")
        p.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-TTY")
        p.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VAL")
        p.add_argument("-w", "--workdir", default="", help="working directory for the command")
        p.add_argument("-u", "--user", default="", help="user name or UID[:GID]")
        p.add_argument("--privileged", action="store_true",
                       help="give the command every capability, whatever the container has")
        p.add_argument("container", metavar="CONTAINER")
        p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND [ARG...]")
        p.set_defaults(func=cmd_exec)
    elif name == "logs":
        p = sub.add_parser(name, help=help_text)
        p.add_argument("-f", "--follow", action="store_true", help="follow log output")
        p.add_argument("-t", "--timestamps", action="store_true", help="show timestamps")
        p.add_argument("-n", "--tail", default="all",
                       help="lines to show from the end (default all)")
        p.add_argument("--since", default="",
                       help="show logs since a timestamp or relative (e.g. 42m)")
        p.add_argument("--until", default="", help="show logs before a timestamp or relative")
        p.add_argument("container", metavar="CONTAINER")
        p.set_defaults(func=cmd_logs)
    elif name == "ps":
        p = sub.add_parser(name, help=help_text)
        p.add_argument("-a", "--all", action="store_true", help="show all (default: running)")
        p.add_argument("-q", "--quiet", action="store_true", help="only display container IDs")
        p.add_argument("--no-trunc", action="store_true", help="don't truncate output")
        p.add_argument(
            "-f",
            "--filter",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="filter output (e.g. status=exited, name=web, label=a=b)",
        )
        p.add_argument("-n", "--last", type=int, default=-1,
                       help="show the n last created containers")
        p.add_argument("-l", "--latest", action="store_true",
                       help="show the latest created container")
        p.add_argument("--format", default="",
                       help="template per container, e.g. '{{.ID}} {{.Names}}'")
        p.set_defaults(func=cmd_ps)
    elif name == "inspect":
        p = sub.add_parser(name, help=help_text)
        p.add_argument("-f", "--format", default="", help="template, e.g. {{.State.ExitCode}}")
        p.add_argument("--type", choices=["container", "image"], default=None)
        p.add_argument("names", nargs="+", metavar="NAME|ID")
        p.set_defaults(func=cmd_inspect)
    elif name in ("stop", "restart"):
        p = sub.add_parser(name, help=help_text)
        p.add_argument(
            "-t",
            "--time",
            "--timeout",
            dest="time",
            type=int,
            default=None,
            help="seconds to wait before killing",
        )
        p.add_argument("-s", "--signal", default="", help="signal to send first")
        p.add_argument("containers", nargs="+", metavar="CONTAINER")
        p.set_defaults(func=cmd_stop if name == "stop" else cmd_restart)
    elif name in ("pause", "unpause", "suspend", "resume"):
        p = sub.add_parser(name, help=help_text, description=help_text + ".")
        p.add_argument("containers", nargs="+", metavar="CONTAINER")
        p.set_defaults(func=cmd_pause_unpause, action=name)
    elif name == "kill":
        p = sub.add_parser(name, help=help_text)
        p.add_argument("-s", "--signal", default="", help="signal to send (default KILL)")
        p.add_argument("containers", nargs="+", metavar="CONTAINER")
        p.set_defaults(func=cmd_kill)
    elif name == "rm":
        p = sub.add_parser(name, help=help_text)
        p.add_argument("-f", "--force", action="store_true",
                       help="kill a running container first")
        p.add_argument("-v", "--volumes", action="store_true",
                       help="remove anonymous volumes too")
        p.add_argument("containers", nargs="+", metavar="CONTAINER")
        p.set_defaults(func=cmd_rm)
    elif name == "wait":
        p = sub.add_parser(name, help=help_text)
        p.add_argument("containers", nargs="+", metavar="CONTAINER")
        p.set_defaults(func=cmd_wait)
    else:
        raise ValueError(f"{__name__} has no command {name!r}")


# ----------------------------------------------------------------- run / create / start


def _create(
    client: ApiClient, opts: ContainerOptions, *, for_run: bool, args: argparse.Namespace
) -> str:
    from steelcup.cli import netflags

    body = create_body(opts, for_run=for_run)
    netflags.apply(body, args)
    query = {"name": opts.name} if opts.name else None
    try:
        created = client.post_json("/containers/create", query, body)
    except NotFound as exc:
        if "image" in str(exc).lower():
            print(f"Unable to find image '{opts.image}' locally", file=sys.stderr)
        raise
    for warning in (created or {}).get("Warnings") or []:
        print(f"WARNING: {warning}", file=sys.stderr)
    return str(created["Id"])


def cmd_create(ctx: Context, args: argparse.Namespace) -> int:
    opts = _options(args, run=False)
    try:
        cid = _create(ctx.client(), opts, for_run=False, args=args)
    except SteelcupError as exc:
        report(exc, "steelcup: ")
        return 125
    print(cid)
    return 0


def start_failure_code(message: str) -> int:
    """The docker CLI's rule for a failed start: 127 (not found) or 126 (not executable) from
    the daemon's words, else 125."""
    if any(words in message for words in ("executable file not found",
                                            "no such file or directory")):
        return 127
    if "permission denied" in message:
        return 126
    return 125


def _start_failure_code(client: ApiClient, cid: str, exc: SteelcupError) -> int:
    """From the error (a `--rm` container is gone by now), else from the container's state."""
    code = start_failure_code(str(exc))
    if code != 125:
        return code
    try:
        info = client.get_json(f"{_c(cid)}/json")
        code = int(info.get("State", {}).get("ExitCode", 0))
    except (SteelcupError, ValueError, TypeError, AttributeError):
        return 125
    return code if code in (126, 127) else 125


class _SignalProxy:
    """Forward SIGINT/SIGTERM to the container while attached without a TTY (docker --sig-proxy)."""

    def __init__(self, client: ApiClient, kill_path: str) -> None:
        self._client = client
        self._kill_path = kill_path
        self._saved: dict[int, Any] = {}

    def _forward(self, signum: int, frame: object) -> None:
        import signal
        import threading

        name = signal.Signals(signum).name

        def send() -> None:
            try:
                self._client.post(self._kill_path, {"signal": name})
            except SteelcupError:
                pass

        threading.Thread(target=send, daemon=True).start()

    def __enter__(self) -> _SignalProxy:
        import signal

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._saved[sig] = signal.signal(sig, self._forward)
            except ValueError:  # not the main thread (tests run main() in threads): no proxy
                break
        return self

    def __exit__(self, *exc: object) -> None:
        import signal

        for sig, handler in self._saved.items():
            signal.signal(sig, handler)


def _wait_status(response: StreamedResponse) -> int:
    """Read docker's wait result {"StatusCode": n, "Error": {...}}."""
    try:
        for result in response.iter_json():
            error = result.get("Error") or {}
            if error.get("Message"):
                print(f"steelcup: {error['Message']}", file=sys.stderr)
            return int(result.get("StatusCode", 125))
    except (SteelcupError, OSError) as exc:
        print(f"steelcup: lost the wait stream: {exc}", file=sys.stderr)
    finally:
        response.close()
    return 125


def _attached_session(
    client: ApiClient,
    conn: HijackedSocket,
    *,
    tty: bool,
    stdin: bool,
    resize_path: str,
    kill_path: str,
) -> None:
    from steelcup.cli.attach import pump

    with ExitStack() as stack:
        if tty:
            from steelcup.cli.tty import RawTerminal, ResizeForwarder

            def resize(rows: int, cols: int) -> None:
                client.post(resize_path, {"h": rows, "w": cols})

            if os.isatty(1):
                stack.enter_context(ResizeForwarder(resize))
            if stdin:
                stack.enter_context(RawTerminal(0))
        else:
            stack.enter_context(_SignalProxy(client, kill_path))
        pump(conn, tty=tty, stdin=stdin)


def _run_attached(
    client: ApiClient,
    cid: str,
    *,
    tty: bool,
    stdin: bool,
    stdout: bool = True,
    stderr: bool = True,
    auto_remove: bool = False,
    start: bool = True,
) -> int:
    """docker's order: attach (hijack), then wait (so --rm cannot race), then start."""
    conn = client.hijack(
        "POST",
        f"{_c(cid)}/attach",
        {"stream": True, "stdin": stdin, "stdout": stdout, "stderr": stderr},
    )
    condition = "removed" if auto_remove else "next-exit"
    try:
        waiter = client.open("POST", f"{_c(cid)}/wait", {"condition": condition})
    except BaseException:
        conn.close()
        raise
    if start:
        try:
            client.post(f"{_c(cid)}/start")
        except SteelcupError as exc:
            conn.close()
            waiter.close()
            report(exc, "steelcup: ")
            return _start_failure_code(client, cid, exc)
    _attached_session(
        client,
        conn,
        tty=tty,
        stdin=stdin,
        resize_path=f"{_c(cid)}/resize",
        kill_path=f"{_c(cid)}/kill",
    )
    return _wait_status(waiter)


def cmd_run(ctx: Context, args: argparse.Namespace) -> int:
    try:
        opts = _options(args, run=True)
        if opts.tty and opts.interactive and not os.isatty(0):
            print("steelcup: the input device is not a TTY", file=sys.stderr)
            return 1
        client = ctx.client()
        cid = _create(client, opts, for_run=True, args=args)
    except SteelcupError as exc:
        report(exc, "steelcup: ")
        return 125
    if opts.detach:
        try:
            client.post(f"{_c(cid)}/start")
        except SteelcupError as exc:
            report(exc, "steelcup: ")
            return _start_failure_code(client, cid, exc)
        print(cid)
        return 0
    streams = {s.lower() for s in opts.attach}
    try:
        return _run_attached(
            client,
            cid,
            tty=opts.tty,
            stdin=opts.interactive or "stdin" in streams,
            stdout=not streams or "stdout" in streams,
            stderr=not streams or "stderr" in streams,
            auto_remove=opts.auto_remove,
        )
    except SteelcupError as exc:
        report(exc, "steelcup: ")
        return 125


def cmd_start(ctx: Context, args: argparse.Namespace) -> int:
    client = ctx.client()
    query = {"checkpoint": args.checkpoint} if args.checkpoint else None
    if args.checkpoint and (len(args.containers) > 1 or args.attach or args.interactive):
        print("steelcup: --checkpoint starts one container, unattached", file=sys.stderr)
        return 1
    if args.attach or args.interactive:
        if len(args.containers) > 1:
            print(
                "steelcup: you cannot start and attach multiple containers at once", file=sys.stderr
            )
            return 1
        name = args.containers[0]
        try:
            info = client.get_json(f"{_c(name)}/json")
            config = info.get("Config") or {}
            tty = bool(config.get("Tty"))
            stdin = bool(args.interactive and config.get("OpenStdin"))
            return _run_attached(client, str(info["Id"]), tty=tty, stdin=stdin)
        except SteelcupError as exc:
            report(exc)
            return 1
    failed = []
    for name in args.containers:
        try:
            client.post(f"{_c(name)}/start", query)
            print(name)
        except SteelcupError as exc:
            report(exc)
            failed.append(name)
    if failed:
        print(f"Error: failed to start containers: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def cmd_exec(ctx: Context, args: argparse.Namespace) -> int:
    client = ctx.client()
    if args.tty and args.interactive and not os.isatty(0):
        print("steelcup: the input device is not a TTY", file=sys.stderr)
        return 1
    console = None
    if args.tty:
        from steelcup.cli.tty import terminal_size

        console = terminal_size(1)
    try:
        body = exec_body(
            args.command,
            detach=args.detach,
            interactive=args.interactive,
            tty=args.tty,
            env=expand_env(args.env, dict(os.environ)),
            workdir=args.workdir,
            user=args.user,
            console_size=console,
            privileged=args.privileged,
        )
        created = client.post_json(f"{_c(args.container)}/exec", None, body)
        exec_id = str(created["Id"])
        start: dict[str, Any] = {"Detach": args.detach, "Tty": args.tty}
        if console is not None:
            start["ConsoleSize"] = list(console)
        if args.detach:
            client.post(f"/exec/{exec_id}/start", None, start)
            return 0
        conn = client.hijack("POST", f"/exec/{exec_id}/start", None, start)
        _attached_session(
            client,
            conn,
            tty=args.tty,
            stdin=args.interactive,
            resize_path=f"/exec/{exec_id}/resize",
            kill_path=f"{_c(args.container)}/kill",
        )
        info = client.get_json(f"/exec/{exec_id}/json")
    except SteelcupError as exc:
        report(exc)
        return 126 if isinstance(exc, InvalidArgument) and not args.command else 1
    code = info.get("ExitCode")
    return int(code) if isinstance(code, int) else 0


# ----------------------------------------------------------------- logs


_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")


def parse_since(value: str, now: float) -> str:
    """docker's --since/--until: unix time, RFC 3339, or a Go duration relative to now."""
    if not value:
        return ""
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return value
    match = _DURATION.fullmatch(value)
    if match and any(match.groups()):
        hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
        return f"{now - (hours * 3600 + minutes * 60 + seconds):.9f}".rstrip("0").rstrip(".")
    from steelcup.cli.format import parse_time

    parsed = parse_time(value if "T" in value else value + "T00:00:00Z")
    if parsed is None:
        raise InvalidArgument(f"invalid value for --since/--until: {value!r}")
    return f"{parsed:.9f}".rstrip("0").rstrip(".")


def cmd_logs(ctx: Context, args: argparse.Namespace) -> int:
    from steelcup.cli.attach import write_all
    from steelcup.stdcopy import STDOUT, Demuxer

    client = ctx.client()
    try:
        info = client.get_json(f"{_c(args.container)}/json")
        tty = bool((info.get("Config") or {}).get("Tty"))
        now = time.time()
        query = {
            "stdout": True,
            "stderr": True,
            "follow": args.follow,
            "timestamps": args.timestamps,
            "tail": args.tail,
            "since": parse_since(args.since, now) or None,
            "until": parse_since(args.until, now) or None,
        }
        demux = None if tty else Demuxer()
        for chunk in client.stream("GET", f"{_c(args.container)}/logs", query):
            if demux is None:
                write_all(1, chunk)
                continue
            for stream, payload in demux.feed(chunk):
                write_all(1 if stream == STDOUT else 2, payload)
    except SteelcupError as exc:
        report(exc)
        return 1
    except BrokenPipeError:
        return 0
    return 0


# ----------------------------------------------------------------- listing / inspecting


def filters_json(items: list[str]) -> str | None:
    """-f key=value ... -> docker's filters JSON: {"key": {"value": true}}."""
    if not items:
        return None
    out: dict[str, dict[str, bool]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"bad format of filter (expected name=value): {item}")
        out.setdefault(key.strip().lower(), {})[value] = True
    return json.dumps(out, separators=(",", ":"))


def cmd_ps(ctx: Context, args: argparse.Namespace) -> int:
    from steelcup.cli.format import ps_table

    try:
        query: dict[str, Any] = {"all": args.all or args.last > 0 or args.latest}
        query["filters"] = filters_json(args.filter)
        if args.latest:
            query["limit"] = 1
        elif args.last > 0:
            query["limit"] = args.last
        containers = ctx.client().get_json("/containers/json", query)
    except SteelcupError as exc:
        report(exc)
        return 1
    if args.quiet:
        for c in containers:
            cid = str(c.get("Id", ""))
            print(cid if args.no_trunc else cid[:12])
        return 0
    if args.format:
        from steelcup.cli.format import ps_row, render_template

        try:
            for c in containers:
                row = ps_row(c, now=time.time(), no_trunc=args.no_trunc)
                print(render_template(args.format, row))
        except SteelcupError as exc:
            report(exc)
            return 1
        return 0
    sys.stdout.write(ps_table(containers, now=time.time(), no_trunc=args.no_trunc))
    return 0


def _inspect_one(client: ApiClient, name: str, kind: str | None) -> Any:
    kinds = [kind] if kind else ["container", "image"]
    for k in kinds:
        path = f"{_c(name)}/json" if k == "container" else f"/images/{path_quote(name)}/json"
        try:
            return client.get_json(path)
        except NotFound:
            continue
    raise NotFound(f"No such object: {name}")


def cmd_inspect(ctx: Context, args: argparse.Namespace) -> int:
    from steelcup.cli.format import render_template

    client = ctx.client()
    found: list[Any] = []
    status = 0
    for name in args.names:
        try:
            found.append(_inspect_one(client, name, args.type))
        except NotFound as exc:
            print(f"Error: {exc}", file=sys.stderr)
            status = 1
        except SteelcupError as exc:
            report(exc)
            status = 1
    try:
        if args.format:
            for obj in found:
                print(render_template(args.format, obj))
        else:
            print(json.dumps(found, indent=4, ensure_ascii=False))
    except InvalidArgument as exc:
        print(f"steelcup: {exc}", file=sys.stderr)
        return 1
    return status


# ----------------------------------------------------------------- lifecycle


def _each(
    ctx: Context,
    names: list[str],
    action: Callable[[ApiClient, str], Iterator[str] | None],
) -> int:
    """Apply `action` to every name like docker: print on success, report and go on on error."""
    client = ctx.client()
    status = 0
    for name in names:
        try:
            lines = action(client, name)
            for line in lines if lines is not None else [name]:
                print(line)
        except SteelcupError as exc:
            report(exc)
            status = 1
    return status


def cmd_stop(ctx: Context, args: argparse.Namespace) -> int:
    query = {"t": args.time, "signal": args.signal or None}
    return _each(ctx, args.containers, lambda c, n: c.post(f"{_c(n)}/stop", query) and None)


def cmd_restart(ctx: Context, args: argparse.Namespace) -> int:
    query = {"t": args.time, "signal": args.signal or None}
    return _each(ctx, args.containers, lambda c, n: c.post(f"{_c(n)}/restart", query) and None)


def cmd_kill(ctx: Context, args: argparse.Namespace) -> int:
    query = {"signal": args.signal or None}
    return _each(ctx, args.containers, lambda c, n: c.post(f"{_c(n)}/kill", query) and None)


def cmd_pause_unpause(ctx: Context, args: argparse.Namespace) -> int:
    return _each(ctx, args.containers,
                 lambda c, n: c.post(f"{_c(n)}/{args.action}") and None)


def cmd_rm(ctx: Context, args: argparse.Namespace) -> int:
    query = {"force": args.force or None, "v": args.volumes or None}
    return _each(ctx, args.containers, lambda c, n: c.delete(_c(n), query) and None)


def cmd_wait(ctx: Context, args: argparse.Namespace) -> int:
    def wait(client: ApiClient, name: str) -> Iterator[str]:
        with client.open("POST", f"{_c(name)}/wait") as response:
            for result in response.iter_json():
                return iter([str(result.get("StatusCode", ""))])
        raise SteelcupError(f"the daemon ended the wait for {name} without a result")

    return _each(ctx, args.containers, wait)
