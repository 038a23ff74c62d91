"""`steelcup network create|ls|inspect|rm|connect|disconnect|prune` (docker's syntax)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from steelcup.cli.client import path_quote
from steelcup.cli.context import Context, inspect_each, report
from steelcup.errors import InvalidArgument, SteelcupError


def register(sub: Any, name: str, help_text: str) -> None:
    """Add the parser of command `name` (this module's row in `commands.COMMANDS`)."""
    if name != "network":
        raise ValueError(f"{__name__} has no command {name!r}")
    net = sub.add_parser(name, help=help_text)
    nsub = net.add_subparsers(dest="network_command", metavar="COMMAND",
                              parser_class=type(net))
    net.set_defaults(func=lambda _ctx, _args: (net.print_help(), 0)[1])

    p = nsub.add_parser("create", help="create a network")
    p.add_argument("name")
    p.add_argument("-d", "--driver", default="bridge")
    p.add_argument("--subnet", default="")
    p.add_argument("--gateway", default="")
    p.add_argument("--internal", action="store_true", help="no access to the outside")
    p.add_argument("-o", "--opt", action="append", default=[], help="driver option KEY=VALUE "
                   "(steelcup.dns.forward=false refuses names not on the network)")
    p.add_argument("--label", action="append", default=[])
    p.set_defaults(func=cmd_create)

    p = nsub.add_parser("ls", aliases=["list"], help="list networks")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("-f", "--filter", action="append", default=[])
    p.add_argument("--no-trunc", action="store_true")
    p.set_defaults(func=cmd_ls)

    p = nsub.add_parser("inspect", help="show networks in detail")
    p.add_argument("networks", nargs="+")
    p.add_argument("-f", "--format", default="")
    p.set_defaults(func=cmd_inspect)

    p = nsub.add_parser("rm", aliases=["remove"], help="remove networks")
    p.add_argument("networks", nargs="+")
    p.set_defaults(func=cmd_rm)

    p = nsub.add_parser("prune", help="remove unused networks")
    p.add_argument("-f", "--force", action="store_true")
    p.set_defaults(func=cmd_prune)

    p = nsub.add_parser("connect", help="connect a container to a network (from its next "
                        "start: VM NICs are fixed at boot)")
    p.add_argument("network")
    p.add_argument("container")
    p.add_argument("--alias", action="append", default=[])
    p.add_argument("--ip", default="")
    p.set_defaults(func=cmd_connect)

    p = nsub.add_parser("disconnect", help="disconnect a container from a network")
    p.add_argument("network")
    p.add_argument("container")
    p.add_argument("-f", "--force", action="store_true")
    p.set_defaults(func=cmd_disconnect)


def kv_list(items: list[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not key:
            raise InvalidArgument(f"invalid {what} {item!r} (KEY=VALUE)")
        out[key] = value if sep else ""
    return out


def cmd_create(ctx: Context, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {
        "Name": args.name, "Driver": args.driver, "Internal": args.internal,
        "Options": kv_list(args.opt, "option"), "Labels": kv_list(args.label, "label"),
        "CheckDuplicate": True,
    }
    if args.subnet or args.gateway:
        cfg = {"Subnet": args.subnet}
        if args.gateway:
            cfg["Gateway"] = args.gateway
        body["IPAM"] = {"Driver": "default", "Config": [cfg]}
    try:
        out = ctx.client().post_json("/networks/create", json_body=body)
    except SteelcupError as exc:
        report(exc)
        return 1
    print(out["Id"])
    return 0


def cmd_ls(ctx: Context, args: argparse.Namespace) -> int:
    from steelcup.cli.commands.containers import filters_json
    from steelcup.cli.format import table

    nets = ctx.client().get_json("/networks", {"filters": filters_json(args.filter)})
    if args.quiet:
        for n in nets:
            print(n["Id"] if args.no_trunc else n["Id"][:12])
        return 0
    rows = [[n["Id"] if args.no_trunc else n["Id"][:12], n["Name"], n["Driver"], n["Scope"]]
            for n in nets]
    sys.stdout.write(table(["NETWORK ID", "NAME", "DRIVER", "SCOPE"], rows))
    return 0


def cmd_inspect(ctx: Context, args: argparse.Namespace) -> int:
    return inspect_each(ctx, [f"/networks/{path_quote(ref)}" for ref in args.networks], args.format)


def cmd_rm(ctx: Context, args: argparse.Namespace) -> int:
    status = 0
    for ref in args.networks:
        try:
            ctx.client().delete(f"/networks/{path_quote(ref)}")
            print(ref)
        except SteelcupError as exc:
            report(exc)
            status = 1
    return status


def cmd_prune(ctx: Context, args: argparse.Namespace) -> int:
    out = ctx.client().post_json("/networks/prune")
    deleted = (out or {}).get("NetworksDeleted") or []
    if deleted:
        print("Deleted Networks:")
        for name in deleted:
            print(name)
    return 0


def cmd_connect(ctx: Context, args: argparse.Namespace) -> int:
    ep: dict[str, Any] = {"Aliases": args.alias}
    if args.ip:
        ep["IPAMConfig"] = {"IPv4Address": args.ip}
    try:
        ctx.client().post(f"/networks/{path_quote(args.network)}/connect",
                          json_body={"Container": args.container, "EndpointConfig": ep})
    except SteelcupError as exc:
        report(exc)
        return 1
    return 0


def cmd_disconnect(ctx: Context, args: argparse.Namespace) -> int:
    try:
        ctx.client().post(f"/networks/{path_quote(args.network)}/disconnect",
                          json_body={"Container": args.container, "Force": args.force})
    except SteelcupError as exc:
        report(exc)
        return 1
    return 0
