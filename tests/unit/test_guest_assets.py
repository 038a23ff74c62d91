"""Unit tests of tools/guest_assets.py: module load order, cpio layout, vmlinux extraction."""

from __future__ import annotations

import gzip
import lzma
from pathlib import Path

import pytest

from tools.guest_assets import (
    ModuleError,
    build_initrd,
    extract_vmlinux,
    load_order,
    main,
    module_name,
    parse_builtin,
    parse_modules_dep,
)

# Shape of Debian 6.1's modules.dep (deps are listed transitively, nearest first).
DEP = """\
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko \
kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/char/virtio_console.ko: kernel/drivers/virtio/virtio.ko \
kernel/drivers/virtio/virtio_ring.ko
kernel/net/core/failover.ko:
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko \
kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/net/9p/9pnet.ko:
kernel/net/9p/9pnet_virtio.ko: kernel/net/9p/9pnet.ko kernel/drivers/virtio/virtio.ko \
kernel/drivers/virtio/virtio_ring.ko
kernel/fs/netfs/netfs.ko:
kernel/fs/fscache/fscache.ko: kernel/fs/netfs/netfs.ko
kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/fscache/fscache.ko kernel/fs/netfs/netfs.ko
kernel/drivers/char/hw_random/virtio-rng.ko.xz: kernel/drivers/virtio/virtio.ko \
kernel/drivers/virtio/virtio_ring.ko
""".replace("\\\n", "")
BUILTIN = "kernel/fs/overlayfs/overlay.ko\nkernel/drivers/block/virtio_blk.ko\n"


def positions(order: tuple[str, ...]) -> dict[str, int]:
    return {module_name(p): i for i, p in enumerate(order)}


def test_module_name_normalises_dashes_and_suffixes() -> None:
    assert module_name("kernel/drivers/char/hw_random/virtio-rng.ko.xz") == "virtio_rng"
    assert module_name("kernel/fs/9p/9p.ko") == "9p"
    assert module_name("x/y.ko.zst") == "y"


def test_every_module_follows_its_dependencies() -> None:
    deps = parse_modules_dep(DEP)
    plan = load_order(
        deps, set(), ["virtio_mmio", "virtio_console", "virtio_net", "9pnet_virtio", "9p"]
    )
    pos = positions(plan.order)
    for path in plan.order:
        for dep in deps[path]:
            assert pos[module_name(dep)] < pos[module_name(path)], (dep, path)
    assert len(plan.order) == len(set(plan.order))
    assert plan.order[:3] == (
        "kernel/drivers/virtio/virtio_ring.ko",
        "kernel/drivers/virtio/virtio.ko",
        "kernel/drivers/virtio/virtio_mmio.ko",
    )
    # Nothing unrequested sneaks in.
    assert "virtio_rng" not in pos


def test_wanted_order_is_kept_where_deps_allow() -> None:
    plan = load_order(parse_modules_dep(DEP), set(), ["9p", "virtio_console"])
    pos = positions(plan.order)
    assert pos["9p"] < pos["virtio_console"]
    assert pos["netfs"] < pos["fscache"] < pos["9p"]


def test_builtin_modules_are_skipped() -> None:
    plan = load_order(
        parse_modules_dep(DEP), parse_builtin(BUILTIN), ["virtio_mmio", "overlay", "virtio_blk"]
    )
    assert plan.builtin == ("overlay", "virtio_blk")
    assert "overlay" not in positions(plan.order)


def test_optional_modules_load_if_present_and_are_skipped_if_absent() -> None:
    plan = load_order(parse_modules_dep(DEP), set(), ["virtio_mmio"], ["virtio-rng", "virtio_mem"])
    assert "virtio_rng" in positions(plan.order)
    assert plan.missing_optional == ("virtio_mem",)


def test_missing_required_module_is_an_error() -> None:
    with pytest.raises(ModuleError, match="virtio_fs"):
        load_order(parse_modules_dep(DEP), set(), ["virtio_fs"])


def test_unknown_dependency_and_cycle_are_errors() -> None:
    with pytest.raises(ModuleError, match="unknown module"):
        load_order(parse_modules_dep("a.ko: b.ko\n"), set(), ["a"])
    with pytest.raises(ModuleError, match="cycle"):
        load_order(parse_modules_dep("a.ko: b.ko\nb.ko: a.ko\n"), set(), ["a"])


def test_malformed_modules_dep_line() -> None:
    with pytest.raises(ModuleError):
        parse_modules_dep("no colon here\n")


def parse_newc(data: bytes) -> dict[str, tuple[int, bytes]]:
    entries: dict[str, tuple[int, bytes]] = {}
    off = 0
    while True:
        assert data[off : off + 6] == b"070701"
        fields = [int(data[off + 6 + 8 * i : off + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name = data[off + 110 : off + 110 + namesize - 1].decode()
        off += 110 + namesize
        off += -off % 4
        body = data[off : off + size]
        off += size
        off += -off % 4
        if name == "TRAILER!!!":
            return entries
        entries[name] = (mode, body)


def test_initrd_layout() -> None:
    image = build_initrd(b"\x7fELFinit", [("virtio.ko", b"A" * 5), ("9p.ko", b"B")])
    entries = parse_newc(image)
    assert entries["init"] == (0o100755, b"\x7fELFinit")
    assert entries["modules.list"][1] == b"virtio.ko\n9p.ko\n"
    assert entries["modules/virtio.ko"][1] == b"A" * 5
    assert entries["dev/console"][0] == 0o020600
    for d in ("dev", "proc", "sys", "run", "modules"):
        assert entries[d][0] == 0o040755
    assert build_initrd(b"x", []) == build_initrd(b"x", [])  # deterministic


def test_no_modules_initrd_has_the_init_and_an_empty_module_list(tmp_path: Path) -> None:
    init = tmp_path / "init"
    init.write_bytes(b"\x7fELFinit")
    out = tmp_path / "initrd.img"
    assert main(["--no-modules", "--init", str(init), "--out", str(out)]) == 0
    entries = parse_newc(out.read_bytes())
    assert entries["init"] == (0o100755, b"\x7fELFinit")
    assert entries["modules.list"][1] == b""
    assert not [name for name in entries if name.startswith("modules/")]
    with pytest.raises(SystemExit):  # modules and --no-modules contradict each other
        main(["--no-modules", "--modules", "9p", "--init", str(init), "--out", str(out)])


def test_extract_vmlinux_finds_the_elf_payload() -> None:
    elf = b"\x7fELF" + bytes(range(256)) * 64
    for packed in (lzma.compress(elf, format=lzma.FORMAT_XZ), gzip.compress(elf)):
        # A false magic before the real payload must be skipped.
        bz = b"MZ setup \xfd7zXZ\x00 junk " + packed + b"trailer"
        assert extract_vmlinux(bz) == elf
    with pytest.raises(ModuleError):
        extract_vmlinux(b"no kernel here")
