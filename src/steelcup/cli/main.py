"""`steelcup`: a docker-like CLI that speaks only the Docker Engine API to the daemon.

Start-up time is part of every `steelcup run`, so only the invoked command's module is imported
and only its parser built; `steelcup --help` lists the commands from `commands.COMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from steelcup.cli.commands import COMMANDS
from steelcup.cli.context import Context
from steelcup.defaults import default_root, default_socket
from steelcup.errors import DaemonUnavailable, SteelcupError

TYPE_CHECKING = False  # typing costs ~5 ms of every CLI start; only mypy needs it
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import NoReturn

EXIT_CLI_ERROR = 125  # docker's code for "the CLI or daemon failed, not the container"


class _Parser(argparse.ArgumentParser):
    """argparse that fails like docker: message, a hint, exit 125."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"{self.prog}: {message}\nSee '{self.prog} --help'.", file=sys.stderr)
        raise SystemExit(EXIT_CLI_ERROR)


class _ProbeFailed(Exception):
    pass


class _Probe(argparse.ArgumentParser):
    """The top level of the CLI's parser with one catch-all positional: finds the command
    name exactly as the full parser will (global options may come first and take values)."""

    def error(self, message: str) -> NoReturn:
        raise _ProbeFailed(message)


def _add_global_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-H",
        "--host",
        default=None,
        metavar="ADDRESS",
        help="daemon address: unix://PATH, PATH or tcp://HOST:PORT (default: $STEELCUP_HOST, "
        f"else a tcp:// $DOCKER_HOST, else {default_socket()})",
    )
    parser.add_argument("--tls", action="store_true",
                        help="use TLS to a tcp:// daemon (implied by --tlsverify)")
    parser.add_argument("--tlsverify", action="store_true",
                        help="use TLS and verify the daemon (or set $DOCKER_TLS_VERIFY)")
    parser.add_argument("--tlscacert", metavar="FILE", default=None,
                        help="CA the daemon's certificate is checked against "
                        "(default: $DOCKER_CERT_PATH/ca.pem)")
    parser.add_argument("--tlscert", metavar="FILE", default=None,
                        help="client certificate (default: $DOCKER_CERT_PATH/cert.pem)")
    parser.add_argument("--tlskey", metavar="FILE", default=None,
                        help="client key (default: $DOCKER_CERT_PATH/key.pem)")
    parser.add_argument(
        "--root",
        default=None,
        metavar="DIR",
        help=f"state root for an auto-started daemon (default: $STEELCUP_ROOT or {default_root()})",
    )


def invoked_command(argv: Sequence[str]) -> str | None:
    """The command `argv` runs; None if it asks for the top-level help, names no command or
    has a usage error before the command (the full parser then reports it)."""
    probe = _Probe(prog="steelcup", add_help=False)
    probe.add_argument("-h", "--help", action="store_true")  # as add_help=True would
    _add_global_options(probe)
    probe.add_argument("rest", nargs=argparse.PARSER)  # what the subparsers action consumes
    try:
        args, _ = probe.parse_known_args(argv)
    except _ProbeFailed:
        return None
    return None if args.help else str(args.rest[0])


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The CLI's parser. With `command` (a key of COMMANDS) it holds that command's full parser
    and no other, importing only the command's module; without, a one-line entry per command,
    which is all that `steelcup --help` and the "invalid choice" error show."""
    parser = _Parser(
        prog="steelcup",
        description="Run containers, each in its own VM. Speaks the Docker Engine API to "
        "`steelcup daemon` (started automatically when absent).",
    )
    _add_global_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    if command in COMMANDS:
        module_name, help_text = COMMANDS[command]
        module = importlib.import_module(f"steelcup.cli.commands.{module_name}")
        module.register(sub, command, help_text)
    else:
        for name, (_, help_text) in COMMANDS.items():
            sub.add_parser(name, help=help_text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(invoked_command(argv))
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):  # no command, or a group like `image` without one
        (parser if args.command is None else build_parser()).print_help()
        return 0
    from steelcup.cli.endpoint import TlsFlags, resolve

    try:
        endpoint = resolve(args.host, TlsFlags(args.tls, args.tlsverify, args.tlscacert,
                                               args.tlscert, args.tlskey),
                           os.environ, default_socket())
    except SteelcupError as exc:
        print(f"steelcup: {exc}", file=sys.stderr)
        return EXIT_CLI_ERROR
    ctx = Context(
        socket=endpoint.unix_path or default_socket(),
        endpoint=endpoint,
        root=args.root or default_root(),
        autostart=os.environ.get("STEELCUP_NO_AUTOSTART") != "1",
        root_given=bool(args.root or os.environ.get("STEELCUP_ROOT")),
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
