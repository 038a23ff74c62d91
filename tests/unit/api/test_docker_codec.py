"""Docker API JSON decoding (validation) and encoding."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from steelcup.api import docker_codec as codec
from steelcup.errors import InvalidArgument
from steelcup.humanize import human_duration
from steelcup.runtime.logs import parse_time_ns
from steelcup.runtime.model import (
    ContainerConfig,
    ContainerRecord,
    ContainerState,
    EndpointView,
    NetView,
    PortView,
    Status,
)


def test_decode_create_full() -> None:
    cfg = codec.decode_create({
        "Image": "busybox", "Cmd": ["echo", "hi"], "Entrypoint": "sh", "Env": ["A=1"],
        "WorkingDir": "/tmp", "User": "nobody", "Tty": True, "OpenStdin": True,
        "StdinOnce": True, "Labels": {"a": "b"}, "StopSignal": "SIGINT", "StopTimeout": 3,
        "HostConfig": {"AutoRemove": True, "Memory": 512 << 20, "NanoCpus": 2_000_000_000},
    })
    assert cfg.cmd == ("echo", "hi") and cfg.entrypoint == ("sh",)
    assert cfg.tty and cfg.open_stdin and cfg.stdin_once and cfg.auto_remove
    assert cfg.mem_mib == 512 and cfg.cpus == 2.0 and cfg.labels == (("a", "b"),)
    assert cfg.stop_timeout_s == 3


@pytest.mark.parametrize("body", [
    [], "x", {}, {"Image": 5}, {"Image": "a", "Cmd": [1]}, {"Image": "a", "Tty": "yes"},
    {"Image": "a", "HostConfig": []}, {"Image": "a", "HostConfig": {"Memory": "1g"}},
    {"Image": "a", "Labels": {"a": 1}}, {"Image": "a", "Env": "A=1"},
    {"Image": "a", "HostConfig": {"NanoCpus": -1}}, {"Image": "a", "StopTimeout": True},
])
def test_decode_create_rejects(body: Any) -> None:
    with pytest.raises(InvalidArgument):
        codec.decode_create(body)


def test_storage_opt_size() -> None:
    def decode(host: dict[str, Any]) -> ContainerConfig:
        return codec.decode_create({"Image": "a", "HostConfig": host})

    assert decode({}).storage_bytes == 0  # the daemon's default, filled in at create
    assert decode({"StorageOpt": None}).storage_bytes == 0
    assert decode({"StorageOpt": {"size": "20G"}}).storage_bytes == 20 << 30
    assert decode({"StorageOpt": {"Size": "64m"}}).storage_bytes == 64 << 20
    for bad in ({"size": "1k"}, {"size": "lots"}, {"inodes": "5"}, {"size": 5}):
        with pytest.raises(InvalidArgument):
            decode({"StorageOpt": bad})
    record = _record()
    sized = record.__class__(**{**record.__dict__, "config": decode(
        {"StorageOpt": {"size": "1g"}})})
    assert codec.encode_inspect(sized, "/x.log")["HostConfig"]["StorageOpt"] == {
        "size": str(1 << 30)}


def test_log_config_json_file_rotation() -> None:
    def decode(log_config: Any) -> ContainerConfig:
        return codec.decode_create({"Image": "a", "HostConfig": {"LogConfig": log_config}})

    assert decode({"Type": "", "Config": {}}).log_max_bytes == 0  # the daemon's
    cfg = decode({"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}})
    assert (cfg.log_max_bytes, cfg.log_max_files) == (10 << 20, 3)
    for bad in ({"Type": "syslog"}, {"Config": {"max-size": "-1"}}, {"Config": {"max-file": "0"}},
                {"Config": {"max-file": "two"}}, {"Config": {"mode": "non-blocking"}},
                {"Config": {"tag": "x"}}, {"Config": {"labels": "a"}}):  # not ignored
        with pytest.raises(InvalidArgument):
            decode(bad)
    record = _record()
    rotated = record.__class__(**{**record.__dict__, "config": cfg})
    assert codec.encode_inspect(rotated, "/x.log")["HostConfig"]["LogConfig"] == {
        "Type": "json-file", "Config": {"max-size": str(10 << 20), "max-file": "3"}}


def _record(status: Status = Status.RUNNING, **state: Any) -> ContainerRecord:
    return ContainerRecord(
        id="a" * 64, name="web", created="2026-11-25T10:00:00.000000000Z",
        config=ContainerConfig(image="busybox", image_id="sha256:" + "b" * 64,
                               labels=(("tier", "front"),)),
        path="sh", args=("-c", "true"),
        state=ContainerState(status=status, started_at="2026-11-25T10:00:00.000000000Z",
                             **state),
    )


def test_inspect_and_summary_shapes() -> None:
    rec = _record(exit_code=0, pid=42)
    doc = codec.encode_inspect(rec, "/x.log")
    assert doc["State"]["Running"] is True and doc["State"]["Pid"] == 42
    assert doc["Name"] == "/web" and doc["Config"]["Labels"] == {"tier": "front"}
    json.dumps(doc)
    summary = codec.encode_summary(rec)
    assert summary["Names"] == ["/web"] and summary["Command"] == "sh -c true"


def test_summary_lists_ports_networks_and_mounts() -> None:
    """What `docker ps` prints under PORTS, and `--format {{.Networks}}`/`{{.Mounts}}`."""
    rec = _record()
    rec = replace(rec, config=replace(rec.config, exposed_ports=("80/tcp", "7000/tcp"),
                                      mount_plans=({"kind": "bind", "source": "/srv",
                                                    "target": "/data"},)))
    net = NetView(endpoints=(EndpointView("bridge", "n1", "e1", "10.0.0.1", "10.0.0.2", 24,
                                          "02:42:0a:00:00:02"),),
                  ports=(PortView(80, "tcp", "", 8080),))
    summary = codec.encode_summary(rec, net)
    assert summary["Ports"] == [
        {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
        {"PrivatePort": 7000, "Type": "tcp"}]
    assert summary["NetworkSettings"]["Networks"]["bridge"]["IPAddress"] == "10.0.0.2"
    assert [m["Source"] for m in summary["Mounts"]] == ["/srv"]
    stopped = codec.encode_summary(_record(Status.EXITED), NetView())
    assert stopped["Ports"] == [] and stopped["NetworkSettings"]["Networks"] == {}


def test_capabilities_decode_and_inspect_as_given() -> None:
    cfg = codec.decode_create({"Image": "a", "HostConfig": {
        "CapAdd": ["net_admin", "CAP_SYS_PTRACE"], "CapDrop": ["ALL"], "Privileged": True}})
    assert cfg.cap_add == ("net_admin", "CAP_SYS_PTRACE") and cfg.cap_drop == ("ALL",)
    assert cfg.privileged
    plain = codec.decode_create({"Image": "a", "HostConfig": {"CapAdd": None}})
    assert (plain.cap_add, plain.cap_drop, plain.privileged) == ((), (), False)
    for bad in ({"CapAdd": "NET_ADMIN"}, {"CapDrop": [1]}, {"Privileged": "yes"}):
        with pytest.raises(InvalidArgument):
            codec.decode_create({"Image": "a", "HostConfig": bad})
    rec = _record()
    host = codec.encode_inspect(rec, "/x.log")["HostConfig"]
    assert (host["CapAdd"], host["CapDrop"], host["Privileged"]) == (None, None, False)
    given = ContainerRecord(**{**rec.__dict__, "config": cfg})
    host = codec.encode_inspect(given, "/x.log")["HostConfig"]
    assert host["CapAdd"] == ["net_admin", "CAP_SYS_PTRACE"] and host["CapDrop"] == ["ALL"]
    assert host["Privileged"] is True


def test_exec_privileged() -> None:
    assert codec.decode_exec("c", {"Cmd": ["sh"], "Privileged": True}).privileged
    assert not codec.decode_exec("c", {"Cmd": ["sh"]}).privileged
    with pytest.raises(InvalidArgument):
        codec.decode_exec("c", {"Cmd": ["sh"], "Privileged": 1})


def test_status_text() -> None:
    start = parse_time_ns("2026-11-25T10:00:00Z") / 1e9
    rec = _record()
    assert codec.status_text(rec, start + 5) == "Up 5 seconds"
    done = _record(Status.EXITED, exit_code=3, finished_at="2026-11-25T10:00:00.000000000Z")
    assert codec.status_text(done, start + 120) == "Exited (3) 2 minutes ago"
    assert codec.status_text(_record(Status.CREATED)) == "Created"


def test_a_suspended_container_is_shown_running_and_suspended() -> None:
    start = parse_time_ns("2026-11-25T10:00:00Z") / 1e9
    rec = _record(Status.EXITED, exit_code=137, suspended=True,
                  finished_at="2026-11-25T10:00:05.000000000Z")
    assert codec.status_text(rec, start + 60) == "Up About a minute (suspended)"
    doc = codec.encode_inspect(rec, "/x.log")
    assert doc["State"]["Status"] == "running" and doc["State"]["Running"] is True
    assert doc["State"]["SteelcupSuspended"] is True
    assert codec.encode_summary(rec)["State"] == "running"
    assert codec.select_containers([rec], {}, all_=False) == [rec]  # `ps` lists it
    assert codec.select_containers([rec], {"status": ["running"]}, all_=False) == [rec]
    assert codec.select_containers([rec], {"status": ["exited"]}, all_=True) == []
    plain = codec.encode_inspect(_record(), "/x.log")
    assert plain["State"]["SteelcupSuspended"] is False


def test_filters() -> None:
    rec = _record()
    f = codec.decode_filters(json.dumps({"label": ["tier=front"], "status": ["running"]}))
    assert codec.matches(rec, f)
    assert not codec.matches(rec, {"label": ["tier=back"]})
    # Several labels must all match (compose relies on this to count a service's containers).
    assert not codec.matches(rec, {"label": ["tier=front", "svc=web"]})
    assert codec.matches(rec, {"label": ["tier=front", "tier"]})
    assert codec.matches(rec, {"name": ["we"]}) and codec.matches(rec, {"id": ["aaa"]})
    assert codec.matches(rec, {"ancestor": ["busybox"]})
    assert codec.decode_filters('{"status": {"running": true}}') == {"status": ["running"]}
    for bad in ("{", "[]", '{"bogus": ["x"]}', '{"name": 3}'):
        with pytest.raises(InvalidArgument):
            codec.decode_filters(bad)


def test_human_duration() -> None:
    assert human_duration(0.2) == "Less than a second"
    assert human_duration(1) == "1 second"
    assert human_duration(59) == "59 seconds"
    assert human_duration(90) == "About a minute"
    assert human_duration(3600 * 5) == "5 hours"


def test_decode_create_static_addresses_by_network() -> None:
    """IPAMConfig.IPv4Address was dropped: the primary network's is kept under NetworkMode."""
    cfg = codec.decode_create({
        "Image": "a", "HostConfig": {"NetworkMode": "front"},
        "NetworkingConfig": {"EndpointsConfig": {
            "front": {"Aliases": ["web"], "IPAMConfig": {"IPv4Address": "10.1.0.5"}},
            "back": {"IPAMConfig": {"IPv4Address": "10.2.0.5"}},
            "other": {"IPAMConfig": None},
        }},
    })
    assert cfg.network_aliases == ("web",)
    assert cfg.network_ipv4 == (("front", "10.1.0.5"), ("back", "10.2.0.5"))
    with pytest.raises(InvalidArgument):
        codec.decode_create({"Image": "a", "NetworkingConfig": {"EndpointsConfig": {
            "x": {"IPAMConfig": {"IPv4Address": 5}}}}})


def test_decode_exec_detach_keys_in_either_spelling() -> None:
    """docker-py sends `detachKeys`, the docker CLI `DetachKeys`; unset is ctrl-p ctrl-q."""
    assert codec.decode_exec("c", {"Cmd": ["sh"]}).detach_keys == b"\x10\x11"
    assert codec.decode_exec("c", {"Cmd": ["sh"], "DetachKeys": "ctrl-a,b"}).detach_keys == b"\x01b"
    assert codec.decode_exec("c", {"Cmd": ["sh"], "detachKeys": "ctrl-x,y"}).detach_keys == b"\x18y"
    with pytest.raises(InvalidArgument, match="Invalid detach keys"):
        codec.decode_exec("c", {"Cmd": ["sh"], "DetachKeys": "nope"})


def test_checkpointable_decodes_and_inspects_only_when_set() -> None:
    cfg = codec.decode_create({"Image": "a", "HostConfig": {"SteelcupCheckpointable": True}})
    assert cfg.checkpointable
    assert not codec.decode_create({"Image": "a"}).checkpointable
    with pytest.raises(InvalidArgument):
        codec.decode_create({"Image": "a", "HostConfig": {"SteelcupCheckpointable": "yes"}})
    rec = _record()
    assert "SteelcupCheckpointable" not in codec.encode_inspect(rec, "/x.log")["HostConfig"]
    given = ContainerRecord(**{**rec.__dict__, "config": cfg})
    assert codec.encode_inspect(given, "/x.log")["HostConfig"]["SteelcupCheckpointable"] is True


def test_auto_suspend_decodes_seconds_or_a_duration_and_inspects_as_seconds() -> None:
    def idle(value: object) -> int:
        return codec.decode_create({"Image": "a", "HostConfig": {
            "SteelcupCheckpointable": True, "SteelcupAutoSuspend": value}}).auto_suspend_s

    assert idle(30) == 30 and idle("5m") == 300 and idle(None) == 0
    with pytest.raises(InvalidArgument, match="SteelcupAutoSuspend"):
        idle("later")
    rec = _record()
    assert "SteelcupAutoSuspend" not in codec.encode_inspect(rec, "/x.log")["HostConfig"]
    cfg = codec.decode_create({"Image": "a", "HostConfig": {"SteelcupAutoSuspend": "1m"}})
    given = ContainerRecord(**{**rec.__dict__, "config": cfg})
    assert codec.encode_inspect(given, "/x.log")["HostConfig"]["SteelcupAutoSuspend"] == 60
