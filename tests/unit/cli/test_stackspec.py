"""A compose file as a stack (cli/stackspec.py, pure): names prefixed with the stack's, the
namespace label, networks (the stack's default one when a service names none), aliases,
deploy settings, health checks, ports, volumes, env files, interpolation; keys steelcup
cannot honour refused by name, keys docker's stack deploy ignores warned about by name."""

from __future__ import annotations

from typing import Any

import pytest

from steelcup.cli.stackspec import NAMESPACE, interpolate, stack_plan
from steelcup.errors import InvalidArgument


def plan(doc: dict[str, Any], environ: dict[str, str] | None = None,
         files: dict[str, str] | None = None) -> Any:
    return stack_plan(doc, "st", environ or {}, "/srv/app",
                      lambda path: (files or {})[path])


def test_services_networks_and_labels() -> None:
    p = plan({"version": "3.8", "services": {
        "web": {"image": "nginx", "ports": ["8080:80", {"target": 53, "published": 5353,
                                                        "protocol": "udp"}],
                "networks": {"front": {"aliases": ["www"]}}, "labels": {"a": "1"},
                "deploy": {"replicas": 3, "labels": {"tier": "edge"},
                           "update_config": {"parallelism": 2, "order": "start-first",
                                             "delay": "2s"},
                           "restart_policy": {"condition": "on-failure", "delay": 0,
                                              "max_attempts": 3},
                           "resources": {"limits": {"cpus": "0.5", "memory": "256M"}}},
                "healthcheck": {"test": ["CMD", "wget", "-q", "http://localhost/"],
                                "interval": "2s", "retries": 3},
                "command": "nginx -g 'daemon off;'", "entrypoint": ["/docker-entrypoint.sh"]},
        "db": {"image": "redis", "volumes": ["data:/data", "./conf:/etc/redis:ro"]}},
        "networks": {"front": {"driver": "overlay", "attachable": True}},
        "volumes": {"data": {}}})
    assert [n["Name"] for n in p.networks] == ["st_front", "st_default"]
    assert p.networks[0] == {"Name": "st_front", "Driver": "overlay", "Attachable": True,
                             "Labels": {NAMESPACE: "st"}}
    web, db = p.services
    assert web["Name"] == "st_web"
    assert web["Labels"] == {"tier": "edge", NAMESPACE: "st"}
    assert web["Mode"] == {"Replicated": {"Replicas": 3}}
    container = web["TaskTemplate"]["ContainerSpec"]
    assert container["Labels"] == {"a": "1", NAMESPACE: "st"}
    assert container["Args"] == ["nginx", "-g", "daemon off;"]
    assert container["Command"] == ["/docker-entrypoint.sh"]
    assert container["Healthcheck"]["Test"] == ["CMD-SHELL", "wget -q http://localhost/"]
    assert container["Healthcheck"]["Interval"] == 2_000_000_000
    assert web["TaskTemplate"]["Networks"] == [{"Target": "st_front",
                                                "Aliases": ["web", "www"]}]
    assert web["TaskTemplate"]["RestartPolicy"] == {"Condition": "on-failure", "Delay": 0,
                                                    "MaxAttempts": 3}
    assert web["TaskTemplate"]["Resources"]["Limits"]["MemoryBytes"] == 256 << 20
    assert web["UpdateConfig"] == {"Parallelism": 2, "Order": "start-first",
                                   "Delay": 2_000_000_000}
    assert web["EndpointSpec"]["Ports"] == [
        {"Protocol": "tcp", "PublishMode": "ingress", "TargetPort": 80, "PublishedPort": 8080},
        {"Protocol": "udp", "PublishMode": "ingress", "TargetPort": 53,
         "PublishedPort": 5353}]
    assert db["TaskTemplate"]["Networks"] == [{"Target": "st_default", "Aliases": ["db"]}]
    mounts = db["TaskTemplate"]["ContainerSpec"]["Mounts"]
    assert mounts == [{"Type": "volume", "Source": "st_data", "Target": "/data"},
                      {"Type": "bind", "Source": "/srv/app/conf", "Target": "/etc/redis",
                       "ReadOnly": True}]


def test_environment_env_files_and_interpolation() -> None:
    p = plan({"services": {"app": {
        "image": "app:${TAG:-latest}", "env_file": "app.env",
        "environment": {"B": "${HOME}", "C": "$$literal"}}}},
        environ={"HOME": "/root"}, files={"/srv/app/app.env": "# comment\nA=1\nB=0\n"})
    container = p.services[0]["TaskTemplate"]["ContainerSpec"]
    assert container["Image"] == "app:latest"
    assert container["Env"] == ["A=1", "B=/root", "C=$literal"]
    assert interpolate("${X-d}${Y:-e}$Z", {"X": "", "Y": ""}) == "e"


@pytest.mark.parametrize(("doc", "named"), [
    ({"services": {"web": {"image": "x", "cap_add": ["NET_ADMIN"]}}}, "services.web.cap_add"),
    ({"services": {"web": {"image": "x", "deploy": {"rollback_config": {"x": 1}}}}},
     "services.web.deploy.rollback_config.x"),
    ({"services": {"web": {"image": "x"}}, "secrets": {"s": {"environment": "E"}}},
     "secrets.s.environment"),
    ({"services": {"web": {"image": "x"}}, "configs": {"c": {}}}, "configs.c: `file:`"),
    ({"services": {"web": {"image": "x", "secrets": ["nope"]}}}, "secret 'nope' is not"),
    ({"services": {"web": {"image": "x", "networks": ["nope"]}}}, "network 'nope'"),
    ({"services": {"web": {"image": "x", "volumes": ["nope:/d"]}}}, "volume 'nope'"),
    ({"services": {"web": {"image": "x", "ports": ["8000-8010:80"]}}}, "port ranges"),
    ({"services": {"web": {"build": "."}}}, "services.web.image is required"),
    ({"services": {"web": {"image": "x"}}, "networks": {"n": {"driver": "macvlan"}}},
     "networks.n.driver"),
])
def test_keys_steelcup_cannot_honour_are_refused_by_name(doc: dict[str, Any],
                                                          named: str) -> None:
    with pytest.raises(InvalidArgument, match=named.replace(".", r"\.")):
        plan(doc)


def test_keys_docker_stack_ignores_are_warned_about_by_name() -> None:
    p = plan({"services": {"web": {"image": "x", "depends_on": ["db"], "restart": "always"}}})
    assert p.warnings == ["Ignoring unsupported options of services.web: depends_on, restart"]


def test_secrets_configs_and_rollback_config() -> None:
    p = plan({"services": {"web": {
        "image": "x", "secrets": ["token", {"source": "tls", "target": "key.pem",
                                            "uid": "100", "mode": "0400"}],
        "configs": [{"source": "motd", "target": "/etc/motd", "mode": 0o440}],
        "deploy": {"rollback_config": {"parallelism": 0, "order": "start-first",
                                       "failure_action": "continue", "delay": "1s"}}}},
        "secrets": {"token": {"file": "./token.txt", "labels": {"a": "1"}},
                    "tls": {"external": True, "name": "site-tls"}},
        "configs": {"motd": {"file": "motd.txt"}}})
    assert p.objects == [
        {"kind": "secret", "Name": "st_token", "Labels": {"a": "1", NAMESPACE: "st"},
         "file": "/srv/app/token.txt"},
        {"kind": "config", "Name": "st_motd", "Labels": {NAMESPACE: "st"},
         "file": "/srv/app/motd.txt"}]  # the external one is not made
    spec = p.services[0]
    container = spec["TaskTemplate"]["ContainerSpec"]
    assert container["Secrets"] == [
        {"SecretID": "", "SecretName": "st_token",
         "File": {"Name": "token", "UID": "0", "GID": "0", "Mode": 0o444}},
        {"SecretID": "", "SecretName": "site-tls",
         "File": {"Name": "key.pem", "UID": "100", "GID": "0", "Mode": 0o400}}]
    assert container["Configs"] == [{"ConfigID": "", "ConfigName": "st_motd", "File": {
        "Name": "/etc/motd", "UID": "0", "GID": "0", "Mode": 0o440}}]
    assert spec["RollbackConfig"] == {"Parallelism": 0, "Order": "start-first",
                                      "Delay": 1_000_000_000, "FailureAction": "continue"}
