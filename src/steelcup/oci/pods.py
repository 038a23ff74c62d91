"""Which containers of a bundle's engine form a pod in one VM: pure, from config.json.

A pod's sandbox gets a VM that takes further containers (HostConfig.SteelcupPodSandbox); a
member runs in its sandbox's VM (HostConfig.SteelcupPodOf, the sandbox's OCI id resolved by
main.py). The engines say it thus:
- containerd's CRI plugin: `io.kubernetes.cri.container-type` = sandbox | container, with
  `io.kubernetes.cri.sandbox-id` on a container;
- CRI-O, and podman 4 for a pod's members: `io.kubernetes.cri-o.ContainerType` and
  `io.kubernetes.cri-o.SandboxID`;
- podman 4's infra container carries neither: it is told by its cgroup, which is inside its
  pod's (`/libpod_parent/POD/libpod-ID` with cgroupfs, `machine-libpod_pod_POD.slice:libpod:ID`
  with systemd), while a container outside any pod is in `/libpod_parent/libpod-ID`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

CRI_CONTAINER_TYPE = "io.kubernetes.cri.container-type"
CRI_SANDBOX_ID = "io.kubernetes.cri.sandbox-id"
CRIO_CONTAINER_TYPE = "io.kubernetes.cri-o.ContainerType"
CRIO_SANDBOX_ID = "io.kubernetes.cri-o.SandboxID"
PODMAN_MANAGER = ("io.container.manager", "libpod")
_HEX64 = "[0-9a-f]{64}"
_PODMAN_IN_POD = re.compile(
    rf"/libpod_parent/{_HEX64}/libpod-{_HEX64}|machine-libpod_pod_{_HEX64}\.slice:libpod:{_HEX64}")


@dataclass(frozen=True)
class PodRole:
    """A pod's sandbox, a member of the sandbox with OCI id `sandbox_id`, or neither."""

    sandbox: bool = False
    sandbox_id: str = ""


def pod_role(annotations: Mapping[str, str], cgroups_path: str) -> PodRole:
    """The container's place in a pod, from the engine's annotations (and podman's cgroup)."""
    for type_key, id_key in ((CRI_CONTAINER_TYPE, CRI_SANDBOX_ID),
                             (CRIO_CONTAINER_TYPE, CRIO_SANDBOX_ID)):
        kind = annotations.get(type_key)
        if kind == "sandbox":
            return PodRole(sandbox=True)
        if kind == "container":
            # no sandbox named (a podman pod without an infra container): a VM of its own
            return PodRole(sandbox_id=annotations.get(id_key, ""))
    if (annotations.get(PODMAN_MANAGER[0]) == PODMAN_MANAGER[1]
            and _PODMAN_IN_POD.fullmatch(cgroups_path)):
        return PodRole(sandbox=True)
    return PodRole()
