"""How a reference names a swarm object (services, secrets, configs alike)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from steelcup.errors import InvalidArgument, NotFound
from steelcup.services.refs import resolve_id, resolve_ref


@dataclass(frozen=True)
class Obj:
    id: str
    name: str
    tenant: str = ""


SEEN = [Obj("abc123", "web"), Obj("abd456", "db"), Obj("ff0001", "web2", "alice"),
        Obj("ff0002", "web2", "bob"), Obj("ee0003", "api", "alice")]


@pytest.mark.parametrize(("ref", "want"), [
    ("abc123", "abc123"),  # the full id
    ("db", "abd456"),      # a name
    ("abc", "abc123"),     # a unique prefix
    ("api", "ee0003"),     # one tenant's name, seen by the operator
])
def test_id_then_name_then_prefix(ref: str, want: str) -> None:
    assert resolve_ref(SEEN, ref, "service") == want


def test_a_name_wins_over_a_prefix() -> None:
    seen = [Obj("web999", "x"), Obj("aaa111", "web")]
    assert resolve_ref(seen, "web", "service") == "aaa111"


@pytest.mark.parametrize(("ref", "error", "text"), [
    ("ab", InvalidArgument, "service ab is ambiguous (2 matches found)"),
    ("web2", InvalidArgument, "2 services of different tenants are named 'web2': use the id"),
    ("zz", NotFound, "service zz not found"),
    ("", NotFound, "service  not found"),
])
def test_refusals_say_why(ref: str, error: type[Exception], text: str) -> None:
    with pytest.raises(error, match=text.replace("(", r"\(").replace(")", r"\)")):
        resolve_ref(SEEN, ref, "service")


def test_an_id_alone_by_itself_or_a_unique_prefix() -> None:
    ids = ["aa11", "aa22", "bb33"]
    assert resolve_id(ids, "aa22", "task") == "aa22"
    assert resolve_id(ids, "b", "task") == "bb33"
    with pytest.raises(InvalidArgument, match=r"task aa is ambiguous \(2 matches found\)"):
        resolve_id(ids, "aa", "task")
    with pytest.raises(NotFound, match="task zz not found"):
        resolve_id(ids, "zz", "task")
