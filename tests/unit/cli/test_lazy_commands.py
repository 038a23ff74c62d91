"""The CLI loads only the invoked command: the parser table, the probe, and what gets imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from steelcup.cli.commands import COMMANDS
from steelcup.cli.main import build_parser, invoked_command

# Never on the path of a plain `version` or `run` (each costs milliseconds of every start).
HEAVY = ("asyncio", "dataclasses", "typing", "pathlib", "logging", "platform", "h11",
         "threading", "subprocess", "ipaddress")


def subcommands(parser: object) -> list[tuple[str, str | None]]:
    """(name, one-line help) of the top-level commands a parser offers, in order."""
    action = next(a for a in parser._actions if a.dest == "command")  # type: ignore[attr-defined]
    return [(c.dest, c.help) for c in action._choices_actions]


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


@pytest.mark.parametrize(
    ("argv", "module"),
    [
        (["version"], "system"),
        (["run", "--rm", "busybox", "echo", "hi"], "containers"),
    ],
)
def test_only_the_invoked_command_module_is_imported(argv: list[str], module: str) -> None:
    probe = (
        "import contextlib, io, json, sys\n"
        "from steelcup.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), "
        "contextlib.redirect_stderr(io.StringIO()):\n"
        "    code = main(sys.argv[1:])\n"
        "print(json.dumps([code, sorted(sys.modules)]))\n"
    )
    env = dict(os.environ, STEELCUP_NO_AUTOSTART="1",
               STEELCUP_HOST="unix:///nonexistent/steelcup.sock")
    out = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True,
                         env=env, timeout=60, check=True).stdout
    code, modules = json.loads(out)
    assert code == 125  # no daemon: the command really ran up to its first request
    loaded = [m for m in modules if m.startswith("steelcup.cli.commands.")]
    assert loaded == [f"steelcup.cli.commands.{module}"]
    assert [m for m in HEAVY if m in modules] == []
