"""Where the daemon keeps its state and serves its API unless told otherwise.

Imported by the CLI on every start, so it imports nothing but `os` (paths are plain strings).
"""

from __future__ import annotations

import os

DEFAULT_ROOT = "/var/lib/steelcup"
DEFAULT_SOCKET = "/run/steelcup/steelcup.sock"

# Daemon settings the CLI shows in `steelcup daemon --help` (config.DaemonOptions uses them).
VM_MAX_MEM_MIB = 2048  # the most a clone can grow to (template RAM)
VM_MAX_CPUS = 4  # the most vCPUs a clone has (present in the templates of `--cpus` > 1)
VM_POOL_SIZE = 2  # ready (restored, warmed) VMs kept per tenant and NIC count
TCG_TB_MIB = 128  # TCG translation cache per VM (docs/benchmarks.md: a clone's first Python)
VM_MEM_OVERHEAD_MIB = 0  # a VM's memory limit beyond -m; 0 = QEMU's measured need + TCG cache
LAYER_MAX_GIB = 8  # an image layer's uncompressed size
LAYER_MAX_RATIO = 100  # how many times a compressed layer may expand (past 64 MiB)
STORAGE_SIZE_DEFAULT = "10G"  # a container's writable layer unless it asks (--storage-opt)
# QEMU runs as root of a user namespace whose ids 0..65535 are host ids from here on
# (steelcup.idmap): a range no host user or subuid allocation uses.
USERNS_BASE = 1_000_000_000
VOLUME_SIZE_DEFAULT = "10G"  # a new volume unless it asks (volume create --opt size=)
LOG_MAX_SIZE = "20m"  # a container log file's size before it rotates (json-file max-size)
LOG_MAX_FILE = 5  # log files kept per container (json-file max-file)
# The label a container asks its size class with (`steelcup run --size m1` sends it; the docker
# CLI: `-l sh.steelcup.size=m1`); steelcup.tenancy.sizing.
SIZE_LABEL = "sh.steelcup.size"
# `run --sg A --sg B` sends the groups a new container joins as this label ("A,B"):
# docs/networking.md, security groups
SECURITY_GROUPS_LABEL = "sh.steelcup.security-groups"
# docs/networking.md, floating IPs: `run --fip IP` attaches the tenant's FIP IP at create
FIP_LABEL = "sh.steelcup.fip"


def default_socket() -> str:
    """The API socket the CLI uses: $STEELCUP_HOST (unix://PATH or PATH) or the default."""
    env = os.environ.get("STEELCUP_HOST", "")
    return env.removeprefix("unix://") if env else DEFAULT_SOCKET


def default_root() -> str:
    """The state root: $STEELCUP_ROOT or /var/lib/steelcup."""
    return os.environ.get("STEELCUP_ROOT", "") or DEFAULT_ROOT
