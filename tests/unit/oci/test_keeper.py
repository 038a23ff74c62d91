"""The keeper across a daemon restart (live restore), against a scripted daemon: it attaches
again to the run it was keeping (never to a next one), relays what the container printed
while no daemon ran exactly once, and reports the run's exit status."""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from steelcup.cli.client import HijackedSocket
from steelcup.errors import NotFound
from steelcup.oci import keeper as keeper_module
from steelcup.oci.keeper import FORWARDED, Keeper, Relayed
from steelcup.stdcopy import STDERR, STDOUT

RUNNING = {"State": {"Running": True, "StartedAt": "2026-12-05T10:00:00Z"}}
EXITED = {"State": {"Running": False, "StartedAt": "2026-12-05T10:00:00Z"}}


def out(data: bytes) -> bytes:
    return bytes([STDOUT, 0, 0, 0]) + len(data).to_bytes(4, "big") + data


def err(data: bytes) -> bytes:
    return bytes([STDERR, 0, 0, 0]) + len(data).to_bytes(4, "big") + data


@dataclass
class Attach:
    """What the daemon sends on one attach; `hold`: the stream then stays open (a
    subscription to a run that will not come)."""

    data: bytes
    hold: bool = False


class ScriptedDaemon:
    """get_json answers from `states` in turn (an exception is raised); each attach gets the
    next of `attaches`. The first POST /wait finds the daemon away, later ones `exit_code`."""

    def __init__(self, states: list[object], attaches: list[Attach], exit_code: int) -> None:
        self.states = states
        self.attaches = attaches
        self.exit_code = exit_code
        self.gone = True
        self.queries: list[dict[str, object]] = []
        self.held: list[socket.socket] = []

    def get_json(self, _path: str) -> Any:
        state = self.states.pop(0)
        if isinstance(state, BaseException):
            raise state
        return state

    def hijack(self, _method: str, _path: str, query: dict[str, object],
               **_kw: object) -> HijackedSocket:
        ours, theirs = socket.socketpair()
        attach = self.attaches[len(self.queries)]
        self.queries.append(query)
        theirs.sendall(attach.data)
        if attach.hold:
            self.held.append(theirs)
        else:
            theirs.close()
        return HijackedSocket(ours, b"")

    def post_json(self, _path: str, *_args: object, **_kw: object) -> Any:
        if self.gone:
            self.gone = False
            raise ConnectionRefusedError("daemon restarting")
        return {"StatusCode": self.exit_code}


@pytest.fixture(autouse=True)
def _handlers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Keeper.run installs signal handlers: the test process gets its own back."""
    monkeypatch.setattr(keeper_module.time, "sleep", lambda _s: None)
    saved = {signo: signal.getsignal(signo) for signo in FORWARDED}
    yield
    for signo, handler in saved.items():
        signal.signal(signo, handler)


def keep(daemon: ScriptedDaemon) -> int:
    return Keeper(daemon, "c1").run(lambda: None)  # type: ignore[arg-type]


def test_after_a_restart_it_attaches_again_and_relays_the_rest_once(
        capfd: pytest.CaptureFixture[bytes]) -> None:
    daemon = ScriptedDaemon(
        [ConnectionRefusedError("not back"), RUNNING, RUNNING],
        [Attach(out(b"before\n") + err(b"oops\n")),
         # the log from the start (what was relayed, then what was not), then the stream
         Attach(out(b"before\n") + err(b"oops\n") + out(b"meanwhile\n") + out(b"after\n"))],
        exit_code=4)
    assert keep(daemon) == 4
    assert daemon.queries[0].get("logs") is None
    assert daemon.queries[1]["logs"] is True and daemon.queries[1]["stream"] is True
    printed = capfd.readouterr()
    assert printed.out == "before\nmeanwhile\nafter\n"
    assert printed.err == "oops\n"


def test_a_run_that_ends_between_the_check_and_the_attach_is_not_waited_for_again(
        capfd: pytest.CaptureFixture[bytes]) -> None:
    """The new attach subscribes to the container's next run if the current one ended just
    before it: the keeper sees the run is over, drops that stream and replays the log."""
    daemon = ScriptedDaemon(
        [RUNNING, EXITED],
        [Attach(out(b"before\n")),
         Attach(out(b"before\n"), hold=True),
         Attach(out(b"before\n") + out(b"after\n"))],
        exit_code=4)
    assert keep(daemon) == 4
    assert daemon.queries[2]["logs"] is True and daemon.queries[2]["stream"] is False
    assert capfd.readouterr().out == "before\nafter\n"
    with pytest.raises(OSError):  # the keeper closed its end of the stream that never ends
        for _ in range(64):
            daemon.held[0].sendall(b"x" * 65536)


def test_output_of_a_run_that_ended_while_no_daemon_ran_still_arrives(
        capfd: pytest.CaptureFixture[bytes]) -> None:
    daemon = ScriptedDaemon([EXITED], [Attach(out(b"before\n")),
                                       Attach(out(b"before\n") + out(b"after\n"))],
                            exit_code=4)
    assert keep(daemon) == 4
    assert daemon.queries[1]["stream"] is False
    assert capfd.readouterr().out == "before\nafter\n"


def test_a_container_removed_under_it_is_137() -> None:
    daemon = ScriptedDaemon([], [Attach(b"")], exit_code=0)
    daemon.post_json = _not_found  # type: ignore[method-assign]
    assert keep(daemon) == 128 + signal.SIGKILL


def _not_found(*_args: object, **_kw: object) -> Any:
    raise NotFound("no such container")


def test_the_replay_drops_per_stream_and_across_chunks() -> None:
    relayed = Relayed()
    assert relayed.take(STDOUT, b"abc") == b"abc"
    assert relayed.take(STDERR, b"x") == b"x"
    relayed.replaying()
    assert relayed.take(STDERR, b"xy") == b"y"
    assert relayed.take(STDOUT, b"ab") == b""
    assert relayed.take(STDOUT, b"cde") == b"de"
    relayed.replaying()  # a second restart: all that was written so far
    assert relayed.take(STDOUT, b"abcdef") == b"f"
    assert relayed.written == {STDOUT: 6, STDERR: 2}
