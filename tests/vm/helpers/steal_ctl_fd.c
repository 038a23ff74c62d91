/* Attack helper for tests/vm/test_security.py, built static with musl-gcc at test time and run as
 * a container's main process: tries to reach PID 1's control-channel fd (pidfd_getfd, the
 * /proc/1/fd links, /proc/1/mem, ptrace) and, with any fd that is a virtio-serial port, forges an
 * EXIT (status 42) for every process id a host can have allocated by now. One line per attempt:
 *   getfd N <errno name>|ok <link>   procfd N <errno name>|ok <link>   ...
 * and finally "forged K" (frames written). Exits 3: the status the host must report. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ptrace.h>
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

static const char *err_name(int e)
{
	switch (e) {
	case EPERM: return "EPERM";
	case EACCES: return "EACCES";
	case EBADF: return "EBADF";
	case ENOENT: return "ENOENT";
	case ENOSYS: return "ENOSYS";
	case ESRCH: return "ESRCH";
	default: return strerror(e);
	}
}

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

/* Reports what fd `got` (or errno) and forges on it if it is the control port. */
static void got_fd(const char *how, int n, int got)
{
	if (got < 0) {
		printf("%s %d %s\n", how, n, err_name(errno));
		return;
	}
	char path[64], link[256];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", got);
	ssize_t len = readlink(path, link, sizeof(link) - 1);
	link[len > 0 ? len : 0] = 0;
	printf("%s %d ok %s\n", how, n, link);
	if (strncmp(link, "/dev/vport", 10) == 0)
		forge_exits(got);
	close(got);
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	int pidfd = (int)syscall(SYS_pidfd_open, 1, 0);
	if (pidfd < 0) {
		printf("pidfd_open %s\n", err_name(errno));
	} else {
		for (int n = 0; n <= MAX_FD; n++)
			got_fd("getfd", n, (int)syscall(SYS_pidfd_getfd, pidfd, n, 0));
	}
	for (int n = 0; n <= MAX_FD; n++) {
		char path[64];
		snprintf(path, sizeof(path), "/proc/1/fd/%d", n);
		got_fd("procfd", n, open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC));
	}
	int mem = open("/proc/1/mem", O_RDONLY | O_CLOEXEC);
	printf("mem %s\n", mem < 0 ? err_name(errno) : "ok");
	long r = ptrace(PTRACE_SEIZE, 1, NULL, NULL);
	printf("ptrace %s\n", r < 0 ? err_name(errno) : "ok");
	printf("forged %d\n", forged);
	return 3;
}
