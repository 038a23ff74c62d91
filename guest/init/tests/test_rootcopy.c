/* Unit tests of the copy of a container root into RAM (SETUP_ROOT's CACHE 2): a real tree in a
 * temp dir copied with real syscalls, then compared entry by entry. */
#define _GNU_SOURCE
#include "../rootcopy.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"

static char src[256], dst[256];

static void put(const char *rel, const char *data, unsigned mode)
{
	char p[512];
	snprintf(p, sizeof(p), "%s/%s", src, rel);
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, mode);
	if (fd < 0 || write(fd, data, strlen(data)) != (ssize_t)strlen(data)) {
		perror(p);
		exit(2);
	}
	fchmod(fd, mode);
	close(fd);
}

static int lstat_in(const char *base, const char *rel, struct stat *st)
{
	char p[512];
	snprintf(p, sizeof(p), "%s/%s", base, rel);
	return lstat(p, st);
}

static char *read_in(const char *base, const char *rel)
{
	static char buf[256];
	char p[512];
	snprintf(p, sizeof(p), "%s/%s", base, rel);
	int fd = open(p, O_RDONLY);
	if (fd < 0)
		return NULL;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	buf[n < 0 ? 0 : n] = 0;
	return buf;
}

static int copy(char *msg, unsigned msglen)
{
	int s = open(src, O_RDONLY | O_DIRECTORY), d = open(dst, O_RDONLY | O_DIRECTORY);
	int rc = rootcopy_tree(s, d, msg, msglen);
	close(s);
	close(d);
	return rc;
}

static void test_copy_tree(void)
{
	char p[512], q[512], msg[300] = "";
	snprintf(p, sizeof(p), "%s/bin", src);
	mkdir(p, 0755);
	snprintf(p, sizeof(p), "%s/var", src);
	mkdir(p, 0755);
	snprintf(p, sizeof(p), "%s/var/log", src);
	mkdir(p, 0750);
	put("bin/busybox", "#!busybox\n", 04755);
	put("var/log/app.log", "line 1\nline 2\n", 0640);
	snprintf(p, sizeof(p), "%s/bin/busybox", src);
	snprintf(q, sizeof(q), "%s/bin/sh", src);
	CHECK(link(p, q) == 0, "link: %s", strerror(errno));
	snprintf(q, sizeof(q), "%s/bin/ls", src);
	CHECK(symlink("busybox", q) == 0, "symlink: %s", strerror(errno));
	snprintf(q, sizeof(q), "%s/dangling", src);
	CHECK(symlink("/nowhere/at/all", q) == 0, "symlink: %s", strerror(errno));
	snprintf(q, sizeof(q), "%s/var/fifo", src);
	CHECK(mkfifo(q, 0600) == 0 && chmod(q, 0620) == 0, "mkfifo: %s", strerror(errno));
	snprintf(p, sizeof(p), "%s/var/log/app.log", src);
	struct timespec old[2] = {{1000000, 5}, {2000000, 7}};
	utimensat(AT_FDCWD, p, old, 0);
	chmod(src, 0711);

	CHECK(copy(msg, sizeof(msg)) == 0, "copy failed: %s", msg);

	struct stat a, b;
	CHECK(lstat_in(dst, "bin/busybox", &a) == 0 && S_ISREG(a.st_mode) &&
		      (a.st_mode & 07777) == 04755, "busybox mode %o", a.st_mode);
	CHECK(lstat_in(dst, "bin/sh", &b) == 0 && a.st_ino == b.st_ino && b.st_nlink == 2,
	      "hard link not kept (ino %lu vs %lu, nlink %lu)", (unsigned long)a.st_ino,
	      (unsigned long)b.st_ino, (unsigned long)b.st_nlink);
	char *text = read_in(dst, "var/log/app.log");
	CHECK(text && strcmp(text, "line 1\nline 2\n") == 0, "content: %s", text ? text : "-");
	CHECK(lstat_in(dst, "var/log/app.log", &a) == 0 && a.st_mtim.tv_sec == 2000000 &&
		      a.st_mtim.tv_nsec == 7 && (a.st_mode & 07777) == 0640,
	      "times/mode not kept: %ld %o", (long)a.st_mtim.tv_sec, a.st_mode);
	CHECK(lstat_in(dst, "var/log", &a) == 0 && S_ISDIR(a.st_mode) &&
		      (a.st_mode & 07777) == 0750, "dir mode %o", a.st_mode);
	char target[64] = "";
	snprintf(p, sizeof(p), "%s/bin/ls", dst);
	ssize_t n = readlink(p, target, sizeof(target) - 1);
	CHECK(n == 7 && memcmp(target, "busybox", 7) == 0, "symlink target %.*s", (int)n, target);
	CHECK(lstat_in(dst, "dangling", &a) == 0 && S_ISLNK(a.st_mode), "dangling symlink lost");
	CHECK(lstat_in(dst, "var/fifo", &a) == 0 && S_ISFIFO(a.st_mode) &&
		      (a.st_mode & 0777) == 0620, "fifo %o", a.st_mode);
	CHECK(lstat(dst, &a) == 0 && (a.st_mode & 07777) == 0711, "top mode %o", a.st_mode);
}

static void test_copy_into_nonempty_fails(void)
{
	char msg[300] = "";
	/* The destination now holds the first copy: the copy refuses to overwrite (O_EXCL). */
	int rc = copy(msg, sizeof(msg));
	CHECK(rc == -EEXIST, "second copy: %d %s", rc, msg);
	CHECK(strstr(msg, "copy root:") != NULL, "msg names no step: %s", msg);
}

int main(void)
{
	const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	snprintf(src, sizeof(src), "%s/rootcopy-src-XXXXXX", tmp);
	snprintf(dst, sizeof(dst), "%s/rootcopy-dst-XXXXXX", tmp);
	if (!mkdtemp(src) || !mkdtemp(dst)) {
		perror("mkdtemp");
		return 2;
	}
	test_copy_tree();
	test_copy_into_nonempty_fails();
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s'", src, dst);
	if (system(cmd) != 0)
		fprintf(stderr, "cleanup of %s failed\n", src);
	printf("rootcopy: %d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
