/* STAGE_LOWER's reads of an image's files beneath a directory fd (openat2: no symlink, no "..",
 * no other mount) into one scratch buffer: what they leave behind is the guest's caches. */
#define _GNU_SOURCE
#include "lower.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* openat2 (Linux 5.6): musl has no wrapper, nor the struct's header. x86_64 number, as every
 * other architecture's since 5.6. */
#ifndef SYS_openat2
#define SYS_openat2 437
#endif
#if __has_include(<linux/openat2.h>)
#include <linux/openat2.h>
#else
struct open_how {
	uint64_t flags, mode, resolve;
};
#define RESOLVE_NO_XDEV 0x01
#define RESOLVE_NO_MAGICLINKS 0x02
#define RESOLVE_NO_SYMLINKS 0x04
#define RESOLVE_BENEATH 0x08
#endif

#define READ_BUF_BYTES (128u * 1024)

/* Whether the relative path p has a ".." component. */
static int has_dotdot(const char *p)
{
	while (*p) {
		size_t n = strcspn(p, "/");
		if (n == 2 && p[0] == '.' && p[1] == '.')
			return 1;
		p += n;
		p += strspn(p, "/");
	}
	return 0;
}

/* The regular file rel beneath dirfd opened for reading, or -errno (-EINVAL: not a regular
 * file). It is looked up O_PATH and checked before it is opened: a device node of the image is
 * never opened (a driver's open has effects of its own), nor a fifo waited on. */
static int open_beneath(int dirfd, const char *rel)
{
	struct open_how how = {
		.flags = O_PATH | O_NOFOLLOW | O_CLOEXEC,
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
			   RESOLVE_NO_XDEV,
	};
	int at = (int)syscall(SYS_openat2, dirfd, rel, &how, sizeof(how));
	if (at < 0)
		return -errno;
	struct stat st;
	int fd = fstat(at, &st) < 0 ? -errno : S_ISREG(st.st_mode) ? 0 : -EINVAL;
	if (fd == 0) {
		/* Reopened through the fd: nothing is looked up again. */
		char fdpath[64];
		snprintf(fdpath, sizeof(fdpath), "/proc/self/fd/%d", at);
		fd = open(fdpath, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			fd = -errno;
	}
	close(at);
	return fd;
}

/* Reads fd to its end, or until got->bytes reaches cap. Returns 0 or -errno. */
static int read_to_end(int fd, uint64_t cap, struct lower_read *got)
{
	static char buf[READ_BUF_BYTES];
	while (got->bytes < cap) {
		uint64_t left = cap - got->bytes;
		ssize_t n = read(fd, buf, left < sizeof(buf) ? (size_t)left : sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		got->bytes += (uint64_t)n;
	}
	return 0;
}

void lower_read_files(int dirfd, const char *const *paths, size_t npaths, uint64_t cap,
		      struct lower_read *got)
{
	memset(got, 0, sizeof(*got));
	for (size_t i = 0; i < npaths && got->bytes < cap; i++) {
		const char *rel = paths[i] + strspn(paths[i], "/");
		int fd = -EINVAL;
		if (rel[0] && strlen(paths[i]) <= LOWER_MAX_PATH && !has_dotdot(rel))
			fd = open_beneath(dirfd, rel);
		if (fd >= 0 && read_to_end(fd, cap, got) == 0)
			got->files++;
		else
			got->skipped++;
		if (fd >= 0)
			close(fd);
	}
}
