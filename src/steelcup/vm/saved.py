"""What a VM's devices were when it was checkpointed (`SavedVm`), and the `VmSpec` of a VM that
restores that checkpoint: same devices in the same order, today's host paths and taps.

A migration stream holds device state, not the devices: QEMU loads it only into a VM with the
same RAM block, vCPUs, virtio devices and NIC MACs. Pure, JSON-ready.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from steelcup.errors import InvalidArgument
from steelcup.idmap import IdRange
from steelcup.vm.qemu_args import NicSpec, Share, VmSpec

ROOTFS_TAG = "rootfs"


@dataclass(frozen=True)
class SavedShare:
    tag: str
    readonly: bool
    remap_devices: bool


@dataclass(frozen=True)
class SavedNic:
    mac: str
    tapped: bool  # False: a placeholder (hub port) of a template clone's spare slot


@dataclass(frozen=True)
class SavedVm:
    """The device-shaping part of a checkpointed VM's spec."""

    mem_mib: int
    cpus: int
    max_cpus: int
    accel: str
    tcg_tb_mib: int
    tsc_khz: int
    tsc_clock: bool
    balloon: bool
    balloon_grows: bool
    ram_object: bool  # its RAM was the backend object `ram` (a template clone's file)
    cmdline_extra: tuple[str, ...]
    shares: tuple[SavedShare, ...]
    nics: tuple[SavedNic, ...]
    nic_vnet_hdr: bool
    limit_mib: int  # the host memory limit it ran with
    # It had the read-only root disk of a block daemon's VMs (`VmSpec.root_disk`): a
    # checkpointable container never reads it (its root is in RAM), but the restoring VM
    # must have the device.
    root_disk: bool = False

    @classmethod
    def of(cls, spec: VmSpec, limit_mib: int) -> SavedVm:
        if spec.extra_args:
            raise InvalidArgument("a VM with raw extra QEMU arguments cannot be checkpointed")
        return cls(
            mem_mib=spec.mem_mib, cpus=spec.cpus, max_cpus=spec.max_cpus, accel=spec.accel,
            tcg_tb_mib=spec.tcg_tb_mib, tsc_khz=spec.tsc_khz, tsc_clock=spec.tsc_clock,
            balloon=spec.balloon, balloon_grows=spec.balloon_grows,
            ram_object=spec.mem_path is not None or spec.ram_object,
            cmdline_extra=spec.cmdline_extra,
            shares=tuple(SavedShare(s.tag, s.readonly, s.remap_devices) for s in spec.shares),
            nics=tuple(SavedNic(n.mac, bool(n.tap)) for n in spec.nics),
            nic_vnet_hdr=spec.nic_vnet_hdr, limit_mib=limit_mib,
            root_disk=spec.root_disk is not None,
        )

    @property
    def taps_needed(self) -> int:
        return sum(1 for n in self.nics if n.tapped)

    def restore_spec(self, *, kernel: Path, initrd: Path, state_dir: Path, incoming: Path,
                     rootfs: Path, empty_dir: Path, taps: tuple[str, ...],
                     ids: IdRange | None, placeholder: Path | None = None) -> VmSpec:
        """The VM that loads the checkpoint `incoming`: the container's root behind the
        rootfs share (the guest no longer mounts it), `empty_dir` behind any other (a
        clone's spare volume slots), `taps` behind the NICs that had one, in order, and
        `placeholder` (an empty disk of the size every root disk has) behind a root disk."""
        if self.root_disk and placeholder is None:
            raise InvalidArgument("the checkpointed VM had a root disk and this daemon has no "
                                  "placeholder disk to restore it with")
        if len(taps) != self.taps_needed:
            raise InvalidArgument(f"the checkpointed VM had {self.taps_needed} NIC(s) on the "
                                  f"network, this run has {len(taps)}: the container's "
                                  "networks changed since the checkpoint")
        left = iter(taps)
        return VmSpec(
            kernel=kernel, initrd=initrd, state_dir=state_dir, mem_mib=self.mem_mib,
            cpus=self.cpus, max_cpus=self.max_cpus, accel=self.accel,
            tcg_tb_mib=self.tcg_tb_mib, tsc_khz=self.tsc_khz, tsc_clock=self.tsc_clock,
            balloon=self.balloon, balloon_grows=self.balloon_grows,
            ram_object=self.ram_object, cmdline_extra=self.cmdline_extra,
            shares=tuple(Share(s.tag, rootfs if s.tag == ROOTFS_TAG else empty_dir,
                               s.readonly, s.remap_devices) for s in self.shares),
            nics=tuple(NicSpec(next(left) if n.tapped else "", n.mac) for n in self.nics),
            nic_vnet_hdr=self.nic_vnet_hdr, incoming=incoming, incoming_full=True, ids=ids,
            root_disk=placeholder if self.root_disk else None,
        )

    def to_json(self) -> dict[str, object]:
        return {
            "mem_mib": self.mem_mib, "cpus": self.cpus, "max_cpus": self.max_cpus,
            "accel": self.accel, "tcg_tb_mib": self.tcg_tb_mib, "tsc_khz": self.tsc_khz,
            "tsc_clock": self.tsc_clock, "balloon": self.balloon,
            "balloon_grows": self.balloon_grows, "ram_object": self.ram_object,
            "cmdline_extra": list(self.cmdline_extra),
            "shares": [[s.tag, s.readonly, s.remap_devices] for s in self.shares],
            "nics": [[n.mac, n.tapped] for n in self.nics],
            "nic_vnet_hdr": self.nic_vnet_hdr, "limit_mib": self.limit_mib,
            "root_disk": self.root_disk,
        }

    @classmethod
    def from_json(cls, data: object) -> SavedVm:
        if not isinstance(data, dict):
            raise ValueError("the saved VM is not an object")
        try:
            return cls(
                mem_mib=_int(data["mem_mib"]), cpus=_int(data["cpus"]),
                max_cpus=_int(data["max_cpus"]), accel=str(data["accel"]),
                tcg_tb_mib=_int(data["tcg_tb_mib"]), tsc_khz=_int(data["tsc_khz"]),
                tsc_clock=bool(data["tsc_clock"]), balloon=bool(data["balloon"]),
                balloon_grows=bool(data["balloon_grows"]),
                ram_object=bool(data["ram_object"]),
                cmdline_extra=tuple(str(w) for w in data["cmdline_extra"]),
                shares=tuple(SavedShare(str(t), bool(r), bool(m))
                             for t, r, m in data["shares"]),
                nics=tuple(SavedNic(str(mac), bool(tapped)) for mac, tapped in data["nics"]),
                nic_vnet_hdr=bool(data["nic_vnet_hdr"]), limit_mib=_int(data["limit_mib"]),
                root_disk=bool(data.get("root_disk", False)),  # absent before block roots
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"bad saved VM: {exc!r}") from exc


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"not an integer: {value!r}")
    return value
