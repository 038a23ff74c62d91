"""A template's NIC placeholders: with a tap host, taps of its own opened with vnet headers, so
its guest negotiates offloads and its clones keep them; without one, hub ports and no vnet
headers anywhere (pool/template.py)."""

from __future__ import annotations

from pathlib import Path

from steelcup.net.links import Host
from steelcup.pool.source import VmRequest
from steelcup.pool.template import Template, TemplateSource, tap_tag, template_tap
from steelcup.vm.assets import GuestAssets
from steelcup.vm.qemu_args import NicSpec, Share, build_argv


def _source(tmp_path: Path, tap_host: Host | None) -> TemplateSource:
    return TemplateSource(
        assets=GuestAssets(kernel=tmp_path / "k", initrd=tmp_path / "i"), accel="tcg",
        tcg_tb_mib=8, run_dir=tmp_path, template_dir=tmp_path / "t", tap_host=tap_host)


def _request(tmp_path: Path, nics: int) -> VmRequest:
    return VmRequest(256, 1, shares=(Share("rootfs", tmp_path / "root"),),
                     nics=tuple(NicSpec(f"sctc{i}", f"02:42:0a:00:00:0{i}") for i in range(nics)))


def test_with_a_tap_host_the_template_boots_on_taps_with_vnet_headers(tmp_path: Path) -> None:
    source = _source(tmp_path, Host("ns1"))
    request = _request(tmp_path, 1)
    key = source.key_for(request)
    assert key.offloads
    t = Template(key, tmp_path / "t" / "abc")
    spec = source._base_spec(key, tmp_path / "v", t)
    assert spec.nic_vnet_hdr
    assert [n.tap for n in spec.nics] == [template_tap(source.tap_tag, t.directory, 0)]
    argv = " ".join(build_argv(spec))
    assert f"tap,id=net0,ifname={template_tap(source.tap_tag, t.directory, 0)}" in argv
    assert "vnet_hdr=off" not in argv and "hubport" not in argv
    clone = source._base_spec(key, tmp_path / "c", t, request)
    assert clone.nic_vnet_hdr and [n.tap for n in clone.nics] == ["sctc0"]


def test_without_a_tap_host_placeholders_are_hub_ports_and_clones_have_no_vnet_headers(
    tmp_path: Path,
) -> None:
    source = _source(tmp_path, None)
    request = _request(tmp_path, 1)
    key = source.key_for(request)
    assert not key.offloads
    t = Template(key, tmp_path / "t" / "abc")
    argv = " ".join(build_argv(source._base_spec(key, tmp_path / "v", t)))
    assert "hubport,id=net0" in argv
    clone_argv = " ".join(build_argv(source._base_spec(key, tmp_path / "c", t, request)))
    assert "ifname=sctc0" in clone_argv and "vnet_hdr=off" in clone_argv


def test_a_nicless_template_has_no_offload_key_and_keys_differ_by_offloads(tmp_path: Path) -> None:
    with_host = _source(tmp_path, Host("ns1"))
    assert not with_host.key_for(_request(tmp_path, 0)).offloads
    assert (with_host.key_for(_request(tmp_path, 1)).digest()
            != _source(tmp_path, None).key_for(_request(tmp_path, 1)).digest())


def test_template_tap_names_fit_an_ifname_and_differ_per_build(tmp_path: Path) -> None:
    tag = tap_tag(tmp_path / "run")
    a, b = template_tap(tag, tmp_path / "x", 0), template_tap(tag, tmp_path / "y", 0)
    assert a != b and a.startswith("scp" + tag) and len(a) <= 15
    assert template_tap(tag, tmp_path / "x", 1) != a
    assert tap_tag(tmp_path / "other-run") != tag  # another daemon's
