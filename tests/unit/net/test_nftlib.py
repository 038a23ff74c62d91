"""Rulesets loaded in the daemon's process (net.nftlib through net.nft.apply): into the
namespace asked for and no other, as one transaction, nft's own message when refused. Real
loads into scratch network namespaces (root)."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from steelcup.net import nft, nftlib
from steelcup.net.links import Host, LinkError


@pytest.fixture
def host() -> Iterator[Host]:
    if os.geteuid() != 0 or shutil.which("nft") is None:
        pytest.skip("network namespaces and nftables need root")
    if not nftlib.available():
        pytest.skip(f"no {nftlib.LIBRARY}: nft.apply runs the nft process")
    ns = f"sc-nftlib-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        yield Host(ns)
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=True)


def _tables(netns: str | None) -> str:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    return subprocess.run([*prefix, "nft", "list", "tables"], capture_output=True, text=True,
                          check=True).stdout


def test_a_load_lands_in_its_namespace_only(host: Host) -> None:
    name = f"sc_probe_{uuid.uuid4().hex[:6]}"
    nft.apply(host, f"table inet {name} {{\n  set s {{ type ipv4_addr; }}\n}}\n")
    assert name in _tables(host.netns)
    assert name not in _tables(None)
    nft.apply(host, f"add element inet {name} s {{ 10.0.0.1 }}\n")
    listed = subprocess.run(["ip", "netns", "exec", str(host.netns), "nft", "list", "set",
                             "inet", name, "s"], capture_output=True, text=True, check=True)
    assert "10.0.0.1" in listed.stdout


def test_a_refused_ruleset_applies_nothing_and_says_why(host: Host) -> None:
    with pytest.raises(LinkError, match="nft -f - failed: .*(No such file|does not exist)"):
        nft.apply(host, "table inet sc_half {}\nadd element inet sc_missing s { 10.0.0.1 }\n")
    assert "sc_half" not in _tables(host.netns)  # the whole text is one transaction
    with pytest.raises(LinkError, match="syntax error"):
        nft.apply(host, "table inet {\n")
    nft.apply(host, "table inet sc_after {}\n")  # the context is fine after a refusal
    assert "sc_after" in _tables(host.netns)
