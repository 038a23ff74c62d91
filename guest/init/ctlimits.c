/* A container's limits: rlimits, sysctls, the pids cgroup (ctlimits.h). */
#define _GNU_SOURCE
#include "ctlimits.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

static const struct {
	const char *name;
	int resource;
} rlimit_names[] = {
	{"as", RLIMIT_AS},           {"core", RLIMIT_CORE},         {"cpu", RLIMIT_CPU},
	{"data", RLIMIT_DATA},       {"fsize", RLIMIT_FSIZE},       {"locks", RLIMIT_LOCKS},
	{"memlock", RLIMIT_MEMLOCK}, {"msgqueue", RLIMIT_MSGQUEUE}, {"nice", RLIMIT_NICE},
	{"nofile", RLIMIT_NOFILE},   {"nproc", RLIMIT_NPROC},       {"rss", RLIMIT_RSS},
	{"rtprio", RLIMIT_RTPRIO},   {"rttime", RLIMIT_RTTIME},     {"sigpending", RLIMIT_SIGPENDING},
	{"stack", RLIMIT_STACK},
};

/* A decimal limit, -1 = unlimited; ends at `end` (':' or NUL). */
static int parse_limit(const char *s, char end, rlim_t *out, const char **next)
{
	if (strncmp(s, "-1", 2) == 0 && s[2] == end) {
		*out = RLIM_INFINITY;
		*next = s + 2;
		return 0;
	}
	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	char *e;
	unsigned long long v = strtoull(s, &e, 10);
	if (errno || *e != end || (rlim_t)v == RLIM_INFINITY)
		return -EINVAL;
	*out = (rlim_t)v;
	*next = e;
	return 0;
}

int ctlimits_parse_rlimit(const char *spec, int *resource, struct rlimit *rl)
{
	const char *eq = strchr(spec, '=');
	if (!eq)
		return -EINVAL;
	size_t n = (size_t)(eq - spec);
	*resource = -1;
	for (size_t i = 0; i < sizeof(rlimit_names) / sizeof(rlimit_names[0]); i++)
		if (strlen(rlimit_names[i].name) == n && strncmp(spec, rlimit_names[i].name, n) == 0)
			*resource = rlimit_names[i].resource;
	const char *p;
	if (*resource < 0 || parse_limit(eq + 1, ':', &rl->rlim_cur, &p) < 0 ||
	    parse_limit(p + 1, 0, &rl->rlim_max, &p) < 0)
		return -EINVAL;
	/* RLIM_INFINITY is the largest value: unlimited soft needs unlimited hard */
	if (rl->rlim_cur > rl->rlim_max)
		return -EINVAL;
	return 0;
}

int ctlimits_sysctl_path(const char *spec, char *path, size_t pathlen, const char **value)
{
	static const char prefix[] = "/proc/sys/";
	const char *eq = strchr(spec, '=');
	if (!eq || eq == spec || eq[1] == 0 || strchr(eq + 1, '\n'))
		return -EINVAL;
	size_t n = (size_t)(eq - spec);
	if (sizeof(prefix) + n > pathlen)
		return -ENAMETOOLONG;
	memcpy(path, prefix, sizeof(prefix) - 1);
	char *out = path + sizeof(prefix) - 1;
	char prev = '.';
	for (size_t i = 0; i < n; i++) {
		char c = spec[i];
		int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			 c == '_' || c == '-';
		if (c == '.') {
			if (prev == '.')
				return -EINVAL; /* an empty component */
			c = '/';
		} else if (!ok) {
			return -EINVAL;
		}
		prev = spec[i];
		*out++ = c;
	}
	if (prev == '.')
		return -EINVAL;
	*out = 0;
	*value = eq + 1;
	return 0;
}

static int write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	size_t len = strlen(text);
	ssize_t w = write(fd, text, len);
	int rc = w < 0 ? -errno : (size_t)w != len ? -EIO : 0;
	close(fd);
	return rc;
}

int ctlimits_sysctl_write(const char *spec, char *msg, unsigned msglen)
{
	char path[512];
	const char *value;
	int rc = ctlimits_sysctl_path(spec, path, sizeof(path), &value);
	if (rc < 0) {
		snprintf(msg, msglen, "bad sysctl %.200s (KEY=VALUE)", spec);
		return rc;
	}
	rc = write_file(path, value);
	if (rc < 0)
		snprintf(msg, msglen, "sysctl %.200s: %s", path + 10, strerror(-rc));
	return rc;
}

static int pids_ready;

int ctlimits_pids_setup(uint32_t max, char *msg, unsigned msglen)
{
	char path[128], text[32];
	const char *what = CTLIMITS_CGROUP_ROOT;
	int rc = 0;
	if (mkdir(CTLIMITS_CGROUP_ROOT, 0700) < 0 && errno != EEXIST)
		rc = -errno;
	if (rc == 0 && mount("cgroup2", CTLIMITS_CGROUP_ROOT, "cgroup2",
			     MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0 && errno != EBUSY)
		rc = -errno;
	if (rc == 0) {
		what = "cgroup.subtree_control";
		rc = write_file(CTLIMITS_CGROUP_ROOT "/cgroup.subtree_control", "+pids");
	}
	if (rc == 0) {
		what = CTLIMITS_CGROUP_NAME;
		snprintf(path, sizeof(path), "%s/%s", CTLIMITS_CGROUP_ROOT, CTLIMITS_CGROUP_NAME);
		if (mkdir(path, 0755) < 0 && errno != EEXIST)
			rc = -errno;
	}
	if (rc == 0) {
		what = "pids.max";
		snprintf(path, sizeof(path), "%s/%s/pids.max", CTLIMITS_CGROUP_ROOT, CTLIMITS_CGROUP_NAME);
		snprintf(text, sizeof(text), "%u", max);
		rc = write_file(path, text);
	}
	if (rc < 0) {
		snprintf(msg, msglen, "pids cgroup (%s): %s", what, strerror(-rc));
		return rc;
	}
	pids_ready = 1;
	return 0;
}

int ctlimits_pids_join(void)
{
	if (!pids_ready)
		return 0;
	return write_file(CTLIMITS_CGROUP_ROOT "/" CTLIMITS_CGROUP_NAME "/cgroup.procs", "0");
}
