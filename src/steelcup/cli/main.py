"""`steelcup`: a docker-like CLI that speaks only the Docker Engine API to the daemon."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from steelcup.cli.commands import (
    containers,
    fs,
    images,
    images_registry,
    network,
    system,
    volume,
)
from steelcup.cli.context import Context
from steelcup.config import default_root, default_socket
from steelcup.errors import DaemonUnavailable, SteelcupError

EXIT_CLI_ERROR = 125  # docker's code for "the CLI or daemon failed, not the container"


class _Parser(argparse.ArgumentParser):
    """argparse that fails like docker: message, a hint, exit 125."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"{self.prog}: {message}\nSee '{self.prog} --help'.", file=sys.stderr)
        raise SystemExit(EXIT_CLI_ERROR)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="steelcup",
        description="Run containers, each in its own VM. Speaks the Docker Engine API to "
        "`steelcup daemon` (started automatically when absent).",
    )
    parser.add_argument(
        "-H",
        "--host",
        default=None,
        metavar="SOCKET",
        help=f"daemon socket: unix://PATH or PATH (default: $STEELCUP_HOST or {default_socket()})",
    )
    parser.add_argument(
        "--root",
        default=None,
        metavar="DIR",
        help=f"state root for an auto-started daemon (default: $STEELCUP_ROOT or {default_root()})",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    containers.register(sub)
    images.register(sub)
    images_registry.register(sub)
    system.register(sub)
    fs.register(sub)
    network.register(sub)
    volume.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    socket_path = Path(args.host.removeprefix("unix://")) if args.host else default_socket()
    root = Path(args.root) if args.root else default_root()
    ctx = Context(
        socket=socket_path, root=root, autostart=os.environ.get("STEELCUP_NO_AUTOSTART") != "1"
    )
    try:
        return int(args.func(ctx, args))
    except DaemonUnavailable as exc:
        print(f"steelcup: {exc}", file=sys.stderr)
        return EXIT_CLI_ERROR
    except SteelcupError as exc:
        print(f"steelcup: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
