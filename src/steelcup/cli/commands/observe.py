"""Looking at running containers: `top`, `port`, `stats` and `events`, with docker's output."""

from __future__ import annotations

import argparse
import json
import sys
import time

from steelcup.cli.client import path_quote
from steelcup.cli.context import Context, report
from steelcup.cli.format import human_size, table
from steelcup.errors import SteelcupError

TYPE_CHECKING = False  # the CLI does not import typing at run time (start-up cost)
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any


def register(sub: argparse._SubParsersAction, name: str, help_text: str) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(name, help=help_text, description=help_text + ".")
    if name == "top":
        p.add_argument("container", metavar="CONTAINER")
        p.add_argument("ps_args", nargs=argparse.REMAINDER, metavar="PS OPTIONS",
                       help="options for ps in the guest (default -ef)")
        p.set_defaults(func=cmd_top)
    elif name == "port":
        p.add_argument("container", metavar="CONTAINER")
        p.add_argument("port", nargs="?", metavar="PRIVATE_PORT[/PROTO]",
                       help="only this container port")
        p.set_defaults(func=cmd_port)
    elif name == "stats":
        p.add_argument("containers", nargs="*", metavar="CONTAINER",
                       help="these containers (default: every running one)")
        p.add_argument("--no-stream", action="store_true",
                       help="print one reading and exit, instead of refreshing every second")
        p.add_argument("-a", "--all", action="store_true",
                       help="stopped containers too (with no figures)")
        p.set_defaults(func=cmd_stats)
    elif name == "events":
        p.add_argument("--since", default=None, help="events since this time (unix or RFC 3339)")
        p.add_argument("--until", default=None, help="events until this time, then exit")
        p.add_argument("-f", "--filter", action="append", default=[], metavar="KEY=VALUE",
                       help="type=, event=, container=, image=, label=, ... (as docker's)")
        p.add_argument("--format", default="",
                       help="'json' for one JSON object per line, else docker's text lines")
        p.set_defaults(func=cmd_events)
    else:
        raise ValueError(f"{__name__} has no command {name!r}")


def _c(name: str) -> str:
    return f"/containers/{path_quote(name)}"


def cmd_top(ctx: Context, args: argparse.Namespace) -> int:
    try:
        query = {"ps_args": " ".join(args.ps_args)} if args.ps_args else None
        result = ctx.client().get_json(f"{_c(args.container)}/top", query)
    except SteelcupError as exc:
        report(exc)
        return 1
    titles = [str(t) for t in result.get("Titles") or []]
    rows = [[str(v) for v in row] for row in result.get("Processes") or []]
    sys.stdout.write(table(titles, rows))
    return 0


def port_lines(ports: dict[str, Any] | None, only: str | None = None) -> list[str]:
    """docker port's lines from NetworkSettings.Ports: `80/tcp -> 0.0.0.0:8080` (pure)."""
    lines = []
    want = None
    if only:
        want = only if "/" in only else only + "/tcp"
    for private, bindings in sorted((ports or {}).items(),
                                    key=lambda kv: (int(kv[0].split("/")[0]), kv[0])):
        if want is not None and private != want:
            continue
        for b in bindings or []:
            host = b.get("HostIp") or "0.0.0.0"
            line = f"{host}:{b.get('HostPort', '')}"
            lines.append(line if want is not None else f"{private} -> {line}")
    return lines


def cmd_port(ctx: Context, args: argparse.Namespace) -> int:
    try:
        info = ctx.client().get_json(f"{_c(args.container)}/json")
    except SteelcupError as exc:
        report(exc)
        return 1
    lines = port_lines((info.get("NetworkSettings") or {}).get("Ports"), args.port)
    if args.port and not lines:
        print(f"Error: No public port '{args.port if '/' in args.port else args.port + '/tcp'}'"
              f" published for {args.container}", file=sys.stderr)
        return 1
    for line in lines:
        print(line)
    return 0


STATS_HEADERS = ("CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O",
                 "BLOCK I/O", "PIDS")


def stats_row(s: dict[str, Any]) -> list[str]:
    """One `docker stats` line from the stats JSON (docker's arithmetic; pure)."""
    cpu, pre = s.get("cpu_stats") or {}, s.get("precpu_stats") or {}
    cpu_delta = ((cpu.get("cpu_usage") or {}).get("total_usage", 0)
                 - (pre.get("cpu_usage") or {}).get("total_usage", 0))
    system_delta = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
    online = cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage")
                                           or []) or 1
    cpu_pct = cpu_delta / system_delta * online * 100 if system_delta > 0 and cpu_delta > 0 \
        else 0.0
    mem = s.get("memory_stats") or {}
    usage = mem.get("usage", 0) - (mem.get("stats") or {}).get("inactive_file", 0)
    limit = mem.get("limit", 0)
    rx = sum(n.get("rx_bytes", 0) for n in (s.get("networks") or {}).values())
    tx = sum(n.get("tx_bytes", 0) for n in (s.get("networks") or {}).values())
    blk = (s.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []
    read = sum(e.get("value", 0) for e in blk if str(e.get("op", "")).lower() == "read")
    write = sum(e.get("value", 0) for e in blk if str(e.get("op", "")).lower() == "write")
    pids = (s.get("pids_stats") or {}).get("current", 0)
    if not mem:
        return [str(s.get("id", ""))[:12], str(s.get("name", "")).lstrip("/"), "--",
                "-- / --", "--", "--", "--", "--"]
    return [
        str(s.get("id", ""))[:12], str(s.get("name", "")).lstrip("/"), f"{cpu_pct:.2f}%",
        f"{_iec(usage)} / {_iec(limit)}", f"{usage / limit * 100 if limit else 0:.2f}%",
        f"{human_size(rx)} / {human_size(tx)}", f"{human_size(read)} / {human_size(write)}",
        str(pids),
    ]


def _iec(n: float) -> str:
    """docker stats' memory figures: binary units (MiB, GiB)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.4g}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1024
    return f"{n:.4g}GiB"


def cmd_stats(ctx: Context, args: argparse.Namespace) -> int:
    client = ctx.client()
    try:
        names = args.containers or [
            c["Id"] for c in client.get_json("/containers/json", {"all": args.all or None})]
    except SteelcupError as exc:
        report(exc)
        return 1
    status = 0
    while True:
        rows = []
        for name in names:
            try:
                rows.append(stats_row(client.get_json(f"{_c(name)}/stats", {"stream": False})))
            except SteelcupError as exc:
                if args.containers:  # asked for by name: say why it has no line
                    report(exc)
                    status = 1
        out = table(STATS_HEADERS, rows)
        if args.no_stream:
            sys.stdout.write(out)
            return status
        sys.stdout.write("\x1b[2J\x1b[H" + out)  # docker stats redraws in place
        sys.stdout.flush()
        time.sleep(1)


def event_line(e: dict[str, Any]) -> str:
    """docker events' text line (pure): time, type, action, actor id, (attributes)."""
    nano = int(e.get("timeNano") or int(e.get("time", 0)) * 1_000_000_000)
    secs, frac = divmod(nano, 1_000_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"
    actor = e.get("Actor") or {}
    attrs = actor.get("Attributes") or {}
    tail = f" ({', '.join(f'{k}={v}' for k, v in sorted(attrs.items()))})" if attrs else ""
    return f"{stamp} {e.get('Type', '')} {e.get('Action', '')} {actor.get('ID', '')}{tail}"


def cmd_events(ctx: Context, args: argparse.Namespace) -> int:
    from steelcup.cli.commands.containers import filters_json

    query = {"since": args.since, "until": args.until, "filters": filters_json(args.filter)}
    try:
        with ctx.client().open("GET", "/events", query) as response:
            for event in _events(response.iter_json()):
                print(json.dumps(event) if args.format == "json" else event_line(event),
                      flush=True)
    except SteelcupError as exc:
        report(exc)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


def _events(stream: Iterator[Any]) -> Iterator[dict[str, Any]]:
    for item in stream:
        if isinstance(item, dict):
            yield item
