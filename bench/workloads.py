"""Real workloads on a Debian bookworm image: steelcup, the bare-QEMU limit and podman+runc.

The image is made here with debootstrap (cached under build/bench/debian-workloads: nginx-light,
redis-server, redis-tools, python3, iproute2, a 10 MiB file for nginx to serve) and imported into
steelcup and podman. The bare-QEMU limit boots the same rootfs in the same guest kernel with the
same QEMU command line steelcup builds (`vm.qemu_args.build_argv`: -M microvm, TCG, tb-size),
but with the rootfs in guest RAM (an initramfs: our kernel has no block layer, and RAM bounds any
block device from above), a shell script as init, and a tap with offloads (vnet headers) in a
network namespace this script creates. Rows, each engine in turn within a run:

- nginx start: `run -d` (bare: `nginx` sent to the booted VM) until the first HTTP 200, timed on
  the host by a poller started beside the command; once at the start of a round, and once
  right after the round's other container was removed (`rm -f`; bare: redis shut down), as a
  user running one container after another does;
- a 10 MiB static file: host client (the daemon's netns for steelcup) through a port published
  on 127.0.0.1 (bare: straight to the guest's address over the tap) and, for steelcup, on its
  bridge gateway address (nftables DNAT from a non-loopback address). The first download after
  the start is a row of its own (it includes nginx's first reads of the file, over 9p in
  steelcup); the next `--downloads` alternate between the two addresses (the network path);
- `redis-benchmark -q -t set,get -n 20000`, client in the same container as the server;
- `python3 -c pass` and a CPU loop in a running container, timed inside it (`date +%s%N`);
  `python3 -c pass` first, then the median of 5 more: the first run in a fresh steelcup
  container reads Python over 9p and translates its code for the first time, while the bare
  VM is one VM for all rounds (its page cache and translation cache warm from earlier
  rounds); the later runs are warm in both;
- `find /usr` warm (a directory walk: ~400 directories opened and listed, the metadata path
  of package managers and build tools), the median of 5 after one that fills the caches.

    sudo PYTHONPATH=src .venv/bin/python bench/workloads.py [--runs 3] [--downloads 3] \
        [--only steelcup,bare,podman] [--bare-9p none,loose] [--bare-9p-fresh loose] \
        [--bare-blk-fresh] [--before DIR] \
        [--rootfs-cache loose]

`--bare-9p MODES` adds bare VMs whose commands run on the rootfs over 9p with those cache modes
(what the transport costs, apart from the rest of steelcup); `--bare-9p-fresh MODES` the same
booted anew before each round (cold page and translation caches, like a fresh container's);
`--bare-blk-fresh` one with the rootfs as an erofs image on a virtio-blk disk under a tmpfs
overlay, booted anew each round (the issue's "rootfs on a virtio-blk device" limit, on the
product's guest kernel, which has the block layer, virtio-blk and erofs).
`--before DIR` adds a second steelcup engine run from another tree's `src/` (e.g. `git archive
REV src | tar -x -C DIR`) with this checkout's guest assets: a change's before and after in the
same run.
`--assets-before DIR` adds a second steelcup engine booting the guest assets in DIR (a kernel or
init change's before and after).
`--rootfs-cache MODES` adds steelcup daemons started with `--rootfs-cache MODE`.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

from bench.peer import peer_argv  # noqa: E402
from bench.run_latency import cli_env, steelcup_argv  # noqa: E402
from steelcup.defaults import VM_MAX_CPUS  # noqa: E402
from steelcup.vm.qemu_args import NicSpec, Share, VmSpec, build_argv  # noqa: E402
from tests.vm.support import (  # noqa: E402
    delete_netns,
    new_netns,
    our_qemus,
    start_daemon,
    stop_daemon,
    wait_pool_ready,
)

IMAGE_DIR = REPO / "build" / "bench" / "debian-workloads"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("nginx-light", "redis-server", "redis-tools", "python3", "iproute2")
IMAGE_REF = "steelcup/debian-workloads:latest"
BIG_FILE = "big.bin"
BIG_BYTES = 10 << 20
HOST_PORT = 18080
CPU_LOOP_N = 2_000_000
REDIS_N = 20000
WARM_RUNS = 5  # warm `python3 -c pass` runs per round, of which the row takes the median
WALK = "find /usr > /dev/null"  # a directory walk: every directory opened and listed
BARE_MEM_MIB = 768  # the rootfs (~140 MiB) lives in guest RAM
BARE_HOST_IP, BARE_GUEST_IP = "10.231.0.1", "10.231.0.2"
TAG = f"scw{os.getpid()}"
# What the image does not need at run time (also keeps the bare VM's initramfs small).
TRIM = ("usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/info",
        "var/cache/apt", "var/lib/apt/lists")


# -- the image -----------------------------------------------------------------------------------

def ensure_rootfs(log: Callable[[str], None]) -> Path:
    """The customised Debian rootfs, debootstrapped on first use."""
    final = IMAGE_DIR / "rootfs"
    if (IMAGE_DIR / "rootfs.ok").exists():
        return final
    base = IMAGE_DIR / "rootfs.tmp"
    if not (IMAGE_DIR / "debootstrap.ok").exists():
        if shutil.which("debootstrap") is None:
            raise SystemExit("debootstrap is missing: apt-get install debootstrap")
        shutil.rmtree(base, ignore_errors=True)
        IMAGE_DIR.mkdir(parents=True, exist_ok=True)
        log(f"debootstrap bookworm from {MIRROR} (a few minutes, once)")
        subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
                        "bookworm", str(base), MIRROR], check=True,
                       stdout=subprocess.DEVNULL)
        (IMAGE_DIR / "debootstrap.ok").touch()
    for rel in TRIM:
        target = base / rel
        if target.is_dir():
            shutil.rmtree(target)
            target.mkdir()
    html = base / "var" / "www" / "html"
    html.mkdir(parents=True, exist_ok=True)
    (html / BIG_FILE).write_bytes(os.urandom(BIG_BYTES))
    (html / "index.html").write_text("ok\n")
    shutil.rmtree(final, ignore_errors=True)
    base.rename(final)
    (IMAGE_DIR / "rootfs.ok").touch()
    return final


def rootfs_tar(rootfs: Path) -> Path:
    tar = IMAGE_DIR / "rootfs.tar"
    if not tar.exists():
        subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", f"{tar}.tmp", "."],
                       check=True)
        os.rename(f"{tar}.tmp", tar)
    return tar


def blk_kernel(log: Callable[[str], None]) -> Path:
    """The guest kernel for the virtio-blk limit: the product's own (`make guest`), which has
    the block layer, virtio-blk and erofs since block roots (so the limit runs the very
    kernel steelcup's guests run)."""
    kernel = REPO / "build" / "guest" / "vmlinux"
    config = (REPO / "guest/kernel/steelcup.config").read_text().splitlines()
    missing = [o for o in ("BLOCK", "VIRTIO_BLK", "EROFS_FS") if f"CONFIG_{o}=y" not in config]
    if missing:
        raise SystemExit(f"the guest kernel config lacks {', '.join(missing)}")
    if not kernel.exists():
        raise SystemExit("build/guest/vmlinux is missing: run `make guest` first")
    log(f"virtio-blk limit on the guest kernel {kernel}")
    return kernel


def erofs_image(rootfs: Path) -> Path:
    out = IMAGE_DIR / "rootfs.erofs"
    if not out.exists():
        subprocess.run(["mkfs.erofs", "--quiet", f"{out}.tmp", str(rootfs)], check=True)
        os.rename(f"{out}.tmp", out)
    return out


# The bare VM's init: the API mounts, a static address, then a command loop on the virtio-serial
# port: one line in (run by sh), its output and "__END <status>" out.
BARE_INIT = f"""#!/bin/sh
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm; mount -t devpts devpts /dev/pts; mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run; mount -t tmpfs tmpfs /tmp
hostname bare
ip link set lo up; ip link set eth0 up; ip addr add {BARE_GUEST_IP}/24 dev eth0
for d in /sys/class/virtio-ports/*; do
  [ "$(cat $d/name)" = steelcup.ctl ] && port=/dev/${{d##*/}}
done
# scw.root9p=MODE: run the commands in the rootfs exported over 9p with that cache mode (the
# transport steelcup uses), chrooted, instead of in the initramfs copy; scw.rootblk=1: in the
# rootfs as an erofs image on a virtio-blk disk under a tmpfs overlay (the block transport).
run=""
r=/mnt/root
for word in $(cat /proc/cmdline); do
  case "$word" in
  scw.root9p=*)
    mkdir -p $r
    mount -t 9p rootfs $r -o trans=virtio,version=9p2000.L,msize=262144,cache=${{word#*=}}
    run="chroot $r";;
  scw.rootblk=*)
    mkdir -p /mnt/lower /mnt/upper $r
    mount -t erofs -o ro /dev/vda /mnt/lower
    mount -t tmpfs tmpfs /mnt/upper; mkdir -p /mnt/upper/u /mnt/upper/w
    mount -t overlay overlay -o lowerdir=/mnt/lower,upperdir=/mnt/upper/u,workdir=/mnt/upper/w $r
    run="chroot $r";;
  esac
done
if [ -n "$run" ]; then
  for m in proc sys dev dev/pts dev/shm run tmp; do mount --bind /$m $r/$m; done
fi
exec 3<>"$port"
echo READY >&3
while IFS= read -r line <&3; do
  $run sh -c "$line" </dev/null >&3 2>&1 3>&-
  echo "__END $?" >&3
done
poweroff -f
"""


def initramfs(rootfs: Path) -> Path:
    """The rootfs as a newc cpio with our /init appended (the kernel unpacks both)."""
    init_digest = hashlib.sha256(BARE_INIT.encode()).hexdigest()[:8]
    out = IMAGE_DIR / f"bare-initramfs-{init_digest}.cpio"
    if out.exists():
        return out
    with tempfile.TemporaryDirectory(prefix="scw-init-") as tmp, open(f"{out}.tmp", "wb") as f:
        (Path(tmp) / "init").write_text(BARE_INIT)
        os.chmod(Path(tmp) / "init", 0o755)
        listing = subprocess.run(["find", "."], cwd=rootfs, capture_output=True,
                                 check=True).stdout
        for src, names in ((rootfs, listing), (Path(tmp), b"init\n")):
            subprocess.run(["cpio", "--quiet", "-o", "-H", "newc", "--owner", "+0:+0"],
                           cwd=src, input=names, stdout=f, check=True)
    os.rename(f"{out}.tmp", out)
    return out


# -- host-side clients ---------------------------------------------------------------------------

POLLER = """
import socket, sys, time
host, port = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + float(sys.argv[3])
while time.monotonic() < deadline:
    try:
        with socket.create_connection((host, port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.0\\r\\nHost: bench\\r\\n\\r\\n")
            if s.recv(64).startswith(b"HTTP/1.1 200"):
                print(time.time())
                raise SystemExit(0)
    except OSError:
        pass
    time.sleep(0.01)
raise SystemExit("no HTTP 200 before the deadline")
"""

DOWNLOADER = """
import socket, sys, time
host, port, path, size = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
with socket.create_connection((host, port), timeout=60) as s:
    start = time.perf_counter()
    s.sendall(f"GET /{path} HTTP/1.0\\r\\nHost: bench\\r\\n\\r\\n".encode())
    data = bytearray()
    while chunk := s.recv(1 << 20):
        data += chunk
    took = time.perf_counter() - start
head, _, body = bytes(data).partition(b"\\r\\n\\r\\n")
if not head.startswith(b"HTTP/1.1 200") or len(body) != size:
    raise SystemExit(f"bad response: {head[:200]!r}, {len(body)} body bytes")
print(took)
"""


@dataclass
class HostSide:
    """Where an engine's host-side clients run and the address they reach its web server at."""

    prefix: list[str]  # `ip netns exec NS` or nothing
    host: str
    port: int
    # A host address that is not loopback, where the published port is DNATed by nftables
    # (steelcup only: its netns is the script's; "" = not measured).
    dnat_host: str = ""

    def python(self, code: str, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([*self.prefix, sys.executable, "-c", code, *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def finish(self, proc: subprocess.Popen[bytes], timeout_s: float) -> str:
        out, err = proc.communicate(timeout=timeout_s)
        if proc.returncode != 0:
            raise RuntimeError(f"host client failed: {err.decode()[-800:]}")
        return out.decode().strip()

    def first_200_after(self, t0_box: list[float], start: Callable[[], None]) -> float:
        poller = self.python(POLLER, self.host, str(self.port), "120")
        try:
            t0_box.append(time.time())
            start()
            return float(self.finish(poller, 150)) - t0_box[-1]
        finally:
            if poller.poll() is None:
                poller.kill()
                poller.wait()

    def download_s(self, host: str = "") -> float:
        proc = self.python(DOWNLOADER, host or self.host, str(self.port), BIG_FILE,
                           str(BIG_BYTES))
        return float(self.finish(proc, 300))

    def download_mib_s(self, host: str = "") -> float:
        return BIG_BYTES / (1 << 20) / self.download_s(host)


# -- engines -------------------------------------------------------------------------------------

class Engine(Protocol):
    name: str
    side: HostSide

    def new_round(self) -> None: ...
    def start_web(self) -> None: ...
    def stop_web(self) -> None: ...
    def start_box(self) -> None: ...
    def sh(self, script: str) -> str: ...
    def stop_box(self) -> None: ...


@dataclass
class CliEngine:
    """A docker-like CLI (steelcup, podman) running containers of the imported image."""

    name: str
    base: list[str]
    run_opts: list[str]
    image: str
    env: dict[str, str]
    side: HostSide
    serial: int = 0
    web: str = ""
    box: str = ""

    def cli(self, *args: str, timeout: float = 300) -> str:
        result = subprocess.run([*self.base, *args], capture_output=True, env=self.env,
                                timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"{self.name} {' '.join(args)} -> {result.returncode}: "
                               f"{result.stderr.decode()[-1500:]}")
        return result.stdout.decode()

    def _name(self, what: str) -> str:
        self.serial += 1
        return f"{TAG}-{what}-{self.serial}"

    def new_round(self) -> None:
        pass  # each round's containers are new

    def start_web(self) -> None:
        self.web = self._name("web")
        bind = "" if self.side.dnat_host else "127.0.0.1:"
        self.cli("run", "-d", *self.run_opts, "--name", self.web, "-p",
                 f"{bind}{HOST_PORT}:80", self.image, "nginx", "-g", "daemon off;")

    def stop_web(self) -> None:
        self.cli("rm", "-f", self.web)

    def start_box(self) -> None:
        self.box = self._name("box")
        self.cli("run", "-d", *self.run_opts, "--name", self.box, self.image,
                 "redis-server", "--save", "", "--appendonly", "no")

    def sh(self, script: str) -> str:
        return self.cli("exec", self.box, "sh", "-c", script)

    def stop_box(self) -> None:
        self.cli("rm", "-f", self.box)


class BareVm:
    """The limit: one QEMU booted on the initramfs, commands over its serial port."""

    def __init__(self, tmp: Path, netns: str, cpio: Path, kernel: Path, max_cpus: int,
                 root9p: tuple[str, Path] | None = None, rootblk: Path | None = None) -> None:
        self.tap, self.netns = "scwtap0", netns
        subprocess.run(["ip", "-n", netns, "tuntap", "add", "dev", self.tap, "mode", "tap",
                        "vnet_hdr"], check=True)
        subprocess.run(["ip", "-n", netns, "addr", "add", f"{BARE_HOST_IP}/24", "dev",
                        self.tap], check=True)
        subprocess.run(["ip", "-n", netns, "link", "set", self.tap, "up"], check=True)
        nic = NicSpec(self.tap, "02:00:0a:e7:00:02")
        # A fresh VM's first Python would wait seconds for the random pool (a steelcup VM's
        # init is seeded by the host): TCG's `-cpu max` has RDRAND, trusted at boot.
        shares: tuple[Share, ...] = ()
        extra: tuple[str, ...] = ("random.trust_cpu=on",)
        if root9p is not None:
            shares = (Share("rootfs", root9p[1]),)
            extra += (f"scw.root9p={root9p[0]}",)
        disk: list[str] = []
        if rootblk is not None:
            extra += ("scw.rootblk=1",)
            disk = ["-drive", f"file={rootblk},if=none,id=rootblk,format=raw,readonly=on",
                    "-device", "virtio-blk-device,drive=rootblk"]
        self.spec = VmSpec(kernel=kernel, initrd=cpio, state_dir=tmp, mem_mib=BARE_MEM_MIB,
                           cpus=1, max_cpus=max_cpus, nics=(nic,), shares=shares,
                           cmdline_extra=extra)
        self.console = open(tmp / "console.log", "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(["ip", "netns", "exec", netns, *build_argv(self.spec),
                                      *disk],
                                     stdin=subprocess.DEVNULL, stdout=self.console,
                                     stderr=subprocess.STDOUT)
        self.sock = socket.socket(socket.AF_UNIX)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.sock.connect(str(self.spec.ctl_socket))
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("bare QEMU did not open its channel") from None
                time.sleep(0.05)
        self.sock.settimeout(300)
        self.buf = b""
        self._until(b"READY\n")

    def _until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError(f"bare VM closed its channel; console: {self.spec.console_log}")
            self.buf += chunk
        out, _, self.buf = self.buf.partition(marker)
        return out

    def run(self, line: str) -> str:
        if "\n" in line:
            raise ValueError("one line per command")
        self.sock.sendall(line.encode() + b"\n")
        out = self._until(b"__END ")
        status = self._until(b"\n")
        if status != b"0":
            raise RuntimeError(f"bare: {line!r} -> {status.decode()}: {out.decode()[-800:]}")
        return out.decode()

    def close(self) -> None:
        self.sock.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.console.close()
        subprocess.run(["ip", "-n", self.netns, "link", "del", self.tap], check=False)


@dataclass
class BareEngine:
    """One bare VM for all rounds; with `boot`, a new one booted before each round (cold
    translation and page caches, like a fresh container's; an initramfs root is in RAM from
    the start). The boot is not timed."""

    vm: BareVm
    side: HostSide
    name: str
    boot: Callable[[], BareVm] | None = None
    used: bool = False  # whether `vm` has run a round (the first round takes the first VM)

    def new_round(self) -> None:
        if self.boot is not None and self.used:
            self.vm.close()
            self.vm = self.boot()
        self.used = True

    def start_web(self) -> None:
        self.vm.run("nginx")

    def stop_web(self) -> None:
        self.vm.run("nginx -s quit; while [ -e /run/nginx.pid ]; do sleep 0.05; done")

    def start_box(self) -> None:
        self.vm.run('redis-server --save "" --appendonly no --daemonize yes >/dev/null')

    def sh(self, script: str) -> str:
        return self.vm.run(script)

    def stop_box(self) -> None:
        self.vm.run("redis-cli shutdown nosave >/dev/null 2>&1; true")


# -- the measurements ----------------------------------------------------------------------------

TIMED = 'a=$(date +%s%N); {cmd}; b=$(date +%s%N); echo "TOOK $((b - a))"'
REDIS_WAIT = ("for i in $(seq 600); do redis-cli ping 2>/dev/null | grep -q PONG && exit 0; "
              "sleep 0.1; done; exit 1")
ROWS = (
    ("web", "nginx `run -d` → first HTTP 200 (s)", False),
    ("web2", "the same right after `rm -f` of another container (s)", False),
    ("dl1", "10 MiB static file, the first download after the start, 127.0.0.1 (MiB/s)", True),
    ("dl", "10 MiB static file, later downloads, published port on 127.0.0.1 (MiB/s)", True),
    ("dnat", "10 MiB static file, later downloads, port on a host address (MiB/s)", True),
    ("set", f"redis-benchmark SET, -n {REDIS_N}, client in the container (req/s)", True),
    ("get", f"redis-benchmark GET, -n {REDIS_N}, client in the container (req/s)", True),
    ("py", "`python3 -c pass` in a running container, first run (s)", False),
    ("py2", f"`python3 -c pass` again, same container, median of {WARM_RUNS} (s)", False),
    ("cpu", f"CPU loop: python3 `for i in range({CPU_LOOP_N:,}): pass` (s)", False),
    ("walk", f"`find /usr` (~400 directories), warm: median of {WARM_RUNS} after one (s)",
     False),
)


def timed(engine: Engine, cmd: str) -> float:
    out = engine.sh(TIMED.format(cmd=cmd))
    found = re.findall(r"^TOOK (\d+)$", out, re.M)
    if not found:
        raise RuntimeError(f"{engine.name}: no timing in {out[-500:]!r}")
    return int(found[-1]) / 1e9


def one_run(engine: Engine, downloads: int) -> dict[str, list[float]]:
    got: dict[str, list[float]] = {key: [] for key, _, _ in ROWS}
    t0: list[float] = []
    engine.new_round()
    got["web"].append(engine.side.first_200_after(t0, engine.start_web))
    try:
        got["dl1"].append(engine.side.download_mib_s())
        for _ in range(downloads):
            got["dl"].append(engine.side.download_mib_s())
            if engine.side.dnat_host:
                got["dnat"].append(engine.side.download_mib_s(engine.side.dnat_host))
    finally:
        engine.stop_web()
    engine.start_box()
    try:
        engine.sh(REDIS_WAIT)
        out = engine.sh(f"redis-benchmark -q -t set,get -n {REDIS_N} 2>&1 | tr '\\r' '\\n'")
        for op in ("set", "get"):
            found = re.findall(rf"^{op.upper()}: ([\d.]+) requests per second", out, re.M)
            if not found:
                raise RuntimeError(f"{engine.name}: no {op} result in {out[-600:]!r}")
            got[op].append(float(found[-1]))
        got["py"].append(timed(engine, "python3 -c pass"))
        # One warm run is at the mercy of where TCG's translation cache fills up and is
        # flushed (a run that flushes it takes 50-250 ms more): the median of several.
        got["py2"].append(statistics.median(timed(engine, "python3 -c pass")
                                            for _ in range(WARM_RUNS)))
        got["cpu"].append(timed(engine, f'python3 -c "for i in range({CPU_LOOP_N}): pass"'))
        timed(engine, WALK)  # fills the page and dentry caches
        got["walk"].append(statistics.median(timed(engine, WALK) for _ in range(WARM_RUNS)))
    finally:
        engine.stop_box()
    got["web2"].append(engine.side.first_200_after(t0, engine.start_web))
    engine.stop_web()
    return got


def measure(engines: Sequence[Engine], runs: int, warmup: int, downloads: int,
            log: Callable[[str], None]) -> dict[str, dict[str, list[float]]]:
    results: dict[str, dict[str, list[float]]] = {
        e.name: {key: [] for key, _, _ in ROWS} for e in engines}
    for run in range(-warmup, runs):
        for engine in engines:
            got = one_run(engine, downloads)
            if run < 0:
                log(f"warm-up {engine.name} done")
                continue
            for key, values in got.items():
                results[engine.name][key] += values
            log(f"run {run + 1} {engine.name}: " + ", ".join(
                f"{k}={statistics.median(v):.3g}" for k, v in got.items() if v))
    return results


def table(results: dict[str, dict[str, list[float]]]) -> str:
    names = list(results)
    heads = list(names)
    if "steelcup" in names:
        heads += [f"steelcup ÷ {n}" for n in names if n != "steelcup"]
    lines = ["| workload | " + " | ".join(heads) + " |", "|---|" + "---:|" * len(heads)]
    for key, label, higher_better in ROWS:
        med = {n: statistics.median(results[n][key]) for n in names if results[n][key]}
        cells = [f"{med[n]:.3g}" if n in med else "n/a" for n in names]
        ratios = []
        if "steelcup" in names:
            for n in names:
                if n == "steelcup":
                    continue
                if n not in med or "steelcup" not in med:
                    ratios.append("")
                    continue
                # ratio as "times slower": > 1 means steelcup is behind
                r = med[n] / med["steelcup"] if higher_better else med["steelcup"] / med[n]
                ratios.append(f"{r:.2f}x")
        lines.append(f"| {label} | " + " | ".join(cells + ratios) + " |")
    return "\n".join(lines)


@contextlib.contextmanager
def steelcup_engine(name: str, tmp: Path, tar: Path, extra_args: tuple[str, ...],
                    log: Callable[[str], None], src: Path = REPO,
                    assets: Path = REPO / "build" / "guest",
                    warm_cache: bool = True) -> Iterator[CliEngine]:
    """A daemon in a netns of its own, daemon and CLI run from the source tree `src` (its
    `src/`) with the guest assets in `assets` (this checkout's unless told); the CLI as
    installed (the console script, its bytecode cached even if the shell sets
    PYTHONDONTWRITEBYTECODE). Without `warm_cache` (a daemon told `--pool-size 0`) only its
    template is waited for."""
    netns = new_netns("wl" + hashlib.sha256(name.encode()).hexdigest()[:6])  # one per engine
    saved = dict(os.environ)
    try:
        tmp.mkdir()
        os.environ["PYTHONPATH"] = str(src / "src")
        os.environ["STEELCUP_ASSETS"] = str(assets)
        try:
            daemon = start_daemon(tmp / "root", tmp / "s.sock", netns, extra_args)
            env = cli_env(daemon, tmp / "pycache")  # as installed: bytecode cached
        finally:
            os.environ.clear()
            os.environ.update(saved)
        try:
            engine = CliEngine(name, steelcup_argv(), [], IMAGE_REF, env,
                               HostSide(["ip", "netns", "exec", netns], "127.0.0.1", HOST_PORT))
            engine.cli("import", str(tar), IMAGE_REF, timeout=600)
            # The default bridge's gateway: an address of the daemon's netns that is not
            # loopback, so a client there takes the DNAT path.
            bridge = json.loads(engine.cli("network", "inspect", "bridge"))
            engine.side.dnat_host = bridge[0]["IPAM"]["Config"][0]["Gateway"]
            wait_pool_ready(daemon, cache=warm_cache)
            yield engine
        finally:
            stop_daemon(daemon)
            for line in our_qemus(str(tmp)):
                log(f"killing leftover QEMU {line}")
                os.kill(int(line.split(":")[0]), 9)
    finally:
        delete_netns(netns)


@contextlib.contextmanager
def bare_engine(tmp: Path, cpio: Path, max_cpus: int, rootfs: Path,
                cache9p: str = "", fresh: bool = False,
                blk: tuple[Path, Path] | None = None) -> Iterator[BareEngine]:
    """The bare VM; with `cache9p`, commands run in a writable copy of the rootfs over 9p with
    that cache mode (to tell 9p's share of a gap from the rest); with `blk` (a kernel with
    block support, an erofs image of the rootfs), on that image on a virtio-blk disk under a
    tmpfs overlay; with `fresh`, a new VM each round."""
    netns = new_netns(f"b{cache9p}{'b' if blk else ''}{'f' if fresh else ''}"[:8])
    try:
        tmp.mkdir()
        root9p = None
        if cache9p:
            subprocess.run(["cp", "-a", str(rootfs), str(tmp / "root")], check=True)
            root9p = (cache9p, tmp / "root")
        kernel = blk[0] if blk else REPO / "build" / "guest" / "vmlinux"

        def boot() -> BareVm:
            return BareVm(tmp, netns, cpio, kernel, max_cpus, root9p, blk[1] if blk else None)

        name = (f"bare 9p {cache9p}" if cache9p else "bare blk" if blk else "bare QEMU") + (
            " fresh" if fresh else "")
        engine = BareEngine(boot(), HostSide(["ip", "netns", "exec", netns], BARE_GUEST_IP, 80),
                            name, boot if fresh else None)
        try:
            yield engine
        finally:
            engine.vm.close()
    finally:
        delete_netns(netns)


@contextlib.contextmanager
def podman_engine(tar: Path) -> Iterator[CliEngine]:
    prefix = peer_argv()
    at = prefix.index("run")
    ref = "localhost/scb-debian-workloads:latest"
    base = prefix[:at]
    if subprocess.run([*base, "image", "exists", ref]).returncode != 0:
        subprocess.run([*base, "import", str(tar), ref], check=True, stdout=subprocess.DEVNULL)
    opts = [o for o in prefix[at + 1:-1] if o != "--rm"]
    yield CliEngine("podman+runc", base, opts, ref, dict(os.environ),
                    HostSide([], "127.0.0.1", HOST_PORT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1, help="unrecorded runs first")
    ap.add_argument("--downloads", type=int, default=3, help="downloads of the file per run")
    ap.add_argument("--only", default="steelcup,bare,bare-fresh,podman",
                    help="engines: steelcup, bare (one VM for all rounds), bare-fresh (a new "
                         "VM booted before each round), podman")
    ap.add_argument("--bare-max-cpus", type=int, default=VM_MAX_CPUS,
                    help="vCPUs present in the bare VM (1 online), as in a steelcup clone")
    ap.add_argument("--bare-9p", default="", metavar="MODES",
                    help="also bare VMs whose commands run on the rootfs over 9p with these "
                         "cache modes (e.g. none,loose)")
    ap.add_argument("--bare-9p-fresh", default="", metavar="MODES",
                    help="the same, each booted anew before each round (a fresh container's "
                         "cold caches on the 9p root: the transport's own first-run cost)")
    ap.add_argument("--bare-blk-fresh", action="store_true",
                    help="also a bare VM booted anew each round with the rootfs as an erofs "
                         "image on a virtio-blk disk (the block transport's first-run cost)")
    ap.add_argument("--before", type=Path, default=None,
                    help="another steelcup checkout to run as a second engine")
    ap.add_argument("--assets-before", type=Path, default=None, metavar="DIR",
                    help="a second steelcup engine with the guest assets (vmlinux, initrd.img) "
                         "in DIR: a guest change's before and after in the same run")
    ap.add_argument("--rootfs-cache", default="", metavar="MODES",
                    help="also steelcup daemons with `--rootfs-cache MODE` for these modes "
                         "(e.g. loose): a column \"steelcup MODE\" each, same run")
    ap.add_argument("--daemon-arg", action="append", default=[],
                    help="extra `steelcup daemon` argument (repeatable)")
    args = ap.parse_args()
    wanted = args.only.split(",")

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    rootfs = ensure_rootfs(log)
    tar = rootfs_tar(rootfs)
    with tempfile.TemporaryDirectory(prefix="scw-") as tmp, contextlib.ExitStack() as stack:
        engines: list[Engine] = []
        if "steelcup" in wanted:
            engines.append(stack.enter_context(steelcup_engine(
                "steelcup", Path(tmp) / "sc", tar, tuple(args.daemon_arg), log)))
        for mode in filter(None, args.rootfs_cache.split(",")):
            engines.append(stack.enter_context(steelcup_engine(
                f"steelcup {mode}", Path(tmp) / f"sc-{mode}", tar,
                (*args.daemon_arg, "--rootfs-cache", mode), log)))
        if args.before is not None:
            engines.append(stack.enter_context(steelcup_engine(
                "steelcup before", Path(tmp) / "sb", tar, tuple(args.daemon_arg), log,
                args.before)))
        if args.assets_before is not None:
            engines.append(stack.enter_context(steelcup_engine(
                "steelcup assets before", Path(tmp) / "sa", tar, tuple(args.daemon_arg), log,
                assets=args.assets_before)))
        if "bare" in wanted:
            engines.append(stack.enter_context(bare_engine(
                Path(tmp) / "bare", initramfs(rootfs), args.bare_max_cpus, rootfs)))
        if "bare-fresh" in wanted:
            engines.append(stack.enter_context(bare_engine(
                Path(tmp) / "bare-fresh", initramfs(rootfs), args.bare_max_cpus, rootfs,
                fresh=True)))
        for mode in filter(None, args.bare_9p.split(",")):
            engines.append(stack.enter_context(bare_engine(
                Path(tmp) / f"bare-{mode}", initramfs(rootfs), args.bare_max_cpus, rootfs,
                mode)))
        for mode in filter(None, args.bare_9p_fresh.split(",")):
            engines.append(stack.enter_context(bare_engine(
                Path(tmp) / f"bare-{mode}-fresh", initramfs(rootfs), args.bare_max_cpus, rootfs,
                mode, fresh=True)))
        if args.bare_blk_fresh:
            blk = (blk_kernel(log), erofs_image(rootfs))
            engines.append(stack.enter_context(bare_engine(
                Path(tmp) / "bare-blk-fresh", initramfs(rootfs), args.bare_max_cpus, rootfs,
                fresh=True, blk=blk)))
        if "podman" in wanted:
            engines.append(stack.enter_context(podman_engine(tar)))
        results = measure(engines, args.runs, args.warmup, args.downloads, log)
    print(f"Workloads on Debian bookworm, medians of {args.runs} runs "
          f"({args.downloads} downloads each), {os.cpu_count()} host CPUs, TCG\n")
    print(table(results))
    print("\nall samples: " + "; ".join(
        f"{eng} {key}=[{', '.join(f'{v:.3g}' for v in vals)}]"
        for eng, res in results.items() for key, vals in res.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
