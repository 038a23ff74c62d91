"""Security groups: the document's parsing (clear errors), the pure render of the
`inet steelcup_sg` table (golden), the store and the per-tenant rules of `SecurityGroups`."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import uuid
from pathlib import Path

import pytest

from steelcup.errors import Conflict, InvalidArgument, NotFound
from steelcup.net import antispoof, nft, sgrender
from steelcup.net.secgroups import Rule, SecurityGroup, parse_document
from steelcup.net.sgmanager import SecurityGroups, requested
from steelcup.net.sgstore import SecurityGroupStore

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "nft_secgroups.txt"

WEB = SecurityGroup("web", "alice", rules=(
    Rule("ingress", "tcp", 80, 80, "10.213.5.0/24"),
    Rule("ingress", "icmp"),
    Rule("ingress", "any", remote_group="db"),
))
DB = SecurityGroup("db", "alice", rules=(
    Rule("ingress", "tcp", 5432, 5432, remote_group="web"),
    Rule("egress", "udp", 1000, 2000, "192.0.2.0/24"),
))


def _render() -> str:
    guarded = [
        sgrender.Guarded("b" * 64, ("10.213.1.3",), ("10.213.1.1",), (DB,)),
        sgrender.Guarded("a" * 64, ("10.213.1.2", "10.213.2.2"), ("10.213.1.1", "10.213.2.1"),
                         (WEB,)),
    ]
    members = {("alice", "web"): ["10.213.1.2", "10.213.2.2"], ("alice", "db"): ["10.213.1.3"]}
    return sgrender.render(guarded, members)


def test_golden_secgroup_table() -> None:
    text = _render()
    if os.environ.get("STEELCUP_UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


def test_no_egress_rule_allows_only_replies_and_dns() -> None:
    text = _render()
    # web has no egress rule: hyper.sh's semantics, nothing goes out but replies and DNS
    out_a = text.split("chain out_aaaaaaaaaaaa {", 1)[1].split("}", 1)[0]
    assert [line.strip() for line in out_a.strip().splitlines()] == [
        "ct state established,related accept",
        "ip daddr 10.213.1.1 udp dport 53 accept", "ip daddr 10.213.1.1 tcp dport 53 accept",
        "ip daddr 10.213.2.1 udp dport 53 accept", "ip daddr 10.213.2.1 tcp dport 53 accept",
        "counter drop"]
    assert "10.213.2.2 : goto out_aaaaaaaaaaaa" in text
    out_b = text.split("chain out_bbbbbbbbbbbb {", 1)[1].split("}", 1)[0]
    assert "ip daddr 10.213.1.1 udp dport 53 accept" in out_b
    assert out_b.rstrip().endswith("counter drop")


def test_a_remote_group_without_members_allows_nobody() -> None:
    g = sgrender.Guarded("c" * 64, ("10.213.1.9",), ("10.213.1.1",), (WEB,))
    text = sgrender.render([g], {})
    chain = text.split("chain in_cccccccccccc {", 1)[1].split("}", 1)[0]
    assert "@members_" not in text and "tcp dport 80 accept" in chain


@pytest.mark.parametrize(("doc", "message"), [
    ([], "a mapping with `rules:`"),
    ({"rule": []}, "unknown key(s) rule"),
    ({"rules": {}}, "rules must be a list"),
    ({"rules": ["x"]}, "rule 1: a rule is a mapping"),
    ({"rules": [{"direction": "in"}]}, "rule 1: direction must be ingress or egress"),
    ({"rules": [{"direction": "ingress", "protocol": "sctp"}]}, "protocol must be one of"),
    ({"rules": [{"direction": "ingress", "protocol": "icmp", "ports": 80}]},
     "ports need protocol tcp or udp"),
    ({"rules": [{"direction": "ingress", "protocol": "tcp", "ports": "90-80"}]},
     "out of range"),
    ({"rules": [{"direction": "ingress", "protocol": "tcp", "ports": "http"}]},
     "ports must be N or N-M"),
    ({"rules": [{"direction": "egress", "remote": "10.0.0.300/8"}]}, "not an IPv4 CIDR"),
    ({"rules": [{"direction": "egress", "remote": "10.0.0.0/8", "remote_group": "x"}]},
     "not both"),
    ({"rules": [{"direction": "egress"}, {"direction": "egress", "port": 1}]},
     "rule 2: unknown key(s) port"),
])
def test_bad_documents_say_what_is_wrong(doc: object, message: str) -> None:
    with pytest.raises(InvalidArgument, match=None) as info:
        parse_document(doc)
    assert message in str(info.value)


def test_a_good_document() -> None:
    description, rules = parse_document({"description": "web", "rules": [
        {"direction": "ingress", "protocol": "tcp", "ports": "8000-8080", "remote": "10.1.2.3/8"},
        {"direction": "egress"},
    ]})
    assert description == "web"
    assert rules == (Rule("ingress", "tcp", 8000, 8080, "10.0.0.0/8"), Rule("egress"))
    assert rules[0].to_doc() == {"direction": "ingress", "protocol": "tcp",
                                 "ports": "8000-8080", "remote": "10.0.0.0/8"}


def test_the_label_run_sends() -> None:
    assert requested({"sh.steelcup.security-groups": "web, db,web"}) == ["web", "db"]
    assert requested({}) == []


@pytest.fixture
def groups() -> SecurityGroups:
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.execute("PRAGMA foreign_keys=ON")
    reloads: list[int] = []

    async def reload() -> None:
        reloads.append(1)

    return SecurityGroups(SecurityGroupStore(db), reload, lambda cid: [f"10.0.0.{len(cid)}"])


def test_groups_are_per_tenant(groups: SecurityGroups) -> None:
    async def scenario() -> None:
        await groups.create("web", {"rules": []}, "alice")
        await groups.create("web", {"rules": []}, "bob")  # same name, another tenant
        with pytest.raises(Conflict):
            await groups.create("web", {"rules": []}, "alice")
        # bob cannot name alice's `db` as a remote group: to him it does not exist
        await groups.create("db", {"rules": []}, "alice")
        with pytest.raises(InvalidArgument, match="remote_group 'db': no such"):
            await groups.create("app", {"rules": [
                {"direction": "ingress", "remote_group": "db"}]}, "bob")
        with pytest.raises(NotFound):
            groups.check(["db"], "bob")
        assert [g.name for g in groups.all("alice")] == ["web", "db"]

    asyncio.run(scenario())


def test_remove_is_refused_while_in_use(groups: SecurityGroups) -> None:
    async def scenario() -> None:
        await groups.create("db", {"rules": []}, "alice")
        await groups.create("web", {"rules": [
            {"direction": "ingress", "remote_group": "db"}]}, "alice")
        await groups.join("c1", "alice", ["db"])
        with pytest.raises(Conflict, match="in use by 1 container"):
            await groups.remove("db", "alice")
        assert await groups.change("c1", "alice", remove=["db"]) == []
        with pytest.raises(Conflict, match="remote_group of a rule in web"):
            await groups.remove("db", "alice")
        await groups.remove("web", "alice")
        await groups.remove("db", "alice")
        assert groups.all(None) == []

    asyncio.run(scenario())


def test_membership_changes_render(groups: SecurityGroups) -> None:
    async def scenario() -> None:
        await groups.create("web", {"rules": [
            {"direction": "ingress", "protocol": "tcp", "ports": 80}]}, "alice")
        live = {"c1": [("10.213.1.2", "10.213.1.1")]}
        assert "goto in_" not in groups.render(live)
        await groups.change("c1", "alice", add=["web"])
        assert "10.213.1.2 : goto in_c1" in groups.render(live)
        assert groups.forget("c1") and "goto in_" not in groups.render(live)

    asyncio.run(scenario())


@pytest.mark.skipif(os.geteuid() != 0, reason="loads the ruleset into a namespace: needs root")
def test_nft_accepts_all_three_tables() -> None:
    ns = f"sct-sg-{uuid.uuid4().hex[:8]}"
    if subprocess.run(["ip", "netns", "add", ns], capture_output=True).returncode != 0:
        pytest.skip("cannot create a network namespace")
    try:
        text = nft.render([]) + antispoof.render([], "sct") + _render()
        for _ in range(2):
            run = subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=text,
                                 capture_output=True, text=True)
            assert run.returncode == 0, run.stderr
    finally:
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True)


def test_groups_and_memberships_survive_a_reopen(tmp_path: Path) -> None:
    """A restarted daemon opens the same database: groups, rules and members are there."""
    from steelcup.state.db import open_db

    async def reload() -> None:
        return None

    first = SecurityGroups(SecurityGroupStore(open_db(tmp_path)), reload, lambda cid: [])
    asyncio.run(first.create("web", {"rules": [{"direction": "egress", "protocol": "udp"}]},
                             "alice"))
    asyncio.run(first.join("c1", "alice", ["web"]))
    again = SecurityGroups(SecurityGroupStore(open_db(tmp_path)), reload, lambda cid: [])
    assert again.get("web", "alice").rules == (Rule("egress", "udp"),)
    assert again.groups_of("c1") == ["web"]
    assert "10.213.1.2 : goto out_c1" in again.render({"c1": [("10.213.1.2", "10.213.1.1")]})
