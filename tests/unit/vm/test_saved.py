"""A checkpointed VM's devices (`SavedVm`) and the VM that restores it: QEMU loads a migration
stream only into the same devices, so the restored argv must match the original's device by
device, with today's paths and taps and the RAM the stream carries."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from steelcup.errors import InvalidArgument
from steelcup.vm.qemu_args import NicSpec, Share, VmSpec, build_argv
from steelcup.vm.saved import SavedVm

# A template clone as pool/template.py makes it: file-backed RAM, balloon, spare slots.
CLONE = VmSpec(
    kernel=Path("/k"), initrd=Path("/i"), state_dir=Path("/run/vms/clone-1"), mem_mib=2048,
    cpus=1, max_cpus=4, balloon=True, mem_path=Path("/run/vms/t/ram"), tsc_khz=2_000_000,
    tsc_clock=True, cmdline_extra=("init_on_alloc=0",),
    shares=(Share("rootfs", Path("/run/vms/s/slot1"), remap_devices=True),
            Share("vol0", Path("/run/vms/t/empty"), readonly=True)),
    nics=(NicSpec("sc-abc", "52:54:00:12:34:56"), NicSpec("", "52:54:00:12:34:57")),
    nic_vnet_hdr=False, incoming=Path("/run/vms/t/state"),
)


def restored(saved: SavedVm, taps: tuple[str, ...] = ("sc-abc",)) -> VmSpec:
    return saved.restore_spec(kernel=Path("/k2"), initrd=Path("/i2"),
                              state_dir=Path("/run/vms/restored-1"),
                              incoming=Path("/c/checkpoints/cp1/vm.state"),
                              rootfs=Path("/c/rootfs"), empty_dir=Path("/run/vms/e"),
                              taps=taps, ids=None)


def values_of(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_a_clone_is_restored_with_the_same_devices_and_anonymous_ram() -> None:
    saved = SavedVm.of(CLONE, limit_mib=256)
    assert SavedVm.from_json(json.loads(json.dumps(saved.to_json()))) == saved
    spec = restored(saved)
    before, after = build_argv(CLONE), build_argv(spec)
    for flag in ("-device", "-smp", "-m", "-append", "-M", "-accel", "-cpu"):
        assert values_of(after, flag) == values_of(before, flag), flag
    assert values_of(after, "-netdev") == ["tap,id=net0,ifname=sc-abc,script=no,downscript=no,"
                                           "vnet_hdr=off", "hubport,id=net1,hubid=1"]
    assert values_of(after, "-fsdev") == [
        "local,id=rootfs,path=/c/rootfs,security_model=passthrough,multidevs=remap",
        "local,id=vol0,path=/run/vms/e,security_model=passthrough,readonly=on"]
    # The RAM block keeps its name (`ram`), without the template's file behind it.
    assert values_of(after, "-object") == ["memory-backend-ram,id=ram,size=2048M"]
    assert "memory-backend=ram" in values_of(after, "-machine")
    assert spec.incoming_full and spec.incoming == Path("/c/checkpoints/cp1/vm.state")
    assert values_of(after, "-incoming") == ["defer"]


def test_a_direct_boot_keeps_the_machines_own_ram() -> None:
    direct = VmSpec(Path("/k"), Path("/i"), Path("/s"), mem_mib=256,
                    shares=(Share("rootfs", Path("/c/rootfs")),))
    argv = build_argv(restored(SavedVm.of(direct, 256), taps=()))
    assert "-object" not in argv and "memory-backend=ram" not in argv
    assert values_of(argv, "-device") == values_of(build_argv(direct), "-device")


def test_a_block_daemons_clone_is_restored_with_the_placeholder_behind_its_root_disk() -> None:
    """A checkpointable container's VM of a block daemon had the read-only root disk (on the
    placeholder or an image's erofs: its RAM root never read it); the restoring VM has the
    same device, on the placeholder. A checkpoint from before root disks has none."""
    with_disk = replace(CLONE, root_disk=Path("/images/erofs/abc.erofs"))
    saved = SavedVm.of(with_disk, limit_mib=256)
    assert saved.root_disk
    assert SavedVm.from_json(json.loads(json.dumps(saved.to_json()))) == saved
    spec = saved.restore_spec(kernel=Path("/k2"), initrd=Path("/i2"),
                              state_dir=Path("/run/vms/restored-1"),
                              incoming=Path("/c/vm.state"), rootfs=Path("/c/rootfs"),
                              empty_dir=Path("/run/vms/e"), taps=("sc-abc",), ids=None,
                              placeholder=Path("/cache/root-disk-placeholder"))
    assert spec.root_disk == Path("/cache/root-disk-placeholder")
    assert (values_of(build_argv(spec), "-device")
            == values_of(build_argv(with_disk), "-device"))
    with pytest.raises(InvalidArgument, match="no placeholder disk"):
        restored(saved)
    old = saved.to_json()
    del old["root_disk"]
    assert not SavedVm.from_json(old).root_disk
    assert restored(SavedVm.of(CLONE, limit_mib=256)).root_disk is None


def test_other_networks_than_at_the_checkpoint_are_refused() -> None:
    saved = SavedVm.of(CLONE, limit_mib=256)
    with pytest.raises(InvalidArgument, match="networks changed since the checkpoint"):
        restored(saved, taps=())
    with pytest.raises(InvalidArgument, match="networks changed"):
        restored(saved, taps=("a", "b"))


def test_raw_extra_arguments_cannot_be_saved() -> None:
    with pytest.raises(InvalidArgument, match="extra QEMU arguments"):
        SavedVm.of(VmSpec(Path("/k"), Path("/i"), Path("/s"), extra_args=("-x",)), 256)


@pytest.mark.parametrize("mangle", [
    lambda d: d.pop("nics"),
    lambda d: d.update(mem_mib="2048"),
    lambda d: d.update(shares=[["rootfs"]]),
])
def test_a_mangled_record_is_refused(mangle: object) -> None:
    data = SavedVm.of(CLONE, 256).to_json()
    mangle(data)  # type: ignore[operator]
    with pytest.raises(ValueError, match="bad saved VM"):
        SavedVm.from_json(data)


def test_ram_is_a_file_or_anonymous_and_a_full_stream_needs_no_file() -> None:
    with pytest.raises(InvalidArgument, match="either a file"):
        build_argv(VmSpec(Path("/k"), Path("/i"), Path("/s"), mem_path=Path("/r"),
                          ram_object=True))
    with pytest.raises(InvalidArgument, match="RAM file"):
        build_argv(VmSpec(Path("/k"), Path("/i"), Path("/s"), incoming=Path("/st")))
    build_argv(VmSpec(Path("/k"), Path("/i"), Path("/s"), incoming=Path("/st"),
                      incoming_full=True))
