"""config.json -> the Engine API create body: what a podman bundle asks for reaches the
container, what the VM provides itself is left out, and what steelcup cannot honour is refused
naming the field."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from steelcup.errors import InvalidArgument
from steelcup.oci.bundle import resolv_settings, translate

BUNDLE = "/var/lib/containers/c1/userdata"

# podman 4.3's config.json for `run --ulimit nofile=1024:1024 -v /srv/data:/data:ro
# --tmpfs /scratch:size=1m --memory 256m --cpus 1.5 busybox uname -r` (trimmed, captured)
PODMAN: dict[str, Any] = {
    "ociVersion": "1.0.2-dev",
    "process": {
        "user": {"uid": 1000, "gid": 100, "additionalGids": [100, 10], "umask": 18},
        "args": ["uname", "-r"],
        "env": ["PATH=/usr/bin:/bin", "TERM=xterm", "container=podman"],
        "cwd": "/work",
        "capabilities": {"bounding": ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER",
                                      "CAP_FSETID", "CAP_KILL", "CAP_NET_BIND_SERVICE",
                                      "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID",
                                      "CAP_SYS_CHROOT", "CAP_SYS_PTRACE"]},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024},
                    {"type": "RLIMIT_CORE", "hard": 18446744073709551615,
                     "soft": 18446744073709551615}],
    },
    "root": {"path": "/var/lib/containers/storage/overlay/abc/merged"},
    "hostname": "6513e4470aea",
    "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["mode=755"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs"},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts"},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue"},
        {"destination": "/dev/shm", "type": "bind", "source": "/run/c1/shm",
         "options": ["bind", "rprivate"]},
        {"destination": "/etc/hosts", "type": "bind", "source": "/run/c1/hosts",
         "options": ["bind", "rprivate"]},
        {"destination": "/etc/resolv.conf", "type": "bind", "source": "/run/c1/resolv.conf",
         "options": ["bind"]},
        {"destination": "/run/.containerenv", "type": "bind", "source": "/run/c1/.ce",
         "options": ["bind"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup"},
        {"destination": "/data", "type": "bind", "source": "/srv/data",
         "options": ["rbind", "ro", "rprivate"]},
        {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
         "options": ["rw", "size=1m", "nosuid", "mode=1777"]},
    ],
    "annotations": {"io.container.manager": "libpod"},
    "linux": {
        "sysctl": {"net.ipv4.ping_group_range": "0 0"},
        "resources": {"memory": {"limit": 268435456},
                      "cpu": {"quota": 150000, "period": 100000, "shares": 512},
                      "pids": {"limit": 2048}},
        "namespaces": [{"type": "pid"}, {"type": "network", "path": "/run/netns/n1"},
                       {"type": "mount"}],
    },
}


def test_a_podman_bundle_becomes_a_create_body() -> None:
    spec = translate(PODMAN, BUNDLE)
    body, host = spec.body, spec.body["HostConfig"]
    assert body["Entrypoint"] == ["uname", "-r"] and body["Cmd"] is None
    assert body["Image"] == ""
    assert body["Env"] == PODMAN["process"]["env"]
    assert body["WorkingDir"] == "/work"
    assert body["User"] == "1000:100"
    assert body["Hostname"] == "6513e4470aea"
    assert body["Tty"] is False and body["OpenStdin"] is True
    assert host["SteelcupRootfs"] == "/var/lib/containers/storage/overlay/abc/merged"
    assert host["GroupAdd"] == ["10"]
    assert host["Binds"] == ["/srv/data:/data:ro"]
    assert host["Tmpfs"] == {"/scratch": "size=1m,mode=1777"}
    # docker's default set minus what the bounding set lacks, plus what it adds
    assert host["CapAdd"] == ["CAP_SYS_PTRACE"]
    assert host["CapDrop"] == ["CAP_AUDIT_WRITE", "CAP_MKNOD", "CAP_NET_RAW"]
    assert host["Ulimits"] == [{"Name": "nofile", "Soft": 1024, "Hard": 1024},
                               {"Name": "core", "Soft": -1, "Hard": -1}]
    assert host["Memory"] == 256 << 20
    assert host["NanoCpus"] == 1_500_000_000 and host["CpuShares"] == 512
    assert host["PidsLimit"] == 2048
    assert host["Sysctls"] == {"net.ipv4.ping_group_range": "0 0"}
    # the engine's netns: the VM's NIC goes there, none of the daemon's networks
    assert host["NetworkMode"] == "none" and host["SteelcupNetns"] == "/run/netns/n1"
    assert host["ReadonlyRootfs"] is False
    assert spec.annotations == {"io.container.manager": "libpod"}
    assert not spec.terminal


def test_a_relative_root_is_in_the_bundle_and_readonly_and_terminal_are_kept() -> None:
    doc = copy.deepcopy(PODMAN)
    doc["root"] = {"path": "rootfs", "readonly": True}
    doc["process"]["terminal"] = True
    doc["linux"]["namespaces"] = [{"type": "network"}]  # a new, empty one
    spec = translate(doc, BUNDLE)
    assert spec.body["HostConfig"]["SteelcupRootfs"] == BUNDLE + "/rootfs"
    assert spec.body["HostConfig"]["ReadonlyRootfs"] is True
    assert spec.body["HostConfig"]["NetworkMode"] == "none"
    assert "SteelcupNetns" not in spec.body["HostConfig"]
    assert spec.terminal and spec.body["Tty"] is True


def test_every_capability_is_privileged_and_its_devices_are_the_vms() -> None:
    from steelcup.runtime.capabilities import NAMES

    doc = copy.deepcopy(PODMAN)
    doc["process"]["capabilities"] = {"bounding": list(NAMES)}
    doc["linux"]["devices"] = [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}]
    host = translate(doc, BUNDLE).body["HostConfig"]
    assert host["Privileged"] is True and "CapAdd" not in host and "CapDrop" not in host
    assert translate(PODMAN, BUNDLE).body["HostConfig"]["Privileged"] is False
    # podman --privileged: its annotation (its bounding set may lack a capability or two)
    doc = copy.deepcopy(PODMAN)
    doc["annotations"]["io.podman.annotations.privileged"] = "TRUE"
    doc["linux"]["devices"] = [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}]
    assert translate(doc, BUNDLE).body["HostConfig"]["Privileged"] is True


def test_empty_hooks_are_fine() -> None:
    doc = copy.deepcopy(PODMAN)
    doc["hooks"] = {"prestart": []}
    assert translate(doc, BUNDLE).body["Entrypoint"] == ["uname", "-r"]


def test_no_capabilities_means_none() -> None:
    doc = copy.deepcopy(PODMAN)
    del doc["process"]["capabilities"]
    host = translate(doc, BUNDLE).body["HostConfig"]
    assert "CapAdd" not in host and len(host["CapDrop"]) == 14


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["mounts"].append({"destination": "/x", "type": "nfs", "source": "s:/e"}),
     "mount type 'nfs'"),
    (lambda d: d["mounts"].append({"destination": "/x", "type": "bind", "source": "rel"}),
     "absolute source"),
    (lambda d: d["process"].update(args=[]), "process.args"),
    (lambda d: d.pop("root"), "root.path"),
    (lambda d: d["process"]["user"].update(uid="root"), "uid and gid"),
    (lambda d: d.update(mounts={"a": 1}), "mounts must be a list"),
    (lambda d: d.update(hooks={"prestart": [{"path": "/bin/true"}]}), "hooks"),
    (lambda d: d["linux"].update(devices=[{"path": "/dev/fuse", "type": "c"}]),
     "linux.devices"),
    (lambda d: d["linux"].update(uidMappings=[{"containerID": 0, "hostID": 1000,
                                              "size": 1}]), "linux.uidMappings"),
    (lambda d: d["linux"].update(namespaces=[{"type": "network", "path": "netns-1"}]),
     "must be absolute"),
])
def test_what_cannot_be_honoured_is_refused_by_name(change: Any, message: str) -> None:
    doc = copy.deepcopy(PODMAN)
    change(doc)
    with pytest.raises(InvalidArgument, match=message):
        translate(doc, BUNDLE)


def test_a_pod_member_leaves_the_netns_to_its_sandbox() -> None:
    doc = copy.deepcopy(PODMAN)
    doc["annotations"] = {"io.kubernetes.cri.container-type": "container",
                          "io.kubernetes.cri.sandbox-id": "abc"}
    host = translate(doc, BUNDLE).body["HostConfig"]
    assert host["NetworkMode"] == "none" and "SteelcupNetns" not in host
    doc["annotations"]["io.kubernetes.cri.container-type"] = "sandbox"
    assert translate(doc, BUNDLE).body["HostConfig"]["SteelcupNetns"] == "/run/netns/n1"


def test_the_cgroups_path_is_the_keepers_and_a_vm_of_its_own_goes_there() -> None:
    assert translate(PODMAN, BUNDLE).cgroup == ""
    doc = copy.deepcopy(PODMAN)
    doc["linux"]["cgroupsPath"] = "/k8s.io/abc"
    spec = translate(doc, BUNDLE)
    assert spec.cgroup == spec.body["HostConfig"]["SteelcupCgroup"] == "/k8s.io/abc"
    doc["linux"]["cgroupsPath"] = "kubepods-pod1.slice:cri-containerd:abc"
    spec = translate(doc, BUNDLE, systemd_cgroup=True)
    assert spec.cgroup == "/kubepods.slice/kubepods-pod1.slice/cri-containerd-abc.scope"
    # a member's keeper only: its VM is the sandbox's, in the sandbox's cgroup
    doc["annotations"] = {"io.kubernetes.cri.container-type": "container",
                          "io.kubernetes.cri.sandbox-id": "sb"}
    member = translate(doc, BUNDLE, systemd_cgroup=True)
    assert member.cgroup and "SteelcupCgroup" not in member.body["HostConfig"]
    doc["linux"]["cgroupsPath"] = "/k8s.io/../../etc"
    with pytest.raises(InvalidArgument, match="linux.cgroupsPath must not contain"):
        translate(doc, BUNDLE)


def test_no_network_namespace_is_the_daemons_default_networking() -> None:
    doc = copy.deepcopy(PODMAN)
    doc["linux"]["namespaces"] = [{"type": "pid"}, {"type": "mount"}]
    spec = translate(doc, BUNDLE)
    host = spec.body["HostConfig"]
    assert host["NetworkMode"] == "" and "SteelcupNetns" not in host
    assert spec.resolv_conf == ""  # the daemon's network's DNS, not the engine's


def test_on_the_engines_network_its_resolv_conf_gives_the_dns_settings() -> None:
    assert translate(PODMAN, BUNDLE).resolv_conf == "/run/c1/resolv.conf"
    text = ("# written by podman\nsearch corp.example\nnameserver 10.0.2.3\n"
            "nameserver 192.168.1.1 ; second\noptions ndots:5 edns0\nsearch dns.podman "
            "lan\nnameserver\n")
    assert resolv_settings(text) == {"Dns": ["10.0.2.3", "192.168.1.1"],
                                     "DnsSearch": ["dns.podman", "lan"],
                                     "DnsOptions": ["ndots:5", "edns0"]}
    assert resolv_settings("") == {}


def test_a_document_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="JSON object"):
        translate([], BUNDLE)


def test_update_resources_take_what_steelcup_acts_on() -> None:
    from steelcup.oci.bundle import resources_body

    assert resources_body({"memory": {"limit": 400 << 20, "swap": 800 << 20},
                           "cpu": {"quota": 200000, "period": 100000}}) == {
        "Memory": 400 << 20, "NanoCpus": 2_000_000_000}
    assert resources_body({}) == {}
