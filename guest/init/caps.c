/* Capabilities of container processes: the set the host sent (docker's default when it sent
 * none), applied between fork and exec. */
#define _GNU_SOURCE
#include "caps.h"

#include <errno.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#define CAPS_VERSION_3 0x20080522

struct caps_header {
	uint32_t version;
	int pid;
};

struct caps_data {
	uint32_t effective, permitted, inheritable;
};

uint64_t caps_default(void)
{
	static const int set[] = {
		CAPS_CHOWN,   CAPS_DAC_OVERRIDE, CAPS_FSETID,     CAPS_FOWNER,
		CAPS_MKNOD,   CAPS_NET_RAW,      CAPS_SETGID,     CAPS_SETUID,
		CAPS_SETFCAP, CAPS_SETPCAP,      CAPS_NET_BIND_SERVICE, CAPS_SYS_CHROOT,
		CAPS_KILL,    CAPS_AUDIT_WRITE,
	};
	uint64_t mask = 0;
	for (unsigned i = 0; i < sizeof(set) / sizeof(set[0]); i++)
		mask |= CAPS_BIT(set[i]);
	return mask;
}

int caps_bound(uint64_t keep)
{
	/* The bounding set first: shrinking it needs CAP_SETPCAP, which `keep` may not hold. A
	 * number past the kernel's last capability is EINVAL: the end of the set. */
	for (int cap = 0; cap < 64; cap++) {
		if (keep & CAPS_BIT(cap))
			continue;
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) {
			if (errno == EINVAL)
				break;
			return -errno;
		}
	}
	/* EINVAL: a kernel without ambient capabilities (before 4.3) has none to clear. */
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
		return -errno;
	return 0;
}

int caps_limit(uint64_t keep)
{
	struct caps_header h = {.version = CAPS_VERSION_3, .pid = 0};
	struct caps_data d[2];
	if (syscall(SYS_capget, &h, d) < 0)
		return -errno;
	for (int i = 0; i < 2; i++) {
		uint32_t k = (uint32_t)(keep >> (32 * i));
		d[i].permitted &= k;
		d[i].effective &= k;
		d[i].inheritable = 0;
	}
	if (syscall(SYS_capset, &h, d) < 0)
		return -errno;
	return 0;
}
