"""`steelcup service create` flags -> the ServiceSpec docker's CLI would send (pure)."""

from __future__ import annotations

import pytest

from steelcup.cli.servicespec import (
    ServiceOptions,
    parse_mount,
    parse_publish,
    scale_targets,
    service_spec,
)
from steelcup.errors import InvalidArgument


def test_flags_to_spec() -> None:
    opts = ServiceOptions(
        image="busybox", args=["sleep", "1000"], name="web", replicas=3, env=["A=1", "HOME"],
        labels=["tier=front"], restart_condition="on-failure", restart_delay="2s",
        restart_max_attempts=4, restart_window="1m", health_cmd="true",
        health_interval="1s", limit_memory="512m", limit_cpu="2",
        mounts=["type=volume,source=data,target=/d,readonly"], publish=["8080:80"],
        stop_grace_period="3s", update_parallelism=2, update_order="start-first",
        update_delay="5s", update_failure_action="rollback", update_monitor="2s",
        update_max_failure_ratio=0.5)
    spec = service_spec(opts, {"HOME": "/root"})
    container = spec["TaskTemplate"]["ContainerSpec"]
    assert container["Args"] == ["sleep", "1000"] and container["Env"] == ["A=1",
                                                                          "HOME=/root"]
    assert container["StopGracePeriod"] == 3_000_000_000
    assert container["Healthcheck"]["Test"] == ["CMD-SHELL", "true"]
    assert container["Mounts"] == [{"Type": "volume", "Source": "data", "Target": "/d",
                                    "ReadOnly": True}]
    assert spec["TaskTemplate"]["RestartPolicy"] == {
        "Condition": "on-failure", "Delay": 2_000_000_000, "MaxAttempts": 4,
        "Window": 60_000_000_000}
    assert spec["TaskTemplate"]["Resources"]["Limits"] == {"MemoryBytes": 512 << 20,
                                                           "NanoCPUs": 2_000_000_000}
    assert spec["Mode"] == {"Replicated": {"Replicas": 3}}
    assert spec["UpdateConfig"] == {"Parallelism": 2, "Order": "start-first",
                                    "Delay": 5_000_000_000, "FailureAction": "rollback",
                                    "Monitor": 2_000_000_000, "MaxFailureRatio": 0.5}
    assert spec["EndpointSpec"]["Ports"] == [{"Protocol": "tcp", "PublishMode": "ingress",
                                              "TargetPort": 80, "PublishedPort": 8080}]
    assert spec["Labels"] == {"tier": "front"}


def test_global_mode() -> None:
    assert service_spec(ServiceOptions(image="x", mode="global"), {})["Mode"] == {
        "Global": {}}
    with pytest.raises(InvalidArgument, match="replicated mode"):
        service_spec(ServiceOptions(image="x", mode="global", replicas=2), {})


@pytest.mark.parametrize("bad", [
    ServiceOptions(image="x", restart_condition="always"),
    ServiceOptions(image="x", restart_delay="soon"),
    ServiceOptions(image="x", restart_max_attempts=-1),
    ServiceOptions(image="x", mounts=["source=data"]),
    ServiceOptions(image="x", publish=["80000"]),
    ServiceOptions(image="x", update_order="whenever"),
    ServiceOptions(image="x", update_failure_action="shrug"),
    ServiceOptions(image="x", update_max_failure_ratio=2.0),
])
def test_bad_flags_are_refused(bad: ServiceOptions) -> None:
    with pytest.raises(InvalidArgument):
        service_spec(bad, {})


def test_composite_flags() -> None:
    assert parse_publish("published=8080,target=80,protocol=udp") == {
        "Protocol": "udp", "PublishMode": "ingress", "PublishedPort": 8080, "TargetPort": 80}
    assert parse_publish("80/udp") == {"Protocol": "udp", "PublishMode": "ingress",
                                       "TargetPort": 80}
    assert parse_mount("type=tmpfs,dst=/t") == {"Type": "tmpfs", "Target": "/t"}
    assert scale_targets(["web=3", "api=0"]) == [("web", 3), ("api", 0)]
    with pytest.raises(InvalidArgument, match="SERVICE=REPLICAS"):
        scale_targets(["web"])


def test_rollback_flags_and_file_references() -> None:
    spec = service_spec(ServiceOptions(
        image="x", rollback_parallelism=0, rollback_order="start-first", rollback_delay="1s",
        rollback_failure_action="continue", rollback_monitor="3s",
        rollback_max_failure_ratio=0.2,
        secrets=["db", "source=tls,target=key.pem,uid=100,gid=101,mode=0400"],
        configs=["app", "source=nginx,target=/etc/nginx/nginx.conf"]), {})
    assert spec["RollbackConfig"] == {"Parallelism": 0, "Order": "start-first",
                                      "Delay": 1_000_000_000, "FailureAction": "continue",
                                      "Monitor": 3_000_000_000, "MaxFailureRatio": 0.2}
    container = spec["TaskTemplate"]["ContainerSpec"]
    assert container["Secrets"] == [
        {"SecretID": "", "SecretName": "db",
         "File": {"Name": "db", "UID": "0", "GID": "0", "Mode": 0o444}},
        {"SecretID": "", "SecretName": "tls",
         "File": {"Name": "key.pem", "UID": "100", "GID": "101", "Mode": 0o400}}]
    assert [c["File"]["Name"] for c in container["Configs"]] == ["/app",
                                                                 "/etc/nginx/nginx.conf"]
    for bad, words in ((ServiceOptions(image="x", rollback_failure_action="rollback"),
                        "--rollback-failure-action"),
                       (ServiceOptions(image="x", secrets=["source=a,mode=rw"]), "octal"),
                       (ServiceOptions(image="x", configs=["target=/x"]), "source"),
                       (ServiceOptions(image="x", secrets=["source=a,driver=v"]), "driver")):
        with pytest.raises(InvalidArgument, match=words):
            service_spec(bad, {})


def test_checkpointable_and_auto_suspend_flags() -> None:
    from steelcup.cli.servicespec import suspend_fields

    spec = service_spec(ServiceOptions(image="busybox", checkpointable=True,
                                       auto_suspend="1m30s"), {})
    container = spec["TaskTemplate"]["ContainerSpec"]
    assert container["SteelcupCheckpointable"] is True
    assert container["SteelcupAutoSuspend"] == 90
    plain = service_spec(ServiceOptions(image="busybox"), {})["TaskTemplate"]["ContainerSpec"]
    assert "SteelcupCheckpointable" not in plain and "SteelcupAutoSuspend" not in plain
    # service update: only what was given changes; 0 turns auto-suspend off
    assert suspend_fields(None, "") == {}
    assert suspend_fields(False, "0") == {"SteelcupCheckpointable": False,
                                          "SteelcupAutoSuspend": 0}
    assert suspend_fields(None, "500ms") == {"SteelcupAutoSuspend": 1}
    with pytest.raises(InvalidArgument, match="--auto-suspend"):
        suspend_fields(None, "soon")
