"""Registry and archive commands: pull, push, login, logout, save, history, image inspect/prune."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from typing import IO, Any

from steelcup.cli.client import path_quote
from steelcup.cli.context import Context, report
from steelcup.errors import InvalidArgument, SteelcupError


def register(sub: Any, name: str, help_text: str) -> None:
    """Add the parser of command `name` (one of this module's rows in `commands.COMMANDS`)."""
    if name == "pull":
        p = sub.add_parser(name, help=help_text)
        p.add_argument("-q", "--quiet", action="store_true", help="only print the image name")
        p.add_argument("--platform", default="", help="os/arch[/variant] (default linux/amd64)")
        p.add_argument("image", metavar="NAME[:TAG|@DIGEST]")
        p.set_defaults(func=cmd_pull)
    elif name == "push":
        p = sub.add_parser(name, help=help_text)
        p.add_argument("-q", "--quiet", action="store_true", help="suppress progress output")
        p.add_argument("image", metavar="NAME[:TAG]")
        p.set_defaults(func=cmd_push)
    elif name == "login":
        p = sub.add_parser(name, help=help_text)
        p.add_argument("-u", "--username", default="")
        p.add_argument("-p", "--password", default=None)
        p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
        p.add_argument("server", nargs="?", default="docker.io", metavar="SERVER")
        p.set_defaults(func=cmd_login)
    elif name == "logout":
        p = sub.add_parser(name, help=help_text)
        p.add_argument("server", nargs="?", default="docker.io", metavar="SERVER")
        p.set_defaults(func=cmd_logout)
    elif name == "save":
        p = sub.add_parser(name, help=help_text)
        p.add_argument("-o", "--output", default=None, help="write to a file instead of STDOUT")
        p.add_argument("images", nargs="+", metavar="IMAGE")
        p.set_defaults(func=cmd_save)
    elif name == "history":
        p = sub.add_parser(name, help=help_text)
        _history_args(p)
    elif name == "image":
        image = sub.add_parser(name, help=help_text)
        isub = image.add_subparsers(dest="image_command", metavar="COMMAND")
        p = isub.add_parser("inspect", help="display detailed information on images")
        p.add_argument("-f", "--format", default=None,
                       help="Go-template subset over each image's inspect object "
                            "({{.Id}}, {{.Size}}, {{json .Config}}, ...)")
        p.add_argument("images", nargs="+", metavar="IMAGE")
        p.set_defaults(func=cmd_image_inspect)
        p = isub.add_parser("prune", help="remove unused images and unreferenced data")
        p.add_argument("-a", "--all", action="store_true", help="remove all unused images")
        p.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")
        p.set_defaults(func=cmd_image_prune)
        p = isub.add_parser("history", help="show the history of an image")
        _history_args(p)
        for same, func in (("pull", cmd_pull), ("push", cmd_push), ("save", cmd_save)):
            p = isub.add_parser(same, help=f"same as `steelcup {same}`")
            if same == "save":
                p.add_argument("-o", "--output", default=None)
                p.add_argument("images", nargs="+", metavar="IMAGE")
            else:
                p.add_argument("-q", "--quiet", action="store_true")
                p.add_argument("image")
                if same == "pull":
                    p.add_argument("--platform", default="")
            p.set_defaults(func=func)
    else:
        raise ValueError(f"{__name__} has no command {name!r}")


def _history_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-H", "--human", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("-q", "--quiet", action="store_true", help="only show image IDs")
    p.add_argument("--no-trunc", action="store_true", help="don't truncate output")
    p.add_argument("image", metavar="IMAGE")
    p.set_defaults(func=cmd_history)


# -- progress rendering ------------------------------------------------------------------------


class ProgressView:
    """Renders docker's JSON progress messages: redrawn per-layer lines on a TTY, else plain."""

    def __init__(self, out: IO[str], tty: bool) -> None:
        self.out = out
        self.tty = tty
        self.order: list[str] = []
        self.lines: dict[str, str] = {}
        self._last_plain: dict[str, str] = {}

    def show(self, msg: dict[str, Any]) -> None:
        status = str(msg.get("status", ""))
        layer = str(msg.get("id", ""))
        progress = str(msg.get("progress", ""))
        if not layer or status.startswith("Pulling from"):
            self._print(f"{layer}: {status}" if layer else status)
            return
        text = f"{layer}: {status} {progress}".rstrip()
        if not self.tty:
            if self._last_plain.get(layer) != status:  # one line per state change
                self._last_plain[layer] = status
                self.out.write(f"{layer}: {status}\n")
                self.out.flush()
            return
        if layer not in self.lines:
            self.order.append(layer)
            self.lines[layer] = text
            self.out.write(text + "\n")
        else:
            self.lines[layer] = text
            up = len(self.order) - self.order.index(layer)
            self.out.write(f"\x1b[{up}A\r\x1b[K{text}\x1b[{up}B\r")
        self.out.flush()

    def _print(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()
        self.order.clear()
        self.lines.clear()


def _stream(ctx: Context, path: str, query: dict[str, Any], quiet: bool) -> tuple[int, list[Any]]:
    """POST and render a progress stream; returns (exit status, aux messages)."""
    view = ProgressView(sys.stderr if quiet else sys.stdout, sys.stdout.isatty() and not quiet)
    aux: list[Any] = []
    with ctx.client().open("POST", path, query) as response:
        for msg in response.iter_json():
            if not isinstance(msg, dict):
                continue
            if msg.get("error") or msg.get("errorDetail"):
                detail = msg.get("errorDetail") or {}
                print(msg.get("error") or detail.get("message", "unknown error"), file=sys.stderr)
                return 1, aux
            if "aux" in msg:
                aux.append(msg["aux"])
                continue
            if not quiet:
                view.show(msg)
    return 0, aux


# -- commands ----------------------------------------------------------------------------------


def _split(ref: str) -> tuple[str, str]:
    if "@" in ref:
        name, _, digest = ref.partition("@")
        return name, digest
    repo, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        return ref, ""
    return repo, tag


def cmd_pull(ctx: Context, args: argparse.Namespace) -> int:
    name, tag = _split(args.image)
    query = {"fromImage": name, "tag": tag or "latest", "platform": args.platform or None}
    try:
        status, _ = _stream(ctx, "/images/create", query, args.quiet)
    except SteelcupError as exc:
        report(exc)
        return 1
    if status == 0:
        print(args.image if ("@" in args.image or tag) else f"{args.image}:latest")
    return status


def cmd_push(ctx: Context, args: argparse.Namespace) -> int:
    name, tag = _split(args.image)
    try:
        status, _ = _stream(
            ctx, f"/images/{path_quote(name)}/push", {"tag": tag or None}, args.quiet
        )
    except SteelcupError as exc:
        report(exc)
        return 1
    return status


def cmd_login(ctx: Context, args: argparse.Namespace) -> int:
    username = args.username or input("Username: ").strip()
    if args.password_stdin or (args.password is None and not sys.stdin.isatty()):
        password = sys.stdin.read().rstrip("\r\n")
    elif args.password is not None:
        print(
            "WARNING! Using --password via the CLI is insecure. Use --password-stdin.",
            file=sys.stderr,
        )
        password = args.password
    else:
        password = getpass.getpass("Password: ")
    if not username or not password:
        report(InvalidArgument("Error: username and password are required"))
        return 1
    body = {"username": username, "password": password, "serveraddress": args.server}
    try:
        reply = ctx.client().post_json("/auth", None, body)
    except SteelcupError as exc:
        report(exc)
        return 1
    print((reply or {}).get("Status", "Login Succeeded"))
    return 0


def cmd_logout(ctx: Context, args: argparse.Namespace) -> int:
    try:
        ctx.client().request("DELETE", "/auth", {"serveraddress": args.server})
    except SteelcupError as exc:
        report(exc)
        return 1
    print(f"Removing login credentials for {args.server}")
    return 0


def cmd_save(ctx: Context, args: argparse.Namespace) -> int:
    if args.output is None and sys.stdout.isatty():
        print(
            "cowardly refusing to save to a terminal. Use the -o flag or redirect", file=sys.stderr
        )
        return 1
    if len(args.images) == 1:
        path, query = f"/images/{path_quote(args.images[0])}/get", None
    else:
        names = "&".join("names=" + path_quote(n) for n in args.images)
        path, query = f"/images/get?{names}", None
    out: IO[bytes] = open(args.output + ".tmp", "wb") if args.output else sys.stdout.buffer  # noqa: SIM115
    ok = False
    try:
        with ctx.client().open("GET", path, query) as response:
            for chunk in response.iter_chunks():
                out.write(chunk)
        ok = True
    except SteelcupError as exc:
        report(exc)
        return 1
    finally:
        if args.output:
            import os

            out.close()
            if ok:
                os.replace(args.output + ".tmp", args.output)
            else:
                with __import__("contextlib").suppress(OSError):
                    os.unlink(args.output + ".tmp")
    return 0


def cmd_history(ctx: Context, args: argparse.Namespace) -> int:
    from steelcup.cli.format import human_size, short_id

    try:
        entries = ctx.client().get_json(f"/images/{path_quote(args.image)}/history")
    except SteelcupError as exc:
        report(exc)
        return 1
    if args.quiet:
        for e in entries:
            print(e["Id"] if args.no_trunc else short_id(e["Id"]))
        return 0
    rows = [("IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT")]
    now = time.time()
    for e in entries:
        image_id = e["Id"] if args.no_trunc or e["Id"] == "<missing>" else short_id(e["Id"])
        created_by = e.get("CreatedBy", "")
        if not args.no_trunc and len(created_by) > 45:
            created_by = created_by[:44] + "…"
        created = _ago(now - e.get("Created", 0)) if args.human else str(e.get("Created"))
        size = human_size(e.get("Size", 0)) if args.human else str(e.get("Size", 0))
        rows.append((image_id, created, created_by, size, e.get("Comment", "")))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("   ".join(r[i].ljust(widths[i]) for i in range(4)) + "   " + r[4])
    return 0


def _ago(seconds: float) -> str:
    for unit, size in (
        ("years", 31536000),
        ("months", 2592000),
        ("weeks", 604800),
        ("days", 86400),
        ("hours", 3600),
        ("minutes", 60),
    ):
        if seconds >= 2 * size:
            return f"{int(seconds // size)} {unit} ago"
    return "Less than a second ago" if seconds < 1 else f"{int(seconds)} seconds ago"


def cmd_image_inspect(ctx: Context, args: argparse.Namespace) -> int:
    results: list[Any] = []
    status = 0
    for name in args.images:
        try:
            results.append(ctx.client().get_json(f"/images/{path_quote(name)}/json"))
        except SteelcupError as exc:
            report(exc)
            status = 1
    if not args.format:
        print(json.dumps(results, indent=4))
        return status
    from steelcup.cli.format import render_template

    try:
        for r in results:
            # docker's {{.ID}} is the image's Id
            print(render_template(args.format.replace("{{.ID}}", "{{.Id}}"), r))
    except InvalidArgument as exc:
        print(f"steelcup: {exc}", file=sys.stderr)
        return 1
    return status


def cmd_image_prune(ctx: Context, args: argparse.Namespace) -> int:
    from steelcup.cli.format import human_size

    if not args.force and sys.stdin.isatty():
        what = "all images without at least one container" if args.all else "all dangling images"
        answer = input(
            f"WARNING! This will remove {what}.\nAre you sure you want to continue? [y/N] "
        )
        if answer.strip().lower() not in ("y", "yes"):
            return 0
    filters = json.dumps({"dangling": ["false" if args.all else "true"]})
    try:
        _, _, body = ctx.client().post("/images/prune", {"filters": filters})
        reply = json.loads(body or b"{}")
    except SteelcupError as exc:
        report(exc)
        return 1
    deleted = reply.get("ImagesDeleted") or []
    if deleted:
        print("Deleted Images:")
        for item in deleted:
            for key, value in item.items():
                print(f"{key.lower()}: {value}")
        print()
    print(f"Total reclaimed space: {human_size(reply.get('SpaceReclaimed', 0))}")
    return 0
