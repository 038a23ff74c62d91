"""Legacy links as /etc/hosts lines (runtime.links): dockerd's line layout and refusals."""

from __future__ import annotations

import pytest

from steelcup.errors import Conflict, InvalidArgument
from steelcup.runtime.links import LinkTarget, hosts_lines


def _db(running: bool = True, **changes: object) -> LinkTarget:
    fields: dict[object, object] = {
        "name": "db", "hostname": "d0c0ffee1234", "running": running,
        "addresses": (("net-b", "10.0.2.5"), ("net-a", "10.0.1.5"))}
    fields.update(changes)
    return LinkTarget(**fields)  # type: ignore[arg-type]


def test_alias_hostname_and_name_on_the_first_shared_network_primary_first() -> None:
    lines = hosts_lines("web", ["net-a", "net-b"], [("database", _db())])
    assert lines == (("database d0c0ffee1234 db", "10.0.1.5"),)
    # the linking container's order decides, not the linked one's
    assert hosts_lines("web", ["net-b", "net-a"], [("database", _db())])[0][1] == "10.0.2.5"


def test_an_alias_equal_to_the_name_is_not_repeated() -> None:
    assert hosts_lines("web", ["net-a"], [("db", _db())]) == (("db d0c0ffee1234", "10.0.1.5"),)


def test_several_links_keep_their_order() -> None:
    cache = _db(name="cache", hostname="cache", addresses=(("net-a", "10.0.1.9"),))
    lines = hosts_lines("web", ["net-a"], [("db", _db()), ("c", cache)])
    assert [address for _, address in lines] == ["10.0.1.5", "10.0.1.9"]
    assert lines[1][0] == "c cache"


def test_a_stopped_container_is_dockerds_conflict() -> None:
    with pytest.raises(Conflict, match="Cannot link to a non running container: /db AS "
                                       "/web/database"):
        hosts_lines("web", ["net-a"], [("database", _db(running=False))])


def test_a_container_on_no_shared_network_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="does not share a network with /web"):
        hosts_lines("web", ["net-c"], [("database", _db())])
    with pytest.raises(InvalidArgument, match="does not share a network"):
        hosts_lines("web", [], [("database", _db())])


def test_no_links_no_lines() -> None:
    assert hosts_lines("web", [], []) == ()
