"""What a service with `--auto-suspend` is while its replicas sleep, pure (docs/services.md,
"Auto-suspend"): each replica's container is suspended by the daemon's auto-suspender on its
own idleness; a suspended replica's task runs on (it is no failure: no replacement, no health
probe), and when every replica the service has running is suspended the service is *asleep*:
its virtual IPs, its floating IP and its published ports go to wake listeners (`waker.py`)
that resume the replicas and relay the connections and datagrams they hold.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from steelcup.net.fip import FipRecord
from steelcup.net.model import PortMapping, VipRecord
from steelcup.services.model import TaskState


@dataclass(frozen=True)
class Replica:
    """A task of the service as the waker sees it, with its container's state."""

    task_id: str
    container_id: str
    desired: TaskState
    state: TaskState
    running: bool  # its container's VM runs
    suspended: bool  # its container is suspended (its VM saved on disk)

    @property
    def serving(self) -> bool:
        """Its slot's task, started (running, or starting: waiting for its health check,
        which a suspend halts until its resume), not on its way out."""
        return (self.desired is TaskState.RUNNING
                and self.state in (TaskState.RUNNING, TaskState.STARTING)
                and bool(self.container_id))


def asleep(auto_suspend_s: int, replicas: Iterable[Replica]) -> bool:
    """Whether the service's connections go to its wake listener: it has --auto-suspend and
    every replica it has serving is suspended (at least one: a service whose replicas are
    still starting, or all gone, is not asleep, and refuses as any service without
    backends)."""
    serving = [r for r in replicas if r.serving]
    return auto_suspend_s > 0 and bool(serving) and all(r.suspended for r in serving)


def to_resume(replicas: Iterable[Replica]) -> list[str]:
    """The containers a connection to an asleep service resumes: every serving replica that
    is suspended (the service's capacity is its replica count; each suspends again on its
    own once idle)."""
    return sorted(r.container_id for r in replicas if r.serving and r.suspended)


def wake_addresses(vips: Iterable[VipRecord], floating: FipRecord | None) -> dict[str, str]:
    """The addresses a connection held by the wake listener may have been made to, each with
    the network its replicas are reached on: the service's VIPs, and its floating IP (which
    goes to one of them: that VIP's network; none if that VIP is not among `vips`)."""
    out = {v.address: v.network_id for v in vips if v.address}
    if floating is not None and floating.service_id:
        network = next((v.network_id for v in vips if v.id == floating.vip_id and v.address),
                       None)
        if network is not None:
            out[floating.address] = network
    return out


def relay_target(original: tuple[str, int], vip_networks: Mapping[str, str],
                 published: Sequence[PortMapping], first_network: str,
                 listener: tuple[str, int], proto: str = "tcp") -> tuple[str, int] | None:
    """Where a connection (or datagram) a wake listener holds goes, as (network id, port) on
    a replica: one to a VIP's or the FIP's address (`vip_networks`: address -> its network
    id, as `wake_addresses` makes it) keeps its port, on that network; one to a published
    port of the listener's protocol `proto` (tcp or udp) goes to its target port on the
    service's first network (where its ports are published). None: neither, or one made to
    the `listener` itself (not DNATed there: its port is no port of the service's)."""
    if original == listener:
        return None
    address, port = original
    network = vip_networks.get(address)
    if network is not None:
        return network, port
    for mapping in published:
        if (mapping.proto == proto and mapping.host_port == port
                and mapping.host_ip in ("", "0.0.0.0", address)):
            return first_network, mapping.container_port
    return None


class AfterRestart(Enum):
    """What a daemon restart makes of an unfinished task, by its container."""

    ENDED = "ended"  # its container exited (or is gone): replaced per its restart policy
    RUNNING = "running"  # it runs (a live restore kept it)
    SUSPENDED = "suspended"  # its task stays as it was: not failed, not replaced
    NEVER_STARTED = "never started"  # made, not started before the daemon stopped


def after_restart(task_state: TaskState, running: bool, suspended: bool) -> AfterRestart:
    """A suspended replica is as it was before the restart: its VM is on disk and a
    connection resumes it (its task is not failed, so it is not replaced)."""
    if suspended:
        return AfterRestart.SUSPENDED
    if running:
        return AfterRestart.RUNNING
    if task_state is not TaskState.RUNNING:
        return AfterRestart.NEVER_STARTED
    return AfterRestart.ENDED
