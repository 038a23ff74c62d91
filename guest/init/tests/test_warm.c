/* Unit tests of the network warm-up (warm.h), run for real on the test host's loopback: the
 * exchange completes with a file larger than what it sends, a small one and an empty one, and a
 * missing file fails at its open, naming it. */
#define _GNU_SOURCE
#include "../warm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

static void write_file(const char *path, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	CHECK(fd >= 0, "create %s: %s", path, strerror(errno));
	char block[4096];
	memset(block, 'w', sizeof(block));
	for (size_t done = 0; fd >= 0 && done < len;) {
		size_t n = len - done < sizeof(block) ? len - done : sizeof(block);
		CHECK(write(fd, block, n) == (ssize_t)n, "write %s", path);
		done += n;
	}
	if (fd >= 0)
		close(fd);
}

static void test_exchange(const char *dir, const char *name, size_t len)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	write_file(path, len);
	const char *step = "unset";
	int rc = warm_network(path, &step);
	CHECK(rc == 0, "a %zu-byte file: %s: %s", len, step, strerror(-rc));
	unlink(path);
}

static void test_missing_file(const char *dir)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/missing", dir);
	const char *step = "unset";
	int rc = warm_network(path, &step);
	CHECK(rc == -ENOENT, "a missing file: %d, not -ENOENT", rc);
	CHECK(strcmp(step, "open") == 0, "the failed step is named: %s", step);
}

int main(void)
{
	char dir[] = "/tmp/steelcup-warm-XXXXXX";
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	test_exchange(dir, "large", 1024 * 1024); /* sends its first 32 KiB */
	test_exchange(dir, "small", 100);
	test_exchange(dir, "empty", 0);
	test_missing_file(dir);
	rmdir(dir);
	printf("test_warm: %d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
