"""A container's host resources beyond its rootfs: network endpoints and volumes.

Mounts are resolved and named at create (so a restart gets the same volumes back); NICs, taps,
published ports and the guest's /etc files are set up for each run and released at its end.
Either manager may be absent (no networking on this host): then containers get loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from steelcup.errors import InvalidArgument, SteelcupError
from steelcup.guest import ops as guest_ops
from steelcup.guest.client import GuestClient
from steelcup.idmap import IdsFor, host_root
from steelcup.image.store import Image
from steelcup.net import ipam, netnsplug
from steelcup.net.etcfiles import write_etc_files
from steelcup.net.manager import DEFAULT_NETWORK, Attachment, NetworkManager
from steelcup.net.netnsnic import NetnsWiring, tap_name
from steelcup.net.nft import PublishedPort
from steelcup.net.ports import port_mappings
from steelcup.pool.source import TapPlace
from steelcup.runtime.model import (
    ContainerConfig,
    ContainerRecord,
    EndpointView,
    NetView,
    PortView,
)
from steelcup.runtime.mountpoints import make_mount_points
from steelcup.runtime.swarmfiles import (
    SECRETS_DIR,
    SECRETS_TAG,
    DataOf,
    write_configs,
    write_secrets,
)
from steelcup.vm.qemu_args import NicSpec, Share
from steelcup.volume.manager import PreparedMount, VolumeManager, check_tenant_mounts
from steelcup.volume.namespace import key as volume_key
from steelcup.volume.spec import MountKind, MountPlan, resolve_mounts

log = logging.getLogger(__name__)
# NetworkMode values that are not network names (host and container: are refused at create).
NETWORK_MODES = ("", "default", "bridge", "none", "host")


@dataclass(frozen=True)
class RunResources:
    """What one run of a container adds to its VM and guest."""

    shares: tuple[Share, ...] = ()
    vm_nics: tuple[NicSpec, ...] = ()  # taps + MACs of the VM's NICs (guest order)
    tap_places: tuple[TapPlace, ...] = ()  # where the pool puts those taps
    nics: tuple[guest_ops.GuestNic, ...] = ()
    mounts: tuple[guest_ops.GuestMount, ...] = ()


class Resources:
    """Allocates and releases networks and volumes for the runtime."""

    def __init__(
        self, networks: NetworkManager | None = None, volumes: VolumeManager | None = None,
        ids_for: IdsFor = host_root,
    ) -> None:
        self.networks = networks
        self.volumes = volumes
        # Each tenant's VM id range: volumes are stored for it, /etc files are its root's.
        self.ids_for = ids_for
        # The content of swarm secrets and configs (the daemon's services layer); None: a
        # container that uses some cannot start.
        self.swarm_data: DataOf | None = None
        self._secret_dirs: dict[str, Path] = {}  # container id -> its run's secrets
        # container id -> its run's tap in an engine's netns (HostConfig.SteelcupNetns)
        self._netns: dict[str, NetnsWiring] = {}

    # -- create ------------------------------------------------------------------------------

    def check_networks(self, config: ContainerConfig) -> None:
        """NotFound for a network named by NetworkMode or EndpointsConfig that does not exist,
        before anything is created (docker answers 404 at create; the docker CLI waits
        forever for a container that can never start)."""
        named = [network for network, _aliases in config.extra_networks]
        mode = config.network_mode
        if mode == "host" or mode.startswith("container:"):
            # Refused here, not at start: a container that can never start is a trap (the
            # docker CLI's `run --rm` waits for its removal).
            raise InvalidArgument(
                f"network mode {mode!r} is not supported: each steelcup container runs in a VM "
                "of its own, which cannot share another network stack; publish ports with -p "
                "instead")
        if mode == "none" and config.port_bindings and json.loads(config.port_bindings):
            raise InvalidArgument("published ports need a network: -p cannot be used with "
                                  "--network none")
        if mode not in NETWORK_MODES and not mode.startswith("container:"):
            named.insert(0, mode)
        primary = mode or "default"
        for network, address in config.network_ipv4:
            ipam.parse_address(address)
            if network == primary and primary in ("default", "bridge", "none"):
                # dockerd's rule: the default bridge hands out its addresses itself
                raise InvalidArgument("user specified IP address is supported on user defined "
                                      "networks only")
        if not named:
            return
        if self.networks is None:
            raise InvalidArgument("networking is not available on this daemon "
                                  "(see the daemon log); use --network none")
        for network in named:  # the container's tenant's networks only
            self.networks.resolve(network, config.tenant)

    def check_mounts(self, config: ContainerConfig,
                     image_volumes: tuple[str, ...] = ()) -> list[MountPlan]:
        """The container's mounts, checked as its create checks them and nothing made: a
        tenant's bind of a host path is Forbidden, a volume it cannot have is refused (the
        image's VOLUMEs, when known, become anonymous volumes). `cron create` checks its job's
        container with this, so a cron that could never run is refused at once."""
        plans = resolve_mounts(
            config.binds,
            config.mounts,
            [*image_volumes, *config.volumes],
            dict(config.tmpfs),
        )
        check_tenant_mounts(plans, config.tenant)
        if plans and self.volumes is None:
            raise InvalidArgument("volumes are not available on this daemon")
        if self.volumes is not None:
            self.volumes.check_plans(plans, config.tenant)
        return plans

    def plan(self, config: ContainerConfig, image: Image) -> ContainerConfig:
        """Resolve mounts (creating named and anonymous volumes, in the container's tenant's
        namespace) into the config; a tenant's bind of a host path is Forbidden."""
        plans = self.check_mounts(config, tuple(image.config.volumes))
        if self.volumes is not None:
            plans = self.volumes.materialize(plans, config.tenant)
        exposed = sorted({*image.config.exposed_ports, *config.exposed_ports})
        return ContainerConfig(**{
            **config.__dict__,
            "mount_plans": tuple(p.to_json() for p in plans),
            "exposed_ports": tuple(exposed),
            "volumes": tuple(sorted({*image.config.volumes, *config.volumes})),
        })

    def connect(self, record: ContainerRecord) -> None:
        """Join, at create, the networks the container will be on: the primary one
        (NetworkMode) and those of NetworkingConfig, each with its aliases and the static
        address asked for. Inspect shows them before the first start, as dockerd; the
        addresses are held until the container is removed. All or nothing."""
        config = record.config
        networks = self.networks
        if networks is None:
            if config.extra_networks:
                raise InvalidArgument("networking is not available on this daemon")
            return
        static = dict(config.network_ipv4)
        mode = config.network_mode or "default"
        wanted: list[tuple[str, str, tuple[str, ...]]] = [
            (network, network, aliases) for network, aliases in config.extra_networks]
        if mode not in NETWORK_MODES or mode in ("default", "bridge"):
            wanted.insert(0, (mode, DEFAULT_NETWORK if mode == "default" else mode,
                              config.network_aliases))
        try:
            for key, network, aliases in wanted:
                links = [(t, a) for n, t, a in config.network_links
                         if n == key or (key == "default" and n == "bridge")]
                networks.connect(network, record.id, record.name, aliases, static.get(key),
                                 tenant=config.tenant, links=links)
        except SteelcupError:
            for ep in networks.container_endpoints(record.id):
                networks.disconnect(ep.network_id, record.id, force=True)
            raise

    # -- each run ----------------------------------------------------------------------------

    async def acquire(
        self, record: ContainerRecord, root: Path, stack: contextlib.AsyncExitStack,
        link_hosts: tuple[tuple[str, str], ...] = (), run_dir: Path | None = None,
    ) -> RunResources:
        """Volumes, NICs, /etc files, swarm secrets and configs for this run; undone by
        `stack` if the start fails. `link_hosts`: /etc/hosts lines (names, address) of its
        links (runtime.links); `run_dir`: the container's own directory (its secrets go
        there for the run). Its ports are reserved, and take connections only once `publish`
        says the VM answers (its guest has its addresses, or a restored VM runs): published
        earlier, a client's SYN would wait for an ARP answer the guest cannot give yet, and
        TCP would send it again only a second later."""
        config = record.config
        prepared: list[PreparedMount] = []
        plans = [MountPlan.from_json(p) for p in config.mount_plans]
        volumes = self.volumes
        if plans and volumes is not None:
            prepared = await asyncio.to_thread(
                lambda: volumes.prepare(plans, root, holder=record.id,
                                        ids=self.ids_for(config.tenant),
                                        tenant=config.tenant))
            # after the VM is closed (the stack unwinds in reverse): QEMU holds the mounts
            stack.push_async_callback(asyncio.to_thread, volumes.release, record.id)
        attachment = Attachment((), ())
        mode = config.network_mode or "default"
        if self.networks is not None:
            ports = port_mappings(
                json.loads(config.port_bindings) if config.port_bindings else {},
                config.publish_all_ports,
                config.exposed_ports,
            )
            attachment = await self.networks.attach(
                record.id, record.name, mode, aliases=config.network_aliases, ports=ports,
                tenant=config.tenant, dormant=True,
            )
            stack.push_async_callback(self.networks.detach, record.id)
        elif mode not in ("none", "default", "bridge") or config.port_bindings:
            raise InvalidArgument("networking is not available on this daemon "
                                  "(see the daemon log); use --network none")
        netns_nics: tuple[tuple[NicSpec, TapPlace, guest_ops.GuestNic], ...] = ()
        if config.netns_path:
            netns_nics = await self._plan_netns(record)
            if netns_nics:
                stack.callback(self._forget_netns, record.id)
        files = {"hostname": config.hostname + "\n",
                 "hosts": attachment.hosts_file(config.hostname,
                                                (*config.extra_hosts, *link_hosts))}
        resolv = attachment.resolv_conf(config.dns, config.dns_search, config.dns_options)
        if resolv:
            files["resolv.conf"] = resolv
        ids = self.ids_for(config.tenant)
        owner = ids.to_host(0) if ids is not None else None
        await asyncio.to_thread(write_etc_files, root, files, owner)
        mounts = tuple(p.request for p in prepared)
        secret_shares: tuple[Share, ...] = ()
        if config.swarm_files:
            secret_dir = await asyncio.to_thread(self._place_swarm_files, record, root,
                                                 run_dir)
            if secret_dir is not None:
                stack.callback(self._drop_secrets, record.id)
                secret_shares = (Share(SECRETS_TAG, secret_dir, True),)
                # A checkpointable container's copy lives in its guest's RAM (no 9p mount
                # may stay; docs/checkpoints.md), read-only as the share would be.
                mounts = (*mounts, guest_ops.GuestMount(target=SECRETS_DIR, fstype="9p",
                                                        source=SECRETS_TAG, readonly=True,
                                                        copied=config.checkpointable))
        if config.read_only:  # the guest cannot make them in a read-only root
            await asyncio.to_thread(make_mount_points, root,
                                    [m.target for m in mounts if m.fstype != "bind"], owner,
                                    files=[m.target for m in mounts if m.fstype == "bind"])
        # single-file binds share one share (steelcup.volume.manager), named once
        shares = dict.fromkeys(p.share for p in prepared if p.share is not None)
        return RunResources(
            shares=(*shares, *secret_shares),
            vm_nics=(*(NicSpec(n.tap, n.mac) for n in attachment.nics),
                     *(vm for vm, _place, _guest in netns_nics)),
            tap_places=(*(TapPlace(n.bridge, n.mtu, n.address) for n in attachment.nics),
                        *(place for _vm, place, _guest in netns_nics)),
            nics=(*(n.guest_nic() for n in attachment.nics),
                  *(guest for _vm, _place, guest in netns_nics)),
            mounts=(*shm_mount(config), *mounts),
        )

    async def _plan_netns(self, record: ContainerRecord
                          ) -> tuple[tuple[NicSpec, TapPlace, guest_ops.GuestNic], ...]:
        """The NIC of a container in an engine's netns: the netns's interface (its MAC,
        address, gateway and MTU) on a tap on no bridge, which `plug_netns` moves into the
        netns once the VM has it. None for a netns with loopback only."""
        netns = record.config.netns_path
        iface = await asyncio.to_thread(netnsplug.read_interface, netns)
        if iface is None:
            return ()
        if self.networks is None:
            raise InvalidArgument(f"the network namespace {netns} has the interface "
                                  f"{iface.name}, but networking is not available on this "
                                  "daemon (see the daemon log) to give the VM a NIC there")
        tap = tap_name(record.id)
        self._netns[record.id] = NetnsWiring(netns, tap, iface)
        guest = guest_ops.GuestNic(mac=iface.mac, ifname="eth0", address=iface.address,
                                   prefix=iface.prefix, gateway=iface.gateway, mtu=iface.mtu)
        return ((NicSpec(tap, iface.mac), TapPlace("", iface.mtu), guest),)

    def _forget_netns(self, container_id: str) -> None:
        self._netns.pop(container_id, None)

    async def plug_netns(self, container_id: str, stack: contextlib.AsyncExitStack) -> None:
        """Once the VM has its taps open: move its netns tap, if it has one, into the
        engine's netns and mirror it to the interface there; undone by `stack` if the start
        fails, else by `release_run`."""
        wiring = self._netns.get(container_id)
        if wiring is None or self.networks is None:
            return
        await asyncio.to_thread(netnsplug.plug, self.networks.host, wiring)
        stack.push_async_callback(asyncio.to_thread, netnsplug.unplug, wiring)

    def _place_swarm_files(self, record: ContainerRecord, root: Path,
                           run_dir: Path | None) -> Path | None:
        """Configs written into the root, secrets into a directory for the read-only share
        (returned; None when there are none). Blocking."""
        config = record.config
        if self.swarm_data is None or run_dir is None:
            raise InvalidArgument("this container uses swarm secrets or configs, which this "
                                  "daemon cannot place")
        ids = self.ids_for(config.tenant)
        write_configs(root, [f for f in config.swarm_files if f.kind == "config"],
                      self.swarm_data, ids)
        secrets = [f for f in config.swarm_files if f.kind == "secret"]
        if not secrets:
            return None
        host = run_dir / "secrets"
        write_secrets(host, secrets, self.swarm_data, ids)
        self._secret_dirs[record.id] = host
        return host

    def _drop_secrets(self, container_id: str) -> None:
        """The run's copy of its secrets goes when the run ends (or fails to start)."""
        host = self._secret_dirs.pop(container_id, None)
        if host is not None:
            shutil.rmtree(host, ignore_errors=True)

    async def configure_guest(self, guest: GuestClient, run: RunResources) -> None:
        """After SETUP_ROOT, before the process starts: NICs (or loopback), then mounts."""
        await guest_ops.configure(guest, run.nics, run.mounts)

    async def release_run(self, container_id: str) -> None:
        """The run ended and its VM is gone: detach its NICs, unmount the volumes it held,
        remove its secrets' copy."""
        await asyncio.to_thread(self._drop_secrets, container_id)
        wiring = self._netns.pop(container_id, None)
        if wiring is not None:
            await asyncio.to_thread(netnsplug.unplug, wiring)
        if self.networks is not None:
            with contextlib.suppress(SteelcupError, OSError):
                await self.networks.detach(container_id)
        if self.volumes is not None:
            try:
                await asyncio.to_thread(self.volumes.release, container_id)
            except (SteelcupError, OSError) as exc:
                log.warning("container %s: releasing its volumes failed: %s",
                            container_id[:12], exc)

    def kept_network(self, container_id: str) -> tuple[tuple[str, ...], tuple[PublishedPort, ...]]:
        """The taps and published ports of a running container the daemon leaves running."""
        if self.networks is None:
            return (), ()
        return self.networks.run_state(container_id)

    async def publish(self, container_id: str, *, strict: bool = False) -> None:
        """The run's ports take connections (after `acquire` or `unpublish`);
        `strict`: a loopback port that cannot be had raises Conflict (else it is logged)."""
        if self.networks is not None:
            await self.networks.publish(container_id, strict=strict)

    async def unpublish(self, container_id: str) -> None:
        """The run's ports stop taking new connections but stay its own (a save is coming)."""
        if self.networks is not None:
            await self.networks.unpublish(container_id)

    def hold_ports(self, container_id: str, ports: Sequence[PublishedPort]) -> None:
        """A suspended container's published ports stay reserved for it."""
        if self.networks is not None and ports:
            self.networks.hold_ports(container_id, ports)

    def drop_held_ports(self, container_id: str) -> None:
        if self.networks is not None:
            self.networks.drop_held_ports(container_id)

    def kept_volumes(self, container_id: str) -> tuple[str, ...]:
        """The volumes (keys) mounted for a running container the daemon leaves running."""
        return self.volumes.held_by(container_id) if self.volumes is not None else ()

    async def release_container(self, record: ContainerRecord, remove_volumes: bool) -> None:
        """The container is removed: free its addresses; with `-v`, its anonymous volumes."""
        if self.networks is not None:
            with contextlib.suppress(SteelcupError, OSError):
                await self.networks.release(record.id)
        if remove_volumes and self.volumes is not None:
            for plan in record.config.mount_plans:
                if plan.get("kind") != MountKind.VOLUME.value:
                    continue
                with contextlib.suppress(SteelcupError, OSError):
                    volume = self.volumes.get(
                        volume_key(record.config.tenant, str(plan.get("source", ""))))
                    if volume.anonymous:
                        await asyncio.to_thread(self.volumes.remove, volume.key, force=True)

    def endpoint_addresses(self, container_id: str) -> tuple[tuple[str, str], ...]:
        """(network id, IPv4 address) of the container's endpoints, in the order it joined
        them (its primary network first)."""
        if self.networks is None:
            return ()
        return tuple((ep.network_id, ep.address)
                     for ep in self.networks.container_endpoints(container_id))

    # -- views -------------------------------------------------------------------------------

    def net_view(self, record: ContainerRecord) -> NetView:
        """The container's endpoints and published ports, for inspect and list."""
        if self.networks is None:
            return NetView()
        by_id = {n.id: n for n in self.networks.networks()}
        endpoints = []
        for ep in self.networks.container_endpoints(record.id):
            net = by_id.get(ep.network_id)
            if net is not None:
                endpoints.append(EndpointView(
                    network_name=net.name, network_id=net.id, endpoint_id=ep.endpoint_id,
                    gateway=net.gateway, address=ep.address,
                    prefix_len=int(net.subnet.split("/")[1]), mac=ep.mac, aliases=ep.aliases,
                    static_ipv4=ep.address if ep.static else "",
                ))
        ports = tuple(
            PortView(p.container_port, p.proto, p.host_ip, p.host_port)
            for p in self.networks.published_ports(record.id)
        )
        return NetView(tuple(endpoints), ports)


def shm_mount(config: ContainerConfig) -> tuple[guest_ops.GuestMount, ...]:
    """--shm-size: a tmpfs of that size over the guest's /dev/shm (dockerd's flags: nosuid,
    nodev, mode 1777), before the container's own mounts so that one of theirs on /dev/shm
    wins, as with dockerd. Without it /dev/shm is the guest's default (SETUP_ROOT)."""
    if not config.shm_size_bytes:
        return ()
    return (guest_ops.GuestMount(target="/dev/shm", fstype="tmpfs",
                                 options=f"size={config.shm_size_bytes},mode=1777"),)


def volume_users(records: list[ContainerRecord], key: str) -> list[str]:
    """Ids of containers whose mounts use the volume with key `key` (their mounts name
    volumes of their own tenant's namespace)."""
    return [
        r.id for r in records
        if any(p.get("kind") == MountKind.VOLUME.value
               and volume_key(r.config.tenant, str(p.get("source", ""))) == key
               for p in r.config.mount_plans)
    ]
