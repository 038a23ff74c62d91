"""`steelcup service create|ls|ps|inspect|scale|update|rm|logs`, `steelcup swarm init|leave`
and `steelcup node ls|inspect`: docker's swarm-mode commands on steelcup's one node
(docs/services.md). Each task of a service runs in a VM of its own."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from steelcup.cli.client import ApiClient, path_quote
from steelcup.cli.context import Context, delete_each, inspect_each, report
from steelcup.errors import SteelcupError

CONVERGE_TIMEOUT_S = 300.0

_HELP = {
    "service": "manage services: replicas of a container, each in its own VM, kept running",
    "swarm": "manage the swarm (steelcup's is one node: this daemon)",
    "node": "list this swarm's node",
}


def register(sub: Any, name: str, help_text: str) -> None:
    """Add the parser of command `name` (this module's row in `commands.COMMANDS`)."""
    if name == "service":
        _register_service(sub, name, help_text)
    elif name == "swarm":
        _register_swarm(sub, name, help_text)
    elif name == "node":
        _register_node(sub, name, help_text)
    else:
        raise ValueError(f"{__name__} has no command {name!r}")


def _group(sub: Any, name: str, help_text: str) -> Any:
    parser = sub.add_parser(name, help=help_text, description=_HELP[name])
    group = parser.add_subparsers(dest=f"{name}_command", metavar="COMMAND",
                                  parser_class=type(parser))
    parser.set_defaults(func=lambda _ctx, _args: (parser.print_help(), 0)[1])
    return group


def _register_service(sub: Any, name: str, help_text: str) -> None:
    ssub = _group(sub, name, help_text)
    p = ssub.add_parser("create", help="create a service",
                        description="Create a service: --replicas copies of IMAGE's container "
                        "(one VM each), replaced when they exit, are removed or turn "
                        "unhealthy, per --restart-condition.")
    p.add_argument("image")
    p.add_argument("args", nargs=argparse.REMAINDER, help="command and its arguments")
    p.add_argument("--name", default="", help="service name (default: a random one)")
    p.add_argument("--mode", default="replicated", choices=("replicated", "global"),
                   help="replicated (--replicas tasks) or global (one task: one node)")
    p.add_argument("--replicas", type=int, default=None, help="number of tasks (default 1)")
    p.add_argument("-e", "--env", action="append", default=[], help="KEY=VALUE (or KEY)")
    p.add_argument("--label", action="append", default=[], help="service label KEY=VALUE")
    p.add_argument("--container-label", action="append", default=[],
                   help="label of each task's container KEY=VALUE")
    p.add_argument("--restart-condition", default="", metavar="none|on-failure|any",
                   help="when an ended task is replaced (default any)")
    p.add_argument("--restart-delay", default="", metavar="DURATION",
                   help="wait before replacing it (default 5s)")
    p.add_argument("--restart-max-attempts", type=int, default=None,
                   help="restarts before giving up (default: unlimited)")
    p.add_argument("--restart-window", default="", metavar="DURATION",
                   help="window the attempts are counted in (default: unbounded)")
    p.add_argument("--health-cmd", default="", help="command to run to check health")
    p.add_argument("--health-interval", default="", metavar="DURATION")
    p.add_argument("--health-timeout", default="", metavar="DURATION")
    p.add_argument("--health-retries", type=int, default=0)
    p.add_argument("--health-start-period", default="", metavar="DURATION")
    p.add_argument("--no-healthcheck", action="store_true", help="disable the image's check")
    p.add_argument("--limit-memory", default="", help="each task's VM memory (e.g. 512m)")
    p.add_argument("--limit-cpu", default="", help="each task's vCPUs (e.g. 2)")
    p.add_argument("--reserve-memory", default="", help="recorded (a VM's memory is its own)")
    p.add_argument("--reserve-cpu", default="", help="recorded (a VM's vCPUs are its own)")
    p.add_argument("--mount", action="append", default=[],
                   help="type=volume|bind|tmpfs,source=...,target=...[,readonly]")
    p.add_argument("-p", "--publish", action="append", default=[],
                   help="PUBLISHED:TARGET[/PROTO] (kept in the spec; not published yet)")
    p.add_argument("--network", action="append", default=[], help="network to attach to")
    p.add_argument("--constraint", action="append", default=[],
                   help="placement constraint (checked against this node)")
    p.add_argument("-w", "--workdir", default="")
    p.add_argument("-u", "--user", default="")
    p.add_argument("--hostname", default="")
    p.add_argument("--entrypoint", default=None)
    p.add_argument("--stop-grace-period", default="", metavar="DURATION",
                   help="time to stop before a kill (default 10s)")
    p.add_argument("--stop-signal", default="")
    p.add_argument("-t", "--tty", action="store_true")
    p.add_argument("--update-parallelism", type=int, default=None,
                   help="tasks replaced at a time by an update (default 1, 0: all)")
    p.add_argument("--update-order", default="", metavar="stop-first|start-first",
                   help="stop the old task first (default) or start the new one first")
    p.add_argument("--update-delay", default="", metavar="DURATION",
                   help="wait between updated batches (default 0s)")
    p.add_argument("--update-failure-action", default="", metavar="pause|continue|rollback",
                   help="when an update's new tasks fail (default pause)")
    p.add_argument("--update-monitor", default="", metavar="DURATION",
                   help="how long a new task must run to count as a success (default 5s)")
    p.add_argument("--update-max-failure-ratio", type=float, default=None,
                   help="failed/updated tasks tolerated (default 0)")
    p.add_argument("--rollback-parallelism", type=int, default=None,
                   help="tasks replaced at a time by a rollback (default 1, 0: all)")
    p.add_argument("--rollback-order", default="", metavar="stop-first|start-first")
    p.add_argument("--rollback-delay", default="", metavar="DURATION",
                   help="wait between rolled-back batches (default 0s)")
    p.add_argument("--rollback-failure-action", default="", metavar="pause|continue",
                   help="when a rollback's tasks fail (default pause)")
    p.add_argument("--rollback-monitor", default="", metavar="DURATION")
    p.add_argument("--rollback-max-failure-ratio", type=float, default=None)
    p.add_argument("--secret", action="append", default=[],
                   help="NAME or source=NAME,target=FILE,uid=,gid=,mode= (in /run/secrets)")
    p.add_argument("--config", action="append", default=[],
                   help="NAME or source=NAME,target=/PATH,uid=,gid=,mode=")
    p.add_argument("--endpoint-mode", default="vip", choices=("vip", "dnsrr"))
    _suspend_flags(p)
    p.add_argument("-d", "--detach", action="store_true",
                   help="do not wait for the tasks to run")
    p.set_defaults(func=cmd_create)

    p = ssub.add_parser("ls", aliases=["list"], help="list services")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("-f", "--filter", action="append", default=[],
                   help="id=, name=, label=, mode=")
    p.set_defaults(func=cmd_ls)

    p = ssub.add_parser("ps", help="list the tasks of services")
    p.add_argument("services", nargs="+")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--no-trunc", action="store_true")
    p.add_argument("-f", "--filter", action="append", default=[],
                   help="desired-state=, id=, name=, node=")
    p.set_defaults(func=cmd_ps)

    p = ssub.add_parser("inspect", help="show services in detail")
    p.add_argument("services", nargs="+")
    p.add_argument("-f", "--format", default="")
    p.set_defaults(func=cmd_inspect)

    p = ssub.add_parser("scale", help="set the number of tasks: SERVICE=REPLICAS ...")
    p.add_argument("targets", nargs="+", metavar="SERVICE=REPLICAS")
    p.add_argument("-d", "--detach", action="store_true")
    p.set_defaults(func=cmd_scale)

    p = ssub.add_parser("update", help="change a service (its tasks are replaced one by one)")
    p.add_argument("service")
    p.add_argument("--image", default="")
    p.add_argument("--replicas", type=int, default=None)
    p.add_argument("--env-add", action="append", default=[], help="KEY=VALUE")
    p.add_argument("--env-rm", action="append", default=[], help="KEY")
    p.add_argument("--force", action="store_true", help="replace the tasks even if nothing "
                   "changed")
    _suspend_flags(p)
    p.add_argument("--no-checkpointable", dest="checkpointable", action="store_false",
                   help="replicas' roots on the host again (needs --auto-suspend 0)")
    p.add_argument("-d", "--detach", action="store_true")
    p.set_defaults(func=cmd_update, checkpointable=None)

    p = ssub.add_parser("rm", aliases=["remove"], help="remove services (and their tasks)")
    p.add_argument("services", nargs="+")
    p.set_defaults(func=cmd_rm)

    p = ssub.add_parser("logs", help="fetch the logs of a service's tasks")
    p.add_argument("service")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("-n", "--tail", default="all")
    p.add_argument("-t", "--timestamps", action="store_true")
    p.add_argument("--raw", action="store_true", help="no task prefix")
    p.set_defaults(func=cmd_logs)


def _suspend_flags(p: Any) -> None:
    p.add_argument("--checkpointable", action="store_true", default=None,
                   help="hold each replica's root in its VM's memory, so its VM can be saved "
                   "(suspended); no volumes or bind mounts "
                   "(ContainerSpec.SteelcupCheckpointable)")
    p.add_argument("--auto-suspend", default="", metavar="IDLE",
                   help="with --checkpointable: suspend each replica after IDLE (e.g. 30s, "
                   "5m) without network traffic; a connection to the service's published "
                   "port or virtual IP resumes them (ContainerSpec.SteelcupAutoSuspend; 0: "
                   "never)")


def _register_swarm(sub: Any, name: str, help_text: str) -> None:
    ssub = _group(sub, name, help_text)
    p = ssub.add_parser("init", help="make this daemon a one-node swarm (services then work)")
    p.add_argument("--advertise-addr", default="")
    p.add_argument("--listen-addr", default="0.0.0.0:2377")
    p.set_defaults(func=cmd_swarm_init)
    p = ssub.add_parser("leave", help="leave the swarm: the operator's services are removed")
    p.add_argument("-f", "--force", action="store_true", help="required: this node is the "
                   "swarm's only manager")
    p.set_defaults(func=cmd_swarm_leave)


def _register_node(sub: Any, name: str, help_text: str) -> None:
    nsub = _group(sub, name, help_text)
    p = nsub.add_parser("ls", aliases=["list"], help="list nodes (this one)")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_node_ls)
    p = nsub.add_parser("inspect", help="show a node in detail")
    p.add_argument("nodes", nargs="+")
    p.add_argument("-f", "--format", default="")
    p.set_defaults(func=cmd_node_inspect)


def _s(ref: str) -> str:
    return f"/services/{path_quote(ref)}"


# -- service ---------------------------------------------------------------------------------


def cmd_create(ctx: Context, args: argparse.Namespace) -> int:
    from steelcup.cli.servicespec import ServiceOptions, service_spec

    options = {k: v for k, v in vars(args).items() if k in ServiceOptions.__dataclass_fields__}
    options["env"], options["labels"] = args.env, args.label
    options["mounts"], options["networks"] = args.mount, args.network
    options["constraints"] = args.constraint
    options["secrets"], options["configs"] = args.secret, args.config
    options["checkpointable"] = bool(args.checkpointable)
    args_list = list(args.args)
    if args_list and args_list[0] == "--":
        args_list = args_list[1:]
    options["args"] = args_list
    try:
        spec = service_spec(ServiceOptions(**options), dict(os.environ))
        out = ctx.client().post_json("/services/create", json_body=spec)
    except SteelcupError as exc:
        report(exc)
        return 1
    for warning in out.get("Warnings") or []:
        print(warning, file=sys.stderr)
    print(out["ID"])
    return 0 if args.detach else _converge(ctx, out["ID"])


def _converge(ctx: Context, service_id: str) -> int:
    """Wait until the service runs as many tasks as it wants, saying how far it is and why a
    task failed (each failed task once, as `SLOT/DESIRED: error`, like docker's progress)."""
    deadline = time.monotonic() + CONVERGE_TIMEOUT_S
    shown = ""
    reported: set[str] = set()
    while True:
        try:
            client = ctx.client()
            rows = client.get_json("/services", {
                "filters": json.dumps({"id": [service_id]}), "status": True})
            status = rows[0].get("ServiceStatus") or {} if rows else {}
            running, desired = status.get("RunningTasks", 0), status.get("DesiredTasks", 0)
            failures = ([] if running == desired
                        else _new_task_errors(client, service_id, desired, reported))
        except SteelcupError as exc:
            report(exc)
            return 1
        line = f"overall progress: {running} out of {desired} tasks"
        if line != shown:
            print(line)
            shown = line
        for failure in failures:
            print(failure)
        if running == desired:
            print(f"verify: Service {service_id} converged")
            return 0
        if time.monotonic() > deadline:
            print(f"the service did not converge in {CONVERGE_TIMEOUT_S:.0f} s; see "
                  f"`steelcup service ps {service_id}`", file=sys.stderr)
            return 1
        time.sleep(0.5)  # the progress display's refresh, as docker's


def _new_task_errors(client: ApiClient, service_id: str, desired: int,
                     reported: set[str]) -> list[str]:
    """`SLOT/DESIRED: error` for each of the service's failed tasks not in `reported`
    (added to it), oldest first."""
    tasks = client.get_json("/tasks", {"filters": json.dumps({"service": [service_id]})})
    lines = []
    for task in sorted(tasks, key=lambda t: str(t.get("CreatedAt", ""))):
        error = (task.get("Status") or {}).get("Err", "")
        if error and task["ID"] not in reported:
            reported.add(task["ID"])
            lines.append(f"{task.get('Slot') or task.get('NodeID', '')[:12]}/{desired}: {error}")
    return lines


def cmd_ls(ctx: Context, args: argparse.Namespace) -> int:
    from steelcup.cli.commands.containers import filters_json
    from steelcup.cli.format import table

    try:
        services = ctx.client().get_json("/services", {"filters": filters_json(args.filter),
                                                       "status": True})
    except SteelcupError as exc:
        report(exc)
        return 1
    if args.quiet:
        for s in services:
            print(s["ID"])
        return 0
    rows = []
    for s in services:
        spec = s["Spec"]
        status = s.get("ServiceStatus") or {}
        mode = "global" if "Global" in spec.get("Mode", {}) else "replicated"
        ports = ",".join(f"*:{p.get('PublishedPort', '')}->{p['TargetPort']}/"
                         f"{p.get('Protocol', 'tcp')}"
                         for p in (spec.get("EndpointSpec") or {}).get("Ports") or [])
        rows.append([s["ID"][:12], spec["Name"], mode,
                     f"{status.get('RunningTasks', 0)}/{status.get('DesiredTasks', 0)}",
                     spec["TaskTemplate"]["ContainerSpec"]["Image"], ports])
    sys.stdout.write(table(["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"], rows))
    return 0


def cmd_ps(ctx: Context, args: argparse.Namespace) -> int:
    from steelcup.cli.format import human_duration, parse_time, table

    client = ctx.client()
    try:
        services = {ref: client.get_json(_s(ref)) for ref in args.services}
    except SteelcupError as exc:
        report(exc)
        return 1
    filters: dict[str, list[str]] = {"service": [s["ID"] for s in services.values()]}
    for item in args.filter:
        key, _, value = item.partition("=")
        filters.setdefault(key, []).append(value)
    try:
        tasks = client.get_json("/tasks", {"filters": json.dumps(filters)})
    except SteelcupError as exc:
        report(exc)
        return 1
    names = {s["ID"]: s["Spec"]["Name"] for s in services.values()}
    tasks.sort(key=lambda t: str(t["CreatedAt"]), reverse=True)  # newest first, then:
    tasks.sort(key=lambda t: (names.get(t["ServiceID"], ""), t.get("Slot", 0),
                              t["DesiredState"] != "running"))
    if args.quiet:
        for t in tasks:
            print(t["ID"] if args.no_trunc else t["ID"][:12])
        return 0
    rows, seen = [], set()
    now = time.time()
    for t in tasks:
        slot = (t["ServiceID"], t.get("Slot", 0))
        name = f"{names[t['ServiceID']]}.{t.get('Slot') or t['NodeID']}"
        if slot in seen:
            name = f" \\_ {name}"
        seen.add(slot)
        status = t["Status"]
        since = parse_time(status.get("Timestamp"))
        ago = f"{human_duration(now - since)} ago" if since else ""
        error = status.get("Err", "")
        rows.append([t["ID"] if args.no_trunc else t["ID"][:12], name,
                     t["Spec"].get("ContainerSpec", {}).get("Image", ""),
                     t["DesiredState"].capitalize(),
                     f"{status['State'].capitalize()} {ago}".strip(),
                     f'"{error}"' if error else ""])
    sys.stdout.write(table(["ID", "NAME", "IMAGE", "DESIRED STATE", "CURRENT STATE", "ERROR"],
                           rows))
    return 0


def cmd_inspect(ctx: Context, args: argparse.Namespace) -> int:
    return inspect_each(ctx, [_s(ref) for ref in args.services], args.format)


def _update(ctx: Context, ref: str, change: Any) -> str:
    """Read the service, change its spec, write it back at the version read."""
    client = ctx.client()
    service = client.get_json(_s(ref))
    spec = service["Spec"]
    change(spec)
    client.post_json(f"{_s(service['ID'])}/update",
                     {"version": service["Version"]["Index"]}, json_body=spec)
    return str(service["ID"])


def cmd_scale(ctx: Context, args: argparse.Namespace) -> int:
    from steelcup.cli.servicespec import scale_targets

    status = 0
    try:
        targets = scale_targets(args.targets)
    except SteelcupError as exc:
        report(exc)
        return 1
    for name, replicas in targets:
        def change(spec: dict[str, Any], replicas: int = replicas, name: str = name) -> None:
            if "Replicated" not in spec.get("Mode", {}):
                raise SteelcupError(f"scale can only be used with replicated mode ({name})")
            spec["Mode"]["Replicated"]["Replicas"] = replicas
        try:
            service_id = _update(ctx, name, change)
        except SteelcupError as exc:
            report(exc)
            status = 1
            continue
        print(f"{name} scaled to {replicas}")
        if not args.detach:
            status |= _converge(ctx, service_id)
    return status


def cmd_update(ctx: Context, args: argparse.Namespace) -> int:
    def change(spec: dict[str, Any]) -> None:
        task = spec["TaskTemplate"]
        container = task["ContainerSpec"]
        if args.image:
            container["Image"] = args.image
        if args.replicas is not None:
            if "Replicated" not in spec.get("Mode", {}):
                raise SteelcupError("--replicas can only be used with replicated mode")
            spec["Mode"]["Replicated"]["Replicas"] = args.replicas
        env = [e for e in container.get("Env") or []
               if e.partition("=")[0] not in set(args.env_rm)
               and e.partition("=")[0] not in {a.partition("=")[0] for a in args.env_add}]
        if args.env_add or args.env_rm:
            container["Env"] = env + list(args.env_add)
        if args.force:
            task["ForceUpdate"] = int(task.get("ForceUpdate") or 0) + 1
        container.update(suspend_fields(args.checkpointable, args.auto_suspend))

    from steelcup.cli.servicespec import suspend_fields

    try:
        service_id = _update(ctx, args.service, change)
    except SteelcupError as exc:
        report(exc)
        return 1
    print(args.service)
    return 0 if args.detach else _converge(ctx, service_id)


def cmd_rm(ctx: Context, args: argparse.Namespace) -> int:
    return delete_each(ctx, args.services, _s)


def cmd_logs(ctx: Context, args: argparse.Namespace) -> int:
    from steelcup.cli.attach import write_all
    from steelcup.stdcopy import STDOUT, Demuxer

    client = ctx.client()
    try:
        service = client.get_json(_s(args.service))
        tty = bool(service["Spec"]["TaskTemplate"]["ContainerSpec"].get("TTY"))
        query = {"stdout": True, "stderr": True, "follow": args.follow, "tail": args.tail,
                 "timestamps": args.timestamps, "details": not args.raw}
        demux = None if tty else Demuxer()
        names: dict[str, str] = {}
        for chunk in client.stream("GET", f"{_s(service['ID'])}/logs", query):
            pieces = [(STDOUT, chunk)] if demux is None else demux.feed(chunk)
            for stream, payload in pieces:
                if not args.raw:
                    payload = _prefixed(client, service, payload, args.timestamps, names)
                write_all(1 if stream == STDOUT else 2, payload)
    except SteelcupError as exc:
        report(exc)
        return 1
    except BrokenPipeError:
        return 0
    return 0


def _prefixed(client: Any, service: dict[str, Any], line: bytes, timestamps: bool,
              names: dict[str, str]) -> bytes:
    """`[TIME ]DETAILS MESSAGE` -> `[TIME ]SERVICE.SLOT.TASK@NODE | MESSAGE`, as docker."""
    stamp = b""
    if timestamps:
        stamp, _, line = line.partition(b" ")
        stamp += b" "
    details, _, message = line.partition(b" ")
    fields = dict(item.split("=", 1) for item in details.decode().split(",") if "=" in item)
    task_id = fields.get("com.docker.swarm.task.id", "")
    if task_id not in names:
        try:
            task = client.get_json(f"/tasks/{path_quote(task_id)}")
            node = client.get_json(f"/nodes/{path_quote(task['NodeID'])}")
            names[task_id] = (f"{service['Spec']['Name']}.{task.get('Slot') or task['NodeID']}"
                              f".{task_id}@{node['Description']['Hostname']}")
        except SteelcupError:
            names[task_id] = task_id
    return stamp + f"{names[task_id]}    | ".encode() + message


# -- swarm, node -------------------------------------------------------------------------------


def cmd_swarm_init(ctx: Context, args: argparse.Namespace) -> int:
    try:
        node_id = ctx.client().post_json("/swarm/init", json_body={
            "ListenAddr": args.listen_addr, "AdvertiseAddr": args.advertise_addr})
    except SteelcupError as exc:
        report(exc)
        return 1
    print(f"Swarm initialized: current node ({node_id}) is now a manager.\n\n"
          "steelcup's swarm has this one node: services run here, each task in its own VM "
          "(`steelcup service create --help`).")
    return 0


def cmd_swarm_leave(ctx: Context, args: argparse.Namespace) -> int:
    try:
        ctx.client().post("/swarm/leave", {"force": args.force})
    except SteelcupError as exc:
        report(exc)
        return 1
    print("Node left the swarm.")
    return 0


def cmd_node_ls(ctx: Context, args: argparse.Namespace) -> int:
    from steelcup.cli.format import table

    try:
        nodes = ctx.client().get_json("/nodes")
    except SteelcupError as exc:
        report(exc)
        return 1
    if args.quiet:
        for n in nodes:
            print(n["ID"])
        return 0
    rows = [[f"{n['ID']} *", n["Description"]["Hostname"], n["Status"]["State"].capitalize(),
             n["Spec"]["Availability"].capitalize(),
             "Leader" if (n.get("ManagerStatus") or {}).get("Leader") else "",
             n["Description"]["Engine"]["EngineVersion"]] for n in nodes]
    sys.stdout.write(table(["ID", "HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER STATUS",
                            "ENGINE VERSION"], rows))
    return 0


def cmd_node_inspect(ctx: Context, args: argparse.Namespace) -> int:
    return inspect_each(ctx, [f"/nodes/{path_quote(ref)}" for ref in args.nodes], args.format)
