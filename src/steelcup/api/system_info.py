"""GET /info: every key of the Engine API 1.43 `SystemInfo` schema, each with a true value for
this daemon (what it enforces, what the host has), plus steelcup's own `Steelcup` section."""

from __future__ import annotations

import logging
import os
import platform
import threading
import time
from pathlib import Path
from typing import Any

from steelcup.runtime.logs import format_time_ns

# The keys of SystemInfo in the 1.43 schema (docs/api/v1.43.yaml), in its order.
SCHEMA_KEYS = (
    "ID", "Containers", "ContainersRunning", "ContainersPaused", "ContainersStopped", "Images",
    "Driver", "DriverStatus", "DockerRootDir", "Plugins", "MemoryLimit", "SwapLimit",
    "KernelMemoryTCP", "CpuCfsPeriod", "CpuCfsQuota", "CPUShares", "CPUSet", "PidsLimit",
    "OomKillDisable", "IPv4Forwarding", "BridgeNfIptables", "BridgeNfIp6tables", "Debug", "NFd",
    "NGoroutines", "SystemTime", "LoggingDriver", "CgroupDriver", "CgroupVersion",
    "NEventsListener", "KernelVersion", "OperatingSystem", "OSVersion", "OSType", "Architecture",
    "NCPU", "MemTotal", "IndexServerAddress", "RegistryConfig", "GenericResources", "HttpProxy",
    "HttpsProxy", "NoProxy", "Name", "Labels", "ExperimentalBuild", "ServerVersion", "Runtimes",
    "DefaultRuntime", "Swarm", "LiveRestoreEnabled", "Isolation", "InitBinary",
    "ContainerdCommit", "RuncCommit", "InitCommit", "SecurityOptions", "ProductLicense",
    "DefaultAddressPools", "Warnings",
)


def host_facts() -> dict[str, Any]:
    """The keys that describe this host and process (read now, not cached)."""
    return {
        "Debug": logging.getLogger().isEnabledFor(logging.DEBUG),
        "NFd": _count(Path("/proc/self/fd")),
        "NGoroutines": threading.active_count(),  # the nearest thing: the daemon's threads
        "SystemTime": format_time_ns(time.time_ns()),
        "CgroupVersion": "2" if Path("/sys/fs/cgroup/cgroup.controllers").exists() else "1",
        "IPv4Forwarding": _sysctl("net/ipv4/ip_forward"),
        "BridgeNfIptables": _sysctl("net/bridge/bridge-nf-call-iptables"),
        "BridgeNfIp6tables": _sysctl("net/bridge/bridge-nf-call-ip6tables"),
        "KernelVersion": platform.release(),
        "OSVersion": _os_release().get("VERSION_ID", ""),
        "OSType": "linux",
        "Architecture": platform.machine(),
        "NCPU": os.cpu_count() or 1,
        "MemTotal": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        "HttpProxy": os.environ.get("HTTP_PROXY", os.environ.get("http_proxy", "")),
        "HttpsProxy": os.environ.get("HTTPS_PROXY", os.environ.get("https_proxy", "")),
        "NoProxy": os.environ.get("NO_PROXY", os.environ.get("no_proxy", "")),
        "Name": platform.node(),
    }


def fixed_facts(address_pool: str, event_listeners: int, live_restore: bool = False
                ) -> dict[str, Any]:
    """The keys that say what steelcup enforces: limits are per VM, from the host."""
    return {
        "Driver": "overlay",
        "DriverStatus": [],
        "Plugins": {"Volume": ["local"], "Network": ["bridge", "null"], "Authorization": None,
                    "Log": ["json-file"]},
        "MemoryLimit": True,  # a VM's RAM is its limit
        "SwapLimit": False,  # guests have no swap
        "KernelMemoryTCP": False,
        "CpuCfsPeriod": False,  # CpuPeriod/CpuQuota are refused: vCPUs are the CPU limit
        "CpuCfsQuota": False,
        "CPUShares": False,  # recorded, not enforced
        "CPUSet": False,
        "PidsLimit": False,
        "OomKillDisable": False,
        "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs",
        "NEventsListener": event_listeners,
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": {
            "AllowNondistributableArtifactsCIDRs": [],
            "AllowNondistributableArtifactsHostnames": [],
            "InsecureRegistryCIDRs": ["127.0.0.0/8", "::1/128"],
            "IndexConfigs": {"docker.io": {"Name": "docker.io", "Mirrors": [], "Secure": True,
                                           "Official": True}},
            "Mirrors": [],
        },
        "GenericResources": None,
        "Labels": [],
        "ExperimentalBuild": False,
        "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive",
                  "ControlAvailable": False, "Error": "", "RemoteManagers": None},
        "LiveRestoreEnabled": live_restore,  # --live-restore (docs/live-restore.md)
        "InitBinary": "",  # the guest's own init is every container's PID 1
        "ContainerdCommit": {"ID": "", "Expected": ""},
        "RuncCommit": {"ID": "", "Expected": ""},
        "InitCommit": {"ID": "", "Expected": ""},
        "ProductLicense": "",
        "DefaultAddressPools": [{"Base": address_pool, "Size": 24}],
    }


def _count(path: Path) -> int:
    try:
        return len(os.listdir(path))
    except OSError:
        return 0


def _sysctl(name: str) -> bool:
    try:
        return Path("/proc/sys", name).read_text().strip() == "1"
    except OSError:
        return False


def _os_release() -> dict[str, str]:
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key] = value.strip().strip('"')
    return out
