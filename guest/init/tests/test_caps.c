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

static int passed, failed;

#define CHECK(cond, ...)                                                   \
	do {                                                               \
		if (cond) {                                                \
			passed++;                                          \
		} else {                                                   \
			failed++;                                          \
			fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
			fprintf(stderr, __VA_ARGS__);                      \
			fputc('\n', stderr);                               \
		}                                                          \
	} while (0)

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

/* In a child: limit, then check every set. Returns the number of failures as exit status. */
static int limited_child(void)
{
	uint64_t keep = caps_default();
	int rc = caps_limit(keep);
	CHECK(rc == 0, "caps_limit: %s", strerror(-rc));
	for (int cap = 0; cap < 64; cap++) {
		int in = prctl(PR_CAPBSET_READ, cap, 0, 0, 0);
		if (in < 0)
			break;
		CHECK(in == !!(keep & CAPS_BIT(cap)), "bounding set: cap %d is %d", cap, in);
		int amb = prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, cap, 0, 0);
		CHECK(amb <= 0, "ambient cap %d still set", cap);
	}
	struct hdr h = {.version = 0x20080522, .pid = 0};
	struct data d[2];
	CHECK(syscall(SYS_capget, &h, d) == 0, "capget: %s", strerror(errno));
	uint64_t eff = d[0].effective | (uint64_t)d[1].effective << 32;
	uint64_t perm = d[0].permitted | (uint64_t)d[1].permitted << 32;
	CHECK(eff == keep && perm == keep, "effective %llx permitted %llx, want %llx",
	      (unsigned long long)eff, (unsigned long long)perm, (unsigned long long)keep);
	CHECK(d[0].inheritable == 0 && d[1].inheritable == 0, "inheritable set not empty");
	/* What the set is for: no ptrace-class access, but setuid still works. */
	CHECK(prctl(PR_CAPBSET_READ, CAPS_SYS_PTRACE, 0, 0, 0) == 0, "CAP_SYS_PTRACE kept");
	CHECK(setuid(65534) == 0, "setuid with the default set: %s", strerror(errno));
	return failed;
}

static void test_limit_for_real(void)
{
	if (geteuid() != 0) {
		fprintf(stderr, "test_caps: not root, skipping the drop itself\n");
		return;
	}
	pid_t pid = fork();
	if (pid == 0)
		_exit(limited_child() ? 1 : 0);
	int st = 0;
	CHECK(pid > 0 && waitpid(pid, &st, 0) == pid, "fork/wait");
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the limited child found failures (above)");
	passed++;
}

int main(void)
{
	test_default_set();
	test_limit_for_real();
	printf("test_caps: %d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
