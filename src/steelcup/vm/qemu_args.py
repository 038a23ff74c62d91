"""Pure QEMU argv builder: a `VmSpec` in, the `qemu-system-x86_64` argv list out.

The one place that knows QEMU's command line for a steelcup microVM.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from steelcup.defaults import TCG_TB_MIB
from steelcup.errors import InvalidArgument
from steelcup.idmap import IdRange

QEMU_BINARY = "qemu-system-x86_64"
CTL_PORT_NAME = "steelcup.ctl"
MACHINE = "microvm,pit=on,pic=on,rtc=on"
# No PIT: QEMU's i8254 comes out of reset counting (channel 0, mode 3) and our guest never
# reprograms it, so its timer woke QEMU's main loop ~36 times a second in every idle VM. The
# guest needs it only to calibrate the TSC, which `tsc_early_khz` skips.
MACHINE_NO_PIT = "microvm,pit=off,pic=on,rtc=on"
DEFAULT_TSC_KHZ = 2_000_000
BASE_CMDLINE = ("console=ttyS0", "reboot=t", "panic=-1", "quiet", "rdinit=/init",
                # kcompactd otherwise wakes every 500 ms to check fragmentation, whatever the
                # guest does: most of a tickless idle guest's timer interrupts, ~0.15% of a
                # host core per idle VM under TCG. Our guests have no huge pages to make;
                # compaction on demand (balloon, allocations) is unchanged.
                "sysctl.vm.compaction_proactiveness=0",
                # Free page reporting hands free memory to the host in blocks of this order
                # (128 KiB) instead of the balloon driver's 4 MiB (pageblock_order here): what a
                # container frees after a burst is mostly in smaller blocks. Kept from the
                # command line by the kernel patch 10-page-reporting-order.
                "page_reporting.page_reporting_order=5")
# The root disk's raw block node (its file node is ROOT_DISK_NODE + "-file"): the node whose
# file a hand-out re-points with `blockdev-reopen`.
ROOT_DISK_NODE = "rootdisk"
ROOT_DISK_FDSET = 1  # the fd set the root disk's file is in, for a QEMU given fds
SERIAL_PORTS = 2  # virtio-serial: the reserved console port 0 and CTL_PORT_NAME
UNIX_PATH_MAX = 107  # sun_path is 108 bytes including the NUL
_TAG_RE = re.compile(r"^[A-Za-z0-9_.-]{1,31}$")
ACCELS = ("kvm", "tcg")


def host_tsc_khz(cpuinfo: Path = Path("/proc/cpuinfo")) -> int:
    """The host's TSC rate in kHz (approximated by the first `cpu MHz`), which a TCG guest's
    TSC runs at.

    Under TCG the guest's PIT calibration of the TSC fails (the timing window is too short to
    emulate) and, with microvm's ACPI tables lacking the IRQ0 override, the timer interrupt never
    reaches the fallback jiffies calibration: boot hangs after "Marking TSC unstable". Passing
    `tsc_early_khz` skips calibration altogether.
    """
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("cpu MHz"):
                return max(1, round(float(line.split(":", 1)[1]) * 1000))
    except (OSError, ValueError):
        pass
    return DEFAULT_TSC_KHZ


def host_tsc_invariant(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the host's TSC runs at one rate in every CPU state (`constant_tsc` and
    `nonstop_tsc`): then a TCG guest's TSC, which is the host's, is a clock it can keep time
    with."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return {"constant_tsc", "nonstop_tsc"} <= flags
    except (OSError, ValueError):
        pass
    return False


_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


class NicSpec(NamedTuple):
    """A virtio-net NIC: `tap` is the host tap it is plugged into; "" = a placeholder backend (a
    hub port with no peer: the link is up, frames go nowhere) that a template clone replaces
    with its own tap. NIC i gets netdev id `net{i}`."""

    tap: str
    mac: str


class Share(NamedTuple):
    """A host directory exported to the guest over 9p under `tag`."""

    tag: str
    host_path: Path
    readonly: bool = False
    # Other filesystems are mounted below host_path (a pooled VM's slot): QEMU remaps inode
    # numbers per device so the guest never sees two files with one inode.
    remap_devices: bool = False


@dataclass(frozen=True)
class VmSpec:
    """Everything that decides a VM's QEMU command line."""

    kernel: Path
    initrd: Path
    state_dir: Path
    mem_mib: int = 256
    cpus: int = 1
    accel: str = "tcg"  # kvm | tcg (resolve 'auto' with vm.accel.choose_accel first)
    tcg_tb_mib: int = TCG_TB_MIB
    cmdline_extra: tuple[str, ...] = ()
    shares: tuple[Share, ...] = ()
    qemu_binary: str = QEMU_BINARY
    # TCG only: the guest's TSC rate (passed as tsc_early_khz); 0 = let the guest calibrate.
    tsc_khz: int = field(default_factory=host_tsc_khz)
    # TCG with `tsc_khz`: the guest keeps time with its TSC (`tsc=reliable`) and boots without
    # a PIT. Otherwise the kernel marks the TSC unstable (no invariant-TSC flag under TCG and
    # two possible vCPUs) and falls back to refined-jiffies, which needs the periodic tick:
    # ~2% of a host core per idle VM, against ~0.01% now (docs/benchmarks.md, issue 19).
    tsc_clock: bool = field(default_factory=host_tsc_invariant)
    # Resizable VMs: boot `max_cpus` vCPUs with only `cpus` online (kernel `maxcpus=`); the
    # rest are onlined by the guest at hand-out. 0 = exactly `cpus`.
    max_cpus: int = 0
    # A virtio-balloon: RAM is `mem_mib`, the pool inflates the balloon to shrink the guest.
    # It has free page reporting on: the guest hands memory it freed back to the host (QEMU
    # discards it; a clone's discard drops only its own copies, vm/seccomp.py).
    balloon: bool = False
    # The balloon gives pages back to a guest out of memory (virtio's DEFLATE_ON_OOM, 1 MiB
    # per OOM): a container with no -m grows on demand up to `mem_mib` (docs/architecture.md).
    balloon_grows: bool = False
    # Guest RAM from a file (templates): share=on writes go to the file (the template);
    # share=off maps it copy-on-write (clones). None = anonymous RAM.
    mem_path: Path | None = None
    mem_shared: bool = False
    # Restore from saved device state (a template's) instead of booting (`-incoming defer`;
    # Machine hands QEMU the file as an fd).
    incoming: Path | None = None
    # The incoming stream holds all of guest RAM (a container checkpoint, docs/checkpoints.md):
    # it needs no RAM file, and is read without x-ignore-shared.
    incoming_full: bool = False
    # Anonymous RAM as the memory backend object `ram` (the RAM block name a template clone's
    # file-backed RAM has): a VM restored from a clone's checkpoint. Not with `mem_path`.
    ram_object: bool = False
    # virtio-net NICs, in guest order (eth0, eth1, ...).
    nics: tuple[NicSpec, ...] = ()
    # Tap NICs with IFF_VNET_HDR (checksum/segmentation offloads). Off: a clone of a template
    # whose NICs were hub ports, which never negotiated offloads (pool/template.py).
    nic_vnet_hdr: bool = True
    # A read-only virtio-blk disk (the guest's /dev/vda): an image's files as erofs, or the
    # empty placeholder a template and its clones boot with, whose file the pool swaps for an
    # image's at hand-out (`ROOT_DISK_NODE`, `Machine.replace_root_disk`). None = no disk.
    root_disk: Path | None = None
    # Device arguments owned by other layers, appended as given.
    extra_args: tuple[str, ...] = ()
    # QEMU runs as root of a user namespace with these ids (steelcup.idmap); None = host root.
    # Such a QEMU can reach nothing by path below the 0700 state root: Machine hands it every
    # file, directory and socket as an fd (`PassedFds`).
    ids: IdRange | None = None

    @property
    def ctl_socket(self) -> Path:
        return self.state_dir / "ctl.sock"

    @property
    def qmp_socket(self) -> Path:
        return self.state_dir / "qmp.sock"

    @property
    def console_log(self) -> Path:
        return self.state_dir / "console.log"


class PassedFds(NamedTuple):
    """Fd numbers (inherited by QEMU) standing in for the spec's paths."""

    ctl: int  # listening unix sockets
    qmp: int
    kernel: int
    initrd: int
    shares: tuple[int, ...]  # one O_PATH directory fd per share, in spec order
    mem: int = -1  # the RAM file, when the spec has one
    taps: tuple[int, ...] = ()  # one attached tap fd per NIC (-1: a placeholder NIC)
    disk: int = -1  # the root disk's file, read-only, when the spec has one


def _fd_path(fd: int) -> str:
    # A magic link: QEMU reopens the object itself, whatever the permissions of its path.
    return f"/proc/self/fd/{fd}"


def _opt(value: str) -> str:
    """Escape a value inside a QEMU `key=value,...` option string (commas double)."""
    return value.replace(",", ",,")


def _check(spec: VmSpec) -> None:
    if spec.accel not in ACCELS:
        raise InvalidArgument(f"accel must be one of {ACCELS}, got {spec.accel!r}")
    if spec.mem_mib < 64:
        raise InvalidArgument(f"mem_mib must be at least 64, got {spec.mem_mib}")
    if not 1 <= spec.cpus <= 255:
        raise InvalidArgument(f"cpus must be 1..255, got {spec.cpus}")
    if spec.max_cpus and not spec.cpus <= spec.max_cpus <= 255:
        raise InvalidArgument(f"max_cpus must be cpus..255, got {spec.max_cpus}")
    if spec.incoming is not None and spec.mem_path is None and not spec.incoming_full:
        raise InvalidArgument("restoring from a template needs its RAM file (mem_path)")
    if spec.ram_object and spec.mem_path is not None:
        raise InvalidArgument("RAM is either a file (mem_path) or anonymous (ram_object)")
    if spec.tcg_tb_mib < 1:
        raise InvalidArgument(f"tcg_tb_mib must be positive, got {spec.tcg_tb_mib}")
    # -qmp unix: uses the legacy chardev syntax, which cannot escape commas.
    if "," in str(spec.state_dir):
        raise InvalidArgument(f"state dir must not contain ',': {spec.state_dir}")
    for sock in (spec.ctl_socket, spec.qmp_socket):
        if len(str(sock).encode()) > UNIX_PATH_MAX:
            raise InvalidArgument(f"socket path too long for a unix socket: {sock}")
    tags = [s.tag for s in spec.shares]
    if len(set(tags)) != len(tags):
        raise InvalidArgument(f"duplicate 9p share tags: {tags}")
    for share in spec.shares:
        if not _TAG_RE.fullmatch(share.tag):
            raise InvalidArgument(f"bad 9p tag {share.tag!r} (1-31 chars of [A-Za-z0-9_.-])")
    for nic in spec.nics:
        if not _MAC_RE.fullmatch(nic.mac):
            raise InvalidArgument(f"bad MAC {nic.mac!r} (lowercase aa:bb:cc:dd:ee:ff)")
        if nic.tap and not _IFNAME_RE.fullmatch(nic.tap):
            raise InvalidArgument(f"bad tap name {nic.tap!r}")
    for word in spec.cmdline_extra:
        if not word or any(c.isspace() for c in word) or '"' in word:
            raise InvalidArgument(f"bad kernel command line word {word!r}")


SANDBOX = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"


def build_argv(spec: VmSpec, fds: PassedFds | None = None) -> list[str]:
    """The QEMU argv for `spec` (argv[0] is the binary); with `fds`, QEMU opens nothing by path
    but gets what `fds` names instead."""
    _check(spec)
    if fds is not None and (len(fds.shares) != len(spec.shares)
                            or len(fds.taps) != len(spec.nics)):
        raise InvalidArgument("one fd per share and per NIC")
    cmdline = [*BASE_CMDLINE]
    machine = MACHINE
    if spec.accel == "kvm":
        accel = ["-accel", "kvm", "-cpu", "host"]
    else:
        accel = ["-accel", f"tcg,tb-size={spec.tcg_tb_mib}", "-cpu", "max"]
        if spec.tsc_khz > 0:
            cmdline.append(f"tsc_early_khz={spec.tsc_khz}")
            if spec.tsc_clock:
                cmdline.append("tsc=reliable")
                machine = MACHINE_NO_PIT
    vcpus = spec.cpus
    if spec.max_cpus > spec.cpus:
        vcpus = spec.max_cpus
        cmdline.append(f"maxcpus={spec.cpus}")
    cmdline += spec.cmdline_extra
    argv = [
        spec.qemu_binary,
        "-M", machine,
        *accel,
        "-m", str(spec.mem_mib),
        "-smp", str(vcpus),
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-no-reboot",
        "-kernel", str(spec.kernel) if fds is None else _fd_path(fds.kernel),
        "-initrd", str(spec.initrd) if fds is None else _fd_path(fds.initrd),
        "-append", " ".join(cmdline),
        # The console goes to QEMU's stdout, a pipe the Machine reads into a capped log: a
        # `file:` backend would grow as long as the guest prints.
        "-serial", "stdio",
        # Port 0 is reserved for a console we do not have, port 1 is the control channel: the
        # default 31 ports cost each QEMU 0.4 MiB of heap for queues nobody uses.
        "-device", f"virtio-serial-device,max_ports={SERIAL_PORTS}",
        "-chardev", (f"socket,id=ctl,path={_opt(str(spec.ctl_socket))},server=on,wait=off"
                     if fds is None else f"socket,id=ctl,fd={fds.ctl},server=on,wait=off"),
        "-device", f"virtserialport,chardev=ctl,name={CTL_PORT_NAME}",
    ]  # fmt: skip
    for i, share in enumerate(spec.shares):
        path = _opt(str(share.host_path)) if fds is None else _fd_path(fds.shares[i])
        fsdev = f"local,id={share.tag},path={path},security_model=passthrough"
        if share.readonly:
            fsdev += ",readonly=on"
        if share.remap_devices:
            fsdev += ",multidevs=remap"
        device = f"virtio-9p-device,fsdev={share.tag},mount_tag={share.tag}"
        argv += ["-fsdev", fsdev, "-device", device]
    for i, nic in enumerate(spec.nics):
        if nic.tap and fds is not None:
            # attached by the daemon, with or without vnet headers (QEMU reads which)
            netdev = f"tap,id=net{i},fd={fds.taps[i]}"
        elif nic.tap:
            netdev = f"tap,id=net{i},ifname={nic.tap},script=no,downscript=no"
            if not spec.nic_vnet_hdr:
                netdev += ",vnet_hdr=off"
        else:
            netdev = f"hubport,id=net{i},hubid={i}"
        argv += ["-netdev", netdev, "-device", f"virtio-net-device,netdev=net{i},mac={nic.mac}"]
    if spec.root_disk is not None:
        if fds is None:
            disk = _opt(str(spec.root_disk))
        else:
            # Not reopened through /proc/self/fd like the others: an image's erofs is 0600,
            # root's, and QEMU would be refused; an fd set hands it the open file itself.
            disk = f"/dev/fdset/{ROOT_DISK_FDSET}"
            argv += ["-add-fd", f"fd={fds.disk},set={ROOT_DISK_FDSET}"]
        argv += [
            "-blockdev", f"driver=file,node-name={ROOT_DISK_NODE}-file,filename={disk},"
                         "read-only=on",
            "-blockdev", f"driver=raw,node-name={ROOT_DISK_NODE},file={ROOT_DISK_NODE}-file,"
                         "read-only=on",
            "-device", f"virtio-blk-device,drive={ROOT_DISK_NODE}",
        ]  # fmt: skip
    if spec.balloon:
        grows = ",deflate-on-oom=on" if spec.balloon_grows else ""
        argv += ["-device", f"virtio-balloon-device,free-page-reporting=on{grows}"]
    if spec.mem_path is not None:
        shared = "on" if spec.mem_shared else "off"
        mem_path = _opt(str(spec.mem_path)) if fds is None else _fd_path(fds.mem)
        argv += [
            "-object",
            f"memory-backend-file,id=ram,size={spec.mem_mib}M,"
            f"mem-path={mem_path},share={shared}",
            "-machine", "memory-backend=ram",
        ]  # fmt: skip
    elif spec.ram_object:
        argv += ["-object", f"memory-backend-ram,id=ram,size={spec.mem_mib}M",
                 "-machine", "memory-backend=ram"]
    argv += spec.extra_args
    # QEMU's own seccomp sandbox: no obsolete syscalls, no setuid/setgid, no scheduler or
    # resource control, no spawning processes (restore and save go through fds).
    argv += ["-sandbox", SANDBOX]
    if fds is None:
        argv += ["-qmp", f"unix:{spec.qmp_socket},server=on,wait=off"]
    else:
        argv += ["-chardev", f"socket,id=qmp,fd={fds.qmp},server=on,wait=off",
                 "-mon", "chardev=qmp,mode=control"]
    if spec.incoming is not None:
        # Deferred: the x-ignore-shared capability must be set before the stream is read (QEMU
        # 7.2 has no -global for it), so Machine sends it and then `migrate-incoming`.
        argv += ["-incoming", "defer"]
    return argv
