"""Which template base size serves a request: a tenant's clones start at its default size, so
its usual container is handed out without a balloon resize (pool/template.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from steelcup.pool.source import Incompatible, VmRequest
from steelcup.pool.template import TemplateSource
from steelcup.vm.assets import GuestAssets
from steelcup.vm.qemu_args import Share


def _source(tmp_path: Path) -> TemplateSource:
    defaults = {"m1": 1024, "huge": 100_000, "tiny": 100, "odd": 700}
    return TemplateSource(
        assets=GuestAssets(kernel=tmp_path / "k", initrd=tmp_path / "i", init=tmp_path / "n"),
        accel="tcg", tcg_tb_mib=8, run_dir=tmp_path, template_dir=tmp_path / "t",
        base_mem_mib=256, max_mem_mib=2048, max_cpus=4, tenant_base_mib=defaults.__getitem__)


def test_a_tenants_base_is_its_default_size_within_the_template(tmp_path: Path) -> None:
    source = _source(tmp_path)
    assert source.base_of("") == 256  # the operator's: the daemon's base
    assert source.base_of("m1") == 1024
    assert source.base_of("huge") == 2048  # never past the template's RAM
    assert source.base_of("tiny") == 64  # nor below the smallest guest
    assert source.base_of("odd") == 640  # a multiple of 64 MiB


def test_a_smaller_request_gets_a_smaller_template_never_a_shrink(tmp_path: Path) -> None:
    source = _source(tmp_path)
    assert source.base_for(4096, "m1") == 1024
    assert source.base_for(1024, "m1") == 1024
    assert source.base_for(300, "m1") == 256
    assert source.base_for(300) == 256
    assert source.base_for(128) == 128


def test_a_one_vcpu_request_gets_a_template_without_offline_vcpus(tmp_path: Path) -> None:
    source = _source(tmp_path)
    rootfs = (Share("rootfs", tmp_path),)
    one = source.key_for(VmRequest(256, 1, shares=rootfs))
    assert one.max_cpus == 1
    for cpus in (2, 4):  # more vCPUs: the template with all of them present
        assert source.key_for(VmRequest(256, cpus, shares=rootfs)).max_cpus == 4
    with pytest.raises(Incompatible, match="vCPUs over"):
        source.check(VmRequest(256, 5, shares=rootfs))
