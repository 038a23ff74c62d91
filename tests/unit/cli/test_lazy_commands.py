"""The CLI loads only the invoked command: the parser table, the probe, and what gets imported."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from steelcup.cli.commands import COMMANDS
from steelcup.cli.main import build_parser, invoked_command, probed_command, terminal_columns
from tests.unit.cli.fake_daemon import FakeDaemon

# Never on the path of a plain `version` or `run` (each costs milliseconds of every start):
# docs/benchmarks.md, "CLI start-up (issue 19)". socket: the client uses _socket for unix://;
# shutil: argparse imports it unless told the terminal's width; importlib: __import__ does.
HEAVY = ("asyncio", "dataclasses", "typing", "pathlib", "logging", "platform", "h11",
         "threading", "subprocess", "ipaddress", "ssl", "socket", "selectors", "shutil",
         "importlib", "tempfile", "urllib")
# The only steelcup modules outside steelcup.cli that the CLI may load: the daemon's packages
# (api, runtime, tenancy, vm, ...) are not for the client.
SHARED = {"steelcup", "steelcup.defaults", "steelcup.errors", "steelcup.stdcopy"}


def subcommands(parser: object) -> list[tuple[str, str | None]]:
    """(name, one-line help) of the top-level commands a parser offers, in order."""
    action = next(a for a in parser._actions if a.dest == "command")  # type: ignore[attr-defined]
    return [(c.dest, c.help) for c in action._choices_actions]


def subcommand_parser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    action = next(a for a in parser._actions if a.dest == "command")
    return action.choices[name]  # type: ignore[index,no-any-return]


def test_the_listing_is_the_table() -> None:
    assert subcommands(build_parser()) == [(name, text) for name, (_, text) in COMMANDS.items()]


@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_command_builds_alone_and_has_help(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = build_parser(name)
    assert subcommands(parser) == [(name, COMMANDS[name][1])]
    with pytest.raises(SystemExit) as exc:
        parser.parse_args([name, "--help"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: steelcup {name} ")


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["run", "busybox"], "run"),
        (["--root", "run", "version"], "version"),  # "run" is --root's value
        (["-H", "x", "ps", "-a"], "ps"),
        (["-Hx", "ps"], "ps"),
        (["--host=x", "ps"], "ps"),
        (["--ho", "x", "ps"], "ps"),  # an abbreviated option, as argparse allows
        (["ps", "--help"], "ps"),
        (["bogus"], "bogus"),  # the full parser reports it, with every command listed
        (["-h", "run"], None),
        ([], None),
        (["--root"], None),
    ],
)
def test_probe_finds_the_command_like_the_parser(argv: list[str], command: str | None) -> None:
    assert invoked_command(argv) == command
    assert probed_command(argv) == command  # the shortcut for a first word agrees with it


@pytest.mark.parametrize("columns", [None, "120", "33", "0", "-5", "wide"])
def test_help_is_laid_out_as_argparse_would(
    columns: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI tells argparse the width (so it need not import shutil): the same width."""
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    assert terminal_columns() == shutil.get_terminal_size().columns
    top = build_parser("run")
    run = subcommand_parser(top, "run")
    for parser in (top, run):
        ours = parser.format_help()
        parser.formatter_class = argparse.HelpFormatter  # argparse's own, finding the width
        assert parser.format_help() == ours


PROBE = (
    "import contextlib, io, json, sys\n"
    "from steelcup.cli.main import main\n"
    "with contextlib.redirect_stdout(io.StringIO()) as out, "
    "contextlib.redirect_stderr(io.StringIO()):\n"
    "    code = main(sys.argv[1:])\n"
    "print(json.dumps([code, out.getvalue(), sorted(sys.modules)]))\n"
)


def loaded_by(argv: list[str], host: str) -> tuple[int, str, list[str]]:
    """(exit code, stdout, modules loaded at exit) of the CLI run as its own process."""
    env = dict(os.environ, STEELCUP_NO_AUTOSTART="1", STEELCUP_HOST=host)
    out = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True,
                         env=env, timeout=60, check=True).stdout
    *direct, last = out.splitlines(keepends=True)  # attach writes to fd 1 itself
    code, printed, modules = json.loads(last)
    return int(code), "".join(direct) + printed, list(modules)


def assert_light(modules: list[str], command_module: str) -> None:
    loaded = [m for m in modules if m.startswith("steelcup.cli.commands.")]
    assert loaded == [f"steelcup.cli.commands.{command_module}"]
    assert [m for m in HEAVY if m in modules] == []
    assert [m for m in modules if m.startswith("steelcup")
            and not m.startswith("steelcup.cli") and m not in SHARED] == []


@pytest.mark.parametrize(
    ("argv", "module"),
    [
        (["version"], "system"),
        (["run", "--rm", "busybox", "echo", "hi"], "containers"),
    ],
)
def test_only_the_invoked_command_module_is_imported(argv: list[str], module: str) -> None:
    code, _, modules = loaded_by(argv, "unix:///nonexistent/steelcup.sock")
    assert code == 125  # no daemon: the command really ran up to its first request
    assert_light(modules, module)


def test_a_whole_run_rm_stays_light(tmp_path: Path) -> None:
    """create, attach, wait, start and the output, against a daemon: still nothing heavy."""
    sock = tmp_path / "d.sock"
    with FakeDaemon().serve(sock):
        code, out, modules = loaded_by(["run", "--rm", "busybox", "echo", "hi"],
                                       f"unix://{sock}")
    assert (code, out) == (3, "hello out\n")  # the fake's exit status and output
    assert_light(modules, "containers")


@pytest.mark.parametrize("flag", ["--version", "-v"])
def test_version_flag_prints_the_clients_version(flag: str) -> None:
    """As `docker --version`: the client's version, no daemon asked."""
    from steelcup import __version__

    out = subprocess.run([sys.executable, "-m", "steelcup", flag], capture_output=True,
                         env={**os.environ, "STEELCUP_HOST": "unix:///nonexistent/s.sock",
                              "STEELCUP_NO_AUTOSTART": "1"}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode() == f"steelcup version {__version__}\n"
