"""Which bundle is a pod's sandbox or member: containerd's CRI annotations, CRI-O's (podman 4's
members), and podman 4's infra container told by its cgroup inside the pod's; the create body
of a sandbox says so, a member names its sandbox for main.py to resolve."""

from __future__ import annotations

import copy
from typing import Any

from steelcup.oci.bundle import translate
from steelcup.oci.pods import PodRole, pod_role

POD = "e310f05ef6c5a51a34b458aed75f03abe8b915d28d0c80c05cdb40e65c302b59"
INFRA = "32f4fda2e8694d64ebab7f2a3fb6e55517c78c1f1f0367472ada08cc512d55b6"
MEMBER = "37f407c75bcb0e2d35a51d0d6cc1b3e2a4ca0f0e8a6f7c8f3a8a1f6c27f0cbd1"
# podman 4.3.1 (`pod create` + `run --pod`), captured with --cgroup-manager cgroupfs
PODMAN_INFRA_ANNOTATIONS = {"io.container.manager": "libpod",
                            "io.kubernetes.cri-o.Created": "2026-12-04T12:44:33.629302523Z",
                            "io.kubernetes.cri-o.TTY": "false"}
PODMAN_MEMBER_ANNOTATIONS = {"io.container.manager": "libpod",
                             "io.kubernetes.cri-o.ContainerType": "container",
                             "io.kubernetes.cri-o.SandboxID": INFRA,
                             "io.kubernetes.cri-o.TTY": "false"}


def test_podman_4s_infra_is_told_by_its_cgroup_inside_the_pods() -> None:
    assert pod_role(PODMAN_INFRA_ANNOTATIONS,
                    f"/libpod_parent/{POD}/libpod-{INFRA}") == PodRole(sandbox=True)
    assert pod_role(PODMAN_INFRA_ANNOTATIONS,
                    f"machine-libpod_pod_{POD}.slice:libpod:{INFRA}") == PodRole(sandbox=True)
    # a container outside any pod, and a pod-like cgroup of another engine: neither
    assert pod_role(PODMAN_INFRA_ANNOTATIONS, f"/libpod_parent/libpod-{INFRA}") == PodRole()
    assert pod_role({}, f"/libpod_parent/{POD}/libpod-{INFRA}") == PodRole()
    assert pod_role(PODMAN_INFRA_ANNOTATIONS, "") == PodRole()


def test_members_name_their_sandbox_in_cri_and_cri_o_annotations() -> None:
    member_cgroup = f"/libpod_parent/{POD}/libpod-{MEMBER}"
    assert pod_role(PODMAN_MEMBER_ANNOTATIONS, member_cgroup) == PodRole(sandbox_id=INFRA)
    assert pod_role({"io.kubernetes.cri.container-type": "sandbox",
                     "io.kubernetes.cri.sandbox-id": "s1"}, "") == PodRole(sandbox=True)
    assert pod_role({"io.kubernetes.cri.container-type": "container",
                     "io.kubernetes.cri.sandbox-id": "s1"}, "") == PodRole(sandbox_id="s1")
    assert pod_role({"io.kubernetes.cri-o.ContainerType": "sandbox"}, "") == \
        PodRole(sandbox=True)
    # a member without a sandbox (podman's pod without infra): a VM of its own
    assert pod_role({"io.kubernetes.cri-o.ContainerType": "container"}, "") == PodRole()
    assert pod_role({"io.kubernetes.cri.container-type": "other"}, "") == PodRole()


DOC: dict[str, Any] = {
    "process": {"args": ["/catatonit", "-P"], "cwd": "/"},
    "root": {"path": "/st/overlay/abc/merged"},
    "hostname": "p1",
    "annotations": PODMAN_INFRA_ANNOTATIONS,
    "linux": {"cgroupsPath": f"/libpod_parent/{POD}/libpod-{INFRA}",
              "namespaces": [{"type": "pid"}, {"type": "network"}]},
}


def test_the_create_body_marks_a_sandbox_and_a_bundle_carries_a_members_sandbox() -> None:
    infra = translate(copy.deepcopy(DOC), "/b")
    assert infra.pod == PodRole(sandbox=True)
    assert infra.body["HostConfig"]["SteelcupPodSandbox"] is True
    member_doc = copy.deepcopy(DOC)
    member_doc["annotations"] = PODMAN_MEMBER_ANNOTATIONS
    member_doc["linux"]["cgroupsPath"] = f"/libpod_parent/{POD}/libpod-{MEMBER}"
    member = translate(member_doc, "/b")
    assert member.pod == PodRole(sandbox_id=INFRA)
    assert "SteelcupPodSandbox" not in member.body["HostConfig"]
    plain_doc = copy.deepcopy(DOC)
    plain_doc["linux"]["cgroupsPath"] = f"/libpod_parent/libpod-{INFRA}"
    assert "SteelcupPodSandbox" not in translate(plain_doc, "/b").body["HostConfig"]
