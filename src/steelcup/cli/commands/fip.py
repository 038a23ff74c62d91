"""`steelcup fip allocate|ls|name|attach|detach|release|inspect` (floating IPs,
docs/networking.md); `run --fip IP` is in the containers module (a label)."""

from __future__ import annotations

import argparse
import json
import sys
from ipaddress import IPv4Address
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

    p = fsub.add_parser("attach", help="attach a floating IP to a container (1:1 NAT) or a "
                        "service (inbound, to its virtual IP)")
    p.add_argument("ip")
    p.add_argument("target", metavar="CONTAINER|SERVICE",
                   help="a container, or else a service, of that name or id")
    p.add_argument("--service", action="store_true",
                   help="TARGET is a service (do not look for a container of that name)")
    p.set_defaults(func=cmd_attach)

    p = fsub.add_parser("detach", help="detach a floating IP (it stays yours)")
    p.add_argument("target", metavar="IP|CONTAINER|SERVICE",
                   help="the floating IP, or the container or service it is attached to")
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
    sys.stdout.write(table(["FLOATING IP", "NAME", "CONTAINER", "SERVICE", "CREATED"], [
        [r["Address"], r["Name"], r["Container"][:12], r.get("Service", "")[:12],
         r["CreatedAt"]] for r in rows]))
    return 0


def cmd_name(ctx: Context, args: argparse.Namespace) -> int:
    ctx.client().post_json(f"/fips/{path_quote(args.ip)}/name", {"name": args.name})
    print(args.ip)
    return 0


def _container_id(client: Any, ref: str) -> str | None:
    """The id of the container `ref` names, None if there is none."""
    try:
        return str(client.get_json(f"/containers/{path_quote(ref)}/json")["Id"])
    except NotFound:
        return None


def cmd_attach(ctx: Context, args: argparse.Namespace) -> int:
    """A container of that name first (hyper.sh's `fip attach IP CONTAINER|SERVICE`), else a
    service: the daemon says which service names exist, and whose."""
    client = ctx.client()
    kind = "service" if args.service or _container_id(client, args.target) is None \
        else "container"
    client.post_json(f"/fips/{path_quote(args.ip)}/attach", {kind: args.target})
    print(args.ip)
    return 0


def _is_address(text: str) -> bool:
    try:
        IPv4Address(text)
    except ValueError:
        return False
    return True


def cmd_detach(ctx: Context, args: argparse.Namespace) -> int:
    client = ctx.client()
    if _is_address(args.target):
        address = args.target
    else:
        cid = _container_id(client, args.target)
        if cid is not None:
            key, wanted, what = "Container", cid, "container"
        else:
            sid = client.get_json(f"/services/{path_quote(args.target)}")["ID"]
            key, wanted, what = "Service", sid, "service"
        held = [r for r in client.get_json("/fips") if r.get(key) == wanted]
        if not held:
            raise NotFound(f"{what} {args.target} has no floating IP")
        address = held[0]["Address"]
    client.post_json(f"/fips/{path_quote(address)}/detach")
    print(address)
    return 0


def cmd_release(ctx: Context, args: argparse.Namespace) -> int:
    return delete_each(ctx, args.ips, lambda ip: f"/fips/{path_quote(ip)}")


def cmd_inspect(ctx: Context, args: argparse.Namespace) -> int:
    return inspect_each(ctx, [f"/fips/{path_quote(ip)}" for ip in args.ips], args.format)
