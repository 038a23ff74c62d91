"""`steelcup sg create|update|ls|inspect|rm` (security groups, docs/networking.md) and
`steelcup update --sg-add/--sg-rm` (a container's groups, applied at once if it runs).

A group's file is YAML when PyYAML is installed, else JSON (JSON is YAML: both always work
with PyYAML); the CLI sends it as JSON and the daemon checks it."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from steelcup.cli.client import path_quote
from steelcup.cli.context import Context, delete_each, inspect_each, report
from steelcup.errors import InvalidArgument, SteelcupError


def register(sub: Any, name: str, help_text: str) -> None:
    if name == "update":
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--sg-add", action="append", default=[], metavar="GROUP",
                       help="put the container in a security group (repeatable)")
        p.add_argument("--sg-rm", action="append", default=[], metavar="GROUP",
                       help="take the container out of a security group (repeatable)")
        p.add_argument("containers", nargs="+")
        p.set_defaults(func=cmd_update)
        return
    if name != "sg":
        raise ValueError(f"{__name__} has no command {name!r}")
    top = sub.add_parser(name, help=help_text)
    ssub = top.add_subparsers(dest="sg_command", metavar="COMMAND", parser_class=type(top))
    top.set_defaults(func=lambda _ctx, _args: (top.print_help(), 0)[1])

    for verb, text in (("create", "create a security group from a file"),
                       ("update", "replace a security group's rules from a file (live)")):
        p = ssub.add_parser(verb, help=text)
        p.add_argument("-f", "--file", required=True,
                       help="the group's rules: YAML (with PyYAML) or JSON; - for stdin")
        p.add_argument("name")
        p.set_defaults(func=cmd_create if verb == "create" else cmd_update_group)

    p = ssub.add_parser("ls", aliases=["list"], help="list security groups")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_ls)

    p = ssub.add_parser("inspect", help="show security groups in detail")
    p.add_argument("groups", nargs="+")
    p.add_argument("-f", "--format", default="")
    p.set_defaults(func=cmd_inspect)

    p = ssub.add_parser("rm", aliases=["remove"], help="remove security groups (not in use)")
    p.add_argument("groups", nargs="+")
    p.set_defaults(func=cmd_rm)


def load_document(text: str, source: str) -> object:
    """The group document in `text`: YAML (JSON is YAML too)."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidArgument(f"{source}: not valid YAML: {exc}") from None


def _read(path: str) -> object:
    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    except OSError as exc:
        raise InvalidArgument(f"cannot read {path}: {exc.strerror}") from None
    return load_document(text, path)


def _send(ctx: Context, url: str, body: dict[str, object]) -> int:
    try:
        out = ctx.client().post_json(url, json_body=body)
    except SteelcupError as exc:
        report(exc)
        return 1
    print(out["Name"])
    return 0


def cmd_create(ctx: Context, args: argparse.Namespace) -> int:
    return _send(ctx, "/security-groups", {"Name": args.name, "Spec": _read(args.file)})


def cmd_update_group(ctx: Context, args: argparse.Namespace) -> int:
    return _send(ctx, f"/security-groups/{path_quote(args.name)}", {"Spec": _read(args.file)})


def cmd_ls(ctx: Context, args: argparse.Namespace) -> int:
    from steelcup.cli.format import table

    rows = ctx.client().get_json("/security-groups")
    if args.quiet:
        for g in rows:
            print(g["Name"])
        return 0
    sys.stdout.write(table(["NAME", "RULES", "MEMBERS", "DESCRIPTION"], [
        [g["Name"], str(len(g["Rules"])), str(len(g.get("Members", []))), g["Description"]]
        for g in rows]))
    return 0


def cmd_inspect(ctx: Context, args: argparse.Namespace) -> int:
    return inspect_each(ctx, [f"/security-groups/{path_quote(n)}" for n in args.groups],
                        args.format)


def cmd_rm(ctx: Context, args: argparse.Namespace) -> int:
    return delete_each(ctx, args.groups, lambda n: f"/security-groups/{path_quote(n)}")


def cmd_update(ctx: Context, args: argparse.Namespace) -> int:
    if not args.sg_add and not args.sg_rm:
        raise InvalidArgument("nothing to update: give --sg-add or --sg-rm")
    status = 0
    for name in args.containers:
        try:
            ctx.client().post_json(f"/containers/{path_quote(name)}/security-groups",
                                   json_body={"Add": args.sg_add, "Remove": args.sg_rm})
            print(name)
        except SteelcupError as exc:
            report(exc)
            status = 1
    return status
