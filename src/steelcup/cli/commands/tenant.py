"""`steelcup tenant ...`: the operator's tenant administration (on the daemon's unix socket);
`steelcup quota`: a tenant's own quotas and use (the operator names the tenant)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from steelcup.cli.client import path_quote
from steelcup.cli.context import Context, delete_each, inspect_each, post_and_print, report
from steelcup.errors import SteelcupError

_QUOTA_HELP = ("KEY=VALUE quota (repeatable): containers, cpus, memory (e.g. 8G), volumes, "
               "volume-size (e.g. 500G), images, networks, services, fips, func-calls, crons")


def register(sub: Any, name: str, help_text: str) -> None:
    if name == "quota":
        _register_quota(sub, name, help_text)
        return
    if name != "tenant":
        raise ValueError(f"{__name__} has no command {name!r}")
    top = sub.add_parser(name, help=help_text)
    tsub = top.add_subparsers(dest="tenant_command", metavar="COMMAND", parser_class=type(top))
    top.set_defaults(func=lambda _ctx, _args: (top.print_help(), 0)[1])

    p = tsub.add_parser("create", help="create a tenant")
    p.add_argument("name")
    p.add_argument("--quota", action="append", default=[], metavar="KEY=VALUE",
                   help=_QUOTA_HELP)
    p.add_argument("--size-default", default="s4", metavar="CLASS",
                   help="size class of its containers unless they ask (s1..l3; default s4)")
    p.set_defaults(func=cmd_create)

    p = tsub.add_parser("ls", aliases=["list"], help="list tenants")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_ls)

    p = tsub.add_parser("inspect", help="show tenants in detail")
    p.add_argument("tenants", nargs="+")
    p.add_argument("-f", "--format", default="")
    p.set_defaults(func=cmd_inspect)

    p = tsub.add_parser("update", help="change a tenant's quotas or default size")
    p.add_argument("name")
    p.add_argument("--quota", action="append", default=[], metavar="KEY=VALUE",
                   help=_QUOTA_HELP)
    p.add_argument("--size-default", default=None, metavar="CLASS")
    p.set_defaults(func=cmd_update)

    p = tsub.add_parser("rm", aliases=["remove"],
                        help="remove tenants (refused while they own objects)")
    p.add_argument("-f", "--force", action="store_true",
                   help="remove everything the tenant owns first: its containers (their VMs "
                        "stop), snapshots, volumes, networks and images")
    p.add_argument("tenants", nargs="+")
    p.set_defaults(func=cmd_rm)

    p = tsub.add_parser("usage", help="a tenant's container-seconds per size class, like a "
                                      "bill",
                        description="Container-seconds per size class (or per vCPUs/memory for "
                                    "containers of no class) of the tenant's containers that "
                                    "ran in the window; a container still running counts up "
                                    "to now. Created and exited containers cost nothing here "
                                    "(they count against quotas only).")
    p.add_argument("name")
    p.add_argument("--since", default="", help="from a unix time, an RFC 3339 date or time, "
                   "or a duration before now (e.g. 24h); default: the beginning")
    p.add_argument("--until", default="", help="up to a time as --since; default: now")
    p.add_argument("--format", default="", choices=["", "json"],
                   help="json: the daemon's answer as it is")
    p.set_defaults(func=cmd_usage)

    key = tsub.add_parser("key", help="a tenant's credentials")
    ksub = key.add_subparsers(dest="key_command", metavar="COMMAND", parser_class=type(top))
    key.set_defaults(func=lambda _ctx, _args: (key.print_help(), 0)[1])
    p = ksub.add_parser("create", help="make a client credential: DIR/ca.pem, cert.pem, "
                                       "key.pem (docker's DOCKER_CERT_PATH layout) and token")
    p.add_argument("name")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="directory to write the credential to (created, mode 0700)")
    p.add_argument("--days", type=int, default=365, help="validity (default %(default)s)")
    p.set_defaults(func=cmd_key_create)
    p = ksub.add_parser("ls", aliases=["list"], help="list a tenant's keys")
    p.add_argument("name")
    p.set_defaults(func=cmd_key_ls)
    p = ksub.add_parser("rm", aliases=["remove"],
                        help="remove a key: refused from its very next request")
    p.add_argument("name")
    p.add_argument("key_ids", nargs="+", metavar="KEYID")
    p.set_defaults(func=cmd_key_rm)


def _register_quota(sub: Any, name: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text, description=(
        "Each quota of your tenant: its limit and what counts against it now (what exists "
        "plus creations in flight; '-' where nothing on this daemon counts it), then the "
        "container-seconds your containers ran. The operator, whose own objects have no "
        "quotas, names a tenant with --tenant."))
    p.add_argument("--tenant", default="", metavar="NAME",
                   help="the tenant to show (the operator only; a tenant sees its own)")
    p.add_argument("--since", default="", help="container-seconds from a unix time, an RFC "
                   "3339 date or time, or a duration before now (e.g. 24h); default: the "
                   "beginning")
    p.add_argument("--format", default="", choices=["", "json"],
                   help="json: the daemon's answer as it is")
    p.set_defaults(func=cmd_quota)


def cmd_quota(ctx: Context, args: argparse.Namespace) -> int:
    import time

    from steelcup.cli.commands.containers import parse_since
    from steelcup.cli.format import table

    try:
        query = {k: v for k, v in (("tenant", args.tenant),
                                   ("since", parse_since(args.since, time.time()))) if v}
        answer = ctx.client().get_json("/steelcup/quotas", query or None)
    except SteelcupError as exc:
        report(exc)
        return 1
    if args.format == "json":
        print(json.dumps(answer, indent=4))
        return 0
    print(f"tenant {answer['Tenant']} (default size {answer['SizeDefault']})")
    rows = [[q["Name"], str(q["Limit"]), "-" if q["Used"] is None else str(q["Used"])]
            for q in answer["Quotas"]]
    sys.stdout.write(table(["QUOTA", "LIMIT", "USED"], rows))
    usage = answer.get("Usage")
    if usage is not None:
        print(f"container-seconds since {usage['Since'] or 'the beginning'}: "
              f"{usage['TotalSeconds']}")
    return 0


def _base(name: str) -> str:
    return f"/steelcup/tenants/{path_quote(name)}"


def cmd_create(ctx: Context, args: argparse.Namespace) -> int:
    return post_and_print(ctx, "/steelcup/tenants", {
        "Name": args.name, "Quotas": args.quota, "SizeDefault": args.size_default})


def cmd_ls(ctx: Context, args: argparse.Namespace) -> int:
    from steelcup.cli.format import table

    rows = ctx.client().get_json("/steelcup/tenants")
    if args.quiet:
        for t in rows:
            print(t["Name"])
        return 0
    sys.stdout.write(table(
        ["NAME", "SIZE", "CONTAINERS", "CPUS", "MEMORY", "CREATED"],
        [[t["Name"], t["SizeDefault"], str(t["Quotas"]["containers"]),
          str(t["Quotas"]["cpus"]), f"{t['Quotas']['memory_mib']}MiB", t["Created"]]
         for t in rows]))
    return 0


def cmd_inspect(ctx: Context, args: argparse.Namespace) -> int:
    return inspect_each(ctx, [_base(n) for n in args.tenants], args.format)


def cmd_update(ctx: Context, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"Quotas": args.quota}
    if args.size_default is not None:
        body["SizeDefault"] = args.size_default
    return post_and_print(ctx, _base(args.name) + "/update", body)


def cmd_usage(ctx: Context, args: argparse.Namespace) -> int:
    import time

    from steelcup.cli.commands.containers import parse_since
    from steelcup.cli.format import table

    now = time.time()
    try:
        query = {k: v for k, v in (("since", parse_since(args.since, now)),
                                   ("until", parse_since(args.until, now))) if v}
        usage = ctx.client().get_json(_base(args.name) + "/usage", query or None)
    except SteelcupError as exc:
        report(exc)
        return 1
    if args.format == "json":
        print(json.dumps(usage, indent=4))
        return 0
    rows = [[line["Size"] or "-", str(line["Cpus"]), f"{line['MemoryMiB']}MiB",
             str(line["Containers"]), str(line["Seconds"])] for line in usage["Lines"]]
    rows.append(["TOTAL", "", "", "", str(usage["TotalSeconds"])])
    window = f"{usage['Since'] or 'the beginning'} .. {usage['Until'] or 'now'}"
    print(f"tenant {usage['Tenant']}, {window}")
    sys.stdout.write(table(["CLASS", "VCPUS", "MEMORY", "CONTAINERS", "CONTAINER-SECONDS"],
                           rows))
    return 0


def cmd_rm(ctx: Context, args: argparse.Namespace) -> int:
    return delete_each(ctx, args.tenants, _base, {"force": True} if args.force else None)


def _write(path: Path, text: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def cmd_key_create(ctx: Context, args: argparse.Namespace) -> int:
    out_dir = Path(args.out)
    if out_dir.exists() and any(out_dir.iterdir()):
        print(f"steelcup: {out_dir} is not empty: refusing to overwrite a credential",
              file=sys.stderr)
        return 1
    try:
        key = ctx.client().post_json(_base(args.name) + "/keys", json_body={"Days": args.days})
    except SteelcupError as exc:
        report(exc)
        return 1
    out_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(out_dir, 0o700)
    _write(out_dir / "ca.pem", key["Ca"], 0o644)
    _write(out_dir / "cert.pem", key["Cert"], 0o644)
    _write(out_dir / "key.pem", key["Key"], 0o600)
    _write(out_dir / "token", key["Token"] + "\n", 0o600)
    print(key["KeyId"])
    print(f"credential for tenant {args.name} in {out_dir} (valid until {key['NotAfter']}); "
          f"use it with DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH={out_dir}", file=sys.stderr)
    return 0


def cmd_key_ls(ctx: Context, args: argparse.Namespace) -> int:
    from steelcup.cli.format import table

    rows = ctx.client().get_json(_base(args.name) + "/keys")
    sys.stdout.write(table(["KEY ID", "CREATED", "NOT AFTER"],
                           [[k["KeyId"], k["Created"], k["NotAfter"]] for k in rows]))
    return 0


def cmd_key_rm(ctx: Context, args: argparse.Namespace) -> int:
    return delete_each(ctx, args.key_ids,
                       lambda key_id: _base(args.name) + f"/keys/{path_quote(key_id)}")
