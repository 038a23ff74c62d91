"""docker's -p syntax and PortBindings -> PortMappings (pure)."""

from __future__ import annotations

import pytest

from steelcup.errors import InvalidArgument
from steelcup.net.model import PortMapping
from steelcup.net.ports import merge_publish, parse_publish, port_mappings


def test_publish_forms_match_docker_json() -> None:
    assert parse_publish("8080:80") == (
        {"80/tcp": {}}, {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]})
    assert parse_publish("127.0.0.1:5353:53/udp") == (
        {"53/udp": {}}, {"53/udp": [{"HostIp": "127.0.0.1", "HostPort": "5353"}]})
    assert parse_publish("80")[1] == {"80/tcp": [{"HostIp": "", "HostPort": ""}]}
    assert parse_publish("10.0.0.1::80")[1] == {"80/tcp": [{"HostIp": "10.0.0.1",
                                                            "HostPort": ""}]}
    exposed, bindings = parse_publish("8000-8001:80-81")
    assert bindings == {"80/tcp": [{"HostIp": "", "HostPort": "8000"}],
                        "81/tcp": [{"HostIp": "", "HostPort": "8001"}]}
    _, merged = merge_publish(["8080:80", "127.0.0.1:9090:80"])
    assert len(merged["80/tcp"]) == 2


@pytest.mark.parametrize("spec", ["x:80", "80/sctp", "1:2:3:4", "0:80", "80:70000",
                                  "8000-8002:80-81", "nothost:1:2", "[::1]:80:80"])
def test_publish_rejects(spec: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_publish(spec)


def test_port_mappings_and_publish_all() -> None:
    _, bindings = merge_publish(["8080:80", "127.0.0.1::53/udp"])
    got = port_mappings(bindings, True, ["80/tcp", "443/tcp", "53/udp"])
    assert got == [
        PortMapping(80, "tcp", "", 8080),
        PortMapping(53, "udp", "127.0.0.1", 0),
        PortMapping(443, "tcp", "", 0),
    ]
    assert port_mappings(None, False, ["80/tcp"]) == []
    with pytest.raises(InvalidArgument):
        port_mappings({"80/tcp": [{"HostPort": "http"}]})
