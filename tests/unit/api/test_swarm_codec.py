"""Swarm-mode JSON: a ServiceSpec as the docker CLI sends it decodes into what the
orchestrator runs (through the container create path) and round-trips unchanged; settings
steelcup cannot honour are refused by name; tasks, nodes and the swarm encode as docker's."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from steelcup.api import swarm_codec as codec
from steelcup.errors import InvalidArgument, Unsupported
from steelcup.services.model import (
    Condition,
    FailureAction,
    FailurePolicy,
    Mode,
    SwarmState,
    TaskRecord,
    TaskState,
)

NODE = codec.encode_node(SwarmState(node_id="n" * 25, advertise_addr="127.0.0.1:2377"),
                         hostname="box", ncpu=2, mem_bytes=1 << 30, engine_version="0.1")

# What `docker service create --name web --replicas 3 -e A=1 --limit-memory 512m
# --restart-condition on-failure --restart-delay 2s --health-cmd true --mount
# type=volume,source=data,target=/d busybox sleep 1000` sends (docker 28), abridged.
CLI_SPEC: dict[str, Any] = {
    "Name": "web",
    "Labels": {"tier": "front"},
    "TaskTemplate": {
        "ContainerSpec": {
            "Image": "busybox:latest", "Args": ["sleep", "1000"], "Env": ["A=1"],
            "Init": False, "StopGracePeriod": 3_000_000_000, "DNSConfig": {},
            "Healthcheck": {"Test": ["CMD-SHELL", "true"]},
            "Mounts": [{"Type": "volume", "Source": "data", "Target": "/d"}],
            "Hosts": ["10.0.0.9 db cache"], "Isolation": "default"},
        "Resources": {"Limits": {"MemoryBytes": 512 << 20}, "Reservations": {}},
        "RestartPolicy": {"Condition": "on-failure", "Delay": 2_000_000_000,
                          "MaxAttempts": 3},
        "Placement": {"Constraints": ["node.role==manager"]},
        "ForceUpdate": 0, "Runtime": "container",
    },
    "Mode": {"Replicated": {"Replicas": 3}},
    "UpdateConfig": {"Parallelism": 2, "FailureAction": "pause", "Monitor": 5_000_000_000,
                     "MaxFailureRatio": 0, "Order": "stop-first"},
    "RollbackConfig": {"Parallelism": 1, "FailureAction": "pause", "Order": "stop-first"},
    "EndpointSpec": {"Mode": "vip", "Ports": [{"Protocol": "tcp", "TargetPort": 80,
                                               "PublishedPort": 8080,
                                               "PublishMode": "ingress"}]},
}


def test_a_cli_spec_decodes_into_the_plan_and_round_trips() -> None:
    decoded = codec.decode_service(copy.deepcopy(CLI_SPEC), NODE)
    assert decoded.spec_doc == CLI_SPEC  # kept as sent: UpdateConfig, RollbackConfig, ports
    assert decoded.task_doc == CLI_SPEC["TaskTemplate"]
    plan = decoded.plan
    assert (plan.mode, plan.replicas, plan.parallelism, plan.stop_grace_s) == (
        Mode.REPLICATED, 3, 2, 3)
    assert plan.restart.condition is Condition.ON_FAILURE
    assert (plan.restart.delay_s, plan.restart.max_attempts) == (2.0, 3)
    template = plan.template
    assert template.image == "busybox:latest" and template.cmd == ("sleep", "1000")
    assert template.env == ("A=1",) and template.mem_mib == 512
    assert template.stop_timeout_s == 3
    assert template.healthcheck is not None and template.healthcheck.test == (
        "CMD-SHELL", "true")
    assert template.mounts == ({"Type": "volume", "Source": "data", "Target": "/d"},)
    assert template.extra_hosts == (("db", "10.0.0.9"), ("cache", "10.0.0.9"))
    assert decoded.labels == (("tier", "front"),) and decoded.endpoint_mode == "vip"


def test_defaults_of_a_minimal_spec() -> None:
    decoded = codec.decode_service({"TaskTemplate": {"ContainerSpec": {"Image": "x"}}}, NODE)
    assert decoded.name  # a random name, as dockerd gives one
    assert decoded.plan.replicas == 1 and decoded.plan.restart.delay_s == 5.0
    assert decoded.plan.restart.condition is Condition.ANY
    assert decoded.spec_doc["Mode"] == {"Replicated": {"Replicas": 1}}  # stored, as dockerd
    assert codec.decode_service({"Name": "g", "Mode": {"Global": {}}, "TaskTemplate": {
        "ContainerSpec": {"Image": "x"}}}, NODE).plan.mode is Mode.GLOBAL


@pytest.mark.parametrize(("change", "error", "words"), [
    ({"Name": "bad name"}, InvalidArgument, "Invalid service name"),
    ({"TaskTemplate": {"ContainerSpec": {}}}, InvalidArgument, "image reference"),
    ({"Mode": {"ReplicatedJob": {}}}, Unsupported, "ReplicatedJob"),
    ({"TaskTemplate": {"ContainerSpec": {"Image": "x", "Secrets": [{"SecretName": "s"}]}}},
     InvalidArgument, "Secrets.*File is needed"),
    ({"TaskTemplate": {"ContainerSpec": {"Image": "x", "Secrets": [
        {"SecretID": "a", "SecretName": "s", "File": {"Name": "../../etc/passwd"}}]}}},
     InvalidArgument, "secret target"),
    ({"TaskTemplate": {"ContainerSpec": {"Image": "x", "Configs": [
        {"ConfigID": "a", "ConfigName": "c", "File": {"Name": "/etc/../../x"}}]}}},
     InvalidArgument, "'..' is not allowed"),
    ({"TaskTemplate": {"ContainerSpec": {"Image": "x", "Configs": [
        {"ConfigID": "a", "ConfigName": "c", "File": {"Name": "/proc/sys/kernel/x"}}]}}},
     InvalidArgument, "guest's own"),
    ({"TaskTemplate": {"ContainerSpec": {"Image": "x", "Configs": [
        {"ConfigID": "a", "ConfigName": "c", "File": {"Name": "/c", "Mode": 0o10000}}]}}},
     InvalidArgument, "File.Mode"),
    ({"TaskTemplate": {"ContainerSpec": {"Image": "x", "Secrets": [
        {"SecretID": "a", "SecretName": "s", "File": {"Name": "s", "UID": "root"}}]}}},
     InvalidArgument, "numeric id"),
    ({"TaskTemplate": {"ContainerSpec": {"Image": "x", "Secrets": [
        {"SecretID": "a", "SecretName": "s", "File": {"Name": "s"}},
        {"SecretID": "b", "SecretName": "t", "File": {"Name": "/run/secrets/s"}}]}}},
     InvalidArgument, "target of two"),
    ({"TaskTemplate": {"ContainerSpec": {"Image": "x", "Bogus": 1}}}, InvalidArgument,
     "ContainerSpec.Bogus"),
    ({"TaskTemplate": {"ContainerSpec": {"Image": "x"},
                       "RestartPolicy": {"Condition": "sometimes"}}}, InvalidArgument,
     "RestartPolicy.Condition"),
    ({"TaskTemplate": {"ContainerSpec": {"Image": "x"},
                       "Placement": {"Constraints": ["node.role==worker"]}}},
     InvalidArgument, "not met by this node"),
    ({"TaskTemplate": {"ContainerSpec": {"Image": "x"},
                       "Placement": {"Constraints": ["node.labels.zone==a"]}}},
     InvalidArgument, "not met"),
    ({"TaskTemplate": {"ContainerSpec": {"Image": "x", "Privileges": {
        "Seccomp": {"Mode": "unconfined"}}}}}, InvalidArgument, "Privileges"),
    ({"EndpointSpec": {"Mode": "lb"}}, InvalidArgument, "EndpointSpec.Mode"),
])
def test_refusals_name_the_setting(change: dict[str, Any], error: type[Exception],
                                   words: str) -> None:
    spec = {"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "x"}}, **change}
    with pytest.raises(error, match=words):
        codec.decode_service(spec, NODE)


def test_negative_limits_are_refused() -> None:
    spec = {"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "x"},
                                            "Resources": {"Limits": {"NanoCPUs": -1}}}}
    with pytest.raises(InvalidArgument, match="Limits.NanoCPUs"):
        codec.decode_service(spec, NODE)


def test_constraints_this_node_meets() -> None:
    placement = {"Constraints": ["node.role == manager", "node.hostname==box",
                                 "node.labels.zone != a", "node.platform.os==linux"]}
    codec.check_placement(placement, NODE)


def test_task_json() -> None:
    task = TaskRecord(id="t" * 25, service_id="s" * 25, tenant="", slot=2, node_id="n" * 25,
                      generation=1, task_doc={"ContainerSpec": {"Image": "x"}},
                      created_at="2026-01-01T00:00:00Z", state=TaskState.FAILED,
                      desired=TaskState.SHUTDOWN, err="task: non-zero exit (1)",
                      container_id="c" * 64, exit_code=1)
    out = codec.encode_task(task, pid=0)
    assert out["Slot"] == 2 and out["DesiredState"] == "shutdown"
    assert out["Status"]["State"] == "failed" and out["Status"]["Err"] == "task: non-zero exit (1)"
    assert out["Status"]["ContainerStatus"] == {"ContainerID": "c" * 64, "PID": 0,
                                                "ExitCode": 1}
    assert codec.task_matches(task, "web.2", {"desired-state": ["Shutdown"],
                                              "name": ["web."]}, 1)
    assert not codec.task_matches(task, "web.2", {"_up-to-date": ["true"]}, 2)
    with pytest.raises(InvalidArgument, match="desired-state"):
        codec.check_desired_states(["sleeping"])


def test_swarm_init_and_info() -> None:
    listen, advertise, spec = codec.decode_swarm_init({
        "ListenAddr": "0.0.0.0:2377", "Spec": {"Raft": {"ElectionTick": 0},
                                               "Orchestration": {}}})
    assert (listen, advertise) == ("0.0.0.0:2377", "127.0.0.1:2377")
    assert spec["Raft"]["ElectionTick"] == 10  # the CLI's 0: not set
    assert spec["Orchestration"]["TaskHistoryRetentionLimit"] == 5
    assert codec.history_limit(spec) == 5
    assert codec.history_limit(codec.merge_swarm_spec(spec, {"Orchestration": {
        "TaskHistoryRetentionLimit": 2}})) == 2
    state = SwarmState(node_id="n" * 25, active=True, spec_doc=spec, worker_token="W",
                       advertise_addr=advertise)
    info = codec.info_section(state, True, tenant=False)
    assert info["LocalNodeState"] == "active" and info["ControlAvailable"] is True
    assert (info["Nodes"], info["Managers"]) == (1, 1)
    assert info["Cluster"]["JoinTokens"]["Worker"] == "W"
    assert codec.info_section(state, True, tenant=True)["Cluster"]["JoinTokens"][
        "Worker"] == ""
    assert codec.info_section(state, False, tenant=False)["LocalNodeState"] == "inactive"
    assert NODE["ManagerStatus"]["Leader"] is True and NODE["Status"]["State"] == "ready"


def test_rollback_config_is_decoded_and_a_rollback_of_a_rollback_refused() -> None:
    spec = {"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "x"}},
            "RollbackConfig": {"Parallelism": 0, "Delay": 2 * codec.NS, "Order": "start-first",
                               "FailureAction": "continue", "Monitor": 3 * codec.NS,
                               "MaxFailureRatio": 0.5}}
    rollback = codec.decode_service(spec, NODE).plan.rollback
    assert (rollback.parallelism, rollback.start_first, rollback.delay_s) == (0, True, 2.0)
    assert rollback.failure == FailurePolicy(FailureAction.CONTINUE, 3.0, 0.5)
    default = codec.decode_service({**spec, "RollbackConfig": None}, NODE).plan.rollback
    assert (default.parallelism, default.start_first, default.failure.action) == (
        1, False, FailureAction.PAUSE)
    with pytest.raises(InvalidArgument, match="RollbackConfig.FailureAction 'rollback'"):
        codec.decode_service({**spec, "RollbackConfig": {"FailureAction": "rollback"}}, NODE)
    with pytest.raises(InvalidArgument, match="RollbackConfig.Order"):
        codec.decode_service({**spec, "RollbackConfig": {"Order": "sideways"}}, NODE)
