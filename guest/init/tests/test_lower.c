/* Unit tests of STAGE_LOWER's reads (real files in a temp dir, real openat2): what is read, what
 * is skipped, the byte cap, and (as root, in a child's own mount namespace) that no mount is
 * crossed. */
#define _GNU_SOURCE
#include "../lower.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

#define KIB 1024u

static char base[64], root[128], outside[128];

static void put(const char *dir, const char *rel, size_t size)
{
	char p[512];
	static char chunk[64 * KIB];
	memset(chunk, 'x', sizeof(chunk));
	snprintf(p, sizeof(p), "%s/%s", dir, rel);
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0) {
		perror(p);
		exit(2);
	}
	for (size_t done = 0; done < size;) {
		size_t n = size - done < sizeof(chunk) ? size - done : sizeof(chunk);
		if (write(fd, chunk, n) != (ssize_t)n) {
			perror(p);
			exit(2);
		}
		done += n;
	}
	close(fd);
}

static void make_at(const char *dir, const char *rel, int (*make)(const char *, mode_t),
		    mode_t mode)
{
	char p[512];
	snprintf(p, sizeof(p), "%s/%s", dir, rel);
	if (make(p, mode) < 0) {
		perror(p);
		exit(2);
	}
}

static void link_at(const char *target, const char *rel)
{
	char p[512];
	snprintf(p, sizeof(p), "%s/%s", root, rel);
	if (symlink(target, p) < 0) {
		perror(p);
		exit(2);
	}
}

static int open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;
	while (d && readdir(d))
		n++;
	if (d)
		closedir(d);
	return n;
}

static void read_files(const char *dir, const char *const *paths, size_t npaths, uint64_t cap,
		       struct lower_read *got)
{
	int dirfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	CHECK(dirfd >= 0, "open %s: %s", dir, strerror(errno));
	lower_read_files(dirfd, paths, npaths, cap, got);
	close(dirfd);
}

/* The tree: regular files of 0 B, 1 B, 200 KiB, 1 MiB and 3 B (in a directory), and what must
 * not be read: symlinks out and in, a directory, a fifo, and a file outside. */
static void make_tree(void)
{
	char tmpl[] = "/tmp/steelcup-lower-XXXXXX";
	if (!mkdtemp(tmpl)) {
		perror("mkdtemp");
		exit(2);
	}
	snprintf(base, sizeof(base), "%s", tmpl);
	snprintf(root, sizeof(root), "%s/root", base);
	snprintf(outside, sizeof(outside), "%s/outside", base);
	mkdir(root, 0755);
	mkdir(outside, 0755);
	put(outside, "secret", 1000);
	put(root, "empty", 0);
	put(root, "one", 1);
	put(root, "mid", 200 * KIB);
	put(root, "big", 1024 * KIB);
	make_at(root, "dir", mkdir, 0755);
	put(root, "dir/nested", 3);
	make_at(root, "fifo", mkfifo, 0644);
	char p[256];
	snprintf(p, sizeof(p), "%s/secret", outside);
	link_at(p, "escape");     /* absolute, to a file outside */
	link_at(outside, "escdir"); /* absolute, to the directory outside */
	link_at("one", "inside");   /* relative, to a file inside */
	link_at("dir", "viadir");   /* relative, to the directory inside */
}

static void test_read_and_skip(void)
{
	static char longpath[LOWER_MAX_PATH + 2];
	memset(longpath, 'a', sizeof(longpath) - 1);
	const char *paths[] = {
		"empty", "one", "/mid", "big", "dir/nested",   /* read */
		"escape", "escdir/secret", "inside", "viadir/nested", /* symlinks */
		"dir", "fifo",                                  /* not regular */
		"dir/../one", "../outside/secret", "..",        /* ".." */
		"missing", "dir/missing", "one/x",              /* not there */
		"", "/", "//", longpath,                        /* empty, too long */
	};
	size_t n = sizeof(paths) / sizeof(paths[0]);
	struct lower_read got;
	int fds = open_fds();
	read_files(root, paths, n, LOWER_DEFAULT_CAP, &got);
	uint64_t want = 0 + 1 + 200 * KIB + 1024 * KIB + 3;
	CHECK(got.bytes == want, "read %llu bytes, not %llu", (unsigned long long)got.bytes,
	      (unsigned long long)want);
	CHECK(got.files == 5, "%u files read, not 5", got.files);
	CHECK(got.skipped == n - 5, "%u skipped, not %zu", got.skipped, n - 5);
	CHECK(open_fds() == fds, "fds leaked: %d open, %d before", open_fds(), fds);
	/* The symlinks' targets are readable: only the way there was refused. */
	char p[512];
	snprintf(p, sizeof(p), "%s/secret", outside);
	CHECK(access(p, R_OK) == 0, "outside/secret unreadable");
	const char *direct[] = {"dir/nested", "one"};
	read_files(root, direct, 2, LOWER_DEFAULT_CAP, &got);
	CHECK(got.files == 2 && got.bytes == 4 && got.skipped == 0, "the targets inside: %u files",
	      got.files);
	/* A leading slash is not the filesystem's root. */
	const char *abs_outside[] = {p};
	read_files(root, abs_outside, 1, LOWER_DEFAULT_CAP, &got);
	CHECK(got.files == 0 && got.skipped == 1 && got.bytes == 0, "%s read from the dir", p);
}

static void test_cap(void)
{
	struct lower_read got;
	/* The cap stops the file being read and everything after it. */
	const char *paths[] = {"one", "mid", "big", "big", "missing"};
	read_files(root, paths, 5, 300 * KIB, &got);
	CHECK(got.bytes == 300 * KIB, "read %llu bytes past the 300 KiB cap",
	      (unsigned long long)got.bytes);
	CHECK(got.files == 3 && got.skipped == 0, "%u files, %u skipped (not 3, 0)", got.files,
	      got.skipped);
	/* A cap met at a file's end opens nothing more. */
	read_files(root, paths, 5, 1 + 200 * KIB, &got);
	CHECK(got.bytes == 1 + 200 * KIB && got.files == 2 && got.skipped == 0,
	      "cap at a file's end: %llu bytes, %u files, %u skipped",
	      (unsigned long long)got.bytes, got.files, got.skipped);
	read_files(root, paths, 5, 0, &got);
	CHECK(got.bytes == 0 && got.files == 0 && got.skipped == 0, "cap 0 read something");
	read_files(root, paths, 0, LOWER_DEFAULT_CAP, &got);
	CHECK(got.bytes == 0 && got.files == 0 && got.skipped == 0, "an empty list read something");
}

/* In a mount namespace of its own: a tmpfs mounted inside the dir and a bind of the directory
 * outside are other mounts, never entered. Returns the number of failures. */
static int mounts_child(void)
{
	failed = 0; /* count this child's failures only */
	char tmp[256], bound[256];
	snprintf(tmp, sizeof(tmp), "%s/tmp", root);
	snprintf(bound, sizeof(bound), "%s/bound", root);
	CHECK(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0, "private: %s", strerror(errno));
	CHECK(mkdir(tmp, 0755) == 0 && mkdir(bound, 0755) == 0, "mkdir: %s", strerror(errno));
	CHECK(mount("tmpfs", tmp, "tmpfs", 0, "mode=0755") == 0, "tmpfs: %s", strerror(errno));
	CHECK(mount(outside, bound, NULL, MS_BIND, NULL) == 0, "bind: %s", strerror(errno));
	put(tmp, "f", 5);
	const char *paths[] = {"tmp/f", "bound/secret", "one"};
	struct lower_read got;
	read_files(root, paths, 3, LOWER_DEFAULT_CAP, &got);
	CHECK(got.files == 1 && got.bytes == 1 && got.skipped == 2,
	      "across mounts: %u files, %llu bytes, %u skipped", got.files,
	      (unsigned long long)got.bytes, got.skipped);
	/* Both are readable from their own mount's root: the crossing alone was refused. */
	const char *f[] = {"f"};
	read_files(tmp, f, 1, LOWER_DEFAULT_CAP, &got);
	CHECK(got.files == 1 && got.bytes == 5, "tmp/f from the tmpfs: %u files", got.files);
	const char *secret[] = {"secret"};
	read_files(bound, secret, 1, LOWER_DEFAULT_CAP, &got);
	CHECK(got.files == 1 && got.bytes == 1000, "bound/secret from the bind: %u files",
	      got.files);
	return failed;
}

static void test_no_xdev(void)
{
	if (geteuid() != 0) {
		fprintf(stderr, "test_lower: not root, skipping the mount crossings\n");
		return;
	}
	pid_t pid = fork();
	if (pid == 0) {
		if (unshare(CLONE_NEWNS) < 0) {
			fprintf(stderr, "unshare: %s\n", strerror(errno));
			_exit(100);
		}
		_exit(mounts_child() ? 1 : 0); /* _exit: no LSan in there */
	}
	int st = 0;
	CHECK(pid > 0 && waitpid(pid, &st, 0) == pid, "fork/wait");
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "mount crossings: the child found failures "
	      "(above), status %d", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
}

int main(void)
{
	make_tree();
	test_read_and_skip();
	test_cap();
	test_no_xdev();
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", base);
	CHECK(system(cmd) == 0, "cleanup");
	printf("test_lower: %d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
