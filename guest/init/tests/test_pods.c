/* Unit tests of pod members' roots: the paths, and (as root, in a child's own mount namespace)
 * a member root bound from a directory of a share, read-only, with its API mounts, and the
 * SUBDIRs that would leave the share. */
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

int main(void)
{
	test_paths();
	test_member_root();
	printf("test_pods: %d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
