"""`steelcup fip allocate|ls|name|attach|detach|release|inspect` (floating IPs,
docs/networking.md); `run --fip IP` is in the containers module (a label)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from steelcup.cli.client import path_quote
from steelcup.cli.context import Context, delete_each, inspect_each
from steelcup.errors import InvalidArgument, NotFound


def register(sub: Any, name: str, help_text: str) -> None:
    if name != "fip":
        raise ValueError(f"{__name__} has no command {name!r}")
    top = sub.add_parser(name, help=help_text)
    fsub = top.add_subparsers(dest="fip_command", metavar="COMMAND", parser_class=type(top))
    top.set_defaults(func=lambda _ctx, _args: (top.print_help(), 0)[1])

    p = fsub.add_parser("allocate", help="allocate floating IPs from the operator's pool")
    p.add_argument("count", nargs="?", type=int, default=1)
    p.set_defaults(func=cmd_allocate)

    p = fsub.add_parser("ls", aliases=["list"], help="list floating IPs")
    p.add_argument("-f", "--filter", action="append", default=[], metavar="dangling=true",
                   help="dangling=true: only those attached to nothing (false: attached)")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_ls)

    p = fsub.add_parser("name", help="name a floating IP (\"\" clears the name)")
    p.add_argument("ip")
    p.add_argument("name")
    p.set_defaults(func=cmd_name)

    p = fsub.add_parser("attach", help="attach a floating IP to a container (1:1 NAT)")
    p.add_argument("ip")
    p.add_argument("container")
    p.set_defaults(func=cmd_attach)

    p = fsub.add_parser("detach", help="detach a container's floating IP (it stays yours)")
    p.add_argument("container")
    p.set_defaults(func=cmd_detach)

    p = fsub.add_parser("release", aliases=["rm"], help="give floating IPs back to the pool")
    p.add_argument("ips", nargs="+")
    p.set_defaults(func=cmd_release)

    p = fsub.add_parser("inspect", help="show floating IPs in detail")
    p.add_argument("ips", nargs="+")
    p.add_argument("-f", "--format", default="")
    p.set_defaults(func=cmd_inspect)


def cmd_allocate(ctx: Context, args: argparse.Namespace) -> int:
    for rec in ctx.client().post_json("/fips/allocate", {"count": str(args.count)}):
        print(rec["Address"])
    return 0


def filters(words: list[str]) -> dict[str, list[str]]:
    """`-f dangling=true` -> docker's filters object."""
    out: dict[str, list[str]] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or key != "dangling":
            raise InvalidArgument(f"invalid filter {word!r} (dangling=true or dangling=false)")
        out.setdefault(key, []).append(value)
    return out


def cmd_ls(ctx: Context, args: argparse.Namespace) -> int:
    from steelcup.cli.format import table

    query = {"filters": json.dumps(filters(args.filter))} if args.filter else None
    rows = ctx.client().get_json("/fips", query)
    if args.quiet:
        for r in rows:
            print(r["Address"])
        return 0
    sys.stdout.write(table(["FLOATING IP", "NAME", "CONTAINER", "CREATED"], [
        [r["Address"], r["Name"], r["Container"][:12], r["CreatedAt"]] for r in rows]))
    return 0


def cmd_name(ctx: Context, args: argparse.Namespace) -> int:
    ctx.client().post_json(f"/fips/{path_quote(args.ip)}/name", {"name": args.name})
    print(args.ip)
    return 0


def cmd_attach(ctx: Context, args: argparse.Namespace) -> int:
    ctx.client().post_json(f"/fips/{path_quote(args.ip)}/attach",
                           {"container": args.container})
    print(args.ip)
    return 0


def cmd_detach(ctx: Context, args: argparse.Namespace) -> int:
    client = ctx.client()
    cid = client.get_json(f"/containers/{path_quote(args.container)}/json")["Id"]
    held = [r for r in client.get_json("/fips") if r["Container"] == cid]
    if not held:
        raise NotFound(f"container {args.container} has no floating IP")
    client.post_json(f"/fips/{path_quote(held[0]['Address'])}/detach")
    print(held[0]["Address"])
    return 0


def cmd_release(ctx: Context, args: argparse.Namespace) -> int:
    return delete_each(ctx, args.ips, lambda ip: f"/fips/{path_quote(ip)}")


def cmd_inspect(ctx: Context, args: argparse.Namespace) -> int:
    return inspect_each(ctx, [f"/fips/{path_quote(ip)}" for ip in args.ips], args.format)
