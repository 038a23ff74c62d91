/* Loads the initrd's kernel modules in dependency order with finit_module. */
#define _GNU_SOURCE
#include "modules.h"

#include "init.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static char cmdline[4096];

static void read_cmdline(void)
{
	int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	ssize_t n = read(fd, cmdline, sizeof(cmdline) - 1);
	close(fd);
	cmdline[n > 0 ? n : 0] = 0;
}

static int same_name(const char *a, size_t alen, const char *b)
{
	size_t i = 0;
	for (; i < alen && b[i]; i++) {
		char x = a[i] == '-' ? '_' : a[i], y = b[i] == '-' ? '_' : b[i];
		if (x != y)
			return 0;
	}
	return i == alen && b[i] == 0;
}

/* The kernel applies `mod.param=` from the command line only to built-ins; loadable modules get
 * them from us. Quoted values are not supported. */
static void params_for(const char *mod, char *out, size_t outlen)
{
	size_t used = 0;
	out[0] = 0;
	const char *p = cmdline;
	while (*p) {
		while (*p == ' ' || *p == '\n')
			p++;
		const char *w = p;
		while (*p && *p != ' ' && *p != '\n')
			p++;
		size_t wlen = (size_t)(p - w);
		const char *dot = memchr(w, '.', wlen);
		const char *eq = memchr(w, '=', wlen);
		if (!dot || (eq && eq < dot) || dot == w)
			continue;
		if (!same_name(w, (size_t)(dot - w), mod))
			continue;
		size_t plen = wlen - (size_t)(dot - w) - 1;
		if (plen == 0 || used + plen + 2 > outlen)
			continue;
		if (used)
			out[used++] = ' ';
		memcpy(out + used, dot + 1, plen);
		used += plen;
		out[used] = 0;
	}
}

void modules_load_all(const char *list, const char *dir)
{
	read_cmdline();
	int debug = strstr(cmdline, "steelcup.debug") != NULL;
	FILE *fp = fopen(list, "re");
	if (!fp) {
		main_log("no %s: %s", list, strerror(errno));
		return;
	}
	char line[256], path[1024], name[256], params[2048];
	while (fgets(line, sizeof(line), fp)) {
		line[strcspn(line, "\r\n")] = 0;
		if (line[0] == 0 || line[0] == '#')
			continue;
		const char *base = strrchr(line, '/');
		base = base ? base + 1 : line;
		snprintf(name, sizeof(name), "%s", base);
		char *ext = strstr(name, ".ko");
		if (ext)
			*ext = 0;
		snprintf(path, sizeof(path), "%s/%s", dir, line);
		params_for(name, params, sizeof(params));
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			main_log("module %s: %s", path, strerror(errno));
			continue;
		}
		long long t = main_now_ms();
		if (syscall(SYS_finit_module, fd, params, 0) < 0 && errno != EEXIST)
			main_log("module %s: %s", name, strerror(errno));
		else if (debug)
			main_log("module %s [%s] %lld ms", name, params, main_now_ms() - t);
		close(fd);
	}
	fclose(fp);
}
