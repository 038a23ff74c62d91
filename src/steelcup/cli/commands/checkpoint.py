"""`steelcup checkpoint create|ls|rm`: a running container's VM saved (all its memory and
device state) to run on later with `steelcup start --checkpoint NAME` (docs/checkpoints.md)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from steelcup.cli.client import path_quote
from steelcup.cli.context import Context, delete_each, report
from steelcup.errors import SteelcupError

DESCRIPTION = """\
A checkpoint saves a running container whole: its VM's memory (its processes, their open
files and its root filesystem, which such a container holds in memory) and device state.
`steelcup start --checkpoint NAME CONTAINER` runs the container on from there, with the same
IP and MAC address. Only containers run with --checkpointable can be checkpointed."""


def register(sub: Any, name: str, help_text: str) -> None:
    if name != "checkpoint":
        raise ValueError(f"{__name__} has no command {name!r}")
    top = sub.add_parser(name, help=help_text, description=DESCRIPTION,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    csub = top.add_subparsers(dest="checkpoint_command", metavar="COMMAND",
                              parser_class=type(top))
    top.set_defaults(func=lambda _ctx, _args: (top.print_help(), 0)[1])

    p = csub.add_parser("create", help="save a running container as checkpoint NAME (it is "
                                       "stopped then, unless --leave-running)",
                        description="Save the running container CONTAINER (run with "
                                    "--checkpointable) as checkpoint NAME. Without "
                                    "--leave-running the container exits (137) once saved.")
    p.add_argument("--leave-running", action="store_true",
                   help="let the container run on after the checkpoint")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("name", metavar="NAME",
                   help="the checkpoint's name: [a-zA-Z0-9][a-zA-Z0-9_.-]+")
    p.set_defaults(func=cmd_create)

    p = csub.add_parser("ls", aliases=["list"], help="list a container's checkpoints")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("-q", "--quiet", action="store_true", help="only names")
    p.set_defaults(func=cmd_ls)

    p = csub.add_parser("rm", aliases=["remove"], help="remove checkpoints of a container")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.set_defaults(func=cmd_rm)


def _url(container: str) -> str:
    return f"/containers/{path_quote(container)}/checkpoints"


def cmd_create(ctx: Context, args: argparse.Namespace) -> int:
    try:
        ctx.client().post(_url(args.container), json_body={
            "CheckpointID": args.name, "Exit": not args.leave_running})
    except SteelcupError as exc:
        report(exc)
        return 1
    print(args.name)
    return 0


def cmd_ls(ctx: Context, args: argparse.Namespace) -> int:
    from steelcup.boundedfs import format_size
    from steelcup.cli.format import table

    try:
        rows = ctx.client().get_json(_url(args.container))
    except SteelcupError as exc:
        report(exc)
        return 1
    if args.quiet:
        for c in rows:
            print(c["Name"])
        return 0
    sys.stdout.write(table(["CHECKPOINT NAME", "CREATED", "SIZE"], [
        [c["Name"], c.get("Created", ""), format_size(int(c.get("SteelcupSizeBytes", 0)))]
        for c in rows]))
    return 0


def cmd_rm(ctx: Context, args: argparse.Namespace) -> int:
    return delete_each(ctx, args.names,
                       lambda n: f"{_url(args.container)}/{path_quote(n)}")
