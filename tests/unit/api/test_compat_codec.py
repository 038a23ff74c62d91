"""Docker-compat decoding/encoding: restart policies, update, filters, events, stats."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from steelcup.api import docker_codec as codec
from steelcup.cli.commands.observe import stats_row
from steelcup.errors import InvalidArgument, NotFound, Unsupported
from steelcup.runtime.model import ContainerConfig, ContainerRecord, Status
from steelcup.runtime.vmstats import HostCpu, parse_sample
from steelcup.vm.hostio import HostIo


def record(cid: str, name: str, created: str, status: Status = Status.RUNNING,
           labels: tuple[tuple[str, str], ...] = (), exit_code: int = 0) -> ContainerRecord:
    r = ContainerRecord(id=cid, name=name, created=created,
                        config=ContainerConfig(image="busybox", image_id="sha256:abc",
                                               labels=labels),
                        path="sh", args=())
    finished = "2024-01-01T00:00:09Z" if status is Status.EXITED else "0001-01-01T00:00:00Z"
    return r.with_state(status=status, exit_code=exit_code, finished_at=finished,
                        started_at="2024-01-01T00:00:01Z")


def test_restart_policy_decoding() -> None:
    cfg = codec.decode_create({"Image": "x", "HostConfig": {
        "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 3}, "CpuShares": 512}})
    assert (cfg.restart_policy, cfg.restart_max_retries, cfg.cpu_shares) == ("on-failure", 3, 512)
    assert codec.decode_create({"Image": "x", "HostConfig": {"RestartPolicy": {"Name": ""}}}
                               ).restart_policy == "no"
    for bad in ({"Name": "sometimes"}, {"Name": "always", "MaximumRetryCount": 2},
                {"Name": "on-failure", "MaximumRetryCount": -1}, {"Name": 5}):
        with pytest.raises(InvalidArgument):
            codec.decode_create({"Image": "x", "HostConfig": {"RestartPolicy": bad}})
    with pytest.raises(InvalidArgument, match="AutoRemove"):
        codec.decode_create({"Image": "x", "HostConfig": {
            "AutoRemove": True, "RestartPolicy": {"Name": "always"}}})


def test_update_decoding() -> None:
    assert codec.decode_update({"RestartPolicy": {"Name": "always"}, "Memory": 128 << 20,
                                "NanoCpus": 2_000_000_000, "BlkioWeight": 0}) == {
        "restart_policy": ("always", 0), "mem_mib": 128, "cpus": 2.0}
    with pytest.raises(Unsupported, match="BlkioWeight"):
        codec.decode_update({"BlkioWeight": 300})


def test_list_filters_before_since_status_name() -> None:
    a = record("a" * 64, "first", "2024-01-01T00:00:00Z", Status.EXITED, exit_code=3)
    b = record("b" * 64, "second", "2024-01-01T00:00:01Z", labels=(("k", "v"),))
    c = record("c" * 64, "third", "2024-01-01T00:00:02Z")
    records = [a, b, c]

    def names(filters: dict[str, list[str]], all_: bool = True) -> list[str]:
        return [r.name for r in codec.select_containers(records, filters, all_=all_)]

    assert names({}, all_=False) == ["third", "second"]
    assert names({"before": ["third"]}) == ["second", "first"]
    assert names({"since": ["first"]}) == ["third", "second"]
    assert names({"exited": ["3"]}, all_=False) == ["first"]
    assert names({"name": ["^/sec"]}) == ["second"]
    assert names({"label": ["k=v"]}) == ["second"]
    assert names({"status": ["exited", "running"]}) == ["third", "second", "first"]
    assert names({"health": ["none"], "is-task": ["false"]}) == ["third", "second", "first"]
    with pytest.raises(NotFound):
        names({"before": ["nope"]})
    for bad in ('{"status": ["sleepy"]}', '{"colour": ["red"]}', '{"exited": ["x"]}', "[1]"):
        with pytest.raises(InvalidArgument):
            codec.decode_filters(bad)


def test_event_filters() -> None:
    event = {"Type": "container", "Action": "exec_start: sh -c x", "scope": "local",
             "Actor": {"ID": "abcdef", "Attributes": {"name": "web", "image": "busybox",
                                                      "tier": "front"}}}
    assert codec.event_matches(event, {"event": ["exec_start"]})
    assert codec.event_matches(event, {"container": ["web"], "type": ["container"]})
    assert codec.event_matches(event, {"container": ["abc"], "label": ["tier=front"]})
    assert codec.event_matches(event, {"image": ["busybox"]})
    assert not codec.event_matches(event, {"type": ["image"]})
    assert not codec.event_matches(event, {"container": ["other"]})
    assert not codec.event_matches(event, {"label": ["tier=back"]})


def test_stats_document_feeds_the_cli_formula() -> None:
    r = record("d" * 64, "s", "2024-01-01T00:00:00Z")
    pre = parse_sample("cpu  100 0 100 800 0 0 0 0\ncpu0 100 0 100 800 0 0 0 0\n"
                       "MemTotal: 1000 kB\nMemAvailable: 600 kB\n", 1_000_000_000)
    cur = parse_sample("cpu  150 0 100 850 0 0 0 0\ncpu0 150 0 100 850 0 0 0 0\n"
                       "MemTotal: 1000 kB\nMemAvailable: 500 kB\n", 2_000_000_000)
    doc = json.loads(json.dumps(codec.encode_stats(r, cur, pre)))
    cpu, precpu = doc["cpu_stats"], doc["precpu_stats"]
    delta = cpu["cpu_usage"]["total_usage"] - precpu["cpu_usage"]["total_usage"]
    system = cpu["system_cpu_usage"] - precpu["system_cpu_usage"]
    assert delta / system * cpu["online_cpus"] * 100 == pytest.approx(50.0)
    assert doc["memory_stats"]["usage"] == 500 * 1024
    assert doc["memory_stats"]["limit"] == 1000 * 1024
    assert doc["name"] == "/s" and doc["read"].startswith("1970-01-01T00:00:02")
    stopped = codec.encode_stats(r, None, None)
    assert stopped["memory_stats"] == {} and stopped["read"].startswith("0001")
    assert doc["blkio_stats"]["io_service_bytes_recursive"] is None  # nothing read from QEMU


def test_stats_block_io_is_qemus_storage_io_in_the_cli_shape() -> None:
    """The docker CLI's BlockIO sums the `read` and `write` entries (any case)."""
    r = record("d" * 64, "s", "2024-01-01T00:00:00Z")
    cur = replace(parse_sample("MemTotal: 1000 kB\nMemAvailable: 500 kB\n", 1),
                  host_io=HostIo(read_bytes=4096, write_bytes=8 << 20))
    entries = codec.encode_stats(r, cur, None)["blkio_stats"]["io_service_bytes_recursive"]
    assert {e["op"]: e["value"] for e in entries} == {"read": 4096, "write": 8 << 20}
    assert stats_row(json.loads(json.dumps(codec.encode_stats(r, cur, None))))[6] \
        == "4.1kB / 8.39MB"


def test_stats_cpu_is_the_hosts_view_when_known() -> None:
    """QEMU's CPU time against the host's: the docker CLI's formula then gives the share of
    one host core the VM costs (here 0.03 s of 1 s wall on a 2-CPU host: 3%), whatever the
    guest thinks of its vCPUs."""
    r = record("d" * 64, "s", "2024-01-01T00:00:00Z")
    guest = parse_sample("cpu  150 0 100 850 0 0 0 0\ncpu0 150 0 100 850 0 0 0 0\n", 0)
    pre = replace(guest, host_cpu=HostCpu(vm_ns=10_000_000_000, vm_user_ns=0, vm_system_ns=0,
                                          host_total_ns=500_000_000_000, host_cpus=2))
    cur = replace(guest, host_cpu=HostCpu(vm_ns=10_030_000_000, vm_user_ns=20_000_000,
                                          vm_system_ns=10_000_000,
                                          host_total_ns=502_000_000_000, host_cpus=2))
    doc = json.loads(json.dumps(codec.encode_stats(r, cur, pre)))
    cpu, precpu = doc["cpu_stats"], doc["precpu_stats"]
    delta = cpu["cpu_usage"]["total_usage"] - precpu["cpu_usage"]["total_usage"]
    system = cpu["system_cpu_usage"] - precpu["system_cpu_usage"]
    assert delta / system * cpu["online_cpus"] * 100 == pytest.approx(3.0)
    assert cpu["cpu_usage"]["usage_in_usermode"] == 20_000_000
