"""`steelcup`: a docker-like CLI that speaks only the Docker Engine API to the daemon.

Start-up time is part of every `steelcup run`, so only the invoked command's module is imported
and only its parser built; `steelcup --help` lists the commands from `commands.COMMANDS`.
docs/benchmarks.md, "CLI start-up (issue 19)", has what each of the rest costs.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys

from steelcup import __version__
from steelcup.cli.commands import COMMANDS
from steelcup.cli.context import Context
from steelcup.defaults import default_root, default_socket
from steelcup.errors import DaemonUnavailable, SteelcupError

TYPE_CHECKING = False  # typing costs ~5 ms of every CLI start; only mypy needs it
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, NoReturn

EXIT_CLI_ERROR = 125  # docker's code for "the CLI or daemon failed, not the container"


def terminal_columns() -> int:
    """`shutil.get_terminal_size().columns`: $COLUMNS, else the width of the terminal on
    stdout, else 80."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        stdout = sys.__stdout__  # None when started without one
        try:
            columns = os.get_terminal_size(stdout.fileno()).columns if stdout else 0
        except (AttributeError, ValueError, OSError):  # no fileno, closed, not a terminal
            columns = 0
    return columns or 80


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter, given the width: left to find it itself, argparse imports shutil
    (and with it zlib, bz2, lzma and fnmatch: ~1.5 ms of every start)."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position,
                         terminal_columns() - 2 if width is None else width)  # as argparse


class _Parser(argparse.ArgumentParser):
    """argparse that fails like docker: message, a hint, exit 125."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)  # argparse makes subparsers so
        super().__init__(*args, **kwargs)

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
    if argv and not argv[0].startswith("-"):
        return argv[0]  # what probed_command finds, without building a parser (~0.3 ms)
    return probed_command(argv)


def probed_command(argv: Sequence[str]) -> str | None:
    """`invoked_command` by parsing: the global options (which may take values) come first."""
    probe = _Probe(prog="steelcup", add_help=False, formatter_class=_Formatter)
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
    parser.add_argument("-v", "--version", action="version",
                        version=f"steelcup version {__version__}",
                        help="print the client's version and exit (`steelcup version` also "
                             "asks the daemon)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    if command in COMMANDS:
        module_name, help_text = COMMANDS[command]
        # __import__ with a fromlist returns the submodule (importlib would add ~0.3 ms)
        module = __import__(f"steelcup.cli.commands.{module_name}", fromlist=["register"])
        module.register(sub, command, help_text)
    else:
        for name, (_, help_text) in COMMANDS.items():
            sub.add_parser(name, help=help_text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. `argv` None: this process is the program (the console script,
    `python -m steelcup`) and `sys.argv` its arguments."""
    program = argv is None
    argv = sys.argv[1:] if argv is None else list(argv)
    collecting = gc.isenabled()
    gc.disable()  # what start-up allocates lives until exit: collections would free nothing
    try:
        parser = build_parser(invoked_command(argv))
        args = parser.parse_args(argv)
    finally:
        if collecting:
            gc.enable()
    if program:
        # start-up's objects live to the end: out of the collector's sight, no collection
        # (the command's, exit's) walks them again; a test's main(argv) leaves gc alone
        gc.freeze()
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
