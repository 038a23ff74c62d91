/* Unit tests of the container limits' parsers: RLIMIT specs and sysctl keys. */
#define _GNU_SOURCE
#include "../ctlimits.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "check.h"

static void test_rlimits(void)
{
	int res;
	struct rlimit rl;
	CHECK(ctlimits_parse_rlimit("nofile=1024:2048", &res, &rl) == 0 && res == RLIMIT_NOFILE &&
		      rl.rlim_cur == 1024 && rl.rlim_max == 2048,
	      "nofile=1024:2048");
	CHECK(ctlimits_parse_rlimit("core=-1:-1", &res, &rl) == 0 && res == RLIMIT_CORE &&
		      rl.rlim_cur == RLIM_INFINITY && rl.rlim_max == RLIM_INFINITY,
	      "-1 is unlimited");
	CHECK(ctlimits_parse_rlimit("nproc=0:-1", &res, &rl) == 0 && res == RLIMIT_NPROC &&
		      rl.rlim_cur == 0 && rl.rlim_max == RLIM_INFINITY,
	      "a finite soft limit under an unlimited hard one");
	CHECK(ctlimits_parse_rlimit("stack=8388608:8388608", &res, &rl) == 0 && res == RLIMIT_STACK,
	      "stack");
	static const char *const bad[] = {
		"nofile=2048:1024", /* soft over hard */
		"core=-1:0",        /* unlimited soft, finite hard */
		"nofile",           "nofile=", "nofile=1", "nofile=1:", "nofile=:1",
		"nofile=1:2:3",     "nofile=a:b", "nofile=-2:1", "nofile=1:2x", "bogus=1:1",
		"nofil=1:1",        "=1:1", "NOFILE=1:1",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK(ctlimits_parse_rlimit(bad[i], &res, &rl) == -EINVAL, "%s must be refused",
		      bad[i]);
}

static void test_sysctl_paths(void)
{
	char path[64];
	const char *value = NULL;
	CHECK(ctlimits_sysctl_path("net.core.somaxconn=1024", path, sizeof(path), &value) == 0 &&
		      strcmp(path, "/proc/sys/net/core/somaxconn") == 0 && strcmp(value, "1024") == 0,
	      "net.core.somaxconn -> %s", path);
	CHECK(ctlimits_sysctl_path("kernel.sem=250 32000 32 128", path, sizeof(path), &value) == 0 &&
		      strcmp(value, "250 32000 32 128") == 0,
	      "a value with spaces");
	CHECK(ctlimits_sysctl_path("net.ipv4.conf.eth-0.rp_filter=a=b", path, sizeof(path),
				   &value) == 0 &&
		      strcmp(path, "/proc/sys/net/ipv4/conf/eth-0/rp_filter") == 0 &&
		      strcmp(value, "a=b") == 0,
	      "'-' and '_' in keys; the value after the first '='");
	static const char *const bad[] = {
		"net.core.somaxconn",  "=1",        "net.core.somaxconn=", "net..core=1",
		".net.core=1",         "net.core.=1", "net/core=1",        "net.core.x/../y=1",
		"net.core.a b=1",      "net.core.x=1\n2",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK(ctlimits_sysctl_path(bad[i], path, sizeof(path), &value) == -EINVAL,
		      "%s must be refused", bad[i]);
	char tiny[16];
	CHECK(ctlimits_sysctl_path("net.core.somaxconn=1", tiny, sizeof(tiny), &value) ==
		      -ENAMETOOLONG,
	      "a path that does not fit");
}

int main(void)
{
	test_rlimits();
	test_sysctl_paths();
	printf("test_ctlimits: %d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
