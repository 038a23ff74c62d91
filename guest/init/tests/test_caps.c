/* Unit tests of the container capability set: docker's default, applied for real in a child
 * (when run as root: the drop itself is a syscall test). */
#define _GNU_SOURCE
#include "../caps.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

static void test_default_set(void)
{
	uint64_t d = caps_default();
	CHECK(__builtin_popcountll(d) == 14, "docker's default set has 14 capabilities, not %d",
	      __builtin_popcountll(d));
	CHECK(!(d & CAPS_BIT(CAPS_SYS_PTRACE)), "CAP_SYS_PTRACE must not be in the default set");
	CHECK(!(d & CAPS_BIT(CAPS_SYS_ADMIN)), "CAP_SYS_ADMIN must not be in the default set");
	CHECK(!(d & CAPS_BIT(CAPS_NET_ADMIN)), "CAP_NET_ADMIN must not be in the default set");
	CHECK((d & CAPS_BIT(CAPS_SETUID)) && (d & CAPS_BIT(CAPS_SETGID)) &&
		      (d & CAPS_BIT(CAPS_SYS_CHROOT)) && (d & CAPS_BIT(CAPS_NET_RAW)),
	      "setuid/setgid/chroot/net_raw are in the default set");
}

struct hdr {
	uint32_t version;
	int pid;
};
struct data {
	uint32_t effective, permitted, inheritable;
};

static uint64_t get_caps(int which)
{
	struct hdr h = {.version = 0x20080522, .pid = 0};
	struct data d[2];
	if (syscall(SYS_capget, &h, d) < 0)
		return ~UINT64_C(0);
	if (which == 'e')
		return d[0].effective | (uint64_t)d[1].effective << 32;
	if (which == 'p')
		return d[0].permitted | (uint64_t)d[1].permitted << 32;
	return d[0].inheritable | (uint64_t)d[1].inheritable << 32;
}

/* The capabilities this process may hold: its bounding set (every capability the kernel knows,
 * unless the test itself runs confined, as in a container). */
static uint64_t kernel_caps(void)
{
	uint64_t all = 0;
	for (int cap = 0; cap < 64; cap++) {
		int in = prctl(PR_CAPBSET_READ, cap, 0, 0, 0);
		if (in < 0)
			break;
		if (in)
			all |= CAPS_BIT(cap);
	}
	return all;
}

/* In a child, as proc.c does: bound, switch to uid (and gid), limit; then check every set.
 * Returns the number of failures as exit status. */
static int limited_child(uint64_t keep, uid_t uid)
{
	failed = 0; /* count this child's failures only */
	uint64_t known = kernel_caps();
	int rc = caps_bound(keep);
	CHECK(rc == 0, "caps_bound(%llx): %s", (unsigned long long)keep, strerror(-rc));
	if (uid != 0)
		CHECK(setgid(uid) == 0 && setuid(uid) == 0, "setuid(%d) with %llx: %s", (int)uid,
		      (unsigned long long)keep, strerror(errno));
	rc = caps_limit(keep);
	CHECK(rc == 0, "caps_limit: %s", strerror(-rc));
	for (int cap = 0; cap < 64; cap++) {
		int in = prctl(PR_CAPBSET_READ, cap, 0, 0, 0);
		if (in < 0)
			break;
		CHECK(in == !!(keep & known & CAPS_BIT(cap)), "bounding set: cap %d is %d", cap, in);
		int amb = prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, cap, 0, 0);
		CHECK(amb <= 0, "ambient cap %d still set", cap);
	}
	/* root keeps the set; anyone else has nothing permitted or effective (docker, runc) */
	uint64_t want = uid == 0 ? keep & known : 0;
	uint64_t eff = get_caps('e'), perm = get_caps('p');
	CHECK(eff == want && perm == want, "uid %d: effective %llx permitted %llx, want %llx",
	      (int)uid, (unsigned long long)eff, (unsigned long long)perm, (unsigned long long)want);
	CHECK(get_caps('i') == 0, "inheritable set not empty");
	if (uid == 0 && keep == caps_default()) {
		/* What the default set is for: no ptrace-class access, but setuid still works. */
		CHECK(prctl(PR_CAPBSET_READ, CAPS_SYS_PTRACE, 0, 0, 0) == 0, "CAP_SYS_PTRACE kept");
		CHECK(setuid(65534) == 0, "setuid with the default set: %s", strerror(errno));
	}
	return failed;
}

static void in_child(uint64_t keep, uid_t uid)
{
	pid_t pid = fork();
	if (pid == 0)
		_exit(limited_child(keep, uid) ? 1 : 0);
	int st = 0;
	CHECK(pid > 0 && waitpid(pid, &st, 0) == pid, "fork/wait");
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "set %llx uid %d: the child found failures "
	      "(above)", (unsigned long long)keep, (int)uid);
}

static void test_limit_for_real(void)
{
	if (geteuid() != 0) {
		fprintf(stderr, "test_caps: not root, skipping the drop itself\n");
		return;
	}
	uint64_t d = caps_default();
	in_child(d, 0);
	in_child(d | CAPS_BIT(CAPS_SYS_PTRACE) | CAPS_BIT(CAPS_NET_ADMIN), 0); /* --cap-add */
	in_child(d & ~CAPS_BIT(CAPS_CHOWN), 0);                                /* --cap-drop */
	in_child(0, 0);            /* --cap-drop ALL */
	in_child(~UINT64_C(0), 0); /* --privileged: bits past the kernel's last one are ignored */
	in_child(d, 65534);        /* --user: bounding set only */
	/* --cap-drop SETUID --user 65534 (and --cap-drop ALL): the uid still changes */
	in_child(d & ~(CAPS_BIT(CAPS_SETUID) | CAPS_BIT(CAPS_SETGID)), 65534);
	in_child(0, 65534);
}

int main(void)
{
	test_default_set();
	test_limit_for_real();
	printf("test_caps: %d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
