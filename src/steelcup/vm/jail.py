"""What a QEMU process may do on the host: set up in the forked child just before it execs QEMU.

QEMU runs as root of a user namespace (steelcup.userns): an unprivileged host uid, whose
capabilities reach only the files stored with the VM's shifted ids (steelcup.idmap). Without one
(`--no-userns`) it runs as host root. Either way its root is narrowed:
- capability bounding set: only what 9p passthrough needs (`KEEP_CAPS`);
  everything else (modules, mounts, ptrace, raw I/O, mknod, setuid, ...) is gone after exec
  and cannot come back;
- no new privileges (setuid binaries or file capabilities cannot raise them);
- its memory cgroup (vm/cgroup.py), joined before anything else;
- death signal: the daemon's thread that spawned it (vm/machine.py's one spawner thread, which
  lives as long as the daemon) dies, QEMU gets SIGKILL (not with live
  restore, `die_with_daemon=False`: the VM outlives the daemon, docs/live-restore.md);
- a clone's extra seccomp filter (vm/seccomp.py), on top of QEMU's own `-sandbox`
  (vm/qemu_args.py);
- no transparent huge pages: QEMU asks for them on its translation cache and hash table, and
  the host's `madvise` mode gives them, so an idle clone held both in whole 2 MiB pages (2.4
  MiB more private memory, no faster: docs/benchmarks.md, issue 19).

`enter()` runs between fork and exec: async-signal-safe in spirit (prctl calls with values
computed before the fork).
"""

from __future__ import annotations

import functools
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from steelcup import namespaces, userns
from steelcup.libc import PRCTL, last_error
from steelcup.vm import cgroup, seccomp

_PR_SET_PDEATHSIG = 1
_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_THP_DISABLE = 41  # inherited across fork and kept across execve

# linux/capability.h numbers
CAP_CHOWN = 0
CAP_DAC_OVERRIDE = 1
CAP_DAC_READ_SEARCH = 2
CAP_FOWNER = 3
CAP_FSETID = 4
# 9p passthrough creates and chowns files as the guest's uid/gid and keeps their modes
# (CHOWN, DAC_*, FOWNER, FSETID). No NET_ADMIN: QEMU attaches to taps its uid owns
# (net/links.py create_tap), and a QEMU that could reconfigure the host's network could
# flush the firewall between tenants.
KEEP_CAPS = frozenset({CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER,
                       CAP_FSETID})
_CAP_LAST_CAP_FALLBACK = 40


@functools.cache
def last_cap(path: Path = Path("/proc/sys/kernel/cap_last_cap")) -> int:
    """The highest capability number this kernel knows (read once: it cannot change)."""
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return _CAP_LAST_CAP_FALLBACK


def caps_to_drop(last: int, keep: frozenset[int] = KEEP_CAPS) -> tuple[int, ...]:
    return tuple(c for c in range(last + 1) if c not in keep)


@dataclass(frozen=True)
class Jail:
    """Everything `enter` needs, computed in the parent."""

    nice: int = 0
    drop_caps: tuple[int, ...] = ()
    filter_prog: bytes | None = None
    netns: str | None = None  # a named network namespace (`ip netns`) to run QEMU in
    cgroup_procs: str | None = None  # the VM's memory cgroup (its procs file) to join
    # a container's cgroup in the other hierarchies (HostConfig.SteelcupCgroup): procs files
    more_cgroup_procs: tuple[str, ...] = ()
    # A user namespace (steelcup.userns) whose root QEMU becomes: an unprivileged host uid.
    userns_fd: int | None = None
    die_with_daemon: bool = True  # PR_SET_PDEATHSIG SIGKILL

    def enter(self) -> None:
        # The memory cgroup first: QEMU never runs a guest instruction outside its limit.
        if self.cgroup_procs is not None:
            cgroup.join(self.cgroup_procs)
        for procs in self.more_cgroup_procs:
            cgroup.join(procs)
        death = int(signal.SIGKILL) if self.die_with_daemon else 0
        PRCTL(_PR_SET_PDEATHSIG, death, 0, 0, 0)
        if self.netns is not None:  # while we still may (CAP_SYS_ADMIN goes below)
            namespaces.enter_netns(self.netns)
        if PRCTL(_PR_SET_THP_DISABLE, 1, 0, 0, 0) != 0:
            raise last_error("PR_SET_THP_DISABLE")
        if self.nice:
            os.setpriority(os.PRIO_PROCESS, 0, self.nice)  # QEMU's threads inherit it
        if self.userns_fd is not None:
            # Last of what needs host root; joining resets the bounding set (narrowed below)
            # and the id change clears the death signal (set again).
            userns.enter(self.userns_fd)
            PRCTL(_PR_SET_PDEATHSIG, death, 0, 0, 0)
        for cap in self.drop_caps:
            if PRCTL(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and os.geteuid() == 0:
                raise last_error(f"PR_CAPBSET_DROP {cap}")
        if PRCTL(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise last_error("PR_SET_NO_NEW_PRIVS")
        if self.filter_prog is not None:
            # an OSError here fails the exec: QEMU never runs unfiltered
            seccomp.install(self.filter_prog)


def jail_for(*, nice: int, filter_prog: bytes | None, netns: str | None = None,
             cgroup_procs: str | None = None, userns_fd: int | None = None,
             die_with_daemon: bool = True, more_cgroup_procs: tuple[str, ...] = ()) -> Jail:
    # Without root there is no bounding set to narrow (and nothing to drop it with).
    drops = caps_to_drop(last_cap()) if os.geteuid() == 0 else ()
    return Jail(nice=nice, drop_caps=drops, filter_prog=filter_prog, netns=netns,
                cgroup_procs=cgroup_procs, userns_fd=userns_fd,
                die_with_daemon=die_with_daemon, more_cgroup_procs=more_cgroup_procs)
