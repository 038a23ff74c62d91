"""`steelcup cron create|ls|inspect|rm|run|suspend|resume|history`: containers run on a
schedule, each run in a fresh VM, with a history of runs (docs/cron.md)."""

from __future__ import annotations

import argparse
import json
import sys
from urllib.parse import quote

from steelcup.cli.context import Context, delete_each, inspect_each, report
from steelcup.errors import InvalidArgument, SteelcupError

TYPE_CHECKING = False  # the CLI does not import typing at run time (start-up cost)
if TYPE_CHECKING:
    from typing import Any

_SCHEDULE_HELP = ("when to run: 5 cron fields 'MIN HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK' "
                  "(e.g. '*/15 * * * *', '0 3 * * mon-fri'), a macro (@hourly, @daily, "
                  "@midnight, @weekly, @monthly, @yearly) or '@every DURATION' (e.g. "
                  "'@every 10s', '@every 1h30m')")
_EPILOG = ("Each run is a new container in a new VM, made from IMAGE and the run flags as "
           "`steelcup run -d` would make it; it is removed when it ends, its exit code and "
           "last log lines kept in `cron history`. A run that cannot start within "
           "--starting-deadline of its time is recorded as missed; runs missed while the "
           "daemon was down give at most one late run.")


def _url(name: str, tail: str = "") -> str:
    # '/' quoted too: the operator names a tenant's cron TENANT/NAME
    return f"/crons/{quote(name, safe='')}{tail}"


def register(sub: Any, name: str, help_text: str) -> None:
    if name != "cron":
        raise ValueError(f"{__name__} has no command {name!r}")
    from steelcup.cli.commands.containers import add_container_flags

    top = sub.add_parser(name, help=help_text,
                         description="Run containers on a schedule (cron jobs).")
    csub = top.add_subparsers(dest="cron_command", metavar="COMMAND", parser_class=type(top))
    top.set_defaults(func=lambda _ctx, _args: (top.print_help(), 0)[1])

    p = csub.add_parser(
        "create", help="create a cron job: IMAGE [COMMAND] on a schedule", add_help=False,
        usage="steelcup cron create --name NAME --schedule SPEC [OPTIONS] IMAGE [COMMAND...]",
        description="Create a cron job that runs IMAGE (with the run flags below) on SPEC.",
        epilog=_EPILOG)
    p.add_argument("--help", action="help", help="show this help message and exit")
    p.add_argument("--name", required=True, help="the cron job's name")
    p.add_argument("--schedule", required=True, metavar="SPEC", help=_SCHEDULE_HELP)
    p.add_argument("--timezone", default="", metavar="ZONE",
                   help="the zone SPEC is read in (e.g. Europe/Paris; default UTC)")
    p.add_argument("--concurrency", default="allow", choices=("allow", "forbid", "replace"),
                   help="while an earlier run still runs: run side by side (allow, the "
                        "default), skip the new run (forbid) or stop the earlier one "
                        "(replace)")
    p.add_argument("--starting-deadline", default="", metavar="DURATION",
                   help="a run that cannot start within this of its time is missed, not run "
                        "late (e.g. 30s, 5m; default: no deadline)")
    p.add_argument("--history-limit", type=int, default=5, metavar="N",
                   help="successful runs kept in the history (default 5)")
    p.add_argument("--failed-history-limit", type=int, default=None, metavar="N",
                   help="failed, stopped, missed and skipped runs kept (default: "
                        "--history-limit)")
    p.add_argument("--suspended", action="store_true",
                   help="create it suspended (`cron resume` starts the schedule)")
    add_container_flags(p, run=True, job=True)
    p.set_defaults(func=cmd_create)

    p = csub.add_parser("ls", aliases=["list"], help="list cron jobs")
    p.add_argument("-q", "--quiet", action="store_true", help="only names")
    p.set_defaults(func=cmd_ls)

    p = csub.add_parser("inspect", help="show cron jobs in detail (JSON)")
    p.add_argument("-f", "--format", default="", help="template, e.g. {{.NextRun}}")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.set_defaults(func=cmd_inspect)

    p = csub.add_parser("rm", aliases=["remove"],
                        help="remove cron jobs and their history (running jobs finish)")
    p.add_argument("-f", "--force", action="store_true",
                   help="also stop and remove the jobs running now")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.set_defaults(func=cmd_rm)

    p = csub.add_parser("run", help="run a cron job now (whatever its schedule and "
                                    "concurrency policy)")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_run)

    for verb, text in (("suspend", "stop scheduling runs (running jobs go on)"),
                       ("resume", "schedule runs again, from now (what fell due meanwhile "
                                  "is not run)")):
        p = csub.add_parser(verb, help=text)
        p.add_argument("names", nargs="+", metavar="NAME")
        p.set_defaults(func=cmd_suspend if verb == "suspend" else cmd_resume)

    p = csub.add_parser("history", help="the runs of a cron job: times, status, exit code, "
                                        "container and last log lines")
    p.add_argument("-n", "--tail", type=int, default=None, metavar="N",
                   help="only the last N runs")
    p.add_argument("-l", "--logs", action="store_true",
                   help="print each run's last log lines under it")
    p.add_argument("--format", default="", choices=("", "json"), help="json: as the API has it")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_history)


def create_request(args: argparse.Namespace) -> dict[str, Any]:
    """The POST /crons body of `cron create`'s flags (the container as `run -d` makes it)."""
    from steelcup.cli import netflags
    from steelcup.cli.commands.containers import options
    from steelcup.cli.createspec import create_body, parse_duration

    container = create_body(options(args, run=True, job=True), for_run=True)
    netflags.apply(container, args)
    deadline = None
    if args.starting_deadline:
        deadline = parse_duration(args.starting_deadline, "--starting-deadline") / 1e9
        if deadline < 0:
            raise InvalidArgument("--starting-deadline cannot be negative")
    failed = args.failed_history_limit
    return {"Name": args.name, "Schedule": args.schedule, "Timezone": args.timezone,
            "Concurrency": args.concurrency, "StartingDeadlineSeconds": deadline,
            "HistoryLimit": {"Succeeded": args.history_limit,
                             "Failed": args.history_limit if failed is None else failed},
            "Suspended": args.suspended, "Container": container}


def cmd_create(ctx: Context, args: argparse.Namespace) -> int:
    try:
        made = ctx.client().post_json("/crons", json_body=create_request(args))
    except SteelcupError as exc:
        report(exc, "steelcup: ")
        return 125
    print(made["Name"])
    return 0


def _key(cron: dict[str, Any]) -> str:
    return f"{cron['Tenant']}/{cron['Name']}" if cron.get("Tenant") else str(cron["Name"])


def cmd_ls(ctx: Context, args: argparse.Namespace) -> int:
    from steelcup.cli.format import table

    crons = ctx.client().get_json("/crons")
    if args.quiet:
        for c in crons:
            print(_key(c))
        return 0
    rows = []
    for c in crons:
        last = c.get("LastRun") or {}
        state = "suspended" if c["Suspended"] else f"{len(c['Active'])} running"
        rows.append([_key(c), c["Schedule"] + (f" ({c['Timezone']})" if c["Timezone"] else ""),
                     c["Container"].get("Image", ""), c["NextRun"] or "-",
                     _last(last), state])
    sys.stdout.write(table(["NAME", "SCHEDULE", "IMAGE", "NEXT RUN", "LAST RUN", "STATE"],
                           rows))
    return 0


def _last(run: dict[str, Any]) -> str:
    if not run:
        return "-"
    code = run.get("ExitCode")
    when = run.get("Finished") or run.get("Started") or run.get("Scheduled") or ""
    return f"{run['Status']}{'' if code is None else f' ({code})'} {when}"


def cmd_inspect(ctx: Context, args: argparse.Namespace) -> int:
    return inspect_each(ctx, [_url(n) for n in args.names], args.format)


def cmd_rm(ctx: Context, args: argparse.Namespace) -> int:
    return delete_each(ctx, args.names, _url, {"force": "1"} if args.force else None)


def cmd_run(ctx: Context, args: argparse.Namespace) -> int:
    try:
        run = ctx.client().post_json(_url(args.name, "/run"))
    except SteelcupError as exc:
        report(exc)
        return 1
    print(f"{run['Id']} {run['ContainerId']}")
    return 0


def _each(ctx: Context, names: list[str], verb: str) -> int:
    status = 0
    for name in names:
        try:
            ctx.client().post(_url(name, f"/{verb}"))
            print(name)
        except SteelcupError as exc:
            report(exc)
            status = 1
    return status


def cmd_suspend(ctx: Context, args: argparse.Namespace) -> int:
    return _each(ctx, args.names, "suspend")


def cmd_resume(ctx: Context, args: argparse.Namespace) -> int:
    return _each(ctx, args.names, "resume")


def cmd_history(ctx: Context, args: argparse.Namespace) -> int:
    from steelcup.cli.format import table

    query = {"tail": str(args.tail)} if args.tail is not None else None
    try:
        runs = ctx.client().get_json(_url(args.name, "/history"), query)
    except SteelcupError as exc:
        report(exc)
        return 1
    if args.format == "json":
        print(json.dumps(runs, indent=4))
        return 0
    headers = ["RUN", "SCHEDULED", "STARTED", "FINISHED", "STATUS", "EXIT", "CONTAINER"]

    def row(r: dict[str, Any]) -> list[str]:
        scheduled = r["Scheduled"] or ("(cron run)" if r["Manual"] else "-")
        code = r["ExitCode"]
        status = r["Status"] + (f" x{r['Missed']}" if r["Missed"] > 1 else "")
        return [r["Id"], scheduled, r["Started"] or "-", r["Finished"] or "-", status,
                "-" if code is None else str(code), (r["ContainerId"] or "-")[:12]]

    if not args.logs:
        sys.stdout.write(table(headers, [row(r) for r in runs]))
        return 0
    for r in runs:
        sys.stdout.write(table(headers, [row(r)]))
        if r["Error"]:
            print(f"  error: {r['Error']}")
        for line in r["Logs"]:
            print(f"  | {line}")
    return 0
