"""What a container create or resize must pass before the runtime does it: its size (class,
explicit, or the tenant's default; steelcup.tenancy.sizing), then its tenant's quotas on
containers, vCPUs and memory (steelcup.tenancy.quota), atomically with the create.

Containers are counted as they exist, running or not (as hyper.sh did): a created or exited
container holds its vCPUs and memory against the quota until it is removed.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping
from dataclasses import replace

from steelcup.errors import NotFound
from steelcup.runtime.containers import Runtime
from steelcup.runtime.model import ContainerConfig, ContainerRecord
from steelcup.tenancy.manager import Tenants
from steelcup.tenancy.quota import need
from steelcup.tenancy.sizing import SIZE_LABEL, HostCapacity, check_capacity, resolve, vm_cpus
from steelcup.tenancy.usage import Metered


class ContainerAdmission:
    def __init__(self, runtime: Runtime, tenants: Tenants | None,
                 capacity: HostCapacity) -> None:
        self.rt = runtime
        self.tenants = tenants
        self.capacity = capacity
        if tenants is not None:
            gate = tenants.quotas
            gate.register("containers", lambda t: len(runtime.list(t)))
            gate.register("cpus", lambda t: sum(runtime.vm_size(r.config)[0]
                                                for r in runtime.list(t)))
            gate.register("memory_mib", lambda t: sum(runtime.vm_size(r.config)[1]
                                                      for r in runtime.list(t)))

    def _default_size(self, tenant: str) -> str | None:
        if not tenant or self.tenants is None:
            return None
        return self.tenants.get(tenant).size_default

    def size(self, config: ContainerConfig) -> ContainerConfig:
        """`config` with its VM's memory and CPUs (and the class label) decided."""
        labels = dict(config.labels)
        sized = resolve(labels.get(SIZE_LABEL, ""), config.mem_mib, config.cpus,
                        self._default_size(config.tenant), self.capacity)
        if sized.size:
            labels[SIZE_LABEL] = sized.size
        return replace(config, mem_mib=sized.mem_mib, cpus=sized.cpus,
                       labels=tuple(sorted(labels.items())))

    def _sized(self, config: ContainerConfig) -> tuple[ContainerConfig, Mapping[str, int]]:
        """`config` sized, and what it needs of its tenant's quotas."""
        config = self.size(config)
        cpus, mem_mib = self.rt.vm_size(config)
        return config, need(containers=1, cpus=cpus, memory_mib=mem_mib)

    def check(self, config: ContainerConfig) -> None:
        """Refuse now (a bad size, QuotaExceeded) what `create` would refuse, holding nothing:
        for a caller that waits before it creates (`Runtime.wait_for_root_disk`). `create`
        checks again."""
        config, wanted = self._sized(config)
        if self.tenants is not None:
            with self.tenants.quotas.admit(config.tenant, wanted):
                pass

    def create(self, config: ContainerConfig, name: str | None) -> ContainerRecord:
        config, wanted = self._sized(config)
        if self.tenants is None:
            return self.rt.create(config, name)
        with self.tenants.quotas.admit(config.tenant, wanted):
            return self.rt.create(config, name)

    def update(self, ref: str, *, restart_policy: tuple[str, int] | None = None,
               mem_mib: int | None = None, cpus: float | None = None,
               cpu_shares: int | None = None) -> builtins.list[str]:
        """`docker update`: a tenant's new memory or CPUs must fit the host and its quotas."""
        record = self.rt.record(ref)
        tenant = record.config.tenant
        resize = mem_mib is not None or cpus is not None
        if self.tenants is None or not tenant or not resize:
            return self.rt.update(ref, restart_policy=restart_policy, mem_mib=mem_mib,
                                  cpus=cpus, cpu_shares=cpu_shares)
        old_cpus, old_mem = self.rt.vm_size(record.config)
        new_cpus = vm_cpus(cpus, old_cpus) if cpus is not None else old_cpus
        new_mem = mem_mib or old_mem
        check_capacity(new_cpus, new_mem, self.capacity, "this container")
        with self.tenants.quotas.admit(tenant, need(cpus=max(0, new_cpus - old_cpus),
                                                    memory_mib=max(0, new_mem - old_mem))):
            return self.rt.update(ref, restart_policy=restart_policy, mem_mib=mem_mib,
                                  cpus=cpus, cpu_shares=cpu_shares)


def metered_by(runtime: Runtime) -> Callable[[str], Metered | None]:
    """What the usage meter bills a container's run by (None: the container is gone)."""
    def lookup(container_id: str) -> Metered | None:
        try:
            record = runtime.record(container_id)
        except NotFound:
            return None
        cpus, mem_mib = runtime.vm_size(record.config)
        return Metered(record.config.tenant, cpus, mem_mib)
    return lookup
