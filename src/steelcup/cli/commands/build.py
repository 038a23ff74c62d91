"""`steelcup build`: send a build context to the daemon's classic builder and show its steps.

The context directory goes as a tar without what its .dockerignore leaves out (the Dockerfile
and .dockerignore always go: the daemon reads them, then drops them too if they are ignored).
A Dockerfile outside the context, or `-f -`, travels inside the tar under a private name.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import secrets
import stat
import sys
import tarfile
import tempfile
from typing import IO, Any, BinaryIO, cast

from steelcup.cli.context import Context, report
from steelcup.errors import InvalidArgument, SteelcupError

_EPILOG = """\
Every RUN step runs in a fresh VM; COPY, ADD and the metadata instructions do not need one.
Steps whose inputs did not change come from the build cache ("Using cache"); --no-cache
runs them all again. Refused: ADD of URLs, remote contexts, platforms other than
linux/amd64, RUN --mount. See docs/build.md.

examples:
  steelcup build -t app:1 .
  steelcup build -f docker/Dockerfile --build-arg VERSION=2 --target runtime -t app:2 .
  tar c . | steelcup build -t app:3 -
"""


def register(sub: Any, name: str, help_text: str) -> None:
    """Add the parser of `build` (its row in `commands.COMMANDS`)."""
    if name != "build":
        raise ValueError(f"{__name__} has no command {name!r}")
    p = sub.add_parser(name, help=help_text, description=help_text, epilog=_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", metavar="PATH|-",
                   help="the build context: a directory, or - for a tar on STDIN")
    p.add_argument("-t", "--tag", action="append", default=[], metavar="NAME[:TAG]",
                   help="name the image (repeatable)")
    p.add_argument("-f", "--file", default="", metavar="FILE",
                   help="the Dockerfile (default: PATH/Dockerfile; - reads STDIN)")
    p.add_argument("--build-arg", action="append", default=[], metavar="NAME[=VALUE]",
                   help="set a build argument (NAME alone: from the environment)")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                   help="add a label to the image")
    p.add_argument("--target", default="", help="build the stages up to this one only")
    p.add_argument("--no-cache", action="store_true", help="run every step, cached or not")
    p.add_argument("--pull", action="store_true", help="pull the base images even if present")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="print only the image id when the build succeeds")
    p.add_argument("--platform", default="", help="only linux/amd64 is supported")
    p.add_argument("--network", default="", help="the network RUN steps use")
    p.add_argument("--add-host", action="append", default=[], metavar="HOST:IP",
                   help="an /etc/hosts line for RUN steps")
    p.set_defaults(func=cmd_build)


def parse_pairs(values: list[str], what: str, *, from_env: bool) -> dict[str, str | None]:
    """`NAME=VALUE` flags into a map; a bare NAME takes the environment's value (None: unset,
    so the Dockerfile's default stays) when `from_env`, else is an error."""
    out: dict[str, str | None] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not name:
            raise InvalidArgument(f"invalid {what} {item!r}: the name is empty")
        if sep:
            out[name] = value
        elif from_env:
            out[name] = os.environ.get(name)
        else:
            out[name] = ""
    return out


def write_context(out: IO[bytes], root: str, dockerfile: str,
                  dockerfile_text: bytes | None) -> str:
    """Tar the context directory `root` into `out` (without what .dockerignore leaves out);
    returns the Dockerfile's name inside it for the daemon's `dockerfile` parameter."""
    from steelcup.build.ignore import IgnoreRules

    try:
        with open(os.path.join(root, ".dockerignore"), encoding="utf-8") as f:
            rules = IgnoreRules.parse(f.read())
    except FileNotFoundError:
        rules = IgnoreRules([])
    keep = {".dockerignore", dockerfile}
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(root):
            rel_dir = os.path.relpath(dirpath, root)
            rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
            kept_dirs = []
            for name in sorted(dirnames):
                rel = rel_dir + name
                full = os.path.join(dirpath, name)
                if rules.ignored(rel) and not rules.has_exclusions:
                    continue
                if os.path.islink(full):
                    if not rules.ignored(rel):
                        tar.add(full, rel, recursive=False)
                    continue
                if not rules.ignored(rel):
                    tar.add(full, rel, recursive=False)
                kept_dirs.append(name)
            dirnames[:] = kept_dirs
            for name in sorted(filenames):
                rel = rel_dir + name
                if rules.ignored(rel) and rel not in keep:
                    continue
                full = os.path.join(dirpath, name)
                mode = os.lstat(full).st_mode
                if stat.S_ISREG(mode) or stat.S_ISLNK(mode):
                    tar.add(full, rel, recursive=False)
        if dockerfile_text is None:
            return dockerfile
        name = f".dockerfile.{secrets.token_hex(10)}"
        info = tarfile.TarInfo(name)
        info.size = len(dockerfile_text)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(dockerfile_text))
        return name


def render(messages: Any, *, quiet: bool) -> int:
    """Print the build's JSON messages; the exit status is a failed RUN's code (1 for other
    errors), as docker's."""
    for msg in messages:
        if not isinstance(msg, dict):
            continue
        if msg.get("error") or msg.get("errorDetail"):
            detail = msg.get("errorDetail") or {}
            print(msg.get("error") or detail.get("message", "unknown error"), file=sys.stderr)
            code = detail.get("code")
            return code if isinstance(code, int) and 0 < code < 256 else 1
        if "stream" in msg and (not quiet or str(msg["stream"]).startswith("sha256:")):
            sys.stdout.write(str(msg["stream"]))
            sys.stdout.flush()
    return 0


def cmd_build(ctx: Context, args: argparse.Namespace) -> int:
    try:
        build_args = parse_pairs(args.build_arg, "build argument", from_env=True)
        labels = parse_pairs(args.label, "label", from_env=False)
        query: dict[str, Any] = {
            "t": tuple(args.tag) or None,
            "buildargs": json.dumps(build_args) if build_args else None,
            "labels": json.dumps(labels) if labels else None,
            "target": args.target or None,
            "nocache": args.no_cache or None,
            "pull": args.pull or None,
            "q": args.quiet or None,
            "platform": args.platform or None,
            "networkmode": args.network or None,
            "extrahosts": ",".join(args.add_host) or None,
            "rm": True,
        }
        with tempfile.TemporaryFile() as spool:
            if args.path == "-":
                if args.file == "-":
                    raise InvalidArgument("the context and the Dockerfile cannot both be STDIN")
                source: BinaryIO = sys.stdin.buffer
                query["dockerfile"] = args.file or None
            else:
                if not os.path.isdir(args.path):
                    raise InvalidArgument(f"unable to prepare context: path {args.path!r} not "
                                          "found or not a directory")
                query["dockerfile"] = _pack(spool, args.path, args.file)
                spool.seek(0)
                source = cast(BinaryIO, spool)
            if not args.quiet:
                print("Sending build context to steelcup daemon", file=sys.stderr)
            response = ctx.client().upload("/build", source, query)
            with response:
                return render(response.iter_json(), quiet=args.quiet)
    except SteelcupError as exc:
        report(exc)
        return 1


def _pack(spool: IO[bytes], root: str, file_arg: str) -> str:
    """The context tar; the `dockerfile` parameter naming the Dockerfile inside it."""
    if file_arg == "-":
        return write_context(spool, root, "", sys.stdin.buffer.read())
    if not file_arg:
        return write_context(spool, root, "Dockerfile", None)
    real_root = os.path.realpath(root)
    real_file = os.path.realpath(file_arg)
    if os.path.commonpath([real_root, real_file]) == real_root:
        return write_context(spool, root, os.path.relpath(real_file, real_root)
                             .replace(os.sep, "/"), None)
    try:
        with open(file_arg, "rb") as f:
            text = f.read()
    except OSError as exc:
        raise InvalidArgument(f"unable to read the Dockerfile {file_arg}: {exc.strerror}") from exc
    return write_context(spool, root, "", text)
