/* Unit tests of the MOUNT target walk (real syscalls in a temp dir), of the pivot into a
 * container root (for real, as root, in a child's own mount and PID namespaces), of the root's
 * 9p options per CACHE mode and of the MAC parser. */
#define _GNU_SOURCE
#include "../mounts.h"
#include "../net.h"

#include <dirent.h>
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

/* PID 1 of fresh mount and PID namespaces, as the init's launcher makes it: pivots into root and
 * checks what it can reach from there. Returns the number of failures. */
static int pivoted_child(const char *root, const char *pivot_dir)
{
	failed = 0; /* count this child's failures only */
	/* root must be a mount point (a 9p mount or a bind in the guest); private first, so that
	 * nothing of this reaches the host's namespace */
	CHECK(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0, "private: %s", strerror(errno));
	CHECK(mount(root, root, NULL, MS_BIND, NULL) == 0, "bind root: %s", strerror(errno));
	const char *what = "?";
	int rc = mounts_pivot(root, pivot_dir, NULL, &what);
	CHECK(rc == 0, "mounts_pivot: %s: %s", what, strerror(-rc));
	if (rc < 0)
		return failed;
	char cwd[64];
	CHECK(getcwd(cwd, sizeof(cwd)) && strcmp(cwd, "/") == 0, "cwd is /");
	CHECK(access("/marker", F_OK) == 0, "the root is the container root");
	CHECK(getpid() == 1, "PID 1 of its namespace, not %d", (int)getpid());
	/* /proc is this PID namespace's: it shows PID 1 alone */
	DIR *d = opendir("/proc");
	int pids = 0, others = 0;
	struct dirent *e;
	while (d && (e = readdir(d)))
		if (e->d_name[0] >= '0' && e->d_name[0] <= '9')
			strcmp(e->d_name, "1") == 0 ? pids++ : others++;
	if (d)
		closedir(d);
	CHECK(pids == 1 && others == 0, "/proc shows %d and %d other pids", pids, others);
	/* Only the root and /proc are in sight: nothing of the old root's mounts. */
	FILE *mi = fopen("/proc/self/mountinfo", "r");
	int lines = 0;
	char line[1024];
	while (mi && fgets(line, sizeof(line), mi))
		lines++;
	if (mi)
		fclose(mi);
	CHECK(lines == 2, "mountinfo has %d mounts, not the root and /proc", lines);
	CHECK(access("/../../..//marker", F_OK) == 0, "\"..\" stays in the root");
	/* The chroot escape (CAP_SYS_CHROOT is docker's default): walking ".." from outside a
	 * nested chroot stops on the container root, which sits on top of the old one. */
	CHECK(mkdir("/escape", 0700) == 0 && chroot("/escape") == 0, "chroot: %s", strerror(errno));
	for (int i = 0; i < 64; i++)
		CHECK(chdir("..") == 0, "chdir ..");
	CHECK(chroot(".") == 0, "chroot .: %s", strerror(errno));
	CHECK(access("/marker", F_OK) == 0 && access("/escape", F_OK) == 0,
	      "the chroot escape left the container root");
	return failed;
}

static void test_pivot(void)
{
	if (geteuid() != 0) {
		fprintf(stderr, "test_mounts_net: not root, skipping the pivot\n");
		return;
	}
	char tmpl[] = "/tmp/steelcup-pivot-XXXXXX";
	char *base = mkdtemp(tmpl);
	CHECK(base != NULL, "mkdtemp");
	if (!base)
		return;
	char root[256], pivot_dir[256], p[512];
	snprintf(root, sizeof(root), "%s/root", base);
	snprintf(pivot_dir, sizeof(pivot_dir), "%s/pivot", base);
	mkdir(root, 0755);
	snprintf(p, sizeof(p), "%s/proc", root);
	mkdir(p, 0755);
	snprintf(p, sizeof(p), "%s/marker", root);
	close(open(p, O_CREAT | O_WRONLY, 0644));
	pid_t pid = fork();
	if (pid == 0) {
		if (unshare(CLONE_NEWNS | CLONE_NEWPID) < 0) {
			fprintf(stderr, "unshare: %s\n", strerror(errno));
			_exit(100);
		}
		pid_t init = fork();
		if (init == 0)
			_exit(pivoted_child(root, pivot_dir) ? 1 : 0); /* _exit: no LSan in there */
		int st = 0;
		_exit(init > 0 && waitpid(init, &st, 0) == init && WIFEXITED(st) ? WEXITSTATUS(st) : 101);
	}
	int st = 0;
	CHECK(pid > 0 && waitpid(pid, &st, 0) == pid, "fork/wait");
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "pivot: the child found failures (above), "
	      "status %d", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
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

static void test_root_options(void)
{
	const char *none = mounts_root_options(MOUNTS_CACHE_NONE);
	const char *loose = mounts_root_options(MOUNTS_CACHE_LOOSE);
	/* uncached but for mapped pages (shared writable mappings work), and loose alone */
	CHECK(none && strstr(none, "trans=virtio") && strstr(none, ",cache=mmap") &&
		      !strstr(none, "cache=loose"), "none: %s", none);
	CHECK(loose && strstr(loose, "trans=virtio") && strstr(loose, ",cache=loose") &&
		      !strstr(loose, "cache=mmap"), "loose: %s", loose);
	CHECK(mounts_root_options(MOUNTS_CACHE_RAM) == NULL, "CACHE 2 (ram) has 9p options");
	/* CACHE 3 (block) is an overlay: its share's options are not a root's */
	CHECK(mounts_root_options(MOUNTS_CACHE_BLOCK) == NULL, "CACHE 3 (block) has 9p options");
	CHECK(mounts_root_options(4) == NULL, "unknown CACHE 4 accepted");
	CHECK(mounts_root_options(0xffffffffu) == NULL, "unknown CACHE ~0 accepted");
}

int main(void)
{
	test_root_options();
	test_open_target();
	test_pivot();
	test_parse_mac();
	printf("test_mounts_net: %d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
