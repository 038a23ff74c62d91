/* Unit tests of pod members' roots: the paths, and (as root, in a child's own mount namespace)
 * a member root bound from a directory of a share, read-only, with its API mounts, and the
 * SUBDIRs that would leave the share; MOUNT's binds of a file or directory of a share into a
 * root, and the sources and targets that would leave either. */
#define _GNU_SOURCE
#include "../init.h"
#include "../mounts.h"
#include "../pods.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

void main_log(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void test_paths(void)
{
	char out[256];
	CHECK(pods_root_path(0, out, sizeof(out)) == 0 && strcmp(out, INIT_ROOT) == 0,
	      "container 0 is the VM's root: %s", out);
	CHECK(pods_root_path(7, out, sizeof(out)) == 0 && strcmp(out, PODS_ROOT_DIR "/7") == 0,
	      "member 7: %s", out);
	CHECK(pods_root_path(PODS_MAX, out, sizeof(out)) == -EINVAL, "member out of range");
	CHECK(pods_root_path(3, out, 4) == -ENAMETOOLONG, "a short buffer");
	CHECK(pods_share_path("pod", out, sizeof(out)) == 0 &&
	      strcmp(out, PODS_SHARE_DIR "/pod") == 0, "share path: %s", out);
	const char *bad[] = {"", ".", "..", "a/b", "/pod"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK(pods_share_path(bad[i], out, sizeof(out)) == -EINVAL, "bad tag '%s'", bad[i]);
	char long_tag[300];
	memset(long_tag, 'a', sizeof(long_tag) - 1);
	long_tag[sizeof(long_tag) - 1] = 0;
	CHECK(pods_share_path(long_tag, out, sizeof(out)) == -EINVAL, "a tag of 299 bytes");
	CHECK(!pods_ready(0) && !pods_ready(1) && !pods_ready(PODS_MAX), "nothing is set up");
	pods_release(1); /* not set up: a no-op */
	char msg[300];
	CHECK(pods_setup(0, "pod", "m", 0, msg, sizeof(msg)) == -EINVAL, "0 is not a member");
	CHECK(pods_setup(1, "pod", "", 0, msg, sizeof(msg)) == -EINVAL, "a member needs a SUBDIR");
	CHECK(pods_setup(1, "a/b", "m", 0, msg, sizeof(msg)) == -EINVAL, "a bad share tag: %s", msg);
}

static int exists(const char *root, const char *rel)
{
	char p[600];
	struct stat st;
	snprintf(p, sizeof(p), "%s/%s", root, rel);
	return lstat(p, &st) == 0;
}

/* In a mount namespace of its own: the failures it found. */
static int member_child(const char *share, const char *root)
{
	int before = failed;
	char msg[300], p[600];
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
		fprintf(stderr, "make / private: %s\n", strerror(errno));
		return 1;
	}
	CHECK(mounts_member_root(share, "escape", root, 0, msg, sizeof(msg)) == -ELOOP,
	      "a symlink SUBDIR: %s", msg);
	CHECK(mounts_member_root(share, "m1/../../x", root, 0, msg, sizeof(msg)) == -EINVAL,
	      "a SUBDIR with ..: %s", msg);
	CHECK(mounts_member_root(share, "/m1", root, 0, msg, sizeof(msg)) == -EINVAL,
	      "an absolute SUBDIR: %s", msg);
	CHECK(!exists(root, "marker"), "nothing bound after the failures");
	int rc = mounts_member_root(share, "m1", root, 1, msg, sizeof(msg));
	CHECK(rc == 0, "member root: %s", msg);
	CHECK(exists(root, "marker"), "the member sees its directory");
	CHECK(exists(root, "dev/pts/ptmx") && exists(root, "dev/shm") && exists(root, "sys/kernel"),
	      "API mounts in the member root");
	snprintf(p, sizeof(p), "%s/new", root);
	CHECK(open(p, O_CREAT | O_WRONLY, 0644) < 0 && errno == EROFS, "read-only member root");
	snprintf(p, sizeof(p), "%s/dev/shm/x", root);
	int fd = open(p, O_CREAT | O_WRONLY, 0644);
	CHECK(fd >= 0, "its /dev/shm stays writable");
	if (fd >= 0)
		close(fd);
	CHECK(umount2(root, MNT_DETACH) == 0, "detach the member root");
	CHECK(!exists(root, "marker"), "detached with its API mounts");
	return failed - before;
}

static void test_member_root(void)
{
	if (geteuid() != 0) {
		fprintf(stderr, "test_pods: not root, skipping the member root\n");
		return;
	}
	char tmpl[] = "/tmp/steelcup-pods-XXXXXX";
	char *base = mkdtemp(tmpl);
	CHECK(base != NULL, "mkdtemp");
	if (!base)
		return;
	char share[256], root[256], p[600];
	snprintf(share, sizeof(share), "%s/share", base);
	snprintf(root, sizeof(root), "%s/root", base);
	snprintf(p, sizeof(p), "%s/m1", share);
	CHECK(mounts_mkdir_p(p, 0755) == 0, "mkdir");
	snprintf(p, sizeof(p), "%s/m1/marker", share);
	close(open(p, O_CREAT | O_WRONLY, 0644));
	snprintf(p, sizeof(p), "%s/escape", share);
	CHECK(symlink(base, p) == 0, "symlink");
	pid_t pid = fork();
	if (pid == 0) {
		if (unshare(CLONE_NEWNS) < 0) {
			fprintf(stderr, "unshare: %s\n", strerror(errno));
			_exit(100);
		}
		_exit(member_child(share, root) ? 1 : 0); /* _exit: no LSan in there */
	}
	int st = 0;
	CHECK(pid > 0 && waitpid(pid, &st, 0) == pid, "fork/wait");
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "member root: the child found failures "
	      "(above), status %d", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	char cmd[700];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", base);
	CHECK(system(cmd) == 0, "cleanup");
}

static int read_all(const char *path, char *out, size_t outlen)
{
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, out, outlen - 1);
	close(fd);
	out[n < 0 ? 0 : n] = 0;
	return (int)n;
}

static int write_str(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_TRUNC);
	if (fd < 0)
		return -errno;
	ssize_t n = write(fd, text, strlen(text));
	int rc = n < 0 ? -errno : 0;
	close(fd);
	return rc;
}

/* In a mount namespace of its own: binds from the share into the root. */
static int bind_child(const char *base, const char *share, const char *root)
{
	int before = failed;
	char msg[300], p[600], q[600], buf[64];
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
		fprintf(stderr, "make / private: %s\n", strerror(errno));
		return 1;
	}
	/* A file: the target and its parents are made; writes go both ways. */
	int rc = mounts_bind_into(root, share, "m.mounts/0", "/dev/termination-log", 0, msg,
				  sizeof(msg));
	CHECK(rc == 0, "bind a file: %s", msg);
	snprintf(p, sizeof(p), "%s/dev/termination-log", root);
	snprintf(q, sizeof(q), "%s/m.mounts/0", share);
	CHECK(write_str(p, "bye") == 0, "write through the bound file");
	CHECK(read_all(q, buf, sizeof(buf)) == 3 && strcmp(buf, "bye") == 0,
	      "the share's file has it: '%s'", buf);
	CHECK(write_str(q, "host") == 0 && read_all(p, buf, sizeof(buf)) == 4 &&
	      strcmp(buf, "host") == 0, "the share's write is seen at the target: '%s'", buf);
	/* Read-only: the bind refuses writes, the share's file stays writable. */
	rc = mounts_bind_into(root, share, "m.mounts/0", "/etc/ro-file", 1, msg, sizeof(msg));
	CHECK(rc == 0, "bind a file read-only: %s", msg);
	snprintf(p, sizeof(p), "%s/etc/ro-file", root);
	CHECK(write_str(p, "x") == -EROFS, "a read-only file bind refuses writes");
	CHECK(read_all(p, buf, sizeof(buf)) == 4, "and is readable");
	/* A directory onto a directory target (made). */
	rc = mounts_bind_into(root, share, "m.mounts/1", "/var/run/secrets/sa", 1, msg, sizeof(msg));
	CHECK(rc == 0, "bind a directory: %s", msg);
	CHECK(exists(root, "var/run/secrets/sa/token"), "the directory's file is seen");
	snprintf(p, sizeof(p), "%s/var/run/secrets/sa/new", root);
	CHECK(open(p, O_CREAT | O_WRONLY, 0644) < 0 && errno == EROFS,
	      "a read-only directory bind refuses new files");
	/* Sources that leave the share, and targets that leave the root. */
	CHECK(mounts_bind_into(root, share, "link", "/t1", 0, msg, sizeof(msg)) == -ELOOP,
	      "a symlink source: %s", msg);
	CHECK(mounts_bind_into(root, share, "dirlink/x", "/t1", 0, msg, sizeof(msg)) == -ELOOP,
	      "a symlink on the source's way: %s", msg);
	CHECK(mounts_bind_into(root, share, "m.mounts/../../outside", "/t1", 0, msg,
			       sizeof(msg)) == -EINVAL, "a source with ..: %s", msg);
	CHECK(mounts_bind_into(root, share, "/m.mounts/0", "/t1", 0, msg, sizeof(msg)) == -EINVAL,
	      "an absolute source: %s", msg);
	CHECK(mounts_bind_into(root, share, "m.mounts/0/x", "/t1", 0, msg, sizeof(msg)) ==
	      -ENOTDIR, "a file on the source's way: %s", msg);
	CHECK(mounts_bind_into(root, share, "missing", "/t1", 0, msg, sizeof(msg)) == -ENOENT,
	      "a missing source is not made: %s", msg);
	CHECK(!exists(share, "missing"), "nothing made in the share");
	CHECK(mounts_bind_into(root, share, "m.mounts/0", "/etc/hosts", 0, msg, sizeof(msg)) ==
	      -ELOOP, "a symlink target file: %s", msg);
	CHECK(mounts_bind_into(root, share, "m.mounts/0", "/escape/hosts", 0, msg, sizeof(msg)) ==
	      -ELOOP, "a symlink on the target's way: %s", msg);
	CHECK(mounts_bind_into(root, share, "m.mounts/0", "/var", 0, msg, sizeof(msg)) == -EISDIR,
	      "a file onto a directory: %s", msg);
	CHECK(mounts_bind_into(root, share, "m.mounts/0", "/etc/..", 0, msg, sizeof(msg)) ==
	      -EINVAL, "a file target ..: %s", msg);
	snprintf(p, sizeof(p), "%s/outside", base);
	CHECK(read_all(p, buf, sizeof(buf)) == 8 && strcmp(buf, "original") == 0,
	      "the file outside is untouched: '%s'", buf);
	return failed - before;
}

static void test_bind(void)
{
	if (geteuid() != 0) {
		fprintf(stderr, "test_pods: not root, skipping the binds\n");
		return;
	}
	char tmpl[] = "/tmp/steelcup-bind-XXXXXX";
	char *base = mkdtemp(tmpl);
	CHECK(base != NULL, "mkdtemp");
	if (!base)
		return;
	char share[256], root[256], p[600], q[600];
	snprintf(share, sizeof(share), "%s/share", base);
	snprintf(root, sizeof(root), "%s/root", base);
	snprintf(p, sizeof(p), "%s/m.mounts/1", share);
	CHECK(mounts_mkdir_p(p, 0755) == 0, "mkdir");
	snprintf(p, sizeof(p), "%s/m.mounts/1/token", share);
	close(open(p, O_CREAT | O_WRONLY, 0644));
	snprintf(p, sizeof(p), "%s/m.mounts/0", share);
	close(open(p, O_CREAT | O_WRONLY, 0644));
	snprintf(p, sizeof(p), "%s/outside", base);
	close(open(p, O_CREAT | O_WRONLY, 0644));
	CHECK(write_str(p, "original") == 0, "write outside");
	snprintf(q, sizeof(q), "%s/link", share);
	CHECK(symlink(p, q) == 0, "symlink source");
	snprintf(q, sizeof(q), "%s/dirlink", share);
	CHECK(symlink(base, q) == 0, "symlink dir");
	snprintf(q, sizeof(q), "%s/etc", root);
	CHECK(mounts_mkdir_p(q, 0755) == 0, "mkdir etc");
	snprintf(q, sizeof(q), "%s/etc/hosts", root);
	CHECK(symlink(p, q) == 0, "symlink target");
	snprintf(q, sizeof(q), "%s/escape", root);
	CHECK(symlink(base, q) == 0, "symlink target dir");
	snprintf(q, sizeof(q), "%s/var", root);
	CHECK(mounts_mkdir_p(q, 0755) == 0, "mkdir var");
	pid_t pid = fork();
	if (pid == 0) {
		if (unshare(CLONE_NEWNS) < 0) {
			fprintf(stderr, "unshare: %s\n", strerror(errno));
			_exit(100);
		}
		_exit(bind_child(base, share, root) ? 1 : 0); /* _exit: no LSan in there */
	}
	int st = 0;
	CHECK(pid > 0 && waitpid(pid, &st, 0) == pid, "fork/wait");
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "binds: the child found failures "
	      "(above), status %d", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	char cmd[700];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", base);
	CHECK(system(cmd) == 0, "cleanup");
}

int main(void)
{
	test_paths();
	test_member_root();
	test_bind();
	printf("test_pods: %d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
