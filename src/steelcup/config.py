"""Daemon settings: where state, sockets and guest assets live. Passed explicitly, never global."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from steelcup import defaults

# The CLI reads these on every start from steelcup.defaults (plain strings, no imports).
DEFAULT_ROOT = Path(defaults.DEFAULT_ROOT)
DEFAULT_SOCKET = Path(defaults.DEFAULT_SOCKET)


@dataclass(frozen=True)
class DaemonOptions:
    """Everything `steelcup daemon` needs to run."""

    root: Path = DEFAULT_ROOT
    socket: Path = DEFAULT_SOCKET
    accel: str = "auto"  # auto | kvm | tcg
    assets_dir: Path | None = None  # kernel + initrd; None = search the usual places
    vm_mem_mib: int = 256
    # A container with no -m starts at vm_mem_mib and grows on demand up to vm_max_mem_mib
    # (its VM's balloon deflates on OOM); False: vm_mem_mib is its limit.
    vm_mem_grows: bool = True
    vm_cpus: int = 1
    tcg_tb_mib: int = defaults.TCG_TB_MIB
    # Each VM's QEMU is limited from the host to its guest RAM plus this (0: the measured
    # default, vm.cgroup.overhead_mib).
    vm_mem_overhead_mib: int = defaults.VM_MEM_OVERHEAD_MIB
    debug: bool = False
    vm_templates: bool = True  # clone VMs from per-tenant templates (RAM shared copy-on-write)
    vm_max_mem_mib: int = defaults.VM_MAX_MEM_MIB
    vm_max_cpus: int = defaults.VM_MAX_CPUS
    vm_pool_size: int = defaults.VM_POOL_SIZE
    layer_max_gib: int = defaults.LAYER_MAX_GIB
    layer_max_ratio: int = defaults.LAYER_MAX_RATIO  # 0 = no expansion-ratio check
    storage_default_bytes: int = 10 << 30  # defaults.STORAGE_SIZE_DEFAULT
    volume_default_bytes: int = 10 << 30  # defaults.VOLUME_SIZE_DEFAULT
    log_max_bytes: int = 20 << 20  # defaults.LOG_MAX_SIZE; also the most a container may ask
    log_max_files: int = defaults.LOG_MAX_FILE
    # How each container's guest gets its root: "block" (the image's erofs as a disk under
    # the writable layer over 9p), "loose" (all over 9p with a page cache; the host syncs
    # around cp/diff/commit/export) or "none" (every access a 9p request);
    # docs/architecture.md
    rootfs_cache: str = "block"
    networking: bool = True
    # A graceful stop (or a crash) leaves running containers running (their VMs outlive the
    # daemon) for the next daemon to re-attach (docs/live-restore.md); False
    # (--no-live-restore): a stop stops them, and the next daemon exits what a crash left.
    live_restore: bool = True
    # QEMU runs as root of a user namespace whose guest ids are host ids userns_base+k
    # (steelcup.idmap); False: QEMU runs as (jailed) host root, as before.
    userns: bool = True
    userns_base: int = defaults.USERNS_BASE
    # Extra listeners: TLS with client certificates (dockerd's --tlsverify), or plain TCP
    # (loopback only, refused elsewhere).
    tls_listen: tuple[str, int] | None = None
    tcp_listen: tuple[str, int] | None = None
    # A plain HTTP listener serving only GET /metrics (docs/operations.md); None: the
    # operator's socket serves it alone.
    metrics_listen: tuple[str, int] | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # The TLS listener serves tenants (each request authenticates as one) instead of the
    # operator; its certificate names tls_names too. allow_tcg: serve tenants without KVM.
    multi_tenant: bool = False
    allow_tcg: bool = False
    tls_names: tuple[str, ...] = ()  # bridges, NAT, DNS; False = containers get loopback only
    # The func gateway (docs/funcs.md): each call authenticated by its func's secret or a
    # tenant's bearer token; TLS unless on loopback (func_listen_tls: there too).
    func_listen: tuple[str, int] | None = None
    func_listen_tls: bool = False
    # Floating IPs (docs/networking.md): the operator's pool (a CIDR) and the host interface
    # its addresses are answered on; None: no FIPs.
    fip_pool: str | None = None
    fip_interface: str | None = None
    # The web console (docs/console.md): its pages and the API, a bearer token per request;
    # TLS unless on loopback.
    console_listen: tuple[str, int] | None = None
