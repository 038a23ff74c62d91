/* The container root copied from its 9p share into guest RAM (SETUP_ROOT's CACHE 2). */
#define _GNU_SOURCE
#include "rootcopy.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A file with more than one link already copied: later links to it become hard links. */
struct linked {
	dev_t dev;
	ino_t ino;
	char *path; /* relative to the copy's top directory */
};

struct copy {
	int topfd; /* the destination's top directory (for linkat of a path from there) */
	dev_t dev; /* the source's filesystem: other mounts below it are not entered */
	struct linked *links;
	size_t nlinks, cap;
	char path[4096]; /* the entry being copied, relative to the top (for msg and links) */
	char *msg;
	unsigned msglen;
};

static int fail(struct copy *c, const char *what, int err)
{
	snprintf(c->msg, c->msglen, "copy root: %s %s: %s", what, c->path[0] ? c->path : ".",
		 strerror(err));
	return -err;
}

static const char *find_link(const struct copy *c, const struct stat *st)
{
	for (size_t i = 0; i < c->nlinks; i++)
		if (c->links[i].dev == st->st_dev && c->links[i].ino == st->st_ino)
			return c->links[i].path;
	return NULL;
}

static int remember_link(struct copy *c, const struct stat *st)
{
	if (c->nlinks == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 64;
		struct linked *grown = realloc(c->links, cap * sizeof(*grown));
		if (!grown)
			return fail(c, "remember link", ENOMEM);
		c->links = grown;
		c->cap = cap;
	}
	char *path = strdup(c->path);
	if (!path)
		return fail(c, "remember link", ENOMEM);
	c->links[c->nlinks++] = (struct linked){st->st_dev, st->st_ino, path};
	return 0;
}

/* Owner, then mode (a chown clears set-id bits), then times, of the entry name in dirfd (or of
 * fd itself when fd >= 0). */
static int set_attrs(struct copy *c, int dirfd, const char *name, int fd, const struct stat *st)
{
	struct timespec times[2] = {st->st_atim, st->st_mtim};
	if (fd >= 0) {
		if (fchown(fd, st->st_uid, st->st_gid) < 0)
			return fail(c, "chown", errno);
		if (fchmod(fd, st->st_mode & 07777) < 0)
			return fail(c, "chmod", errno);
		if (futimens(fd, times) < 0)
			return fail(c, "set times of", errno);
		return 0;
	}
	if (fchownat(dirfd, name, st->st_uid, st->st_gid, AT_SYMLINK_NOFOLLOW) < 0)
		return fail(c, "chown", errno);
	if (!S_ISLNK(st->st_mode) && fchmodat(dirfd, name, st->st_mode & 07777, 0) < 0)
		return fail(c, "chmod", errno);
	if (utimensat(dirfd, name, times, AT_SYMLINK_NOFOLLOW) < 0)
		return fail(c, "set times of", errno);
	return 0;
}

static int copy_data(struct copy *c, int in, int out)
{
	static char buf[65536];
	for (;;) {
		ssize_t n = read(in, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return fail(c, "read", errno);
		if (n == 0)
			return 0;
		for (ssize_t done = 0; done < n;) {
			ssize_t w = write(out, buf + done, (size_t)(n - done));
			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0)
				return fail(c, "write", errno);
			done += w;
		}
	}
}

static int copy_file(struct copy *c, int sdir, int ddir, const char *name,
		     const struct stat *st)
{
	if (st->st_nlink > 1) {
		const char *first = find_link(c, st);
		if (first) {
			if (linkat(c->topfd, first, ddir, name, 0) < 0)
				return fail(c, "link", errno);
			return 0;
		}
	}
	int in = openat(sdir, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (in < 0)
		return fail(c, "open", errno);
	int out = openat(ddir, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (out < 0) {
		int err = errno;
		close(in);
		return fail(c, "create", err);
	}
	int rc = copy_data(c, in, out);
	if (rc == 0)
		rc = set_attrs(c, -1, NULL, out, st);
	close(in);
	close(out);
	if (rc == 0 && st->st_nlink > 1)
		rc = remember_link(c, st);
	return rc;
}

static int copy_dir(struct copy *c, int sdir, int ddir, int depth);

static int copy_entry(struct copy *c, int sdir, int ddir, const char *name, int depth)
{
	struct stat st;
	if (fstatat(sdir, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return fail(c, "stat", errno);
	if (S_ISDIR(st.st_mode)) {
		if (mkdirat(ddir, name, 0700) < 0)
			return fail(c, "mkdir", errno);
		if (st.st_dev != c->dev)
			return set_attrs(c, ddir, name, -1, &st); /* a mount point: left empty */
		int sub = openat(sdir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (sub < 0)
			return fail(c, "open", errno);
		int dsub = openat(ddir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (dsub < 0) {
			int err = errno;
			close(sub);
			return fail(c, "open copy of", err);
		}
		int rc = copy_dir(c, sub, dsub, depth + 1);
		if (rc == 0)
			rc = set_attrs(c, -1, NULL, dsub, &st); /* times last: the copy touched them */
		close(sub);
		close(dsub);
		return rc;
	}
	if (S_ISREG(st.st_mode))
		return copy_file(c, sdir, ddir, name, &st);
	if (S_ISLNK(st.st_mode)) {
		char target[4096];
		ssize_t n = readlinkat(sdir, name, target, sizeof(target) - 1);
		if (n < 0)
			return fail(c, "readlink", errno);
		target[n] = 0;
		if (symlinkat(target, ddir, name) < 0)
			return fail(c, "symlink", errno);
	} else if (mknodat(ddir, name, st.st_mode & (S_IFMT | 0600), st.st_rdev) < 0) {
		return fail(c, "mknod", errno);
	}
	return set_attrs(c, ddir, name, -1, &st);
}

static int copy_dir(struct copy *c, int sdir, int ddir, int depth)
{
	if (depth > ROOTCOPY_MAX_DEPTH)
		return fail(c, "descend into", ELOOP);
	int fd = dup(sdir);
	if (fd < 0)
		return fail(c, "dup", errno);
	DIR *dir = fdopendir(fd);
	if (!dir) {
		int err = errno;
		close(fd);
		return fail(c, "read directory", err);
	}
	size_t base = strlen(c->path);
	int rc = 0;
	for (;;) {
		errno = 0;
		struct dirent *e = readdir(dir);
		if (!e) {
			if (errno)
				rc = fail(c, "read directory", errno);
			break;
		}
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		int n = snprintf(c->path + base, sizeof(c->path) - base, "%s%s", base ? "/" : "",
				 e->d_name);
		if (n < 0 || (size_t)n >= sizeof(c->path) - base) {
			c->path[base] = 0;
			rc = fail(c, "path below", ENAMETOOLONG);
			break;
		}
		rc = copy_entry(c, sdir, ddir, e->d_name, depth);
		c->path[base] = 0;
		if (rc < 0)
			break;
	}
	closedir(dir);
	return rc;
}

int rootcopy_tree(int srcfd, int dstfd, char *msg, unsigned msglen)
{
	struct stat st;
	struct copy c = {.topfd = dstfd, .msg = msg, .msglen = msglen};
	if (fstat(srcfd, &st) < 0)
		return fail(&c, "stat", errno);
	c.dev = st.st_dev;
	int rc = copy_dir(&c, srcfd, dstfd, 0);
	if (rc == 0)
		rc = set_attrs(&c, -1, NULL, dstfd, &st);
	for (size_t i = 0; i < c.nlinks; i++)
		free(c.links[i].path);
	free(c.links);
	return rc;
}
