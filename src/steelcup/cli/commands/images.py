"""Image commands: images, rmi, tag, load, import."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import IO, Any, BinaryIO

from steelcup.cli.client import StreamedResponse, path_quote
from steelcup.cli.context import Context, report
from steelcup.errors import InvalidArgument, SteelcupError, Unsupported


def register(sub: Any, name: str, help_text: str) -> None:
    """Add the parser of command `name` (one of this module's rows in `commands.COMMANDS`)."""
    if name == "images":
        p = sub.add_parser(name, help=help_text)
        p.add_argument("-a", "--all", action="store_true", help="show all images")
        p.add_argument("-q", "--quiet", action="store_true", help="only show image IDs")
        p.add_argument("--no-trunc", action="store_true", help="don't truncate output")
        p.add_argument("reference", nargs="?", default=None, metavar="REPOSITORY[:TAG]")
        p.set_defaults(func=cmd_images)
    elif name == "rmi":
        p = sub.add_parser(name, help=help_text)
        p.add_argument("-f", "--force", action="store_true", help="force removal")
        p.add_argument("--no-prune", action="store_true", help="do not delete untagged parents")
        p.add_argument("images", nargs="+", metavar="IMAGE")
        p.set_defaults(func=cmd_rmi)
    elif name == "tag":
        p = sub.add_parser(name, help=help_text)
        p.add_argument("source", metavar="SOURCE_IMAGE[:TAG]")
        p.add_argument("target", metavar="TARGET_IMAGE[:TAG]")
        p.set_defaults(func=cmd_tag)
    elif name == "load":
        p = sub.add_parser(name, help=help_text)
        p.add_argument("-i", "--input", default=None, help="read from a tar file instead of STDIN")
        p.add_argument("-q", "--quiet", action="store_true", help="suppress the load output")
        p.set_defaults(func=cmd_load)
    elif name == "import":
        p = sub.add_parser(name, help=help_text)
        p.add_argument("file", metavar="file|-", help="tarball path, or - for STDIN")
        p.add_argument("reference", nargs="?", default="", metavar="REPOSITORY[:TAG]")
        p.add_argument("-m", "--message", default="", help="commit message for the imported image")
        p.set_defaults(func=cmd_import)
    else:
        raise ValueError(f"{__name__} has no command {name!r}")


def split_reference(ref: str) -> tuple[str, str]:
    """'repo:tag' -> (repo, tag); a ':' in the registry host part is not a tag."""
    if "@" in ref:
        return ref, ""
    repo, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        return ref, ""
    return repo, tag


def cmd_images(ctx: Context, args: argparse.Namespace) -> int:
    from steelcup.cli.commands.containers import filters_json
    from steelcup.cli.format import images_table, short_id

    query: dict[str, Any] = {"all": args.all}
    if args.reference:
        query["filters"] = filters_json([f"reference={args.reference}"])
    try:
        images = ctx.client().get_json("/images/json", query)
    except SteelcupError as exc:
        report(exc)
        return 1
    if args.quiet:
        seen: set[str] = set()
        for image in images:
            image_id = str(image.get("Id", ""))
            image_id = image_id if args.no_trunc else short_id(image_id)
            if image_id not in seen:
                seen.add(image_id)
                print(image_id)
        return 0
    sys.stdout.write(images_table(images, now=time.time(), no_trunc=args.no_trunc))
    return 0


def cmd_rmi(ctx: Context, args: argparse.Namespace) -> int:
    client = ctx.client()
    status = 0
    for name in args.images:
        try:
            _, _, body = client.delete(
                f"/images/{path_quote(name)}",
                {"force": args.force or None, "noprune": args.no_prune or None},
            )
            import json

            for item in json.loads(body or b"[]"):
                for key in ("Untagged", "Deleted"):
                    if key in item:
                        print(f"{key}: {item[key]}")
        except SteelcupError as exc:
            report(exc)
            status = 1
        except ValueError:
            pass
    return status


def cmd_tag(ctx: Context, args: argparse.Namespace) -> int:
    repo, tag = split_reference(args.target)
    try:
        ctx.client().post(
            f"/images/{path_quote(args.source)}/tag", {"repo": repo, "tag": tag or None}
        )
    except SteelcupError as exc:
        report(exc)
        return 1
    return 0


class Progress:
    """A one-line upload progress bar on a terminal (stderr), redrawn at most 10 times a second."""

    def __init__(self, total: int | None, out: IO[str], label: str = "Uploading") -> None:
        self.total = total
        self.out = out
        self.label = label
        self._last = 0.0
        self._shown = False

    def update(self, sent: int, *, force: bool = False) -> None:
        from steelcup.cli.format import human_size

        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        if self.total:
            width = 40
            filled = min(width, int(width * sent / self.total))
            bar = "=" * max(0, filled - 1) + (">" if filled < width else "=")
            text = f"{self.label} [{bar.ljust(width)}] {human_size(sent)}/{human_size(self.total)}"
        else:
            text = f"{self.label} {human_size(sent)}"
        self.out.write("\r\x1b[K" + text)
        self.out.flush()
        self._shown = True

    def finish(self, sent: int) -> None:
        if self._shown or sent:
            self.update(sent, force=True)
            self.out.write("\n")
            self.out.flush()


def _print_messages(response: StreamedResponse, *, quiet: bool) -> int:
    """Render docker's JSON message stream ({"stream"|"status"|"error"...}); 1 on error."""
    for msg in response.iter_json():
        if not isinstance(msg, dict):
            continue
        if msg.get("error") or msg.get("errorDetail"):
            detail = msg.get("errorDetail") or {}
            print(msg.get("error") or detail.get("message", "unknown error"), file=sys.stderr)
            return 1
        if quiet:
            continue
        if "stream" in msg:
            sys.stdout.write(str(msg["stream"]))
        elif "status" in msg:
            prefix = f"{msg['id']}: " if msg.get("id") else ""
            print(f"{prefix}{msg['status']} {msg.get('progress', '')}".rstrip())
    sys.stdout.flush()
    return 0


def _upload(
    ctx: Context, path: str, source: BinaryIO, query: dict[str, Any], *, quiet: bool
) -> int:
    total: int | None = None
    try:
        st = os.fstat(source.fileno())
        import stat

        if stat.S_ISREG(st.st_mode):
            total = st.st_size
    except (OSError, ValueError, AttributeError):
        pass
    progress = Progress(total, sys.stderr) if sys.stderr.isatty() and not quiet else None
    sent = [0]

    def on_progress(n: int) -> None:
        sent[0] = n
        if progress is not None:
            progress.update(n)

    try:
        response = ctx.client().upload(path, source, query, progress=on_progress)
    except SteelcupError as exc:
        if progress is not None:
            progress.finish(sent[0])
        report(exc)
        return 1
    if progress is not None:
        progress.finish(sent[0])
    with response:
        try:
            return _print_messages(response, quiet=quiet)
        except SteelcupError as exc:
            report(exc)
            return 1


def cmd_load(ctx: Context, args: argparse.Namespace) -> int:
    if args.input:
        try:
            source: BinaryIO = open(args.input, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            print(f"open {args.input}: {exc.strerror}", file=sys.stderr)
            return 1
    else:
        if sys.stdin.isatty():
            print("requested load from stdin, but stdin is empty", file=sys.stderr)
            return 1
        source = sys.stdin.buffer
    try:
        return _upload(ctx, "/images/load", source, {"quiet": args.quiet}, quiet=args.quiet)
    finally:
        if args.input:
            source.close()


def cmd_import(ctx: Context, args: argparse.Namespace) -> int:
    if "://" in args.file:
        report(Unsupported("importing from a URL is not supported; download the file first"))
        return 1
    if args.reference and args.reference != args.reference.strip():
        report(InvalidArgument(f"invalid reference format: {args.reference!r}"))
        return 1
    query = {"fromSrc": "-", "repo": args.reference or None, "message": args.message or None}
    if args.file == "-":
        return _upload(ctx, "/images/create", sys.stdin.buffer, query, quiet=False)
    try:
        source = open(args.file, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        print(f"open {args.file}: {exc.strerror}", file=sys.stderr)
        return 1
    with source:
        return _upload(ctx, "/images/create", source, query, quiet=False)
