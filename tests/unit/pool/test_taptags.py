"""Tap tags: each run dir claims one no other existing run dir holds (pool/taptags.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from steelcup.pool import taptags
from steelcup.pool.template import tap_tag


def test_a_run_dir_gets_its_hashs_tag_and_keeps_it(tmp_path: Path) -> None:
    run = tmp_path / "vms-a"
    tag = taptags.claim(run)
    assert tag == tap_tag(run)  # what it had before the registry
    assert os.readlink(tmp_path / taptags.REGISTRY / tag) == str(run)
    assert taptags.claim(run) == tag  # a restart keeps it


def test_a_run_dir_whose_hash_is_held_takes_the_next_free_tag(tmp_path: Path) -> None:
    first, second = tmp_path / "vms-a", tmp_path / "vms-b"
    first.mkdir()
    registry = tmp_path / taptags.REGISTRY
    registry.mkdir()
    wanted = tap_tag(second)
    (registry / wanted).symlink_to(first)  # another daemon's run dir holds second's tag
    tag = taptags.claim(second)
    assert tag != wanted and tag == taptags.candidates(second)[1]
    assert taptags.claim(first) == wanted  # the holder keeps its own
    assert taptags.claim(second) == tag  # and second, across restarts, its fallback
    # second's fallback stays even once its hash's tag is free again: its leftover taps
    # carry the fallback
    os.rmdir(first)
    assert taptags.claim(second) == tag


def test_the_tag_of_a_run_dir_that_is_gone_is_free(tmp_path: Path) -> None:
    gone, new = tmp_path / "vms-gone", tmp_path / "vms-new"
    registry = tmp_path / taptags.REGISTRY
    registry.mkdir()
    (registry / tap_tag(new)).symlink_to(gone)  # its daemon stopped and its run dir went
    assert taptags.claim(new) == tap_tag(new)
    assert sorted(p.name for p in registry.iterdir() if not p.name.startswith(".")) == [
        tap_tag(new)]


def test_choose_is_pure_and_says_when_every_tag_is_held() -> None:
    run = Path("/run/steelcup/vms-x")
    everyone = {tag: f"/run/steelcup/other-{tag}" for tag in taptags.candidates(run)}
    assert taptags.choose(run, everyone, set(everyone.values())) is None
    assert taptags.choose(run, everyone, set()) == tap_tag(run)  # none of them exists
    assert len(set(taptags.candidates(run))) == taptags.TAGS


def test_every_tag_held_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    monkeypatch.setattr(taptags, "choose", lambda *_: None)
    with pytest.raises(RuntimeError, match="tap tags"):
        taptags.claim(tmp_path / "vms-a")


def test_a_factory_with_taps_claims_its_tag_and_one_without_does_not(tmp_path: Path) -> None:
    from steelcup.net.links import Host
    from steelcup.pool.factory import PoolOptions, build_factory
    from steelcup.vm.assets import GuestAssets

    assets = GuestAssets(kernel=tmp_path / "k", initrd=tmp_path / "i")
    registry = tmp_path / taptags.REGISTRY
    registry.mkdir()
    taken = tmp_path / "vms-other"
    taken.mkdir()
    run = tmp_path / "vms-a"
    (registry / tap_tag(run)).symlink_to(taken)  # the hash's tag is another daemon's
    with_taps = build_factory(assets=assets, accel="tcg", tcg_tb_mib=8, run_dir=run,
                              options=PoolOptions(), tap_host=Host("ns1"))
    assert with_taps.template is not None
    assert with_taps.template.tap_tag == taptags.candidates(run)[1]
    bare = build_factory(assets=assets, accel="tcg", tcg_tb_mib=8, run_dir=tmp_path / "vms-b",
                         options=PoolOptions())
    assert bare.template is not None and bare.template.tap_tag == tap_tag(tmp_path / "vms-b")
    assert os.readlink(registry / with_taps.template.tap_tag) == str(run)
    owners = {os.readlink(entry) for entry in registry.iterdir() if entry.is_symlink()}
    assert str(tmp_path / "vms-b") not in owners  # no taps, no claim
