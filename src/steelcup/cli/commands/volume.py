"""`steelcup volume create|ls|inspect|rm|prune` (docker's syntax)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from steelcup.cli.client import path_quote
from steelcup.cli.commands.network import kv_list
from steelcup.cli.context import Context, delete_each, inspect_each, report
from steelcup.errors import SteelcupError


def register(sub: Any, name: str, help_text: str) -> None:
    """Add the parser of command `name` (this module's row in `commands.COMMANDS`)."""
    if name != "volume":
        raise ValueError(f"{__name__} has no command {name!r}")
    vol = sub.add_parser(name, help=help_text)
    vsub = vol.add_subparsers(dest="volume_command", metavar="COMMAND", parser_class=type(vol))
    vol.set_defaults(func=lambda _ctx, _args: (vol.print_help(), 0)[1])

    p = vsub.add_parser("create", help="create a volume")
    p.add_argument("name", nargs="?", default="")
    p.add_argument("-d", "--driver", default="local")
    p.add_argument("--label", action="append", default=[])
    p.add_argument("-o", "--opt", action="append", default=[])
    p.add_argument("--snapshot", default=None, metavar="NAME",
                   help="make the volume from this snapshot (steelcup snapshot ls)")
    p.set_defaults(func=cmd_create)

    p = vsub.add_parser("ls", aliases=["list"], help="list volumes")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("-f", "--filter", action="append", default=[])
    p.set_defaults(func=cmd_ls)

    p = vsub.add_parser("inspect", help="show volumes in detail")
    p.add_argument("volumes", nargs="+")
    p.add_argument("-f", "--format", default="")
    p.set_defaults(func=cmd_inspect)

    p = vsub.add_parser("rm", aliases=["remove"], help="remove volumes")
    p.add_argument("volumes", nargs="+")
    p.add_argument("-f", "--force", action="store_true")
    p.set_defaults(func=cmd_rm)

    p = vsub.add_parser("prune", help="remove unused anonymous volumes (all unused with -a)")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("-f", "--force", action="store_true")
    p.set_defaults(func=cmd_prune)


def cmd_create(ctx: Context, args: argparse.Namespace) -> int:
    opts = kv_list(args.opt, "option")
    if args.snapshot:
        opts["snapshot"] = args.snapshot
    body = {"Name": args.name, "Driver": args.driver, "Labels": kv_list(args.label, "label"),
            "DriverOpts": opts}
    try:
        out = ctx.client().post_json("/volumes/create", json_body=body)
    except SteelcupError as exc:
        report(exc)
        return 1
    print(out["Name"])
    return 0


def cmd_ls(ctx: Context, args: argparse.Namespace) -> int:
    from steelcup.cli.commands.containers import filters_json
    from steelcup.cli.format import table

    out = ctx.client().get_json("/volumes", {"filters": filters_json(args.filter)})
    vols = out.get("Volumes") or []
    if args.quiet:
        for v in vols:
            print(v["Name"])
        return 0
    sys.stdout.write(table(["DRIVER", "VOLUME NAME"], [[v["Driver"], v["Name"]] for v in vols]))
    return 0


def cmd_inspect(ctx: Context, args: argparse.Namespace) -> int:
    return inspect_each(ctx, [f"/volumes/{path_quote(name)}" for name in args.volumes], args.format)


def cmd_rm(ctx: Context, args: argparse.Namespace) -> int:
    return delete_each(ctx, args.volumes, lambda n: f"/volumes/{path_quote(n)}",
                       {"force": args.force})


def cmd_prune(ctx: Context, args: argparse.Namespace) -> int:
    query = {"filters": json.dumps({"all": ["true"]})} if args.all else None
    out = ctx.client().post_json("/volumes/prune", query)
    deleted = (out or {}).get("VolumesDeleted") or []
    if deleted:
        print("Deleted Volumes:")
        for name in deleted:
            print(name)
    print(f"\nTotal reclaimed space: {(out or {}).get('SpaceReclaimed', 0)}B")
    return 0
