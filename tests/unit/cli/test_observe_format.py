"""docker's output for port, stats and events, from the API's JSON (pure)."""

from __future__ import annotations

from steelcup.cli.commands.observe import event_line, port_lines, stats_row

PORTS = {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}],
         "53/udp": [{"HostIp": "127.0.0.1", "HostPort": "5353"}],
         "443/tcp": None}


def test_port_lines_as_docker_prints_them() -> None:
    assert port_lines(PORTS) == ["53/udp -> 127.0.0.1:5353", "80/tcp -> 0.0.0.0:8080"]
    assert port_lines(PORTS, "80") == ["0.0.0.0:8080"]
    assert port_lines(PORTS, "53/udp") == ["127.0.0.1:5353"]
    assert port_lines(PORTS, "443") == []
    assert port_lines(None) == []


def test_stats_row_uses_dockers_arithmetic() -> None:
    row = stats_row({
        "id": "0123456789abcdef", "name": "/web",
        "cpu_stats": {"cpu_usage": {"total_usage": 3_000_000_000}, "system_cpu_usage": 20e9,
                      "online_cpus": 2},
        "precpu_stats": {"cpu_usage": {"total_usage": 1_000_000_000}, "system_cpu_usage": 10e9},
        "memory_stats": {"usage": 60 << 20, "limit": 512 << 20,
                         "stats": {"inactive_file": 10 << 20}},
        "networks": {"eth0": {"rx_bytes": 1500, "tx_bytes": 0}},
        "pids_stats": {"current": 3},
    })
    assert row[:2] == ["0123456789ab", "web"]
    assert row[2] == "40.00%"  # 2 s of 10 s on 2 CPUs
    assert row[3] == "50MiB / 512MiB"
    assert row[4] == "9.77%"
    assert row[7] == "3"


def test_stats_row_of_a_stopped_container_has_dashes() -> None:
    assert stats_row({"id": "abc", "name": "/x", "memory_stats": {}})[2:] == [
        "--", "-- / --", "--", "--", "--", "--"]


def test_event_line_as_docker_prints_it() -> None:
    line = event_line({"Type": "container", "Action": "start",
                       "timeNano": 1_700_000_000_000_000_005,
                       "Actor": {"ID": "abc", "Attributes": {"name": "web", "image": "b"}}})
    assert line == "2023-11-14T22:13:20.000000005Z container start abc (image=b, name=web)"
