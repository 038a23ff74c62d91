/* ctlimits (not <limits.h>): a container's limits. Rlimits of its processes (START's RLIMIT),
 * sysctls of the VM (SYSCTL) and the pids cgroup of its processes (SETUP_ROOT's PIDS_MAX). */
#ifndef STEELCUP_CTLIMITS_H
#define STEELCUP_CTLIMITS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>

/* Where the init mounts cgroup2 (in the initramfs: no container sees it). */
#define CTLIMITS_CGROUP_ROOT "/run/cgroup"
#define CTLIMITS_CGROUP_NAME "container"

/* Parses "NAME=SOFT:HARD" (docker's ulimit names: nofile, nproc, core, ...; -1 = unlimited;
 * SOFT <= HARD) into *resource and *rl. Returns 0 or -EINVAL. Pure. */
int ctlimits_parse_rlimit(const char *spec, int *resource, struct rlimit *rl);
/* Splits "KEY=VALUE" (KEY dotted, e.g. net.core.somaxconn: components of [A-Za-z0-9_-], no
 * empty one; VALUE non-empty, no newline) into "/proc/sys/net/core/somaxconn" and VALUE.
 * Returns 0, -EINVAL or -ENAMETOOLONG. Pure. */
int ctlimits_sysctl_path(const char *spec, char *path, size_t pathlen, const char **value);
/* Writes one "KEY=VALUE" sysctl; 0 or -errno with msg naming the key. */
int ctlimits_sysctl_write(const char *spec, char *msg, unsigned msglen);
/* Mounts cgroup2, enables the pids controller and makes the container's cgroup with pids.max =
 * max (> 0). Returns 0 or -errno with msg. */
int ctlimits_pids_setup(uint32_t max, char *msg, unsigned msglen);
/* Moves the caller into the container's cgroup when ctlimits_pids_setup made one (else nothing).
 * Returns 0 or -errno. */
int ctlimits_pids_join(void);

#endif
