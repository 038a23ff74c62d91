"""`steelcup secret|config create|ls|inspect|rm`: swarm secrets and configs, the files a
service's replicas get (docs/services.md "Secrets and configs"), through /secrets and
/configs as the docker CLI uses them."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from steelcup.cli.client import path_quote
from steelcup.cli.context import Context, delete_each, inspect_each, report
from steelcup.errors import InvalidArgument, SteelcupError


def register(sub: Any, name: str, help_text: str) -> None:
    if name not in ("secret", "config"):
        raise ValueError(f"{__name__} has no command {name!r}")
    parser = sub.add_parser(name, help=help_text, description=help_text)
    group = parser.add_subparsers(dest=f"{name}_command", metavar="COMMAND",
                                  parser_class=type(parser))
    parser.set_defaults(func=lambda _ctx, _args: (parser.print_help(), 0)[1])
    p = group.add_parser("create", help=f"create a {name} from a file ('-': stdin)")
    p.add_argument("name")
    p.add_argument("file")
    p.add_argument("-l", "--label", action="append", default=[], help="KEY=VALUE")
    p.set_defaults(func=cmd_create, kind=name)
    p = group.add_parser("ls", aliases=["list"], help=f"list {name}s")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("-f", "--filter", action="append", default=[],
                   help="id=, name=, label=")
    p.set_defaults(func=cmd_ls, kind=name)
    p = group.add_parser("inspect", help=f"show {name}s in detail (a secret's data never)")
    p.add_argument("objects", nargs="+")
    p.add_argument("-f", "--format", default="")
    p.set_defaults(func=cmd_inspect, kind=name)
    p = group.add_parser("rm", aliases=["remove"], help=f"remove {name}s (not while in use)")
    p.add_argument("objects", nargs="+")
    p.set_defaults(func=cmd_rm, kind=name)


def cmd_create(ctx: Context, args: argparse.Namespace) -> int:
    import base64

    from steelcup.cli.createspec import parse_labels

    try:
        if args.file == "-":
            data = sys.stdin.buffer.read()
        else:
            try:
                with open(args.file, "rb") as f:
                    data = f.read()
            except OSError as exc:
                raise InvalidArgument(f"{args.file}: {exc}") from None
        out = ctx.client().post_json(f"/{args.kind}s/create", json_body={
            "Name": args.name, "Labels": parse_labels(args.label),
            "Data": base64.b64encode(data).decode()})
    except SteelcupError as exc:
        report(exc)
        return 1
    print(out["ID"])
    return 0


def cmd_ls(ctx: Context, args: argparse.Namespace) -> int:
    from steelcup.cli.commands.containers import filters_json
    from steelcup.cli.format import table

    try:
        objects = ctx.client().get_json(f"/{args.kind}s",
                                        {"filters": filters_json(args.filter)})
    except SteelcupError as exc:
        report(exc)
        return 1
    if args.quiet:
        for o in objects:
            print(o["ID"])
        return 0
    print(table(["ID", "NAME", "CREATED", "UPDATED"],
                [[o["ID"], o["Spec"]["Name"], o["CreatedAt"], o["UpdatedAt"]]
                 for o in objects]))
    return 0


def cmd_inspect(ctx: Context, args: argparse.Namespace) -> int:
    return inspect_each(ctx, [f"/{args.kind}s/{path_quote(ref)}" for ref in args.objects],
                        args.format)


def cmd_rm(ctx: Context, args: argparse.Namespace) -> int:
    return delete_each(ctx, args.objects, lambda ref: f"/{args.kind}s/{path_quote(ref)}")
