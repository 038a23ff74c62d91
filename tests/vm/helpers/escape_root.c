/* Attack helper for tests/vm/test_security.py, built static with musl-gcc at test time and run in
 * a container: looks for the initramfs root (where the guest init lives, `/modules.list` and the
 * steelcup init binary at `/init`) from inside the container, through every way a root process
 * with docker's default capabilities has:
 *   procroot PID yes|no   /proc/PID/root/init, for every process the container's /proc shows
 *                         (kernel threads and the init among them if the container shares the
 *                         VM's PID namespace)
 *   escape yes|no         the classic chroot escape (CAP_SYS_CHROOT is in docker's default set):
 *                         chroot into a subdirectory, walk ".." from the old cwd, chroot(".")
 *   dotdot yes|no         "/.." walked from the container root
 * "yes" means the init binary was readable there. Ends with "done" and exits 0. */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* 1 if dir/init is the steelcup guest init (its version string is in the binary). */
static int is_initramfs(const char *dir)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/init", dir);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	static char buf[1 << 20];
	ssize_t n = read(fd, buf, sizeof(buf));
	close(fd);
	return n > 0 && memmem(buf, (size_t)n, "steelcup-init", 13) != NULL;
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (is_initramfs("")) {
		printf("error: the container root itself has the init\n");
		return 1;
	}
	DIR *d = opendir("/proc");
	struct dirent *e;
	while (d && (e = readdir(d))) {
		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		char root[300];
		snprintf(root, sizeof(root), "/proc/%s/root", e->d_name);
		printf("procroot %s %s\n", e->d_name, is_initramfs(root) ? "yes" : "no");
	}
	if (d)
		closedir(d);
	printf("dotdot %s\n", is_initramfs("/../../..") ? "yes" : "no");
	/* chroot(2) does not change the cwd: walk up from outside the new root. */
	mkdir("/.escape", 0700);
	if (chdir("/") < 0 || chroot("/.escape") < 0) {
		printf("escape chroot-failed\n");
	} else {
		for (int i = 0; i < 64; i++)
			if (chdir("..") < 0)
				break;
		printf("escape %s\n", chroot(".") == 0 && is_initramfs("") ? "yes" : "no");
	}
	printf("done\n");
	return 0;
}
