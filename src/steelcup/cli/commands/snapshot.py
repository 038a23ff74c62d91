"""`steelcup snapshot create|ls|inspect|rm`: point-in-time copies of volumes (hyper.sh's
snapshots); `steelcup volume create --snapshot NAME` makes a new volume from one."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from steelcup.cli.client import path_quote
from steelcup.cli.context import Context, delete_each, inspect_each, post_and_print


def register(sub: Any, name: str, help_text: str) -> None:
    if name != "snapshot":
        raise ValueError(f"{__name__} has no command {name!r}")
    top = sub.add_parser(name, help=help_text)
    ssub = top.add_subparsers(dest="snapshot_command", metavar="COMMAND", parser_class=type(top))
    top.set_defaults(func=lambda _ctx, _args: (top.print_help(), 0)[1])

    p = ssub.add_parser("create", help="snapshot a volume (a running container's volume is "
                                       "frozen for the copy)")
    p.add_argument("-v", "--volume", required=True, help="the volume to snapshot")
    p.add_argument("--name", default=None, help="the snapshot's name (default VOLUME-TIME)")
    p.add_argument("-f", "--force", action="store_true",
                   help="snapshot an unbounded volume a container uses (not point-in-time)")
    p.set_defaults(func=cmd_create)

    p = ssub.add_parser("ls", aliases=["list"], help="list snapshots")
    p.add_argument("-v", "--volume", default=None, help="only this volume's")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_ls)

    p = ssub.add_parser("inspect", help="show snapshots in detail")
    p.add_argument("snapshots", nargs="+")
    p.add_argument("-f", "--format", default="")
    p.set_defaults(func=cmd_inspect)

    p = ssub.add_parser("rm", aliases=["remove"], help="remove snapshots")
    p.add_argument("snapshots", nargs="+")
    p.set_defaults(func=cmd_rm)


def cmd_create(ctx: Context, args: argparse.Namespace) -> int:
    return post_and_print(ctx, "/steelcup/snapshots", {
        "Volume": args.volume, "Name": args.name, "Force": args.force})


def cmd_ls(ctx: Context, args: argparse.Namespace) -> int:
    from steelcup.cli.format import table

    rows = ctx.client().get_json("/steelcup/snapshots",
                                 {"volume": args.volume} if args.volume else None)
    if args.quiet:
        for s in rows:
            print(s["Name"])
        return 0
    sys.stdout.write(table(["NAME", "VOLUME", "SIZE", "CREATED"], [
        [s["Name"], s["Volume"], _size(s["SizeBytes"]), s["CreatedAt"]] for s in rows]))
    return 0


def _size(size_bytes: int) -> str:
    from steelcup.boundedfs import format_size

    return format_size(size_bytes) if size_bytes else "-"


def cmd_inspect(ctx: Context, args: argparse.Namespace) -> int:
    return inspect_each(ctx, [f"/steelcup/snapshots/{path_quote(n)}" for n in args.snapshots],
                        args.format)


def cmd_rm(ctx: Context, args: argparse.Namespace) -> int:
    return delete_each(ctx, args.snapshots, lambda n: f"/steelcup/snapshots/{path_quote(n)}")
