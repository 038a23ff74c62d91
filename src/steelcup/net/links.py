"""Linux bridges and taps through `ip` argv (idempotent), optionally inside a network namespace.

Each network is one bridge carrying its gateway address; each VM NIC is one persistent tap,
created before QEMU opens it by name (`-netdev tap,ifname=...,script=no`) and deleted after.
"""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from ipaddress import ip_address

from steelcup.errors import SteelcupError
from steelcup.net import nftlib, rtnl

IP = "ip"
NFT = "nft"
IFNAME_MAX = 15
COMMAND_TIMEOUT_S = 15.0


class LinkError(SteelcupError):
    """An `ip` or `nft` command failed; the message carries its argv and stderr."""


@dataclass(frozen=True)
class Host:
    """Where links live: the host's namespace (netns None) or a named one (tests). What
    touches the kernel goes through its methods and `run`: a test's dry host overrides them
    all (tests/unit/net/dry.py)."""

    netns: str | None = None

    def ip(self, *args: str) -> list[str]:
        return [IP, *(["-n", self.netns] if self.netns else []), *args]

    def nft(self, *args: str) -> list[str]:
        prefix = [IP, "netns", "exec", self.netns] if self.netns else []
        return [*prefix, NFT, *args]

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """`argv` run inside this namespace (e.g. QEMU, which must open its tap there)."""
        return [IP, "netns", "exec", self.netns, *argv] if self.netns else list(argv)

    def load_nft(self, ruleset: str) -> None:
        """Load an nftables ruleset in this namespace as one transaction (nothing of it if
        refused: LinkError with nft's message). In the daemon's process through libnftables
        (net.nftlib) where it loads, else with the `nft` process."""
        if not nftlib.available():
            run(self.nft("-f", "-"), input_text=ruleset)
            return
        try:
            nftlib.load(self.netns, ruleset)
        except (nftlib.NftError, OSError) as exc:
            raise LinkError(f"nft -f - failed: {exc}") from exc

    def rtnl(self) -> contextlib.AbstractContextManager[rtnl.Rtnl]:
        """A route netlink socket in this namespace: links and neighbours without a process."""
        return rtnl.open_rtnl(self.netns)


def run(argv: Sequence[str], *, input_text: str | None = None, ok_codes: tuple[int, ...] = (0,)
        ) -> subprocess.CompletedProcess[str]:
    """Run one command (argv list, never a shell); LinkError unless it exits in `ok_codes`."""
    try:
        result = subprocess.run(
            list(argv), input=input_text, capture_output=True, text=True,
            timeout=COMMAND_TIMEOUT_S, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LinkError(f"{' '.join(argv)}: {exc}") from exc
    if result.returncode not in ok_codes:
        raise LinkError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


@contextlib.contextmanager
def _netlink(host: Host, what: str) -> Iterator[rtnl.Rtnl]:
    """`host`'s rtnetlink socket, for `what`: a request that fails is a LinkError saying so."""
    try:
        with host.rtnl() as nl:
            yield nl
    except OSError as exc:
        raise LinkError(f"{what}: {exc}") from exc


def link_exists(host: Host, name: str) -> bool:
    check_ifname(name)
    with _netlink(host, f"looking up link {name}") as nl:
        return nl.index(name) is not None


def check_ifname(name: str) -> None:
    if not 1 <= len(name) <= IFNAME_MAX or "/" in name or any(c.isspace() for c in name):
        raise LinkError(f"bad interface name {name!r} (1-{IFNAME_MAX} chars, no '/' or spaces)")


def bridge_mac(name: str) -> str:
    """The fixed MAC of bridge `name`: locally administered, unicast, from its name (so a
    daemon restart gives it the same one). Pure.

    A bridge without an address of its own takes the lowest MAC among its ports, so it would
    change as taps come and go; each change flushes the host's neighbour entries on it,
    dropping the packets queued for a container that is still starting (a client polling it
    then waits for TCP's one-second retransmission), and gives every guest a stale gateway."""
    digest = hashlib.sha256(b"steelcup-bridge\0" + name.encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x06, *digest[:5]))


def ensure_bridge(host: Host, name: str, gateway_cidr: str, mtu: int) -> None:
    """Create (if missing) the bridge with its gateway address and fixed MAC, and bring it
    up."""
    check_ifname(name)
    mac = bridge_mac(name)
    if not link_exists(host, name):
        run(host.ip("link", "add", "name", name, "address", mac, "type", "bridge"))
    elif f" {mac} " not in run(host.ip("-o", "link", "show", "dev", name)).stdout:
        run(host.ip("link", "set", "dev", name, "address", mac))  # one made before this
    # No IPv6 on the host side of a bridge (containers have none yet): with it the bridge gets
    # a link-local address through which a container reaches host services on `::`. (The
    # firewall drops such traffic as well; 255: the host has no IPv6 at all.)
    run(host.wrap(["sysctl", "-q", "-w", f"net.ipv6.conf.{name}.disable_ipv6=1"]),
        ok_codes=(0, 255))
    # The host's own connections to 127.0.0.1 are DNATed to containers (net/nft.py): their
    # packets leave through the bridge with a loopback source, and its replies come back to
    # one. What a container sends to 127.0.0.0/8 is dropped (the guard table and nft.py).
    run(host.wrap(["sysctl", "-q", "-w", f"net.ipv4.conf.{name}.route_localnet=1"]))
    run(host.ip("link", "set", "dev", name, "mtu", str(mtu)))
    addrs = run(host.ip("-o", "addr", "show", "dev", name)).stdout
    if f" {gateway_cidr} " not in addrs:
        run(host.ip("addr", "add", gateway_cidr, "dev", name))
    run(host.ip("link", "set", "dev", name, "up"))


def add_address(host: Host, dev: str, cidr: str) -> None:
    """An extra address on `dev` (a virtual IP's /32 on its bridge); present already is fine."""
    check_ifname(dev)
    addrs = run(host.ip("-o", "addr", "show", "dev", dev)).stdout
    if f" {cidr} " not in addrs:
        run(host.ip("addr", "add", cidr, "dev", dev))


def delete_address(host: Host, dev: str, cidr: str) -> None:
    """Remove an address from `dev`; a missing address or device is fine."""
    check_ifname(dev)
    run(host.ip("addr", "del", cidr, "dev", dev), ok_codes=(0, 1, 2))


def set_hairpin(host: Host, dev: str) -> None:
    """Hairpin on for a port already on a bridge, as a placed tap has it (see _place)."""
    check_ifname(dev)
    with _netlink(host, f"hairpin on for {dev}") as nl:
        index = nl.index(dev)
        if index is None:
            raise LinkError(f"no link {dev}")
        nl.hairpin(index)


def delete_link(host: Host, name: str) -> None:
    """Delete a bridge or tap; a missing one is fine (one netlink request)."""
    check_ifname(name)
    with _netlink(host, f"deleting link {name}") as nl:
        nl.delete_link(name)


# The uid whose processes may attach to our taps without CAP_NET_ADMIN: QEMU's. (QEMU keeps
# no CAP_NET_ADMIN, so it cannot reconfigure the host's network; docs/security.md.)
TAP_OWNER_UID = 0


def create_tap(host: Host, name: str) -> None:
    """A persistent tap, down and on no bridge, that QEMU (TAP_OWNER_UID) may open by name."""
    check_ifname(name)
    run(host.ip("tuntap", "add", "dev", name, "mode", "tap", "user", str(TAP_OWNER_UID)))


def _place(nl: rtnl.Rtnl, index: int, name: str, bridge: str, mtu: int, rename_from: str,
           address: str) -> None:
    """Give the link `index` its name (when `rename_from`), MTU and bridge, hairpin on, and
    bring it up. No bridge (""): the tap is to be moved into an engine's netns once QEMU has
    it (steelcup.net.netnsplug), so it gets only its name and MTU here.

    Hairpin lets the bridge send a frame back out of the port it came in on: with
    br_netfilter loaded (bridge-nf-call-iptables), a container's connection to a virtual IP
    is DNATed at the bridge, and when the pick is the container itself (a backend reaching
    its own VIP), the frame must go back out of its own port. (The kernel takes a port's
    settings only once the link is on the bridge, hence a request of its own.)

    With the NIC's `address`, the host's neighbour entry for it on the bridge goes too: an
    entry left by the address's previous container (same address, same MAC) would send a
    client's packets to this VM at once, before its guest has the address, and lose them to
    a one-second TCP retransmission; without one they wait, queued, for the guest's
    gratuitous ARP (docs/networking.md)."""
    new_name = name if rename_from else ""
    if not bridge:
        nl.set_link(index, name=new_name, mtu=mtu)
        return
    master = nl.index(bridge)
    if master is None:
        raise LinkError(f"bridge {bridge} does not exist")
    nl.set_link(index, name=new_name, mtu=mtu, master=master, up=True)
    nl.hairpin(index)
    if address:
        nl.delete_neighbour(master, str(ip_address(address)))


def ensure_tap(host: Host, name: str, bridge: str, mtu: int, address: str = "") -> None:
    """A persistent tap enslaved to `bridge` ("": on none), up, ready for QEMU to open by
    name; `address`: its NIC's (see _place)."""
    for ifname in (name, *([bridge] if bridge else [])):
        check_ifname(ifname)
    with _netlink(host, f"placing tap {name} on {bridge or 'no bridge'}") as nl:
        index = nl.index(name)
        if index is None:
            create_tap(host, name)
            index = nl.index(name)
        if index is None:
            raise LinkError(f"tap {name} went away while being placed")
        _place(nl, index, name, bridge, mtu, "", address)


def take_place(host: Host, spare: str, name: str, bridge: str, mtu: int,
               address: str = "") -> None:
    """Give the tap `spare` (a pooled VM's, down, on no bridge) the name `name`, the MTU and
    the bridge the network layer planned for a container's NIC ("": none, see _place), turn
    on hairpin and bring it up: requests of one netlink socket, no process. On failure
    `spare` is back as it was (as far as it can be) and LinkError is raised."""
    for ifname in (spare, name, *([bridge] if bridge else [])):
        check_ifname(ifname)
    with _netlink(host, f"placing tap {spare} as {name} on {bridge or 'no bridge'}") as nl:
        index = nl.index(spare)
        if index is None:
            raise LinkError(f"tap {spare} does not exist")
        try:
            _place(nl, index, name, bridge, mtu, spare, address)
        except (OSError, LinkError):
            with contextlib.suppress(OSError):  # as it was: down, on no bridge, its name
                nl.set_link(index, master=0, up=False)
                nl.set_link(index, name=spare)
            raise


def list_links(host: Host, prefix: str) -> list[str]:
    """Names of links starting with `prefix` (for cleanup of leftovers after a crash)."""
    out = run(host.ip("-o", "link", "show")).stdout
    names = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            name = parts[1].strip().split("@", 1)[0]
            if name.startswith(prefix):
                names.append(name)
    return names
