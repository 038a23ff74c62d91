"""`steelcup func create|ls|inspect|rm|update|call|logs`: HTTP-triggered containers
(docs/funcs.md). A func's container is given with `run`'s own flags, turned into the same
create body `run` sends."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from steelcup.cli.client import path_quote
from steelcup.cli.context import Context, delete_each, inspect_each, report
from steelcup.errors import InvalidArgument, SteelcupError

EXIT_NO_RESULT = 125  # the call did not end with an exit code of its own (timeout, refusal)


def _f(name: str) -> str:
    return f"/funcs/{path_quote(name)}"


def _add_limit_flags(p: argparse.ArgumentParser, *, defaults: bool) -> None:
    p.add_argument("--timeout", default="300s" if defaults else None, metavar="DURATION",
                   help="a call running longer is killed, its VM with it (default 300s)")
    p.add_argument("--concurrency", type=int, default=None, metavar="N",
                   help="calls of this func running at once (default 4); more wait")
    p.add_argument("--max-input", default=None, metavar="SIZE",
                   help="largest call input (request body; default 1m)")
    p.add_argument("--max-output", default=None, metavar="SIZE",
                   help="largest call output (stdout; default 1m)")
    p.add_argument("--queue", type=int, default=None, metavar="N",
                   help="calls that may wait for a slot (default 100); more are refused (429)")


def register(sub: Any, name: str, help_text: str) -> None:
    """Add the parser of command `name` (this module's row in `commands.COMMANDS`)."""
    if name != "func":
        raise ValueError(f"{__name__} has no command {name!r}")
    from steelcup.cli.commands.containers import add_container_flags

    top = sub.add_parser(name, help=help_text)
    fsub = top.add_subparsers(dest="func_command", metavar="COMMAND", parser_class=type(top))
    top.set_defaults(func=lambda _ctx, _args: (top.print_help(), 0)[1])

    p = fsub.add_parser("create", help="create a func: IMAGE [COMMAND] run once per call",
                        add_help=False,
                        description="Create a func (--name NAME): each call runs COMMAND in a "
                                    "fresh container of IMAGE, the call's body as its stdin, "
                                    "its stdout as the answer. Takes `run`'s flags.")
    p.add_argument("--help", action="help", help="show this help message and exit")
    p.add_argument("--auth", choices=["secret", "token"], default="secret",
                   help="who may call it at the gateway: whoever has its secret (in the URL), "
                        "or a bearer token of its tenant (default secret)")
    _add_limit_flags(p, defaults=True)
    add_container_flags(p, run=False)
    p.set_defaults(func=cmd_create)

    p = fsub.add_parser("ls", aliases=["list"], help="list funcs")
    p.add_argument("-q", "--quiet", action="store_true", help="only names")
    p.set_defaults(func=cmd_ls)

    p = fsub.add_parser("inspect", help="show funcs in detail (their secret and call path)")
    p.add_argument("-f", "--format", default="")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.set_defaults(func=cmd_inspect)

    p = fsub.add_parser("rm", aliases=["remove"], help="remove funcs (running calls finish)")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.set_defaults(func=cmd_rm)

    p = fsub.add_parser("update", help="change a func's limits or make it a new secret")
    _add_limit_flags(p, defaults=False)
    p.add_argument("--new-secret", action="store_true",
                   help="replace its secret (the old call path stops working)")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_update)

    p = fsub.add_parser("call", help="call a func: stdin is the input, its output to stdout "
                                     "and its exit code as ours")
    p.add_argument("--async", dest="async_", action="store_true",
                   help="do not wait: print the call id (see `func logs --call ID`)")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_call)

    p = fsub.add_parser("logs", help="the recent calls of a func and their output")
    p.add_argument("--call", default="", metavar="ID", help="only this call (id or prefix)")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.add_argument("-f", "--follow", action="store_true",
                   help="then each call as it finishes (with --call: wait for that call)")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_logs)


def limits_body(args: argparse.Namespace) -> dict[str, Any]:
    """The limit fields of a create or update body from the flags given."""
    from steelcup.cli.createspec import parse_duration, parse_memory

    body: dict[str, Any] = {}
    if args.timeout is not None:
        body["Timeout"] = parse_duration(args.timeout, "--timeout") / 1e9
    if args.concurrency is not None:
        body["Concurrency"] = args.concurrency
    if args.max_input is not None:
        body["MaxInput"] = parse_memory(args.max_input)
    if args.max_output is not None:
        body["MaxOutput"] = parse_memory(args.max_output)
    if args.queue is not None:
        body["Queue"] = args.queue
    return body


def create_request(args: argparse.Namespace) -> dict[str, Any]:
    """`func create`'s body: the name, the limits, and as Spec the create body `run -i`
    would send for the same flags."""
    from steelcup.cli import netflags
    from steelcup.cli.commands.containers import _options
    from steelcup.cli.createspec import create_body

    if not args.name:
        raise InvalidArgument("func create needs --name NAME")
    if args.tty:
        raise InvalidArgument("a func has no terminal: -t is not allowed")
    args.interactive = True  # the call's input is the container's stdin
    opts = _options(args, run=True)
    opts.name = ""
    spec = create_body(opts, for_run=True)
    netflags.apply(spec, args)
    return {"Name": args.name, "Auth": args.auth, "Spec": spec, **limits_body(args)}


def cmd_create(ctx: Context, args: argparse.Namespace) -> int:
    try:
        out = ctx.client().post_json("/funcs", json_body=create_request(args))
    except SteelcupError as exc:
        report(exc)
        return 1
    print(out["Name"])
    if out.get("CallPath"):
        print(f"call path: {out['CallPath']}", file=sys.stderr)
    return 0


def cmd_ls(ctx: Context, args: argparse.Namespace) -> int:
    from steelcup.cli.format import table

    funcs = ctx.client().get_json("/funcs")
    if args.quiet:
        for f in funcs:
            print(f["Name"])
        return 0
    rows = [[f["Name"], f["Image"], f["Auth"], f"{f['Timeout']:g}s", str(f["Concurrency"]),
             str(f["Running"]), str(f["Queued"]), f["Created"][:19]] for f in funcs]
    sys.stdout.write(table(["NAME", "IMAGE", "AUTH", "TIMEOUT", "CONCURRENCY", "RUNNING",
                            "QUEUED", "CREATED"], rows))
    return 0


def cmd_inspect(ctx: Context, args: argparse.Namespace) -> int:
    return inspect_each(ctx, [_f(n) for n in args.names], args.format)


def cmd_rm(ctx: Context, args: argparse.Namespace) -> int:
    return delete_each(ctx, args.names, _f)


def cmd_update(ctx: Context, args: argparse.Namespace) -> int:
    body = limits_body(args)
    if args.new_secret:
        body["NewSecret"] = True
    if not body:
        print("func update: nothing to change (give a limit flag or --new-secret)",
              file=sys.stderr)
        return 1
    try:
        out = ctx.client().post_json(f"{_f(args.name)}/update", json_body=body)
    except SteelcupError as exc:
        report(exc)
        return 1
    print(out["Name"])
    return 0


def cmd_call(ctx: Context, args: argparse.Namespace) -> int:
    data = sys.stdin.buffer.read()
    query = {"async": "1"} if args.async_ else None
    try:
        with ctx.client().open("POST", f"{_f(args.name)}/call", query, body=data,
                               headers={"Content-Type": "application/octet-stream"},
                               check=False) as response:
            body = response.read()
            status, headers = response.status, response.headers
    except SteelcupError as exc:
        report(exc)
        return EXIT_NO_RESULT
    if args.async_ and status == 202:
        print(json.loads(body)["CallId"])
        return 0
    code = headers.get("steelcup-exit-code", "")
    if status == 200:
        sys.stdout.buffer.write(body)
        sys.stdout.buffer.flush()
        return int(code) if code.lstrip("-").isdigit() else 0
    try:
        message = json.loads(body).get("message") or body.decode("utf-8", "replace")
    except ValueError:
        message = body.decode("utf-8", "replace")
    print(f"Error response from daemon: {message}", file=sys.stderr)
    return int(code) if code.isdigit() and int(code) else EXIT_NO_RESULT


def _row(c: dict[str, Any]) -> list[str]:
    last = c["Error"] or (c["Stderr"].strip().splitlines() or [""])[-1]
    return [c["Id"][:12], c["Status"], "" if c["ExitCode"] is None else str(c["ExitCode"]),
            c["Created"][:19], c["Finished"][:19], str(c["InputBytes"]), str(c["OutputBytes"]),
            last[:60]]


_HEADERS = ["CALL", "STATUS", "EXIT", "CREATED", "FINISHED", "IN", "OUT", "ERROR / LAST STDERR"]


def _show(call: dict[str, Any], args: argparse.Namespace) -> None:
    if args.format == "json":
        print(json.dumps(call))
    elif args.call:
        sys.stdout.write(call["Stdout"])
        sys.stdout.flush()
        sys.stderr.write(call["Stderr"])
    else:
        print("   ".join(_row(call)), flush=True)


def cmd_logs(ctx: Context, args: argparse.Namespace) -> int:
    from steelcup.cli.format import table

    query = {"call": args.call} if args.call else {}
    try:
        if args.follow:
            if not args.call and args.format == "table":
                print("   ".join(_HEADERS))
            for call in ctx.client().stream_json("GET", f"{_f(args.name)}/logs",
                                                 {**query, "follow": "1"}):
                _show(call, args)
                if args.call:
                    return 0  # the one call asked for
            return 0
        calls = ctx.client().get_json(f"{_f(args.name)}/logs", query or None)
    except SteelcupError as exc:
        report(exc)
        return 1
    except KeyboardInterrupt:
        return 130
    if args.format == "json":
        print(json.dumps(calls, indent=2))
    elif args.call:
        for call in calls:
            _show(call, args)
    else:
        sys.stdout.write(table(_HEADERS, [_row(c) for c in calls]))
    return 0
