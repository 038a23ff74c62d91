/* Capabilities of container processes: the set the host sent (docker's default when it sent
 * none), applied between fork and exec. */
#ifndef STEELCUP_CAPS_H
#define STEELCUP_CAPS_H

#include <stdint.h>

/* Capability numbers (linux/capability.h; musl ships no kernel headers). */
enum {
	CAPS_CHOWN = 0,
	CAPS_DAC_OVERRIDE = 1,
	CAPS_FOWNER = 3,
	CAPS_FSETID = 4,
	CAPS_KILL = 5,
	CAPS_SETGID = 6,
	CAPS_SETUID = 7,
	CAPS_SETPCAP = 8,
	CAPS_NET_BIND_SERVICE = 10,
	CAPS_NET_ADMIN = 12,
	CAPS_NET_RAW = 13,
	CAPS_SYS_CHROOT = 18,
	CAPS_SYS_PTRACE = 19,
	CAPS_SYS_ADMIN = 21,
	CAPS_MKNOD = 27,
	CAPS_AUDIT_WRITE = 29,
	CAPS_SETFCAP = 31,
};

#define CAPS_BIT(c) (UINT64_C(1) << (c))

/* Docker's default set (moby's oci/caps DefaultCapabilities). Without CAP_SYS_PTRACE a
 * container's root cannot reach a non-dumpable process's fds or memory (pidfd_getfd,
 * /proc/N/fd, ptrace), should it see one. */
uint64_t caps_default(void);

/* First half of limiting the calling process to `keep`, done before it changes uid: every other
 * capability leaves the bounding set (so no later exec, setuid binary or file capability brings
 * it back) and the ambient set is emptied. The permitted and effective sets are untouched, so
 * setuid/setgid still work when `keep` lacks CAP_SETUID (runc's order). Needs CAP_SETPCAP.
 * Returns 0 or -errno. */
int caps_bound(uint64_t keep);

/* Second half, after the uid change: the permitted and effective sets keep only `keep` (for a
 * non-root uid the kernel has already emptied them: what execve gives a non-root user, as docker
 * does), the inheritable set is emptied. Returns 0 or -errno. */
int caps_limit(uint64_t keep);

#endif
