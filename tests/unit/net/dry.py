"""Dry stand-ins for what touches the kernel in the network layer (links.Host's methods and
`links.run`): unit tests that keep the bookkeeping without a kernel use these, so that no test
loads rules into, or changes links of, the machine it runs on."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable, Iterator, Sequence

import pytest

from steelcup.net import links


class DryRtnl:
    """Answers as a kernel where every link exists; records what it is asked in `said` as
    argv-like lists ("rtnl", request, args...) and changes nothing."""

    def __init__(self, said: list[list[str]] | None = None) -> None:
        self.said = said if said is not None else []

    def index(self, name: str) -> int:
        self.said.append(["rtnl", "index", name])
        return 1

    def set_link(self, index: int, *, name: str = "", mtu: int = 0, master: int | None = None,
                 up: bool | None = None) -> None:
        self.said.append(["rtnl", "set_link", str(index), name, str(mtu), str(master), str(up)])

    def hairpin(self, index: int) -> None:
        self.said.append(["rtnl", "hairpin", str(index)])

    def delete_link(self, name: str) -> bool:
        self.said.append(["rtnl", "delete_link", name])
        return True

    def delete_neighbour(self, index: int, address: str) -> bool:
        self.said.append(["rtnl", "delete_neighbour", str(index), address])
        return True


Run = Callable[..., "subprocess.CompletedProcess[str]"]


def make_host_dry(monkeypatch: pytest.MonkeyPatch, said: list[list[str]], run: Run) -> None:
    """Every kernel-touching call of the network layer recorded in `said` instead of made:
    commands go to `run` (which records them as it likes), ruleset loads are recorded as
    ["nft", "-f", "-", RULESET], rtnetlink requests as DryRtnl records them."""

    def load_nft(_host: links.Host, ruleset: str) -> None:
        said.append(["nft", "-f", "-", ruleset])

    @contextlib.contextmanager
    def dry_rtnl(_host: links.Host) -> Iterator[DryRtnl]:
        yield DryRtnl(said)

    monkeypatch.setattr(links, "run", run)
    monkeypatch.setattr(links.Host, "load_nft", load_nft)
    monkeypatch.setattr(links.Host, "rtnl", dry_rtnl)


def recorder(said: list[list[str]], out: Callable[[Sequence[str]], str] = lambda _argv: ""
             ) -> Run:
    """A `links.run` that records argv (+ its input) in `said` and answers `out(argv)`."""

    def run(argv: Sequence[str], *, input_text: str | None = None,
            ok_codes: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
        said.append([*argv, *([input_text] if input_text is not None else [])])
        return subprocess.CompletedProcess(list(argv), 0, out(argv), "")

    return run
