"""No HostConfig setting is accepted and ignored: docs/api-settings.md, the codec's
HOST_SETTINGS and the Engine API 1.43 schema list the same fields, and each field behaves through
`decode_create` as its status says (applied: reaches the config; shown: inspect echoes it;
always/refused: anything but the accepted values is a 400 naming the field)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from steelcup.api import docker_codec as codec
from steelcup.errors import InvalidArgument
from steelcup.runtime.model import ContainerRecord, ContainerState, Status

DOC = Path(__file__).resolve().parents[3] / "docs" / "api-settings.md"

# HostConfig and Resources properties of docs/api/v1.43.yaml (moby), in the schema's order.
SCHEMA_1_43 = (
    "Binds", "ContainerIDFile", "LogConfig", "NetworkMode", "PortBindings", "RestartPolicy",
    "AutoRemove", "VolumeDriver", "VolumesFrom", "Mounts", "ConsoleSize", "Annotations",
    "CapAdd", "CapDrop", "CgroupnsMode", "Dns", "DnsOptions", "DnsSearch", "ExtraHosts",
    "GroupAdd", "IpcMode", "Cgroup", "Links", "OomScoreAdj", "PidMode", "Privileged",
    "PublishAllPorts", "ReadonlyRootfs", "SecurityOpt", "StorageOpt", "Tmpfs", "UTSMode",
    "UsernsMode", "ShmSize", "Sysctls", "Runtime", "Isolation", "MaskedPaths", "ReadonlyPaths",
    "CpuShares", "Memory", "CgroupParent", "BlkioWeight", "BlkioWeightDevice",
    "BlkioDeviceReadBps", "BlkioDeviceWriteBps", "BlkioDeviceReadIOps", "BlkioDeviceWriteIOps",
    "CpuPeriod", "CpuQuota", "CpuRealtimePeriod", "CpuRealtimeRuntime", "CpusetCpus",
    "CpusetMems", "Devices", "DeviceCgroupRules", "DeviceRequests", "KernelMemoryTCP",
    "MemoryReservation", "MemorySwap", "MemorySwappiness", "NanoCpus", "OomKillDisable", "Init",
    "PidsLimit", "Ulimits", "CpuCount", "CpuPercent", "IOMaximumIOps", "IOMaximumBandwidth",
)

_RATE = [{"Path": "/dev/sda", "Rate": 1024}]
# A value that is not empty for every field; for `always` fields one the VM cannot honour
# (None: there is none).
SAMPLES: dict[str, Any] = {
    "Binds": ["/srv:/srv"], "ContainerIDFile": "/tmp/cid",
    "LogConfig": {"Type": "json-file", "Config": {"max-size": "1m"}}, "NetworkMode": "none",
    "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]},
    "RestartPolicy": {"Name": "always"}, "AutoRemove": True, "VolumeDriver": "flocker",
    "VolumesFrom": ["other:ro"], "Mounts": [{"Type": "tmpfs", "Target": "/scratch"}],
    "ConsoleSize": [24, 80], "Annotations": {"a": "b"}, "CapAdd": ["NET_ADMIN"],
    "CapDrop": ["CHOWN"], "CgroupnsMode": "host", "Dns": ["192.0.2.53"],
    "DnsOptions": ["ndots:2"], "DnsSearch": ["example.org"], "ExtraHosts": ["db:192.0.2.9"],
    "GroupAdd": ["audio"], "IpcMode": "host", "Cgroup": "host", "Links": ["db:database"],
    "OomScoreAdj": 500, "PidMode": "host", "Privileged": True, "PublishAllPorts": True,
    "ReadonlyRootfs": True, "SecurityOpt": ["no-new-privileges"],
    "StorageOpt": {"size": "2G"}, "Tmpfs": {"/run": "size=1m"}, "UTSMode": "host",
    "UsernsMode": "host", "ShmSize": 1 << 26, "Sysctls": {"net.core.somaxconn": "1024"},
    "Runtime": "runc", "Isolation": "hyperv", "MaskedPaths": ["/proc/kcore"],
    "ReadonlyPaths": ["/proc/sys"], "CpuShares": 512, "Memory": 256 << 20,
    "CgroupParent": "/mine", "BlkioWeight": 300,
    "BlkioWeightDevice": [{"Path": "/dev/sda", "Weight": 10}], "BlkioDeviceReadBps": _RATE,
    "BlkioDeviceWriteBps": _RATE, "BlkioDeviceReadIOps": _RATE, "BlkioDeviceWriteIOps": _RATE,
    "CpuPeriod": 100000, "CpuQuota": 50000, "CpuRealtimePeriod": 1000,
    "CpuRealtimeRuntime": 100, "CpusetCpus": "0-1", "CpusetMems": "0",
    "Devices": [{"PathOnHost": "/dev/fuse", "PathInContainer": "/dev/fuse",
                 "CgroupPermissions": "rwm"}],
    "DeviceCgroupRules": ["c 10:229 rwm"], "DeviceRequests": [{"Count": -1}],
    "KernelMemoryTCP": 1 << 20, "MemoryReservation": 64 << 20, "MemorySwap": -1,
    "MemorySwappiness": 60, "NanoCpus": 2_000_000_000, "OomKillDisable": True, "Init": None,
    "PidsLimit": 100, "Ulimits": [{"Name": "nofile", "Soft": 1024, "Hard": 2048}],
    "CpuCount": 2, "CpuPercent": 50, "IOMaximumIOps": 100, "IOMaximumBandwidth": 1 << 20,
}

# What the docker 28 CLI sends for a plain `docker create busybox true` (captured): every field
# present, empty; it must decode.
CLI_DEFAULT_HOST = {
    "Binds": None, "ContainerIDFile": "", "LogConfig": {"Type": "", "Config": {}},
    "NetworkMode": "default", "PortBindings": {}, "RestartPolicy": {"Name": "no",
    "MaximumRetryCount": 0}, "AutoRemove": False, "VolumeDriver": "", "VolumesFrom": None,
    "ConsoleSize": [0, 0], "CapAdd": None, "CapDrop": None, "CgroupnsMode": "", "Dns": [],
    "DnsOptions": [], "DnsSearch": [], "ExtraHosts": None, "GroupAdd": None, "IpcMode": "",
    "Cgroup": "", "Links": None, "OomScoreAdj": 0, "PidMode": "", "Privileged": False,
    "PublishAllPorts": False, "ReadonlyRootfs": False, "SecurityOpt": None, "UTSMode": "",
    "UsernsMode": "", "ShmSize": 0, "Isolation": "", "CpuShares": 0, "Memory": 0,
    "NanoCpus": 0, "CgroupParent": "", "BlkioWeight": 0, "BlkioWeightDevice": [],
    "BlkioDeviceReadBps": [], "BlkioDeviceWriteBps": [], "BlkioDeviceReadIOps": [],
    "BlkioDeviceWriteIOps": [], "CpuPeriod": 0, "CpuQuota": 0, "CpuRealtimePeriod": 0,
    "CpuRealtimeRuntime": 0, "CpusetCpus": "", "CpusetMems": "", "Devices": [],
    "DeviceCgroupRules": None, "DeviceRequests": None, "MemoryReservation": 0,
    "MemorySwap": 0, "MemorySwappiness": -1, "OomKillDisable": False, "PidsLimit": 0,
    "Ulimits": [], "CpuCount": 0, "CpuPercent": 0, "IOMaximumIOps": 0,
    "IOMaximumBandwidth": 0, "MaskedPaths": None, "ReadonlyPaths": None,
}
CLI_DEFAULT_ENDPOINT = {
    "IPAMConfig": None, "Links": None, "Aliases": None, "MacAddress": "", "DriverOpts": None,
    "GwPriority": 0, "NetworkID": "", "EndpointID": "", "Gateway": "", "IPAddress": "",
    "IPPrefixLen": 0, "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
    "DNSNames": None,
}


def _doc_table() -> dict[str, str]:
    text = DOC.read_text()
    section = text.split("## HostConfig", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| (\w+) \|", section, flags=re.M)
    return dict(rows)


def _decode(host: dict[str, Any], **body: Any) -> Any:
    return codec.decode_create({"Image": "busybox", "HostConfig": host, **body})


def test_the_doc_the_codec_and_the_schema_list_the_same_fields() -> None:
    table = _doc_table()
    assert list(table) == list(codec.HOST_SETTINGS)
    assert set(table) == set(SCHEMA_1_43), set(table) ^ set(SCHEMA_1_43)
    assert table == {k: s.status for k, s in codec.HOST_SETTINGS.items()}
    assert set(SAMPLES) == set(SCHEMA_1_43)
    statuses = {"applied", "always", "shown", "client", "refused"}
    assert set(table.values()) <= statuses


@pytest.mark.parametrize("field", SCHEMA_1_43)
def test_each_field_does_what_its_status_says(field: str) -> None:
    setting = codec.HOST_SETTINGS[field]
    sample = SAMPLES[field]
    baseline = _decode({})
    if setting.status == "applied":
        assert _decode({field: sample}) != baseline, f"{field} does not reach the config"
    elif setting.status == "shown":
        config = _decode({field: sample})
        record = ContainerRecord(id="a" * 64, name="x", created="2026-01-01T00:00:00Z",
                                 config=config, path="true", args=(),
                                 state=ContainerState(status=Status.CREATED))
        assert codec.encode_inspect(record, "/x.log")["HostConfig"][field] == sample
    elif setting.status == "client":
        _decode({field: sample})
    else:
        for value in setting.accepted:
            _decode({field: value})
        if sample is not None:
            with pytest.raises(InvalidArgument, match=rf"HostConfig\.{field}\b"):
                _decode({field: sample})


def test_the_docker_clis_default_body_decodes() -> None:
    config = _decode(CLI_DEFAULT_HOST,
                     NetworkingConfig={"EndpointsConfig": {"default": CLI_DEFAULT_ENDPOINT}})
    assert config == _decode({"NetworkMode": "default"})


def test_an_unknown_host_setting_is_refused_unless_empty() -> None:
    _decode({"FutureThing": None, "OtherThing": ""})
    with pytest.raises(InvalidArgument, match=r"HostConfig\.FutureThing"):
        _decode({"FutureThing": "on"})


def test_memory_swap_equal_to_memory_means_no_swap_and_is_accepted() -> None:
    _decode({"Memory": 256 << 20, "MemorySwap": 256 << 20})
    with pytest.raises(InvalidArgument, match="MemorySwap"):
        _decode({"Memory": 256 << 20, "MemorySwap": 512 << 20})


@pytest.mark.parametrize(("endpoint", "named"), [
    ({"MacAddress": "02:42:ac:11:00:02"}, "EndpointsConfig.n1.MacAddress"),
    ({"DriverOpts": {"com.example": "x"}}, "EndpointsConfig.n1.DriverOpts"),
    ({"Links": "db:database"}, "EndpointsConfig.n1.Links must be an array"),
    ({"IPAMConfig": {"LinkLocalIPs": ["169.254.0.9"]}}, "IPAMConfig.LinkLocalIPs"),
    ({"IPAMConfig": {"IPv6Address": "fd00::9"}}, "IPAMConfig.IPv6Address"),
])
def test_endpoint_settings_not_honoured_are_refused(endpoint: dict[str, Any], named: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(named)):
        _decode({"NetworkMode": "n1"}, NetworkingConfig={"EndpointsConfig": {"n1": endpoint}})


def test_the_top_level_mac_address_of_older_clients_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="MacAddress"):
        _decode({}, MacAddress="02:42:ac:11:00:02")


def test_log_options_that_would_be_ignored_are_refused() -> None:
    for opt in ("tag", "labels", "env", "compress"):
        log = {"Type": "json-file", "Config": {opt: "x"}}
        with pytest.raises(InvalidArgument, match=f"log opt '{opt}'"):
            _decode({"LogConfig": log})


def test_the_doc_names_every_refused_endpoint_setting() -> None:
    text = DOC.read_text()
    for key in [*codec.ENDPOINT_REFUSED, *codec.IPAM_REFUSED]:
        assert f"`{key}`" in text or f"`IPAMConfig.{key}`" in text, key


def test_extra_hosts_and_dns_are_checked_and_kept() -> None:
    config = _decode({"ExtraHosts": ["db:192.0.2.9", "gw:host-gateway", "v6=[2001:db8::1]"],
                      "Dns": ["192.0.2.53"], "DnsSearch": ["example.org"],
                      "DnsOptions": ["ndots:2"]})
    assert config.extra_hosts == (("db", "192.0.2.9"), ("gw", "host-gateway"),
                                  ("v6", "2001:db8::1"))
    assert (config.dns, config.dns_search, config.dns_options) == (
        ("192.0.2.53",), ("example.org",), ("ndots:2",))
    for bad in ({"ExtraHosts": ["nocolon"]}, {"ExtraHosts": ["db:999.1.1.1"]},
                {"Dns": ["dns.example"]}, {"DnsSearch": ["two words"]}):
        with pytest.raises(InvalidArgument):
            _decode(bad)
