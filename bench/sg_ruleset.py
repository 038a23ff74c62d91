"""Benchmark: the size of steelcup's nftables ruleset with security groups, and what loading
it costs (issue 15's closing figures).

Renders the three tables (`inet steelcup`, `bridge steelcup_guard`, `inet steelcup_sg`) for N
containers on 4 networks, each container in the same G groups of 4 rules (one of them a
`remote_group`), counts the rules, and times the render and `nft -f` of the whole file in a
network namespace of its own (needs root).

    .venv/bin/python bench/sg_ruleset.py [--containers 100] [--groups 3] [--loads 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from steelcup.net import antispoof, nft, sgrender  # noqa: E402
from steelcup.net.model import NetworkRecord  # noqa: E402
from steelcup.net.secgroups import Rule, SecurityGroup  # noqa: E402

NETWORKS = 4


def ruleset(containers: int, groups: int) -> str:
    nets = [NetworkRecord(f"{i:064x}", f"n{i}", f"10.213.{i}.0/24", f"10.213.{i}.1",
                          f"sc-{i:012x}", tenant="alice") for i in range(NETWORKS)]
    grps = [SecurityGroup(f"g{j}", "alice", rules=(
        Rule("ingress", "tcp", 80 + j, 80 + j, "10.0.0.0/8"),
        Rule("ingress", "icmp"),
        Rule("ingress", "any", remote_group=f"g{(j + 1) % groups}"),
        Rule("egress", "tcp", 443, 443),
    )) for j in range(groups)]
    per_net = -(-containers // NETWORKS)
    guards, guarded, members = [], [], {}
    for c in range(containers):
        net, host = divmod(c, per_net)
        address = f"10.213.{net}.{host + 2}"
        guards.append(antispoof.TapGuard(f"sct{c:012x}", f"02:42:0a:d5:{net:02x}:{host + 2:02x}",
                                         address))
        guarded.append(sgrender.Guarded(f"{c:064x}", (address,), (f"10.213.{net}.1",),
                                        tuple(grps)))
        for g in grps:
            members.setdefault(("alice", g.name), []).append(address)
    return (nft.render(nets) + antispoof.render(guards, "sct")
            + sgrender.render(guarded, members))


def count_rules(text: str) -> int:
    """Lines that are rules: inside a chain, not its `type ... hook` header."""
    count, in_chain = 0, False
    for line in text.splitlines():
        stripped = line.strip()
        if line.startswith("\tchain "):
            in_chain = True
        elif line == "\t}":
            in_chain = False
        elif in_chain and stripped and not stripped.startswith("type "):
            count += 1
    return count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--containers", type=int, default=100)
    ap.add_argument("--groups", type=int, default=3)
    ap.add_argument("--loads", type=int, default=5)
    args = ap.parse_args()
    start = time.perf_counter()
    text = ruleset(args.containers, args.groups)
    render_ms = (time.perf_counter() - start) * 1000
    print(f"{args.containers} containers x {args.groups} groups: {count_rules(text)} rules, "
          f"{len(text)} bytes, rendered in {render_ms:.1f} ms")
    ns = f"sct-sgbench-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        times = []
        for _ in range(args.loads):
            start = time.perf_counter()
            subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=text, text=True,
                           check=True)
            times.append(time.perf_counter() - start)
        print(f"nft -f: median {statistics.median(times):.3f} s, min {min(times):.3f} s, "
              f"max {max(times):.3f} s over {args.loads} loads")
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=False)


if __name__ == "__main__":
    main()
