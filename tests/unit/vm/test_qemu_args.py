"""Golden argv of the QEMU command line builder."""

from __future__ import annotations

from pathlib import Path

import pytest

from steelcup.errors import InvalidArgument
from steelcup.vm.qemu_args import Share, VmSpec, build_argv

STATE = Path("/run/steelcup/vm/abc")


def spec(**kw: object) -> VmSpec:
    base: dict[str, object] = {
        "kernel": Path("/g/vmlinuz"),
        "initrd": Path("/g/initrd.img"),
        "state_dir": STATE,
        "tsc_khz": 1996248,
        "tsc_clock": True,
        "shares": (Share("rootfs", Path("/var/lib/steelcup/c1/rootfs")),),
    }
    base.update(kw)
    return VmSpec(**base)  # type: ignore[arg-type]


def test_tcg_golden() -> None:
    assert build_argv(spec()) == [
        "qemu-system-x86_64",
        "-M", "microvm,pit=off,pic=on,rtc=on",
        "-accel", "tcg,tb-size=128",
        "-cpu", "max",
        "-m", "256",
        "-smp", "1",
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-no-reboot",
        "-kernel", "/g/vmlinuz",
        "-initrd", "/g/initrd.img",
        "-append",
        "console=ttyS0 reboot=t panic=-1 quiet rdinit=/init sysctl.vm.compaction_proactiveness=0"
        " page_reporting.page_reporting_order=5 tsc_early_khz=1996248 tsc=reliable",
        "-serial", "stdio",
        "-device", "virtio-serial-device,max_ports=2",
        "-chardev", "socket,id=ctl,path=/run/steelcup/vm/abc/ctl.sock,server=on,wait=off",
        "-device", "virtserialport,chardev=ctl,name=steelcup.ctl",
        "-fsdev", "local,id=rootfs,path=/var/lib/steelcup/c1/rootfs,security_model=passthrough",
        "-device", "virtio-9p-device,fsdev=rootfs,mount_tag=rootfs",
        "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
        "-qmp", "unix:/run/steelcup/vm/abc/qmp.sock,server=on,wait=off",
    ]  # fmt: skip


def test_kvm_sizes_extras_and_readonly_share() -> None:
    argv = build_argv(
        spec(
            accel="kvm",
            mem_mib=512,
            cpus=2,
            cmdline_extra=("loglevel=7",),
            shares=(Share("rootfs", Path("/r,x"), True), Share("vol0", Path("/v"))),
        )
    )
    i = argv.index("-accel")
    assert argv[i : i + 4] == ["-accel", "kvm", "-cpu", "host"]
    assert "tcg" not in " ".join(argv)
    assert "tsc_early_khz" not in " ".join(argv)
    assert "tsc=reliable" not in " ".join(argv)  # KVM guests keep time with kvm-clock
    assert argv[argv.index("-M") + 1] == "microvm,pit=on,pic=on,rtc=on"
    assert argv[argv.index("-m") + 1] == "512"
    assert argv[argv.index("-smp") + 1] == "2"
    assert argv[argv.index("-append") + 1].endswith("page_reporting_order=5 loglevel=7")
    fsdevs = [argv[j + 1] for j, a in enumerate(argv) if a == "-fsdev"]
    assert fsdevs == [
        "local,id=rootfs,path=/r,,x,security_model=passthrough,readonly=on",
        "local,id=vol0,path=/v,security_model=passthrough",
    ]
    assert "virtio-9p-device,fsdev=vol0,mount_tag=vol0" in argv


def test_tb_size() -> None:
    assert "tcg,tb-size=8" in build_argv(spec(tcg_tb_mib=8))


@pytest.mark.parametrize(
    "kw",
    [
        {"accel": "auto"},
        {"mem_mib": 16},
        {"cpus": 0},
        {"state_dir": Path("/tmp/a,b")},
        {"state_dir": Path("/tmp/" + "x" * 120)},
        {"shares": (Share("bad tag", Path("/x")),)},
        {"shares": (Share("a", Path("/x")), Share("a", Path("/y")))},
        {"cmdline_extra": ("two words",)},
    ],
)
def test_invalid_specs(kw: dict[str, object]) -> None:
    with pytest.raises(InvalidArgument):
        build_argv(spec(**kw))


def test_tsc_khz_from_cpuinfo(tmp_path: Path) -> None:
    from steelcup.vm.qemu_args import DEFAULT_TSC_KHZ, host_tsc_khz

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\ncpu MHz\t\t: 1996.248\n")
    assert host_tsc_khz(info) == 1996248
    assert host_tsc_khz(tmp_path / "missing") == DEFAULT_TSC_KHZ
    argv = build_argv(spec(tsc_khz=0))
    assert "tsc_early_khz" not in argv[argv.index("-append") + 1]
    # A guest that calibrates its TSC needs the PIT for it, and cannot trust the result.
    assert "tsc=reliable" not in argv[argv.index("-append") + 1]
    assert argv[argv.index("-M") + 1] == "microvm,pit=on,pic=on,rtc=on"


def test_tsc_clock_only_with_an_invariant_host_tsc(tmp_path: Path) -> None:
    from steelcup.vm.qemu_args import host_tsc_invariant

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu tsc constant_tsc nonstop_tsc\n")
    assert host_tsc_invariant(info)
    info.write_text("processor\t: 0\nflags\t\t: fpu tsc constant_tsc\n")
    assert not host_tsc_invariant(info)
    assert not host_tsc_invariant(tmp_path / "missing")
    argv = build_argv(spec(tsc_clock=False))
    assert "tsc=reliable" not in argv[argv.index("-append") + 1]
    assert argv[argv.index("-M") + 1] == "microvm,pit=on,pic=on,rtc=on"


def test_nics_tap_and_placeholder() -> None:
    from steelcup.vm.qemu_args import NicSpec

    argv = build_argv(spec(nics=(NicSpec("sc-tap1", "02:42:ac:11:00:02"),
                                 NicSpec("", "02:5c:00:00:00:01"))))
    i = argv.index("-netdev")
    assert argv[i:i + 8] == [
        "-netdev", "tap,id=net0,ifname=sc-tap1,script=no,downscript=no",
        "-device", "virtio-net-device,netdev=net0,mac=02:42:ac:11:00:02",
        "-netdev", "hubport,id=net1,hubid=1",
        "-device", "virtio-net-device,netdev=net1,mac=02:5c:00:00:00:01",
    ]  # fmt: skip
    argv = build_argv(spec(nics=(NicSpec("t0", "02:42:ac:11:00:02"),), nic_vnet_hdr=False))
    assert "tap,id=net0,ifname=t0,script=no,downscript=no,vnet_hdr=off" in argv


@pytest.mark.parametrize("nic", [("t,0", "02:42:ac:11:00:02"), ("t0", "02:42:AC:11:00:02"),
                                 ("t0", "02:42:ac:11:00")])
def test_bad_nics_are_rejected(nic: tuple[str, str]) -> None:
    from steelcup.vm.qemu_args import NicSpec

    with pytest.raises(InvalidArgument):
        build_argv(spec(nics=(NicSpec(*nic),)))


def test_no_vm_may_spawn() -> None:
    """Clones restore from an inherited fd and templates save into an fd passed over QMP: no
    QEMU needs a helper process, so every sandbox refuses spawning."""
    for shared in (False, True):
        spec = VmSpec(Path("/k"), Path("/i"), Path("/s"), mem_path=Path("/t/ram"),
                      mem_shared=shared)
        argv = build_argv(spec)
        assert "spawn=deny" in argv[argv.index("-sandbox") + 1]


def test_a_qemu_without_host_root_gets_everything_as_fds() -> None:
    """With `ids` the Machine opens the files, sockets and taps and QEMU names them by fd
    (it could not reach them below the 0700 state root)."""
    from steelcup.vm.qemu_args import NicSpec, PassedFds

    s = spec(nics=(NicSpec("sctap0", "52:54:00:00:00:01"), NicSpec("", "52:54:00:00:00:02")),
             mem_path=Path("/t/ram"))
    fds = PassedFds(ctl=3, qmp=4, kernel=5, initrd=6, shares=(7,), mem=8, taps=(9, -1))
    argv = build_argv(s, fds)
    text = " ".join(argv)
    assert argv[argv.index("-kernel") + 1] == "/proc/self/fd/5"
    assert argv[argv.index("-initrd") + 1] == "/proc/self/fd/6"
    assert "socket,id=ctl,fd=3,server=on,wait=off" in argv
    assert argv[-4:] == ["-chardev", "socket,id=qmp,fd=4,server=on,wait=off",
                         "-mon", "chardev=qmp,mode=control"]
    assert "local,id=rootfs,path=/proc/self/fd/7,security_model=passthrough" in argv
    assert "tap,id=net0,fd=9" in argv and "hubport,id=net1,hubid=1" in argv
    assert "mem-path=/proc/self/fd/8,share=off" in text
    for path in ("/g/", "/t/ram", str(STATE), "/var/lib", "ifname="):
        assert path not in text
    with pytest.raises(InvalidArgument):
        build_argv(s, fds._replace(taps=(9,)))


def test_a_root_disk_is_a_read_only_raw_node_on_a_file_node() -> None:
    """The root disk (issue 19's block root): a file node and a raw node, both read-only, the
    raw one named ROOT_DISK_NODE (what a hand-out reopens onto another file), under a
    virtio-blk device; by fd for a QEMU without host root."""
    from steelcup.vm.qemu_args import ROOT_DISK_NODE, PassedFds

    s = spec(root_disk=Path("/img/a,b.erofs"))
    argv = build_argv(s)
    i = argv.index("-blockdev")
    assert argv[i:i + 6] == [
        "-blockdev", f"driver=file,node-name={ROOT_DISK_NODE}-file,filename=/img/a,,b.erofs,"
                     "read-only=on",
        "-blockdev", f"driver=raw,node-name={ROOT_DISK_NODE},file={ROOT_DISK_NODE}-file,"
                     "read-only=on",
        "-device", f"virtio-blk-device,drive={ROOT_DISK_NODE}"]  # fmt: skip
    fds = PassedFds(ctl=3, qmp=4, kernel=5, initrd=6, shares=(7,), disk=10)
    text = " ".join(build_argv(s, fds))
    assert "-add-fd fd=10,set=1" in text and "/img/" not in text
    assert "filename=/dev/fdset/1,read-only=on" in text
    assert "-blockdev" not in build_argv(spec())


def test_a_balloon_reports_free_pages_and_may_deflate_on_oom() -> None:
    """Free page reporting on every balloon (the guest hands back memory it freed; a clone's
    discard drops only its own copies, vm/seccomp.py); deflate-on-oom for growing VMs."""
    assert "virtio-balloon-device" not in " ".join(build_argv(spec()))
    fixed = build_argv(spec(balloon=True))
    assert fixed[fixed.index("virtio-balloon-device,free-page-reporting=on") - 1] == "-device"
    grows = build_argv(spec(balloon=True, balloon_grows=True))
    assert "virtio-balloon-device,free-page-reporting=on,deflate-on-oom=on" in grows
