/* Pod members: further container roots in an already running VM, each a directory of a 9p share
 * that the host fills after boot (a microvm takes no new devices), bound at its own path. The
 * VM's network, IPC and UTS namespaces are every member's; the PID and mount namespaces are
 * their own (proc.c). */
#define _GNU_SOURCE
#include "pods.h"

#include "init.h"
#include "mounts.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>

#define MAX_SHARES 8

static unsigned char ready[PODS_MAX];
/* Shares mounted under PODS_SHARE_DIR (a 9p tag can be mounted only once at a time). */
static char shares[MAX_SHARES][256];

int pods_root_path(uint32_t n, char *out, size_t outlen)
{
	if (n >= PODS_MAX)
		return -EINVAL;
	int len = n == 0 ? snprintf(out, outlen, "%s", INIT_ROOT)
			 : snprintf(out, outlen, "%s/%u", PODS_ROOT_DIR, (unsigned)n);
	return len < 0 || (size_t)len >= outlen ? -ENAMETOOLONG : 0;
}

int pods_share_path(const char *tag, char *out, size_t outlen)
{
	size_t len = strlen(tag);
	if (len == 0 || len >= sizeof(shares[0]) || strchr(tag, '/') || strcmp(tag, ".") == 0 ||
	    strcmp(tag, "..") == 0)
		return -EINVAL;
	int n = snprintf(out, outlen, "%s/%s", PODS_SHARE_DIR, tag);
	return n < 0 || (size_t)n >= outlen ? -ENAMETOOLONG : 0;
}

int pods_ready(uint32_t n)
{
	return n > 0 && n < PODS_MAX && ready[n];
}

/* Mounts the share once; later members of the same tag use the same mount. */
static int share_mounted(const char *tag, const char *dir, char *msg, unsigned msglen)
{
	int free_slot = -1;
	for (int i = 0; i < MAX_SHARES; i++) {
		if (strcmp(shares[i], tag) == 0)
			return 0;
		if (!shares[i][0] && free_slot < 0)
			free_slot = i;
	}
	if (free_slot < 0) {
		snprintf(msg, msglen, "more than %d shares hold pod members", MAX_SHARES);
		return -ENOSPC;
	}
	int rc = mounts_mkdir_p(dir, 0700);
	if (rc == 0 && mount(tag, dir, "9p", 0, MOUNTS_NINEP_OPTIONS) < 0)
		rc = -errno;
	if (rc < 0) {
		snprintf(msg, msglen, "mount 9p %s: %s", tag, strerror(-rc));
		return rc;
	}
	snprintf(shares[free_slot], sizeof(shares[free_slot]), "%s", tag);
	return 0;
}

int pods_share_mount(const char *tag, char *out, size_t outlen, char *msg, unsigned msglen)
{
	if (pods_share_path(tag, out, outlen) < 0) {
		snprintf(msg, msglen, "bad SOURCE share tag: %s", tag);
		return -EINVAL;
	}
	return share_mounted(tag, out, msg, msglen);
}

int pods_setup(uint32_t n, const char *tag, const char *subdir, int readonly, char *msg,
	       unsigned msglen)
{
	char root[256], share[300];
	if (n == 0 || pods_root_path(n, root, sizeof(root)) < 0) {
		snprintf(msg, msglen, "CONTAINER %u is not a pod member (1..%d)", (unsigned)n,
			 PODS_MAX - 1);
		return -EINVAL;
	}
	if (ready[n]) {
		snprintf(msg, msglen, "container %u has a root already", (unsigned)n);
		return -EBUSY;
	}
	if (!subdir[0]) {
		snprintf(msg, msglen, "a pod member's SETUP_ROOT needs a SUBDIR");
		return -EINVAL;
	}
	if (pods_share_path(tag, share, sizeof(share)) < 0) {
		snprintf(msg, msglen, "bad SOURCE for a pod member: %s", tag);
		return -EINVAL;
	}
	int rc = share_mounted(tag, share, msg, msglen);
	if (rc == 0)
		rc = mounts_member_root(share, subdir, root, readonly, msg, msglen);
	if (rc < 0)
		return rc;
	ready[n] = 1;
	return 0;
}

void pods_release(uint32_t n)
{
	char root[256];
	if (!pods_ready(n) || pods_root_path(n, root, sizeof(root)) < 0)
		return;
	if (umount2(root, MNT_DETACH) < 0)
		main_log("umount %s: %s", root, strerror(errno));
	ready[n] = 0;
}
