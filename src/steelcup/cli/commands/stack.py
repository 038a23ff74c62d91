"""`steelcup stack deploy|ls|ps|services|rm`: a compose file as a stack of services, made
through the same API calls as `docker stack deploy` (cli/stackspec.py translates the file;
docs/services.md)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from steelcup.cli.client import path_quote
from steelcup.cli.context import Context, report
from steelcup.errors import InvalidArgument, SteelcupError

NAMESPACE = "com.docker.stack.namespace"


def register(sub: Any, name: str, help_text: str) -> None:
    """Add the parser of command `name` (this module's row in `commands.COMMANDS`)."""
    if name != "stack":
        raise ValueError(f"{__name__} has no command {name!r}")
    parser = sub.add_parser(name, help=help_text,
                            description="Deploy a compose file as services (one VM per "
                            "task), list, inspect and remove stacks.")
    group = parser.add_subparsers(dest="stack_command", metavar="COMMAND",
                                  parser_class=type(parser))
    parser.set_defaults(func=lambda _ctx, _args: (parser.print_help(), 0)[1])
    p = group.add_parser("deploy", aliases=["up"], help="deploy or update a stack")
    p.add_argument("-c", "--compose-file", required=True, help="the compose file")
    p.add_argument("--prune", action="store_true",
                   help="remove the stack's services that the file no longer has")
    p.add_argument("stack")
    p.set_defaults(func=cmd_deploy)
    p = group.add_parser("ls", aliases=["list"], help="list stacks")
    p.set_defaults(func=cmd_ls)
    p = group.add_parser("services", help="list the services of a stack")
    p.add_argument("-q", "--quiet", action="store_true", help="only ids")
    p.add_argument("stack")
    p.set_defaults(func=cmd_services)
    p = group.add_parser("ps", help="list the tasks of a stack")
    p.add_argument("-q", "--quiet", action="store_true", help="only ids")
    p.add_argument("--no-trunc", action="store_true", help="full ids")
    p.add_argument("stack")
    p.set_defaults(func=cmd_ps)
    p = group.add_parser("rm", aliases=["remove", "down"], help="remove stacks")
    p.add_argument("stacks", nargs="+")
    p.set_defaults(func=cmd_rm)


def _of(stack: str) -> dict[str, str]:
    return {"filters": json.dumps({"label": [f"{NAMESPACE}={stack}"]})}


def cmd_deploy(ctx: Context, args: argparse.Namespace) -> int:
    import yaml

    from steelcup.cli.stackspec import stack_plan

    def read(path: str) -> str:
        with open(path, encoding="utf-8") as f:
            return f.read()

    try:
        try:
            doc = yaml.safe_load(read(args.compose_file))
        except (OSError, yaml.YAMLError) as exc:
            raise InvalidArgument(f"{args.compose_file}: {exc}") from None
        plan = stack_plan(doc, args.stack, dict(os.environ),
                          os.path.dirname(os.path.abspath(args.compose_file)), read)
        for warning in plan.warnings:
            print(warning, file=sys.stderr)
        client = ctx.client()
        have = {n["Name"] for n in client.get_json("/networks", _of(args.stack))}
        for body in plan.networks:
            if body["Name"] not in have:
                print(f"Creating network {body['Name']}")
                client.post_json("/networks/create", json_body=body)
        _create_objects(client, plan.objects, args.stack)
        existing = {s["Spec"]["Name"]: s for s in client.get_json("/services", _of(args.stack))}
        for spec in plan.services:
            old = existing.get(spec["Name"])
            if old is None:
                print(f"Creating service {spec['Name']}")
                out = client.post_json("/services/create", json_body=spec)
            else:
                print(f"Updating service {spec['Name']} (id: {old['ID']})")
                out = client.post_json(f"/services/{path_quote(old['ID'])}/update",
                                       {"version": old["Version"]["Index"]}, json_body=spec)
            for warning in out.get("Warnings") or []:
                print(warning, file=sys.stderr)
        if args.prune:
            wanted = {spec["Name"] for spec in plan.services}
            for name, old in existing.items():
                if name not in wanted:
                    print(f"Removing service {name}")
                    client.delete(f"/services/{path_quote(old['ID'])}")
    except SteelcupError as exc:
        report(exc)
        return 1
    return 0


def _create_objects(client: Any, objects: list[dict[str, Any]], stack: str) -> None:
    """The stack's secrets and configs read from their files (kept if they exist: only
    their labels could change)."""
    import base64

    have = {(kind, o["Spec"]["Name"]) for kind in ("secret", "config")
            for o in client.get_json(f"/{kind}s", _of(stack))}
    for obj in objects:
        if (obj["kind"], obj["Name"]) in have:
            continue
        try:
            with open(obj["file"], "rb") as f:
                data = f.read()
        except OSError as exc:
            raise InvalidArgument(f"{obj['kind']} {obj['Name']}: {exc}") from None
        print(f"Creating {obj['kind']} {obj['Name']}")
        client.post_json(f"/{obj['kind']}s/create", json_body={
            "Name": obj["Name"], "Labels": obj["Labels"],
            "Data": base64.b64encode(data).decode()})


def cmd_ls(ctx: Context, args: argparse.Namespace) -> int:
    from steelcup.cli.format import table

    try:
        services = ctx.client().get_json("/services", {
            "filters": json.dumps({"label": [NAMESPACE]})})
    except SteelcupError as exc:
        report(exc)
        return 1
    counts: dict[str, int] = {}
    for s in services:
        stack = (s["Spec"].get("Labels") or {}).get(NAMESPACE, "")
        counts[stack] = counts.get(stack, 0) + 1
    sys.stdout.write(table(["NAME", "SERVICES"], [[k, str(v)] for k, v in sorted(
        counts.items())]))
    return 0


def cmd_services(ctx: Context, args: argparse.Namespace) -> int:
    from steelcup.cli.commands.service import cmd_ls as service_ls

    return service_ls(ctx, argparse.Namespace(filter=[f"label={NAMESPACE}={args.stack}"],
                                              quiet=args.quiet))


def cmd_ps(ctx: Context, args: argparse.Namespace) -> int:
    from steelcup.cli.commands.service import cmd_ps as service_ps

    try:
        services = ctx.client().get_json("/services", _of(args.stack))
    except SteelcupError as exc:
        report(exc)
        return 1
    if not services:
        print(f"nothing found in stack: {args.stack}", file=sys.stderr)
        return 1
    return service_ps(ctx, argparse.Namespace(
        services=[s["ID"] for s in services], filter=[], quiet=args.quiet,
        no_trunc=args.no_trunc))


def cmd_rm(ctx: Context, args: argparse.Namespace) -> int:
    """Its services, then its networks (the daemon lets their tasks leave first)."""
    status = 0
    client = ctx.client()
    for stack in args.stacks:
        try:
            services = client.get_json("/services", _of(stack))
            networks = client.get_json("/networks", _of(stack))
            objects = [(kind, o) for kind in ("secret", "config")
                       for o in client.get_json(f"/{kind}s", _of(stack))]
            if not services and not networks and not objects:
                print(f"Nothing found in stack: {stack}", file=sys.stderr)
                continue
            for s in services:
                print(f"Removing service {s['Spec']['Name']}")
                client.delete(f"/services/{path_quote(s['ID'])}")
            for kind, o in objects:  # no service of the stack uses them now
                print(f"Removing {kind} {o['Spec']['Name']}")
                client.delete(f"/{kind}s/{path_quote(o['ID'])}")
            for n in networks:
                print(f"Removing network {n['Name']}")
                client.delete(f"/networks/{path_quote(n['Id'])}")
        except SteelcupError as exc:
            report(exc)
            status = 1
    return status
