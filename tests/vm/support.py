"""Helpers for VM-tier tests: start/stop a real daemon, drive the steelcup CLI, find QEMUs."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from steelcup.errors import NotFound
from steelcup.vm.assets import GuestAssets, find_assets

REPO = Path(__file__).resolve().parents[2]
ASSETS = REPO / "build" / "guest"
BUSYBOX_TAR = REPO / "build" / "images" / "busybox.tar"


def need_assets() -> None:
    missing = [p for p in (ASSETS / "vmlinux", ASSETS / "initrd.img", BUSYBOX_TAR)
               if not p.exists()]
    if missing:
        pytest.fail(f"guest assets missing ({', '.join(map(str, missing))}): run `make guest "
                    "images` (make test does this)")


def guest_assets() -> GuestAssets:
    """The built kernel and initrd (the test is skipped if they are not built)."""
    try:
        return find_assets(None)
    except NotFound as exc:
        pytest.skip(f"guest assets missing (run `make guest`): {exc}")


@contextlib.contextmanager
def busybox_root(prefix: str, applets: Sequence[str], dirs: Sequence[str] = ("tmp", "etc")
                 ) -> Iterator[Path]:
    """A container root of the host's static /bin/busybox with `applets` linked to it."""
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        pytest.skip("/bin/busybox (busybox-static) is needed for the test rootfs")
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)  # mkdtemp makes it 0700: other uids could not reach /bin
    try:
        (root / "bin").mkdir()
        shutil.copy2(busybox, root / "bin" / "busybox")
        for applet in applets:
            if applet != "busybox":
                (root / "bin" / applet).symlink_to("busybox")
        for d in dirs:
            (root / d).mkdir()
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Daemon:
    root: Path
    socket: Path
    proc: subprocess.Popen[bytes]
    log: Path
    netns: str | None = None

    @property
    def env(self) -> dict[str, str]:
        return dict(os.environ, STEELCUP_HOST=f"unix://{self.socket}",
                    STEELCUP_ROOT=str(self.root), STEELCUP_NO_AUTOSTART="1")

    def cli(self, *args: str, input: bytes | None = None, timeout: float = 180,
            check: bool = False) -> subprocess.CompletedProcess[bytes]:
        result = subprocess.run(
            [sys.executable, "-m", "steelcup", *args], input=input, capture_output=True,
            timeout=timeout, env=self.env,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"steelcup {' '.join(args)} -> {result.returncode}\n"
                f"stdout: {result.stdout[-2000:]!r}\nstderr: {result.stderr[-2000:]!r}")
        return result

    def out(self, *args: str, input: bytes | None = None) -> str:
        return self.cli(*args, input=input, check=True).stdout.decode()


HELPERS = Path(__file__).parent / "helpers"


def static_helper(name: str, out_dir: Path) -> Path:
    """tests/vm/helpers/<name>.c built static with musl-gcc, to be copied into a busybox
    container (`cp`) for what busybox has no tool for."""
    if shutil.which("musl-gcc") is None:
        pytest.skip("musl-gcc (musl-tools) is needed to build the test's helper program")
    out = out_dir / name
    subprocess.run(["musl-gcc", "-static", "-O2", "-Wall", "-Werror", "-o", str(out),
                    str(HELPERS / f"{name}.c")], check=True, capture_output=True, timeout=120)
    return out


def new_netns(tag: str) -> str:
    """A network namespace of the test's own (loopback up); remove with `delete_netns`."""
    name = f"sct-{os.getpid() % 100000}-{tag}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    return name


def delete_netns(name: str) -> None:
    subprocess.run(["ip", "netns", "delete", name], check=False)


def in_netns(netns: str, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True,
                          timeout=timeout)


def start_daemon(root: Path, sock: Path, netns: str | None = None,
                 extra_args: tuple[str, ...] = (), host_mounts: bool = False) -> Daemon:
    """A daemon whose bridges, NAT rules and VMs live in `netns` (the tests' own namespace:
    nothing they do touches the host's network); `extra_args` go to `steelcup daemon`.
    `host_mounts`: in the host's mount namespace (nsenter rather than `ip netns exec`), so
    that it sees what another program mounts later (podman's roots and netns files)."""
    log = root / "daemon.log"
    root.mkdir(parents=True, exist_ok=True)
    prefix = ((["nsenter", f"--net=/run/netns/{netns}"] if host_mounts
               else ["ip", "netns", "exec", netns]) if netns else [])
    # Without a namespace of the test's own, the daemon must not touch the host's network.
    no_net = [] if netns else ["--no-networking"]
    # A test's daemon stops what it ran when it stops (the fixtures check nothing is left),
    # unless the test is about live restore (the default for users).
    if not any(a.endswith("live-restore") for a in extra_args):
        no_net.append("--no-live-restore")
    with open(log, "ab") as log_file:
        proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "steelcup", "daemon", "--root", str(root),
             "--socket", str(sock), "--accel", "tcg", *no_net, *extra_args],
            stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(sock))
            return Daemon(root, sock, proc, log, netns)
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"daemon did not come up:\n{log.read_text()}")


def print_diagnostics(root: Path, lines: int = 60) -> None:
    """The tails of a daemon's log and of its containers' VM consoles under `root`, on
    stdout: pytest shows them with a failing test (a rare failure is then read from CI's
    output, not guessed)."""
    logs = [root / "daemon.log", *sorted(root.glob("containers/*/console.log"))]
    for path in logs:
        try:
            tail = path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            continue
        print(f"----- {path} (last {len(tail)} lines)")
        print("\n".join(tail))


def stop_daemon(daemon: Daemon) -> None:
    if daemon.proc.poll() is None:
        daemon.proc.send_signal(signal.SIGTERM)
        try:
            daemon.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.proc.kill()
            daemon.proc.wait()


def wait_until(predicate: Callable[[], object], what: str, timeout_s: float = 30,
               interval_s: float = 0.2) -> None:
    """Poll `predicate` until it is true; AssertionError naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"not in {timeout_s}s: {what}"
        time.sleep(interval_s)


def wait_pool_ready(daemon: Daemon, *, cache: bool = True, timeout_s: float = 180) -> None:
    """Until the daemon has built a template and, with `cache`, filled its warm cache."""
    deadline = time.monotonic() + timeout_s
    while True:
        pool = json.loads(daemon.out("system", "info", "-f", "{{json .Steelcup.Pool}}"))
        ready = pool.get("Cache") or []
        full = bool(ready) and all(c["Ready"] >= c["Target"] for c in ready)
        if pool.get("TemplateList") and (full or not cache):
            return
        assert time.monotonic() < deadline, f"daemon pool not ready after {timeout_s}s: {pool}"
        time.sleep(0.3)


def unpack_busybox(dest: Path) -> Path:
    """The busybox image's layers unpacked into `dest` (a rootfs for pool-level VMs)."""
    dest.mkdir(parents=True)
    with tarfile.open(BUSYBOX_TAR) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))  # type: ignore[arg-type]
        for layer in manifest[0]["Layers"]:
            with tarfile.open(fileobj=outer.extractfile(layer)) as inner:
                inner.extractall(dest, filter="tar")
    return dest


def leftovers_of(root: Path, kill: bool = True, netns: str | None = None) -> list[str]:
    """What a stopped daemon with state root `root` left behind: QEMU processes (killed when
    `kill`), mounts that mention its root or its VM run dir (pooled VMs' slots live there),
    files in that run dir, template files in its root and, given its network namespace, taps
    (containers' and spares of the warm cache: they are persistent)."""
    from steelcup.daemon import TEMPLATES_DIR, vm_run_dir

    markers = (str(root), str(vm_run_dir(root)))
    problems = []
    qemus = sorted({q for marker in markers for q in our_qemus(marker)})
    for line in qemus:
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(line.split(":")[0]), signal.SIGKILL)
    if qemus:
        problems.append("QEMU processes left behind:\n" + "\n".join(qemus))
    keepers = port_keepers(root)
    for pid in keepers:
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    if keepers:
        problems.append(f"port keepers left running: {keepers}")
    with open("/proc/mounts") as f:
        mounts = [line for line in f.read().splitlines() if any(m in line for m in markers)]
    if mounts:
        problems.append("mounts left behind:\n" + "\n".join(mounts))
    files = []  # sockets, slots (in /run: memory); not below mounts
    for top, dirs, names in os.walk(vm_run_dir(root)):
        dirs[:] = [d for d in dirs if not os.path.ismount(os.path.join(top, d))]
        files += [os.path.join(top, n) for n in names]
    if files:
        problems.append("files left in the VM run dir:\n" + "\n".join(sorted(files)[:40]))
    templates = [os.path.join(top, n) for top, _, names in os.walk(root / TEMPLATES_DIR)
                 for n in names]
    if templates:
        problems.append("template files left:\n" + "\n".join(sorted(templates)[:40]))
    if netns is not None:
        out = subprocess.run(["ip", "-n", netns, "-o", "link", "show"], capture_output=True,
                             text=True).stdout
        taps = [line.split(":")[1].strip() for line in out.splitlines()
                if line.split(":")[1].strip().startswith(("sct", "scw"))]
        if taps:
            problems.append("taps left behind: " + ", ".join(taps))
    return problems


def port_keepers(root: Path) -> list[int]:
    """Pids of port keeper processes serving state root `root` (net/portkeeper.py)."""
    control = str(root / "ports" / "keeper.sock")
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"steelcup.net.portkeeper" in argv and control.encode() in argv:
            found.append(int(entry.name))
    return found


def our_qemus(marker: str) -> list[str]:
    """QEMU processes whose command line or memory cgroup mentions `marker` (our run dir: a
    QEMU in a user namespace gets its paths as fds, but its cgroup is named for the run dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "qemu-system" not in cmdline:
            continue
        cgroups = ""
        with contextlib.suppress(OSError):
            cgroups = (entry / "cgroup").read_text()
        run_dir_name = Path(marker).name  # vms-<digest>: its VMs' cgroups are under it
        if marker in cmdline or (run_dir_name.startswith("vms-")
                                 and f"/{run_dir_name}/" in cgroups):
            found.append(f"{entry.name}: {cmdline[:200]}")
    return found


