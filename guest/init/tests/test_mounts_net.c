/* Unit tests of the MOUNT target walk (real syscalls in a temp dir) and the MAC parser. */
#define _GNU_SOURCE
#include "../mounts.h"
#include "../net.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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

void main_log(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static int is_dir(const char *base, const char *rel)
{
	char p[1024];
	struct stat st;
	snprintf(p, sizeof(p), "%s/%s", base, rel);
	return lstat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static void test_open_target(void)
{
	char tmpl[] = "/tmp/steelcup-mnt-XXXXXX";
	char *base = mkdtemp(tmpl);
	CHECK(base != NULL, "mkdtemp");
	if (!base)
		return;
	char root[256], outside[256], p[512];
	snprintf(root, sizeof(root), "%s/root", base);
	snprintf(outside, sizeof(outside), "%s/outside", base);
	mkdir(root, 0755);
	mkdir(outside, 0755);
	snprintf(p, sizeof(p), "%s/escape", root);
	CHECK(symlink(outside, p) == 0, "symlink");
	snprintf(p, sizeof(p), "%s/rel", root);
	CHECK(symlink("../outside", p) == 0, "symlink rel");
	snprintf(p, sizeof(p), "%s/file", root);
	close(open(p, O_CREAT | O_WRONLY, 0644));
	int rootfd = open(root, O_PATH | O_DIRECTORY);

	int fd = mounts_open_target(rootfd, "/data/a//b/./c");
	CHECK(fd >= 0, "create nested: %s", strerror(-fd));
	if (fd >= 0)
		close(fd);
	CHECK(is_dir(root, "data/a/b/c"), "nested dirs created");
	fd = mounts_open_target(rootfd, "/data/a");
	CHECK(fd >= 0, "existing dir");
	if (fd >= 0)
		close(fd);
	fd = mounts_open_target(rootfd, "/");
	CHECK(fd >= 0, "root itself");
	if (fd >= 0)
		close(fd);

	CHECK(mounts_open_target(rootfd, "/escape/x") == -ELOOP, "absolute symlink refused");
	CHECK(mounts_open_target(rootfd, "/rel") == -ELOOP, "relative symlink refused");
	CHECK(!is_dir(outside, "x"), "nothing created outside the root");
	CHECK(mounts_open_target(rootfd, "/data/../../x") == -EINVAL, ".. refused");
	CHECK(mounts_open_target(rootfd, "data") == -EINVAL, "relative target refused");
	CHECK(mounts_open_target(rootfd, "/file/x") == -ENOTDIR, "file component");
	close(rootfd);
	char cmd[4300];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", base);
	CHECK(system(cmd) == 0, "cleanup");
}

static void test_parse_mac(void)
{
	uint8_t m[6];
	CHECK(net_parse_mac("52:54:00:aB:0c:FF", m) == 0 && m[0] == 0x52 && m[3] == 0xab &&
		      m[5] == 0xff,
	      "good mac");
	CHECK(net_parse_mac("52:54:00:ab:0c", m) == -EINVAL, "short mac");
	CHECK(net_parse_mac("52:54:00:ab:0c:ff:", m) == -EINVAL, "trailing");
	CHECK(net_parse_mac("52-54-00-ab-0c-ff", m) == -EINVAL, "dashes");
	CHECK(net_parse_mac("5:54:00:ab:0c:ff0", m) == -EINVAL, "misaligned");
	CHECK(net_parse_mac("", m) == -EINVAL, "empty");
}

int main(void)
{
	test_open_target();
	test_parse_mac();
	printf("test_mounts_net: %d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
