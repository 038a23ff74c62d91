"""steelcup-runtime: runc's command line, each container in a steelcup VM.

A thin client of a steelcup daemon (the Engine API on its unix socket, started on demand with
a state root below --root, like the CLI's autostart): `create` makes the daemon container from
the bundle and spawns the keeper (steelcup.oci.keeper), whose pid is the container's; the other
commands map onto the API. Errors go to stderr and, with --log, to the log file in runc's JSON
shape, where conmon and containerd's shim read them. docs/oci-runtime.md.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from steelcup import __version__
from steelcup.cgroups import place as cgroup_place
from steelcup.cli.client import ApiClient, path_quote
from steelcup.errors import Conflict, InvalidArgument, NotFound, SteelcupError
from steelcup.oci import bundle as bundle_module
from steelcup.oci.console import open_console
from steelcup.oci.keeper import Keeper, make_controlling_tty, ready_writer
from steelcup.oci.lookup import check_program
from steelcup.oci.state import OCI_VERSION, Record, StateDir, check_id, oci_state, oci_status
from steelcup.runtime.names import validate_name

DEFAULT_ROOT = "/run/steelcup-runtime"
SOCKET_NAME = "daemon.sock"
DAEMON_DIR = "daemon"
KEEPER_READY_S = 60.0
CGROUP_REMOVE_DEADLINE_S = 2.0  # delete: for the keeper and QEMU to leave the cgroup


class RuntimeError_(SteelcupError):
    """A failure reported as runc reports it (message only, exit status 1)."""


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class Runtime:
    """One invocation: the global flags, the state dir and the daemon connection."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.root = Path(args.root)
        self.states = StateDir(self.root)
        self._client: ApiClient | None = None

    @property
    def socket(self) -> str:
        host = self.args.host or os.environ.get("STEELCUP_RUNTIME_HOST", "")
        return host.removeprefix("unix://") if host else str(self.root / SOCKET_NAME)

    def client(self) -> ApiClient:
        if self._client is None:
            autostart = not (self.args.host or os.environ.get("STEELCUP_RUNTIME_HOST"))
            self._client = ApiClient(self.socket, on_unreachable=self._start_daemon
                                     if autostart else None)
        return self._client

    def _start_daemon(self) -> bool:
        from steelcup.cli.autostart import start_daemon

        start_daemon(self.socket, str(self.root / DAEMON_DIR),
                     extra_args=tuple(self.args.daemon_arg or ()))
        return True

    def globals_argv(self) -> list[str]:
        """The global flags again, for the keeper this invocation spawns."""
        argv = ["--root", str(self.root)]
        if self.args.host:
            argv += ["--host", self.args.host]
        return argv

    # -- daemon lookups
    def inspect(self, record: Record) -> dict[str, Any] | None:
        try:
            info = self.client().get_json(f"/containers/{path_quote(record.container)}/json")
        except NotFound:
            return None
        return info if isinstance(info, dict) else None

    def status(self, record: Record) -> str:
        info = self.inspect(record)
        state = info.get("State") if info else None
        return oci_status(state.get("Status") if isinstance(state, dict) else None)


def keeper_alive(record: Record) -> bool:
    """Whether the record's keeper still runs (and is ours: pids are reused)."""
    if record.keeper_pid <= 0:
        return False
    try:
        argv = Path(f"/proc/{record.keeper_pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"steelcup.oci" in argv and record.id.encode() in argv and b"_keeper" in argv


def _spawn_keeper(rt: Runtime, record: Record, argv_tail: Sequence[str],
                  slave: int | None) -> int:
    """Start the keeper (the engine's stdio, or the pty's slave), wait until it is attached;
    its pid."""
    read_fd, write_fd = os.pipe()
    argv = [sys.executable, "-m", "steelcup.oci", *rt.globals_argv(), "_keeper",
            "--ready-fd", str(write_fd), *argv_tail, record.id]
    stdio: dict[str, Any] = {}
    if slave is not None:
        stdio = {"stdin": slave, "stdout": slave, "stderr": slave}
    try:
        proc = subprocess.Popen(argv, pass_fds=(write_fd,), start_new_session=True,
                                close_fds=True, **stdio)
    finally:
        os.close(write_fd)
        if slave is not None:
            os.close(slave)
    try:
        ready, _, _ = select.select([read_fd], [], [], KEEPER_READY_S)
        data = os.read(read_fd, 4096) if ready else b""
    finally:
        os.close(read_fd)
    if not data:
        code = proc.poll()
        if code is None:
            proc.kill()
        raise RuntimeError_(f"the keeper process did not attach to the container "
                            f"(exit status {proc.wait()})")
    proc.returncode = 0  # the engine reaps it, not us (no warning at our exit)
    return proc.pid


def daemon_name(container_id: str) -> str | None:
    """The daemon's name for the container: its OCI id where docker's name rule allows it
    (podman's and containerd's ids do), else none (the daemon picks one)."""
    try:
        return validate_name(container_id)
    except InvalidArgument:
        return None


def _write_pid_file(path: str | None, pid: int) -> None:
    if not path:
        return
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(str(pid))
    os.replace(tmp, target)


# -- commands ------------------------------------------------------------------------------

def _no_fds(count: int) -> None:
    if count > 0:
        raise InvalidArgument("--preserve-fds: steelcup cannot pass host file descriptors "
                              "into a VM")


def cmd_create(rt: Runtime, a: argparse.Namespace) -> int:
    container_id = check_id(a.id)
    _no_fds(a.preserve_fds)
    bundle_dir = os.path.abspath(a.bundle or ".")
    try:
        doc = json.loads(Path(bundle_dir, "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"cannot read {bundle_dir}/config.json: {exc}") from exc
    spec = bundle_module.translate(doc, bundle_dir, systemd_cgroup=rt.args.systemd_cgroup)
    if spec.resolv_conf:  # on the engine's network: its DNS servers (docs/oci-runtime.md)
        try:
            spec.body["HostConfig"].update(
                bundle_module.resolv_settings(Path(spec.resolv_conf).read_text()))
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidArgument(f"cannot read the engine's resolv.conf "
                                  f"{spec.resolv_conf}: {exc}") from exc
    try:  # as runc, so that engines tell a missing program (127) from one not executable (126)
        check_program(Path(spec.body["HostConfig"]["SteelcupRootfs"]), spec.body["Entrypoint"][0],
                      spec.body["Env"], spec.body["WorkingDir"])
    except InvalidArgument as exc:
        raise RuntimeError_(f"unable to start container process: {exc}") from None
    if spec.terminal and not a.console_socket:
        raise InvalidArgument("cannot allocate tty if runc will detach without setting "
                              "console socket")
    try:
        rt.states.load(container_id)
        raise RuntimeError_(f"container with id exists: {container_id}")
    except NotFound:
        pass
    if spec.pod.sandbox_id:  # a pod member: the VM of its sandbox (docs/oci-runtime.md)
        try:
            sandbox = rt.states.load(check_id(spec.pod.sandbox_id))
        except NotFound:
            raise InvalidArgument(f"the pod's sandbox {spec.pod.sandbox_id} is not a container "
                                  "of this steelcup-runtime (--root): a pod's containers must "
                                  "all use it") from None
        spec.body["HostConfig"]["SteelcupPodOf"] = sandbox.container
    # the container's cgroup, as runc makes it: the keeper's (and so what the engine reads
    # for the container's figures), and the VM's QEMU's (the daemon moves it there)
    placed = cgroup_place.make(spec.cgroup) if spec.cgroup else ()
    client = rt.client()
    try:
        created = client.post_json("/containers/create", {"name": daemon_name(container_id)},
                                   spec.body)
    except BaseException:
        _remove_cgroup(spec.cgroup)
        raise
    record = Record(id=container_id, container=str(created["Id"]), bundle=bundle_dir,
                    created=_now(), annotations=spec.annotations, terminal=spec.terminal,
                    cgroup=spec.cgroup)
    try:
        rt.states.create(record)
        slave = open_console(a.console_socket) if spec.terminal else None
        tail = ["--tty"] if spec.terminal else []
        pid = _spawn_keeper(rt, record, tail, slave)
        record = rt.states.with_keeper(record, pid)
        cgroup_place.enter(placed, pid)
        _write_pid_file(a.pid_file, pid)
    except BaseException:
        if keeper_alive(record):
            os.kill(record.keeper_pid, 9)
        try:
            client.delete(f"/containers/{record.container}", {"force": True})
        except SteelcupError:
            pass
        rt.states.remove(container_id)
        _remove_cgroup(spec.cgroup)
        raise
    return 0


def _remove_cgroup(path: str) -> None:
    """The container's cgroup goes with it (not its parents: the engine's), as with runc; a
    cgroup still busy (a VM not yet reaped) is left, with a warning."""
    if not path:
        return
    deadline = time.monotonic() + CGROUP_REMOVE_DEADLINE_S
    while True:
        try:
            left = cgroup_place.remove(path)
        except SteelcupError as exc:
            left = [str(exc)]
            break
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)  # the keeper or QEMU ending: the engine waits for no event here
    for why in left:
        print(f"steelcup-runtime: warning: cgroup not removed: {why}", file=sys.stderr)


def cmd_keeper(rt: Runtime, a: argparse.Namespace) -> int:
    record = rt.states.load(a.id)
    if a.tty:
        make_controlling_tty(0)
    keeper = Keeper(rt.client(), record.container, exec_id=a.exec_id or "", tty=a.tty)
    return keeper.run(ready_writer(a.ready_fd))


def cmd_start(rt: Runtime, a: argparse.Namespace) -> int:
    record = rt.states.load(a.id)
    status = rt.status(record)
    if status != "created":
        raise RuntimeError_(f"cannot start a container that has {status}"
                            if status == "stopped" else "cannot start an already running "
                            "container")
    rt.client().post(f"/containers/{path_quote(record.container)}/start")
    return 0


def cmd_state(rt: Runtime, a: argparse.Namespace) -> int:
    record = rt.states.load(a.id)
    info = rt.inspect(record)
    state = info.get("State") if info else None
    status = state.get("Status") if isinstance(state, dict) else None
    print(json.dumps(oci_state(record, status, keeper_alive(record)), indent=2))
    return 0


def cmd_kill(rt: Runtime, a: argparse.Namespace) -> int:
    record = rt.states.load(a.id)
    status = rt.status(record)
    signal_name = a.signal or "SIGTERM"
    if status == "created":
        # No process runs in the VM yet: ending the keeper ends the container, as killing
        # runc's waiting init would.
        if keeper_alive(record):
            os.kill(record.keeper_pid, 9)
        rt.client().delete(f"/containers/{path_quote(record.container)}", {"force": True})
        return 0
    if status == "stopped":
        if a.all:
            return 0
        raise RuntimeError_("container not running")
    try:
        rt.client().post(f"/containers/{path_quote(record.container)}/kill",
                         {"signal": signal_name})
    except Conflict as exc:
        raise RuntimeError_("container not running") from exc
    return 0


def cmd_delete(rt: Runtime, a: argparse.Namespace) -> int:
    try:
        record = rt.states.load(a.id)
    except NotFound:
        if a.force:
            return 0
        raise
    status = rt.status(record)
    if status != "stopped" and not a.force:
        raise RuntimeError_(f"cannot delete container {a.id} that is not stopped: {status}")
    try:
        rt.client().delete(f"/containers/{path_quote(record.container)}", {"force": True})
    except NotFound:
        pass
    if keeper_alive(record) and status == "created":
        os.kill(record.keeper_pid, 9)
    rt.states.remove(record.id)
    _remove_cgroup(record.cgroup)
    return 0


def cmd_pause(rt: Runtime, a: argparse.Namespace, action: str) -> int:
    record = rt.states.load(a.id)
    try:
        rt.client().post(f"/containers/{path_quote(record.container)}/{action}")
    except Conflict as exc:
        raise RuntimeError_(str(exc)) from exc
    return 0


def cmd_ps(rt: Runtime, a: argparse.Namespace) -> int:
    record = rt.states.load(a.id)
    running = rt.status(record) in ("running", "paused") and keeper_alive(record)
    pids = [record.keeper_pid] if running else []
    if a.format == "json":
        print(json.dumps(pids))
    else:
        print("PID")
        for pid in pids:
            print(pid)
    return 0


def cmd_exec(rt: Runtime, a: argparse.Namespace) -> int:
    _no_fds(a.preserve_fds)
    record = rt.states.load(a.id)
    if rt.status(record) != "running":
        raise RuntimeError_("cannot exec in a stopped container")
    if a.process:
        try:
            process = json.loads(Path(a.process).read_text())
        except (OSError, ValueError) as exc:
            raise InvalidArgument(f"cannot read the process file {a.process}: {exc}") from exc
    else:
        process = {"args": a.exec_args, "env": a.env or [], "cwd": a.cwd or "",
                   "terminal": a.tty}
    if not isinstance(process, dict) or not process.get("args"):
        raise InvalidArgument("exec: the process needs args")
    tty = process.get("terminal") is True or a.tty
    user = process.get("user") or {}
    body = {
        "Cmd": [str(x) for x in process["args"]],
        "Env": [str(x) for x in process.get("env") or []],
        "WorkingDir": process.get("cwd") or "",
        "User": f"{user.get('uid', 0)}:{user.get('gid', 0)}" if isinstance(user, dict) else "",
        "Tty": tty,
        "AttachStdin": True,
        "AttachStdout": True,
        "AttachStderr": True,
    }
    created = rt.client().post_json(f"/containers/{path_quote(record.container)}/exec",
                                    None, body)
    exec_id = str(created["Id"])
    slave = open_console(a.console_socket) if tty and a.console_socket else None
    tail = ["--exec-id", exec_id] + (["--tty"] if tty else [])
    if a.detach:
        pid = _spawn_keeper(rt, record, tail, slave)
        if record.cgroup:  # in the container's cgroup, as runc's exec'd process would be
            cgroup_place.enter(cgroup_place.make(record.cgroup), pid)
        _write_pid_file(a.pid_file, pid)
        return 0
    if slave is not None:
        for fd in (0, 1, 2):
            os.dup2(slave, fd)
        os.close(slave)
    keeper = Keeper(rt.client(), record.container, exec_id=exec_id, tty=tty)
    return keeper.run(lambda: _write_pid_file(a.pid_file, os.getpid()))


def cmd_update(rt: Runtime, a: argparse.Namespace) -> int:
    record = rt.states.load(a.id)
    try:
        text = sys.stdin.read() if a.resources == "-" else Path(a.resources).read_text()
        resources = json.loads(text)
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"cannot read the resources {a.resources}: {exc}") from exc
    if not isinstance(resources, dict):
        raise InvalidArgument("the resources must be a JSON object (LinuxResources)")
    body = bundle_module.resources_body(resources)
    if body:
        rt.client().post(f"/containers/{path_quote(record.container)}/update", None, body)
    return 0


def cmd_features(_rt: Runtime, _a: argparse.Namespace) -> int:
    print(json.dumps({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": [],
        "mountOptions": ["bind", "rbind", "ro", "rw", "nosuid", "nodev", "noexec"],
        "linux": {
            "namespaces": ["network", "pid", "ipc", "uts", "mount"],
            "capabilities": [],
            # the container's cgroup is made as a path in each hierarchy (systemd's form too,
            # without its D-Bus: docs/oci-runtime.md)
            "cgroup": {"v1": True, "v2": True, "systemd": False},
        },
        "annotations": {"org.opencontainers.runc.version": "steelcup " + __version__},
    }, indent=2))
    return 0


def version_text() -> str:
    return (f"steelcup-runtime version {__version__}\ncommit: steelcup\n"
            f"spec: {OCI_VERSION}\n")


# -- argv ----------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="steelcup-runtime",
                                description="runc-compatible OCI runtime: containers in "
                                "steelcup VMs (docs/oci-runtime.md)")
    p.add_argument("-v", "--version", action="store_true")
    p.add_argument("--root", default=DEFAULT_ROOT, help="state directory (and the daemon's)")
    p.add_argument("--log", default="", help="where errors go, besides stderr")
    p.add_argument("--log-format", default="text", choices=("text", "json"))
    p.add_argument("--debug", action="store_true")
    p.add_argument("--systemd-cgroup", action="store_true",
                   help="linux.cgroupsPath is systemd's slice:prefix:name")
    p.add_argument("--rootless", default="", help="accepted, ignored")
    p.add_argument("--criu", default="", help="accepted, ignored")
    p.add_argument("--host", default="", help="a steelcup daemon's socket (no autostart)")
    p.add_argument("--daemon-arg", action="append",
                   help="an option for the daemon started on demand (repeatable)")
    sub = p.add_subparsers(dest="command")
    c = sub.add_parser("create")
    c.add_argument("--bundle", "-b", default=".")
    c.add_argument("--pid-file", default="")
    c.add_argument("--console-socket", default="")
    c.add_argument("--no-pivot", action="store_true")
    c.add_argument("--no-new-keyring", action="store_true")
    c.add_argument("--preserve-fds", type=int, default=0)
    c.add_argument("id")
    k = sub.add_parser("_keeper")
    k.add_argument("--ready-fd", type=int, required=True)
    k.add_argument("--exec-id", default="")
    k.add_argument("--tty", action="store_true")
    k.add_argument("id")
    for name in ("start", "state", "pause", "resume"):
        sub.add_parser(name).add_argument("id")
    kl = sub.add_parser("kill")
    kl.add_argument("--all", "-a", action="store_true")
    kl.add_argument("id")
    kl.add_argument("signal", nargs="?", default="")
    d = sub.add_parser("delete")
    d.add_argument("--force", "-f", action="store_true")
    d.add_argument("id")
    ps = sub.add_parser("ps")
    ps.add_argument("--format", "-f", default="table", choices=("table", "json"))
    ps.add_argument("id")
    ps.add_argument("ps_args", nargs="*")
    e = sub.add_parser("exec")
    e.add_argument("--process", "-p", default="")
    e.add_argument("--detach", "-d", action="store_true")
    e.add_argument("--pid-file", default="")
    e.add_argument("--console-socket", default="")
    e.add_argument("--tty", "-t", action="store_true")
    e.add_argument("--cwd", default="")
    e.add_argument("--env", "-e", action="append")
    e.add_argument("--user", "-u", default="")
    e.add_argument("--cap", action="append")
    e.add_argument("--no-new-privs", action="store_true")
    e.add_argument("--process-label", default="")
    e.add_argument("--apparmor", default="")
    e.add_argument("--preserve-fds", type=int, default=0)
    e.add_argument("id")
    e.add_argument("exec_args", nargs="*", metavar="command")
    u = sub.add_parser("update")
    u.add_argument("--resources", "-r", required=True,
                   help="a LinuxResources JSON file, or - for stdin")
    u.add_argument("id")
    sub.add_parser("features")
    return p


def _report(args: argparse.Namespace | None, message: str) -> None:
    """An error as runc gives it: on stderr, and as a JSON line in --log when asked."""
    print(f"steelcup-runtime: {message}" if args is None or args.log_format != "json"
          else json.dumps({"level": "error", "msg": message, "time": _now()}),
          file=sys.stderr)
    if args is not None and args.log:
        line = (json.dumps({"level": "error", "msg": message, "time": _now()})
                if args.log_format == "json" else f"time=\"{_now()}\" level=error "
                f"msg={json.dumps(message)}")
        try:
            with open(args.log, "a") as f:
                f.write(line + "\n")
        except OSError:
            pass


def _fail(args: argparse.Namespace | None, message: str) -> NoReturn:
    _report(args, message)
    raise SystemExit(1)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.version:
        sys.stdout.write(version_text())
        return 0
    if not args.command:
        _fail(args, "no command given (create, start, state, kill, delete, exec, ...)")
    rt = Runtime(args)
    commands: dict[str, Callable[[Runtime, argparse.Namespace], int]] = {
        "create": cmd_create, "_keeper": cmd_keeper, "start": cmd_start, "state": cmd_state,
        "kill": cmd_kill, "delete": cmd_delete, "ps": cmd_ps, "exec": cmd_exec,
        "features": cmd_features, "update": cmd_update,
        "pause": lambda r, a: cmd_pause(r, a, "pause"),
        "resume": lambda r, a: cmd_pause(r, a, "unpause"),
    }
    started = time.monotonic()
    try:
        code: int = commands[args.command](rt, args)
    except SteelcupError as exc:
        _fail(args, str(exc))
    except KeyboardInterrupt:
        return 130
    if args.debug:
        print(f"steelcup-runtime: {args.command} took {time.monotonic() - started:.3f}s",
              file=sys.stderr)
    return code
