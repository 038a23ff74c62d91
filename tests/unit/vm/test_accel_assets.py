"""Asset lookup and the accelerator choice (without booting: the cached and forced paths)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from steelcup.errors import InvalidArgument, NotFound
from steelcup.vm import accel
from steelcup.vm.assets import GuestAssets, find_assets


def make_assets(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "vmlinux").write_bytes(b"k")
    (d / "initrd.img").write_bytes(b"i")
    return d


def test_explicit_then_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = make_assets(tmp_path / "a")
    env = make_assets(tmp_path / "b")
    monkeypatch.setenv("STEELCUP_ASSETS", str(env))
    assert find_assets(explicit).kernel == explicit / "vmlinux"
    assert find_assets(None).initrd == env / "initrd.img"


def test_missing_assets_say_make_guest(tmp_path: Path) -> None:
    (tmp_path / "vmlinux").write_bytes(b"k")  # initrd missing
    with pytest.raises(NotFound, match="make guest"):
        find_assets(tmp_path)


def test_forced_and_invalid_accel(tmp_path: Path) -> None:
    assert asyncio.run(accel.choose_accel("kvm", tmp_path)) == "kvm"
    assert asyncio.run(accel.choose_accel("tcg", tmp_path)) == "tcg"
    with pytest.raises(InvalidArgument):
        asyncio.run(accel.choose_accel("hvf", tmp_path))


def test_cached_verdict_is_per_boot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accel, "host_boot_id", lambda: "boot-1")
    probes: list[int] = []

    async def fake_probe(*_: object) -> tuple[bool, str]:
        probes.append(1)
        return False, "spins"

    monkeypatch.setattr(accel, "probe_kvm", fake_probe)
    assets = GuestAssets(tmp_path / "k", tmp_path / "i")
    notices: list[str] = []
    for _ in range(2):
        got = asyncio.run(
            accel.choose_accel("auto", tmp_path, assets=assets, notice=notices.append)
        )
        assert got == "tcg"
    assert len(probes) == 1 and len(notices) == 2 and "TCG" in notices[0]
    assert json.loads((tmp_path / "accel.json").read_text())["boot_id"] == "boot-1"
    monkeypatch.setattr(accel, "host_boot_id", lambda: "boot-2")  # host rebooted: probe again
    asyncio.run(accel.choose_accel("auto", tmp_path, assets=assets, notice=notices.append))
    assert len(probes) == 2
