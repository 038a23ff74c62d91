"""The pure decisions about a service's suspended replicas: when the service is asleep (its
connections go to the wake listener), which replicas a connection resumes, where a held
connection is relayed, and what a daemon restart makes of a suspended replica's task."""

from __future__ import annotations

from steelcup.net.fip import FipRecord
from steelcup.net.model import PortMapping, VipRecord
from steelcup.services.dormancy import (
    AfterRestart,
    Replica,
    after_restart,
    asleep,
    relay_target,
    to_resume,
    wake_addresses,
)
from steelcup.services.model import TaskState

RUNNING, SHUTDOWN = TaskState.RUNNING, TaskState.SHUTDOWN
LISTENER = ("10.0.0.100", 41000)


def replica(n: int, *, suspended: bool = True, running: bool = False,
            desired: TaskState = RUNNING, state: TaskState = RUNNING,
            container: bool = True) -> Replica:
    return Replica(f"t{n}", f"c{n}" if container else "", desired, state,
                   running=running, suspended=suspended)


def test_a_service_sleeps_once_every_serving_replica_is_suspended() -> None:
    assert asleep(2, [replica(1), replica(2)])
    # one still runs: it serves the VIP, nothing to wake
    assert not asleep(2, [replica(1), replica(2, suspended=False, running=True)])
    # without --auto-suspend (a replica suspended by hand) the service is not woken
    assert not asleep(0, [replica(1)])
    # no replica at all (scaled to 0, all failed): nothing to wake, refused as before
    assert not asleep(2, [])
    assert not asleep(2, [replica(1, suspended=False, state=TaskState.FAILED)])


def test_replicas_on_their_way_out_or_not_started_do_not_count() -> None:
    going = replica(2, suspended=False, running=True, desired=SHUTDOWN)
    assert asleep(2, [replica(1), going])  # a replaced task does not keep it awake
    starting = replica(3, suspended=False, state=TaskState.STARTING)
    assert not asleep(2, [replica(1), starting])  # a new replica about to serve
    # a replica suspended while it waited for its health check is asleep too
    assert asleep(2, [replica(1, state=TaskState.STARTING)])
    assert not asleep(2, [replica(1, container=False, suspended=False,
                                  state=TaskState.PREPARING)])


def test_a_connection_resumes_every_suspended_serving_replica() -> None:
    replicas = [replica(2), replica(1), replica(3, suspended=False, running=True),
                replica(4, desired=SHUTDOWN)]
    assert to_resume(replicas) == ["c1", "c2"]
    assert to_resume([]) == []


def test_a_held_connection_goes_to_the_port_it_was_made_to() -> None:
    vips = {"10.0.0.100": "net-a", "10.0.1.100": "net-b"}
    published = (PortMapping(80, "tcp", "", 18080), PortMapping(53, "udp", "", 18053),
                 PortMapping(443, "tcp", "192.0.2.5", 18443))
    # to a VIP: its own port, on that VIP's network (the loopback proxy's too)
    assert relay_target(("10.0.1.100", 8080), vips, published, "net-a", LISTENER) == ("net-b", 8080)
    assert relay_target(("10.0.0.100", 80), vips, published, "net-a", LISTENER) == ("net-a", 80)
    # to a published port on any host address: its target port, on the first network
    assert relay_target(("192.0.2.9", 18080), vips, published, "net-a", LISTENER) == ("net-a", 80)
    assert relay_target(("192.0.2.5", 18443), vips, published, "net-a", LISTENER) == ("net-a", 443)
    # a port published on another address only, a udp port, an unknown port: nothing
    assert relay_target(("192.0.2.9", 18443), vips, published, "net-a", LISTENER) is None
    assert relay_target(("192.0.2.9", 18053), vips, published, "net-a", LISTENER) is None
    assert relay_target(("192.0.2.9", 9999), vips, published, "net-a", LISTENER) is None
    # nor one made to the listener itself, not DNATed there (its port is no service's)
    assert relay_target(LISTENER, vips, published, "net-a", LISTENER) is None


def test_a_held_connection_to_the_service_fip_goes_to_its_vip_s_network() -> None:
    vips = [VipRecord("v1", "net-a", "web", "10.0.0.100"),
            VipRecord("v2", "net-b", "web", "10.0.1.100"),
            VipRecord("v3", "net-c", "web", "", mode="dnsrr")]
    floating = FipRecord("203.0.113.5", "t", service_id="s", vip_id="v2", network_id="net-b")
    addresses = wake_addresses(vips, floating)
    assert addresses == {"10.0.0.100": "net-a", "10.0.1.100": "net-b", "203.0.113.5": "net-b"}
    assert relay_target(("203.0.113.5", 8080), addresses, (), "net-a", LISTENER) == ("net-b",
                                                                                      8080)
    # no FIP, a detached one, or one whose VIP is none of the service's: the VIPs only
    assert wake_addresses(vips, None) == {"10.0.0.100": "net-a", "10.0.1.100": "net-b"}
    detached = FipRecord("203.0.113.5", "t")
    assert "203.0.113.5" not in wake_addresses(vips, detached)
    stale = FipRecord("203.0.113.5", "t", service_id="s", vip_id="gone", network_id="net-b")
    assert "203.0.113.5" not in wake_addresses(vips, stale)
    assert relay_target(("203.0.113.5", 80), wake_addresses(vips, stale), (), "net-a",
                        LISTENER) is None


def test_a_daemon_restart_keeps_a_suspended_replica_s_task() -> None:
    assert after_restart(RUNNING, running=False, suspended=True) is AfterRestart.SUSPENDED
    assert after_restart(TaskState.STARTING, running=False,
                         suspended=True) is AfterRestart.SUSPENDED
    assert after_restart(RUNNING, running=True, suspended=False) is AfterRestart.RUNNING
    assert after_restart(RUNNING, running=False, suspended=False) is AfterRestart.ENDED
    assert after_restart(TaskState.STARTING, running=False,
                         suspended=False) is AfterRestart.NEVER_STARTED
