"""Docker's rules for argv, env and signals."""

from __future__ import annotations

import pytest

from steelcup.cli.commands.containers import start_failure_code
from steelcup.errors import InvalidArgument
from steelcup.runtime.spec import (
    DEFAULT_PATH,
    merge_env,
    parse_mem_bytes,
    parse_signal,
    process_env,
    resolve_argv,
    start_failure_text,
)


@pytest.mark.parametrize(
    ("img_entry", "img_cmd", "entry", "cmd", "want"),
    [
        (None, ["sh"], None, None, ["sh"]),
        (None, ["sh"], None, ["echo", "hi"], ["echo", "hi"]),
        (["/ep"], ["a"], None, None, ["/ep", "a"]),
        (["/ep"], ["a"], None, ["b"], ["/ep", "b"]),
        (["/ep"], ["a"], ["/other"], None, ["/other"]),  # new entrypoint drops image Cmd
        (["/ep"], ["a"], ["/other"], ["x"], ["/other", "x"]),
        (["/ep"], ["a"], [""], ["ls"], ["ls"]),  # --entrypoint "" resets it
        (None, None, None, ["true"], ["true"]),
    ],
)
def test_resolve_argv(img_entry, img_cmd, entry, cmd, want) -> None:  # type: ignore[no-untyped-def]
    assert resolve_argv(img_entry, img_cmd, entry, cmd) == want


def test_resolve_argv_empty_is_an_error() -> None:
    with pytest.raises(InvalidArgument, match="no command"):
        resolve_argv(None, None, None, None)
    with pytest.raises(InvalidArgument):
        resolve_argv(["/ep"], ["x"], [""], None)


def test_merge_env_overrides_by_key_and_defaults_path() -> None:
    env = merge_env(["A=1", "B=2"], ["B=3", "C=", "D"])
    assert env == ["A=1", "B=3", "C=", f"PATH={DEFAULT_PATH}"]
    # a bare name unsets, as dockerd (it once became "D=")
    assert merge_env(["A=1", "B=2"], ["A", "C=3", "C"]) == ["B=2", f"PATH={DEFAULT_PATH}"]
    assert merge_env(["PATH=/x"], []) == ["PATH=/x"]
    with pytest.raises(InvalidArgument):
        merge_env([], ["=oops"])


def test_process_env_is_dockerds_and_runcs() -> None:
    env = ["PATH=/img/bin", "A=1"]
    # dockerd: PATH, HOSTNAME, TERM (with a tty) under the container's env; runc: HOME
    assert process_env(env, home="/root", hostname="c0ffee", tty=False) == (
        "PATH=/img/bin", "HOSTNAME=c0ffee", "A=1", "HOME=/root")
    assert process_env(env, home="/", hostname="h", tty=True) == (
        "PATH=/img/bin", "HOSTNAME=h", "TERM=xterm", "A=1", "HOME=/")
    # the container's own values win, in dockerd's places
    assert process_env(["TERM=dumb", "HOSTNAME=mine", "HOME=/srv"], home="/root",
                       hostname="h", tty=True) == (
        f"PATH={DEFAULT_PATH}", "HOSTNAME=mine", "TERM=dumb", "HOME=/srv")
    # an OCI bundle's env is the engine's: only runc's HOME is added
    assert process_env(["PATH=/x"], home="/root", hostname="h", tty=True, dockerd=False) == (
        "PATH=/x", "HOME=/root")


@pytest.mark.parametrize(("text", "want"), [("KILL", 9), ("SIGTERM", 15), ("10", 10),
                                            ("usr1", 10), (2, 2), ("", 9)])
def test_parse_signal(text: str | int, want: int) -> None:
    assert parse_signal(text) == want


@pytest.mark.parametrize("bad", ["SIGNOPE", "0", "99", "-1", "1.5"])
def test_parse_signal_rejects(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_signal(bad)


def test_parse_mem_bytes() -> None:
    assert parse_mem_bytes(0) == 0
    assert parse_mem_bytes(512 << 20) == 512
    assert parse_mem_bytes((256 << 20) + 1) == 257
    with pytest.raises(InvalidArgument):
        parse_mem_bytes(4 << 20)
    with pytest.raises(InvalidArgument):
        parse_mem_bytes(-1)


@pytest.mark.parametrize(("argv0", "code"), [
    ("nosuch", 127), ("/bin/nosuch", 127), ("/etc/passwd", 126), ("sh", 125)])
def test_start_failure_text_gives_clients_the_exit_status(argv0: str, code: int) -> None:
    """The daemon's words carry the status to clients that read it the docker CLI's way (ours
    included): a --rm container is gone before they could inspect it."""
    text = start_failure_text(argv0, code, f"cannot start {argv0!r}: the guest said no")
    assert start_failure_code(text) == code
    assert text.endswith(f"cannot start {argv0!r}: the guest said no)") or code == 125
