"""Choose QEMU's accelerator: KVM when a real guest boots with it, else TCG.

A `/dev/kvm` that opens is not enough (nested "PVM" KVM fails to run a stock kernel, sometimes
by spinning forever), so 'auto' boots the real kernel+initrd under KVM with a short deadline.
The verdict is cached per host boot (/proc/sys/kernel/random/boot_id).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from steelcup.errors import InvalidArgument, VmLaunchError
from steelcup.vm.assets import GuestAssets, find_assets
from steelcup.vm.machine import Machine
from steelcup.vm.qemu_args import VmSpec

PROBE_DEADLINE_S = 8.0
PROBE_MEM_MIB = 128
CACHE_FILE = "accel.json"
BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
KVM_DEVICE = Path("/dev/kvm")


def _stderr_notice(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def host_boot_id() -> str:
    try:
        return BOOT_ID_PATH.read_text().strip()
    except OSError:
        return ""


def _read_cache(path: Path, boot_id: str) -> tuple[str, str] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not boot_id or data.get("boot_id") != boot_id:
        return None
    verdict, reason = data.get("accel"), data.get("reason", "")
    if verdict not in ("kvm", "tcg") or not isinstance(reason, str):
        return None
    return verdict, reason


def _write_cache(path: Path, boot_id: str, verdict: str, reason: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"boot_id": boot_id, "accel": verdict, "reason": reason}) + "\n")
    tmp.replace(path)


async def probe_kvm(
    assets: GuestAssets, work_dir: Path, deadline_s: float = PROBE_DEADLINE_S
) -> tuple[bool, str]:
    """Boot the guest under KVM and wait for HELLO_OK. Returns (usable, reason)."""
    if not os.access(KVM_DEVICE, os.R_OK | os.W_OK):
        return False, f"{KVM_DEVICE} is missing or not accessible"
    work_dir.mkdir(parents=True, exist_ok=True)
    state_dir = Path(tempfile.mkdtemp(prefix="kvm-probe-", dir=work_dir))
    spec = VmSpec(
        kernel=assets.kernel,
        initrd=assets.initrd,
        state_dir=state_dir,
        mem_mib=PROBE_MEM_MIB,
        accel="kvm",
    )
    machine = Machine(spec, boot_attempts=1)
    try:
        await machine.start(deadline_s)
        return True, "a KVM guest booted"
    except VmLaunchError as exc:
        first = str(exc).splitlines()[0]
        return False, f"KVM probe boot failed: {first}"
    finally:
        await machine.close()
        shutil.rmtree(state_dir, ignore_errors=True)


async def choose_accel(
    requested: str,
    cache_dir: Path,
    *,
    assets: GuestAssets | None = None,
    probe_deadline_s: float = PROBE_DEADLINE_S,
    notice: Callable[[str], None] = _stderr_notice,
) -> str:
    """'kvm' or 'tcg' as forced; for 'auto' the cached or freshly probed verdict."""
    if requested in ("kvm", "tcg"):
        return requested
    if requested != "auto":
        raise InvalidArgument(f"accel must be auto, kvm or tcg, not {requested!r}")
    cache = cache_dir / CACHE_FILE
    boot_id = host_boot_id()
    cached = _read_cache(cache, boot_id)
    if cached is not None:
        verdict, reason = cached
        source = "cached for this host boot"
    else:
        found = assets if assets is not None else find_assets(None)
        usable, reason = await probe_kvm(found, cache_dir, probe_deadline_s)
        verdict = "kvm" if usable else "tcg"
        source = "probed"
        if boot_id:
            _write_cache(cache, boot_id, verdict, reason)
    if verdict == "tcg":
        notice(
            f"steelcup: KVM unusable ({reason}; {source}); using QEMU TCG emulation - slower, "
            "and QEMU does not treat TCG as a security boundary"
        )
    return verdict
