"""`run`/`create` flags for networks, ports and mounts -> docker's create-body fields.

`add_flags(parser)` declares them; `apply(body, args)` fills Config.ExposedPorts/Volumes,
HostConfig.PortBindings/PublishAllPorts/Binds/Mounts/Tmpfs/NetworkMode and
NetworkingConfig.EndpointsConfig exactly as the docker CLI does.
"""

from __future__ import annotations

import argparse

from steelcup.errors import InvalidArgument

TYPE_CHECKING = False  # the CLI does not import typing at run time (start-up cost)
if TYPE_CHECKING:
    from typing import Any


def add_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-p", "--publish", action="append", default=[], metavar="[IP:]HOST:CTR",
                   help="publish a container port to the host")
    p.add_argument("-P", "--publish-all", action="store_true",
                   help="publish every exposed port to a free host port")
    p.add_argument("--network", "--net", default="", metavar="NETWORK",
                   help="connect to a network (default: bridge; none: loopback only)")
    p.add_argument("--network-alias", action="append", default=[], metavar="ALIAS",
                   help="extra DNS name on the network")
    p.add_argument("-v", "--volume", action="append", default=[], metavar="[SRC:]DST[:ro]",
                   help="bind a volume or host directory")
    p.add_argument("--mount", action="append", default=[], metavar="type=...,dst=...",
                   help="attach a volume, bind or tmpfs mount")
    p.add_argument("--tmpfs", action="append", default=[], metavar="DST[:OPTS]",
                   help="mount a tmpfs")


def apply(body: dict[str, Any], args: argparse.Namespace) -> None:
    host = body.setdefault("HostConfig", {})
    # The port and mount parsers are imported only when their flags are used (a plain `run`
    # saves ~10 ms of start-up).
    if args.publish:
        from steelcup.net.ports import merge_publish

        exposed, bindings = merge_publish(args.publish)
        if exposed:
            body["ExposedPorts"] = {**body.get("ExposedPorts", {}), **exposed}
            host["PortBindings"] = bindings
    host["PublishAllPorts"] = bool(args.publish_all)
    if args.volume:
        from steelcup.volume.spec import parse_bind

        binds: list[str] = []
        volumes: dict[str, dict[str, Any]] = {}
        for spec in args.volume:
            plan = parse_bind(spec)  # validate early, like docker
            if ":" in spec:
                binds.append(spec)
            else:
                volumes[plan.target] = {}
        if binds:
            host["Binds"] = binds
        if volumes:
            body["Volumes"] = volumes
    if args.mount:
        from steelcup.volume.spec import parse_mount_flag

        host["Mounts"] = [parse_mount_flag(m) for m in args.mount]
    if args.tmpfs:
        tmpfs: dict[str, str] = {}
        for item in args.tmpfs:
            target, _, opts = item.partition(":")
            tmpfs[target] = opts
        host["Tmpfs"] = tmpfs
    network = args.network or "default"
    host["NetworkMode"] = network
    if args.network_alias:
        if network in ("default", "bridge", "none", "host"):
            raise InvalidArgument("network-scoped aliases are only supported for user-defined "
                                  "networks")
        body["NetworkingConfig"] = {"EndpointsConfig": {network: {
            "Aliases": list(args.network_alias)}}}
