/* Process table: starts processes, relays stdio under credit flow control, reaps, reports EXIT.
 *
 * A container's processes never share a PID or mount namespace with the init, which holds the
 * control port: the first one (MAIN) is PID 1 of new ones, pivoted into the container root, and
 * every other one joins those of the live MAIN process (docker's and runc's layout). Each is
 * started through a launcher, a child of the init that drops every fd but its stdio before it
 * enters a namespace, and forks the process there: the process is reparented to the init when
 * the launcher exits, and nothing that holds the port ever has a pid in the container. */
#define _GNU_SOURCE
#include "proc.h"
#include "pods.h"

#include "caps.h"
#include "channel.h"
#include "init.h"
#include "ctlimits.h"
#include "mounts.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#define EXIT_GRACE_MS 500
#define OUT_QUEUE_HIGH (1024 * 1024)
#define STDIN_BUF_MAX (4u * PROTO_INITIAL_CREDIT)
/* Processes whose EXIT is kept for a host that re-attaches (RESUME), with their unacknowledged
 * output: the most recent this many. */
#define FINISHED_MAX 8
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
/* An empty directory on the initramfs root for mounts_pivot. */
#define PIVOT_DIR "/pivot"
#ifndef SYS_close_range
#define SYS_close_range 436
#endif

/* The launcher's fds: stdio 0-2, then these (everything else is closed before any namespace). */
enum { FD_REPORT = 3, FD_PIDNS = 4, FD_MNTNS = 5 };

/* Where a process runs: the VM's namespaces (no container root yet: a pooled VM's warm-up), new
 * ones of which it is PID 1 (a MAIN process, or any process while none is live), or those of
 * the live MAIN process. */
enum ns_mode { NS_NONE, NS_NEW, NS_JOIN };

/* What the launcher and the process tell the init over the report pipe, one write each (under
 * PIPE_BUF: atomic); end of file means the process called exec successfully. */
enum { REPORT_PID = 1, REPORT_NSPID = 2, REPORT_ERRNO = 3 };
struct report {
	int32_t kind, value;
	char what[56]; /* REPORT_ERRNO: the setup step that failed, "" for exec itself */
};

struct proc {
	struct proc *next;
	uint32_t id;
	pid_t pid;
	int tty;
	int main;
	int ns_init; /* PID 1 of its PID namespace: signals go to it alone, as docker's do */
	uint32_t container; /* CONTAINER: 0, or the pod member whose namespaces it is in */
	int fd_in;  /* pipe write end, or the pty master (shared with fd_out) */
	int fd_out; /* stdout pipe read end, or the pty master */
	int fd_err;
	uint32_t credit; /* bytes we may still send to the host */
	uint8_t *in_buf; /* stdin bytes not yet written */
	size_t in_len, in_cap;
	int close_stdin; /* CLOSE_STDIN received: close once in_buf is drained */
	int reaped;
	int status, signo;
	long long reaped_ms;
	long long waited_ms; /* time spent without credit after the reap, not counted */
	long long nocredit_since;
	/* Re-attach (RESUME): every output frame sent (or due while no host listened) stays in
	 * `ret` until the host credits its bytes, at most the credit window. */
	int claimed;  /* a host asked for this process (START or RESUME) since the last HELLO */
	int finished; /* EXIT is due or sent; kept for a RESUME until FINISHED_MAX newer ones */
	unsigned long long finished_seq;
	uint64_t sent, acked; /* output bytes taken from the process; credited by the host */
	uint8_t *ret;         /* retained STDOUT/STDERR frames, from ret_off */
	size_t ret_off, ret_len, ret_cap;
	size_t in_nocredit; /* stdin bytes from an earlier host: written without CREDIT */
};

static struct proc *procs;

static struct proc *find(uint32_t id)
{
	for (struct proc *p = procs; p; p = p->next)
		if (p->id == id)
			return p;
	return NULL;
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* The process's pipes (or pty: one fd, closed once) and its pending stdin. */
static void close_stdio(struct proc *p)
{
	if (p->tty)
		p->fd_in = -1;
	close_fd(&p->fd_in);
	close_fd(&p->fd_out);
	close_fd(&p->fd_err);
	free(p->in_buf);
}

static void close_in(struct proc *p)
{
	if (p->tty) {
		p->fd_in = -1; /* the master stays open for output */
		return;
	}
	close_fd(&p->fd_in);
}

static void free_proc(struct proc *p)
{
	struct proc **pp = &procs;
	while (*pp && *pp != p)
		pp = &(*pp)->next;
	if (*pp)
		*pp = p->next;
	close_stdio(p);
	free(p->ret);
	free(p);
}

/* Keeps a copy of an output frame until the host credits it; 0, or -1 without memory. */
static int retain(struct proc *p, uint16_t op, const uint8_t *data, size_t n)
{
	size_t need = PROTO_HDR_SIZE + n;
	if (p->ret_off > 0 && p->ret_off == p->ret_len)
		p->ret_off = p->ret_len = 0;
	if (p->ret_cap - p->ret_len < need && p->ret_off > 0) {
		memmove(p->ret, p->ret + p->ret_off, p->ret_len - p->ret_off);
		p->ret_len -= p->ret_off;
		p->ret_off = 0;
	}
	if (p->ret_cap - p->ret_len < need) {
		size_t cap = p->ret_cap ? p->ret_cap : 65536;
		while (cap - p->ret_len < need)
			cap *= 2;
		uint8_t *b = realloc(p->ret, cap);
		if (!b)
			return -1;
		p->ret = b;
		p->ret_cap = cap;
	}
	uint8_t *h = p->ret + p->ret_len;
	proto_put32(h, PROTO_MAGIC);
	proto_put16(h + 4, op);
	proto_put16(h + 6, 0);
	proto_put32(h + 8, p->id);
	proto_put32(h + 12, (uint32_t)n);
	memcpy(h + PROTO_HDR_SIZE, data, n);
	p->ret_len += need;
	return 0;
}

/* The host has `n` more output bytes: drop them from the front of the retained frames (a frame
 * it has in part keeps its tail, under a header of its own). */
static void forget(struct proc *p, uint64_t n)
{
	while (n > 0 && p->ret_off < p->ret_len) {
		uint8_t *h = p->ret + p->ret_off;
		uint32_t len = proto_get32(h + 12);
		if (n >= len) {
			p->ret_off += PROTO_HDR_SIZE + len;
			n -= len;
			continue;
		}
		uint16_t op = (uint16_t)(h[4] | h[5] << 8);
		uint8_t *nh = h + n;
		proto_put32(nh, PROTO_MAGIC);
		proto_put16(nh + 4, op);
		proto_put16(nh + 6, 0);
		proto_put32(nh + 8, p->id);
		proto_put32(nh + 12, len - (uint32_t)n);
		p->ret_off += n;
		n = 0;
	}
}

static char *dup_field(const struct proto_field *fl)
{
	char *s = malloc(fl->len + 1);
	if (!s)
		return NULL;
	memcpy(s, fl->val, fl->len);
	s[fl->len] = 0;
	return s;
}

struct start_req {
	char **argv, **envp;
	size_t argc, envc;
	char *cwd;
	uid_t uid;
	gid_t gid;
	gid_t *groups;
	size_t ngroups;
	int tty, rows, cols, use_stdin, main;
	uint64_t caps;
	struct rlimit *rlimits; /* RLIMIT fields, in wire order */
	int *resources;
	size_t nrlimits;
};

static void free_req(struct start_req *r)
{
	for (size_t i = 0; i < r->argc; i++)
		free(r->argv[i]);
	for (size_t i = 0; i < r->envc; i++)
		free(r->envp[i]);
	free(r->argv);
	free(r->envp);
	free(r->cwd);
	free(r->groups);
	free(r->rlimits);
	free(r->resources);
}

static int parse_req(const struct proto_frame *f, struct start_req *r)
{
	memset(r, 0, sizeof(*r));
	r->caps = caps_default(); /* a host that sends no CAPS predates it: docker's default */
	r->argv = calloc(f->nfields + 1, sizeof(char *));
	r->envp = calloc(f->nfields + 1, sizeof(char *));
	r->groups = calloc(f->nfields + 1, sizeof(gid_t));
	r->rlimits = calloc(f->nfields + 1, sizeof(struct rlimit));
	r->resources = calloc(f->nfields + 1, sizeof(int));
	if (!r->argv || !r->envp || !r->groups || !r->rlimits || !r->resources)
		return -ENOMEM;
	for (size_t i = 0; i < f->nfields; i++) {
		const struct proto_field *fl = &f->fields[i];
		uint32_t v = fl->len == 4 ? proto_get32(fl->val) : 0;
		switch (fl->tag) {
		case PROTO_TAG_ARG:
			if (!(r->argv[r->argc++] = dup_field(fl)))
				return -ENOMEM;
			break;
		case PROTO_TAG_ENV:
			if (!(r->envp[r->envc++] = dup_field(fl)))
				return -ENOMEM;
			break;
		case PROTO_TAG_CWD:
			free(r->cwd);
			if (!(r->cwd = dup_field(fl)))
				return -ENOMEM;
			break;
		case PROTO_TAG_UID: r->uid = v; break;
		case PROTO_TAG_GID: r->gid = v; break;
		case PROTO_TAG_GROUP: r->groups[r->ngroups++] = v; break;
		case PROTO_TAG_TTY: r->tty = v != 0; break;
		case PROTO_TAG_ROWS: r->rows = (int)v; break;
		case PROTO_TAG_COLS: r->cols = (int)v; break;
		case PROTO_TAG_STDIN: r->use_stdin = v != 0; break;
		case PROTO_TAG_MAIN: r->main = v != 0; break;
		case PROTO_TAG_CAPS: r->caps = proto_get64(fl->val); break; /* 8 bytes: decoder */
		case PROTO_TAG_RLIMIT: {
			char *spec = dup_field(fl);
			if (!spec)
				return -ENOMEM;
			int rc = ctlimits_parse_rlimit(spec, &r->resources[r->nrlimits],
						     &r->rlimits[r->nrlimits]);
			free(spec);
			if (rc < 0)
				return -EDOM; /* told apart from a missing ARG in the reply */
			r->nrlimits++;
			break;
		}
		default: break;
		}
	}
	if (r->argc == 0 || r->argv[0][0] == 0)
		return -EINVAL;
	return 0;
}

static const char *env_path(const struct start_req *r)
{
	for (size_t i = 0; i < r->envc; i++)
		if (strncmp(r->envp[i], "PATH=", 5) == 0)
			return r->envp[i] + 5;
	return DEFAULT_PATH;
}

/* execvp without the shell fallback: EACCES wins over ENOENT, like execvp. */
static int exec_lookup(const struct start_req *r)
{
	const char *file = r->argv[0];
	if (strchr(file, '/')) {
		execve(file, r->argv, r->envp);
		return errno;
	}
	int err = ENOENT;
	const char *path = env_path(r);
	char buf[4096];
	while (*path) {
		const char *end = strchr(path, ':');
		size_t len = end ? (size_t)(end - path) : strlen(path);
		if (len + strlen(file) + 2 < sizeof(buf)) {
			if (len == 0)
				snprintf(buf, sizeof(buf), "%s", file);
			else
				snprintf(buf, sizeof(buf), "%.*s/%s", (int)len, path, file);
			execve(buf, r->argv, r->envp);
			if (errno == EACCES || errno == ENOEXEC || (errno != ENOENT && errno != ENOTDIR))
				err = errno;
		}
		path = end ? end + 1 : path + len;
	}
	return err;
}

static void report(int fd, int kind, int value, const char *what)
{
	struct report m = {.kind = kind, .value = value};
	snprintf(m.what, sizeof(m.what), "%s", what);
	ssize_t w;
	do
		w = write(fd, &m, sizeof(m));
	while (w < 0 && errno == EINTR);
}

static void child_fail_at(const char *what, int err) __attribute__((noreturn));
static void child_fail_at(const char *what, int err)
{
	report(FD_REPORT, REPORT_ERRNO, err, what);
	_exit(127);
}

static void child_fail(int err) __attribute__((noreturn));
static void child_fail(int err)
{
	child_fail_at("", err);
}

/* Moves `fds` (stdin, stdout, stderr, then the launcher's, n in all) to 0..n-1 and closes every
 * other fd: the control port and the init's other fds must be gone before the launcher enters
 * a namespace where a container process could take them (pidfd_getfd with CAP_SYS_PTRACE). */
static int keep_only(int *fds, int n)
{
	for (int i = 0; i < n; i++) /* first out of the way of the low numbers */
		if (fds[i] >= 0 && (fds[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 64)) < 0)
			return -errno;
	for (int i = 0; i < n; i++) {
		if (fds[i] < 0)
			continue;
		/* stdio survives exec; what the launcher itself uses does not */
		if ((i < 3 ? dup2(fds[i], i) : dup3(fds[i], i, O_CLOEXEC)) < 0)
			return -errno;
	}
	if (syscall(SYS_close_range, n, ~0U, 0) < 0)
		return -errno;
	return 0;
}

/* The process's cwd and identity, before exec (or, joining a container, before it forks into
 * the container's PID namespace: nothing there can then catch it holding more). */
static void set_identity(const struct start_req *r)
{
	if (chdir(r->cwd && r->cwd[0] ? r->cwd : "/") < 0)
		child_fail(errno);
	/* While the capabilities allow raising a hard limit (CAP_SYS_RESOURCE). */
	for (size_t i = 0; i < r->nrlimits; i++)
		if (setrlimit(r->resources[i], &r->rlimits[i]) < 0)
			child_fail_at("setrlimit", errno);
	/* The host's set (docker's default unless --cap-add/--cap-drop/--privileged). The bounding
	 * set shrinks before the uid changes and the rest after it, as runc does, so a set without
	 * CAP_SETUID still runs as another user, and a non-root user gets what execve gives one:
	 * nothing permitted or effective. */
	int rc = caps_bound(r->caps);
	if (rc < 0)
		child_fail(-rc);
	if (setgroups(r->ngroups, r->groups) < 0 || setgid(r->gid) < 0 || setuid(r->uid) < 0)
		child_fail(errno);
	rc = caps_limit(r->caps);
	if (rc < 0)
		child_fail(-rc);
}

static void new_session(int tty)
{
	if (setsid() < 0)
		child_fail(errno);
	if (tty && ioctl(0, TIOCSCTTY, 0) < 0)
		child_fail(errno);
}

/* In the launcher: forks the process (in the PID namespace the launcher set up or joined),
 * reports its pid as the init sees it and exits; the process carries on. */
static void fork_process(void)
{
	pid_t pid = fork();
	if (pid < 0)
		child_fail_at("fork", errno);
	if (pid > 0) {
		report(FD_REPORT, REPORT_PID, pid, "");
		_exit(0);
	}
	report(FD_REPORT, REPORT_NSPID, getpid(), "");
}

/* The initramfs's mounts, which a container's mount namespace drops (mounts_pivot). */
static const char *const initramfs_mounts[] = {"/run", "/dev", "/sys", "/proc", NULL};

/* The launcher: a child of the init. fds are stdin, stdout, stderr (the same pty slave for a
 * tty), the report pipe, and for NS_JOIN the PID and mount namespaces of the MAIN process. */
static void launcher(const struct start_req *r, enum ns_mode mode, const char *root, int *fds,
		     int nfds) __attribute__((noreturn));
static void launcher(const struct start_req *r, enum ns_mode mode, const char *root, int *fds,
		     int nfds)
{
	sigset_t all;
	sigfillset(&all);
	for (int s = 1; s < NSIG; s++)
		signal(s, SIG_DFL);
	sigprocmask(SIG_UNBLOCK, &all, NULL);
	int rc = keep_only(fds, nfds);
	if (rc < 0) {
		/* the report pipe may not be at FD_REPORT yet: say it on the original one */
		report(fds[FD_REPORT], REPORT_ERRNO, -rc, "fds");
		_exit(127);
	}
	switch (mode) {
	case NS_NONE: /* the VM's own namespaces, before any container root: a warm-up */
		new_session(r->tty);
		set_identity(r);
		break;
	case NS_NEW:
		if ((rc = ctlimits_pids_join()) < 0)
			child_fail_at("join the pids cgroup", -rc);
		if (unshare(CLONE_NEWPID | CLONE_NEWNS) < 0)
			child_fail_at("unshare", errno);
		fork_process(); /* PID 1 of the new namespace from here on */
		new_session(r->tty);
		const char *what;
		rc = mounts_pivot(root, PIVOT_DIR, initramfs_mounts, &what);
		if (rc < 0)
			child_fail_at(what, -rc);
		set_identity(r);
		break;
	case NS_JOIN:
		if ((rc = ctlimits_pids_join()) < 0)
			child_fail_at("join the pids cgroup", -rc);
		/* The mount namespace's root is the pivoted container root. */
		if (setns(FD_PIDNS, CLONE_NEWPID) < 0 || setns(FD_MNTNS, CLONE_NEWNS) < 0)
			child_fail_at("setns", errno);
		close(FD_PIDNS);
		close(FD_MNTNS);
		set_identity(r);
		fork_process();
		new_session(r->tty);
		break;
	}
	child_fail(exec_lookup(r));
}

static int open_pty(int *master, char *slave, size_t slavelen, int rows, int cols)
{
	*master = open("/dev/pts/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
	if (*master < 0)
		return -errno;
	if (grantpt(*master) < 0 || unlockpt(*master) < 0 || ptsname_r(*master, slave, slavelen) != 0) {
		int e = errno;
		close_fd(master);
		return -e;
	}
	if (rows > 0 && cols > 0) {
		struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
		ioctl(*master, TIOCSWINSZ, &ws);
	}
	return 0;
}

/* The live MAIN process of a container, whose namespaces a process joins, or NULL. */
static struct proc *live_main(uint32_t container)
{
	for (struct proc *p = procs; p; p = p->next)
		if (p->main && p->ns_init && p->container == container && !p->reaped && !p->finished)
			return p;
	return NULL;
}

/* Opens /proc/<pid>/ns/<name> of the init's view (the init's procfs). */
static int open_ns(pid_t pid, const char *name)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/ns/%s", (int)pid, name);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

void proc_start(const struct proto_frame *f, const char *root, uint32_t container)
{
	uint32_t id = f->hdr.id;
	struct start_req r;
	int rc = parse_req(f, &r);
	if (rc < 0) {
		channel_send_error(id, rc == -EDOM ? EINVAL : -rc,
				   rc == -EINVAL  ? "START needs a non-empty ARG"
				   : rc == -EDOM ? "bad RLIMIT (NAME=SOFT:HARD, docker's names)"
						  : "out of memory");
		free_req(&r);
		return;
	}
	if (id == 0 || find(id)) {
		channel_send_error(id, id == 0 ? EINVAL : EEXIST,
				   id == 0 ? "process id 0" : "process id in use");
		free_req(&r);
		return;
	}
	struct proc *p = calloc(1, sizeof(*p));
	int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1}, ep[2] = {-1, -1};
	int slave_fd = -1, pidns = -1, mntns = -1;
	char slave[128];
	int master = -1;
	const char *what = "pipe";
	enum ns_mode mode = NS_NONE;
	if (!p) {
		rc = -ENOMEM;
		goto fail;
	}
	if (root) {
		struct proc *m = r.main ? NULL : live_main(container);
		mode = m ? NS_JOIN : NS_NEW;
		if (m) {
			what = "namespaces of the main process";
			if ((rc = pidns = open_ns(m->pid, "pid")) < 0 ||
			    (rc = mntns = open_ns(m->pid, "mnt")) < 0)
				goto fail;
		}
	}
	what = "pipe";
	if (pipe2(ep, O_CLOEXEC) < 0)
		goto fail_errno;
	if (r.tty) {
		what = "pty";
		rc = open_pty(&master, slave, sizeof(slave), r.rows, r.cols);
		if (rc < 0)
			goto fail;
		/* O_NOCTTY: the init must not get it as its own terminal; the process takes it. */
		if ((slave_fd = open(slave, O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0)
			goto fail_errno;
	} else {
		if (pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0)
			goto fail_errno;
		if (r.use_stdin) {
			if (pipe2(in, O_CLOEXEC) < 0)
				goto fail_errno;
		} else if ((in[0] = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0) {
			what = "/dev/null";
			goto fail_errno;
		}
	}
	what = "fork";
	pid_t pid = fork();
	if (pid < 0)
		goto fail_errno;
	if (pid == 0) {
		int fds[] = {r.tty ? slave_fd : in[0], r.tty ? slave_fd : out[1],
			     r.tty ? slave_fd : err[1], ep[1], pidns, mntns};
		launcher(&r, mode, root, fds, mode == NS_JOIN ? 6 : 4);
	}
	int *mine[] = {&ep[1], &in[0], &out[1], &err[1], &slave_fd, &pidns, &mntns};
	for (size_t i = 0; i < sizeof(mine) / sizeof(mine[0]); i++)
		close_fd(mine[i]);
	/* The launcher says where the process is (NS_NONE: it is the process), the process says
	 * its pid in its namespace, or why it failed; end of file: it called exec. */
	pid_t gpid = mode == NS_NONE ? pid : 0, nspid = mode == NS_NONE ? pid : 0;
	struct report m;
	int child_err = 0;
	char child_what[sizeof(m.what)] = "";
	ssize_t n;
	for (;;) {
		n = read(ep[0], &m, sizeof(m));
		if (n < 0 && errno == EINTR)
			continue;
		if (n != (ssize_t)sizeof(m))
			break;
		if (m.kind == REPORT_PID)
			gpid = m.value;
		else if (m.kind == REPORT_NSPID)
			nspid = m.value;
		else if (m.kind == REPORT_ERRNO && !child_err) {
			child_err = m.value > 0 ? m.value : EIO;
			memcpy(child_what, m.what, sizeof(child_what));
			child_what[sizeof(child_what) - 1] = 0;
		}
	}
	close_fd(&ep[0]);
	if (mode != NS_NONE) /* the launcher is done: the process (if any) is our child now */
		waitpid(pid, NULL, 0);
	if (!child_err && (gpid <= 0 || nspid <= 0)) {
		child_err = EIO; /* a launcher killed before it could say anything */
		snprintf(child_what, sizeof(child_what), "launcher");
	}
	if (child_err) {
		if (gpid > 0)
			waitpid(gpid, NULL, 0);
		close_fd(&in[1]);
		close_fd(&out[0]);
		close_fd(&err[0]);
		close_fd(&master);
		char msg[600];
		snprintf(msg, sizeof(msg), "%s: %s", child_what[0] ? child_what : r.argv[0],
			 strerror(child_err));
		channel_send_error(id, child_err, msg);
		free(p);
		free_req(&r);
		return;
	}
	p->id = id;
	p->pid = gpid;
	p->tty = r.tty;
	p->main = r.main;
	p->ns_init = mode == NS_NEW;
	p->container = container;
	p->credit = PROTO_INITIAL_CREDIT;
	p->claimed = 1;
	if (r.tty) {
		p->fd_in = r.use_stdin ? master : -1;
		p->fd_out = master;
		p->fd_err = -1;
	} else {
		p->fd_in = in[1];
		p->fd_out = out[0];
		p->fd_err = err[0];
		fcntl(p->fd_out, F_SETFL, O_NONBLOCK);
		fcntl(p->fd_err, F_SETFL, O_NONBLOCK);
		if (p->fd_in >= 0)
			fcntl(p->fd_in, F_SETFL, O_WRONLY | O_NONBLOCK);
	}
	p->next = procs;
	procs = p;
	channel_send_ok_u32(id, PROTO_TAG_PID, (uint32_t)nspid);
	free_req(&r);
	return;
fail_errno:
	rc = -errno;
fail: {
	char msg[128];
	snprintf(msg, sizeof(msg), "%s: %s", what, strerror(-rc));
	channel_send_error(id, -rc, msg);
	int *fds[] = {&in[0], &in[1], &out[0], &out[1], &err[0], &err[1], &ep[0], &ep[1], &master,
		      &slave_fd, &pidns, &mntns};
	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
		close_fd(fds[i]);
	free(p);
	free_req(&r);
}
}

static void flush_stdin(struct proc *p)
{
	size_t done = 0;
	while (p->fd_in >= 0 && done < p->in_len) {
		ssize_t n = write(p->fd_in, p->in_buf + done, p->in_len - done);
		if (n > 0) {
			done += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		/* EPIPE/EIO: the reader is gone; drop what is left but still return the credit. */
		done = p->in_len;
		close_in(p);
	}
	if (p->fd_in < 0)
		done = p->in_len;
	if (done > 0) {
		memmove(p->in_buf, p->in_buf + done, p->in_len - done);
		p->in_len -= done;
		/* an earlier host's bytes: the one connected now never sent them */
		size_t old = done < p->in_nocredit ? done : p->in_nocredit;
		p->in_nocredit -= old;
		if (done > old)
			channel_send_credit(p->id, (uint32_t)(done - old));
	}
	if (p->close_stdin && p->in_len == 0 && p->fd_in >= 0) {
		if (p->tty) {
			struct termios t;
			char eof = 4;
			if (tcgetattr(p->fd_in, &t) == 0 && t.c_cc[VEOF])
				eof = (char)t.c_cc[VEOF];
			ssize_t w = write(p->fd_in, &eof, 1);
			(void)w;
		}
		close_in(p);
	}
}

void proc_stdin(uint32_t id, const uint8_t *data, size_t len)
{
	struct proc *p = find(id);
	if (!p || len == 0)
		return;
	/* A host that ignores its window cannot make us buffer without bound. */
	if (p->fd_in < 0 || p->close_stdin || p->in_len + len > STDIN_BUF_MAX) {
		channel_send_credit(id, (uint32_t)len);
		return;
	}
	if (p->in_cap - p->in_len < len) {
		size_t cap = p->in_cap ? p->in_cap : 65536;
		while (cap - p->in_len < len)
			cap *= 2;
		uint8_t *b = realloc(p->in_buf, cap);
		if (!b) {
			channel_send_credit(id, (uint32_t)len);
			return;
		}
		p->in_buf = b;
		p->in_cap = cap;
	}
	memcpy(p->in_buf + p->in_len, data, len);
	p->in_len += len;
	flush_stdin(p);
}

void proc_close_stdin(uint32_t id)
{
	struct proc *p = find(id);
	if (!p)
		return;
	p->close_stdin = 1;
	flush_stdin(p);
}

void proc_credit(uint32_t id, uint32_t bytes)
{
	struct proc *p = find(id);
	if (!p)
		return;
	uint64_t out = p->sent - p->acked, n = bytes < out ? bytes : out;
	forget(p, n);
	p->acked += n;
	if (p->finished)
		return;
	uint64_t c = (uint64_t)p->credit + bytes;
	p->credit = c > UINT32_MAX ? UINT32_MAX : (uint32_t)c;
	if (p->credit > 0 && p->nocredit_since) {
		p->waited_ms += main_now_ms() - p->nocredit_since;
		p->nocredit_since = 0;
	}
}

void proc_detach_all(void)
{
	for (struct proc *p = procs; p; p = p->next) {
		p->claimed = 0;
		p->in_nocredit = p->in_len;
	}
}

static void queue_exit(struct proc *p)
{
	uint8_t buf[64];
	struct proto_writer w;
	proto_writer_begin(&w, buf, sizeof(buf), PROTO_OP_EXIT, p->id);
	proto_writer_u32(&w, PROTO_TAG_STATUS, (uint32_t)p->status);
	proto_writer_u32(&w, PROTO_TAG_SIGNAL, (uint32_t)p->signo);
	channel_send(buf, proto_writer_end(&w));
}

void proc_resume(const struct proto_frame *f)
{
	uint32_t id = f->hdr.id, pid_id = 0;
	uint64_t received = 0;
	if (!proto_frame_u32(f, PROTO_TAG_PROC, &pid_id) ||
	    !proto_frame_u64(f, PROTO_TAG_RECEIVED, &received)) {
		channel_send_error(id, EINVAL, "RESUME needs PROC and RECEIVED");
		return;
	}
	struct proc *p = find(pid_id);
	if (!p) {
		channel_send_error(id, ESRCH, "no such process (never started, or its EXIT is gone)");
		return;
	}
	if (received < p->acked || received > p->sent) {
		char msg[160];
		snprintf(msg, sizeof(msg), "RECEIVED %llu outside the retained output %llu..%llu",
			 (unsigned long long)received, (unsigned long long)p->acked,
			 (unsigned long long)p->sent);
		channel_send_error(id, ERANGE, msg);
		return;
	}
	forget(p, received - p->acked);
	p->acked = received;
	p->claimed = 1;
	channel_send_ok(id);
	/* What the host does not have, in order; the new window counts it as unacknowledged. */
	channel_send(p->ret + p->ret_off, p->ret_len - p->ret_off);
	uint64_t out = p->sent - p->acked;
	p->credit = out < PROTO_INITIAL_CREDIT ? PROTO_INITIAL_CREDIT - (uint32_t)out : 0;
	if (p->finished) {
		queue_exit(p);
	} else if (p->credit > 0 && p->nocredit_since) {
		p->waited_ms += main_now_ms() - p->nocredit_since;
		p->nocredit_since = 0;
	}
}

void proc_signal(uint32_t id, int signo)
{
	struct proc *p = find(id);
	if (!p || p->reaped || p->finished || signo <= 0 || signo >= NSIG)
		return;
	/* PID 1 of a container gets the signal alone (docker's `kill`, `stop`), and from here, its
	 * parent namespace: the kernel delivers SIGKILL, and other signals only if it handles them. */
	if (p->ns_init) {
		kill(p->pid, signo);
		return;
	}
	if (kill(-p->pid, signo) < 0)
		kill(p->pid, signo);
}

void proc_resize(uint32_t id, unsigned rows, unsigned cols)
{
	struct proc *p = find(id);
	if (!p || p->finished || !p->tty || p->fd_out < 0)
		return;
	struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
	ioctl(p->fd_out, TIOCSWINSZ, &ws);
}

void proc_reap(void)
{
	int st;
	pid_t pid;
	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		for (struct proc *p = procs; p; p = p->next) {
			if (p->pid != pid || p->reaped || p->finished)
				continue;
			p->reaped = 1;
			p->reaped_ms = main_now_ms();
			if (WIFSIGNALED(st)) {
				p->signo = WTERMSIG(st);
				p->status = 128 + p->signo;
			} else {
				p->status = WEXITSTATUS(st);
			}
			if (p->credit == 0)
				p->nocredit_since = p->reaped_ms;
			/* A member's PID 1 took its namespace with it: its root goes too. */
			if (p->main && p->ns_init && p->container)
				pods_release(p->container);
			break;
		}
	}
}

size_t proc_live(void)
{
	size_t n = 0;
	for (struct proc *p = procs; p; p = p->next)
		n += !p->reaped;
	return n;
}

size_t proc_pollfds(struct pollfd *pfds, size_t max)
{
	size_t n = 0;
	int can_read = channel_pending() < OUT_QUEUE_HIGH;
	for (struct proc *p = procs; p && n + 3 <= max; p = p->next) {
		short out_ev = (can_read && p->credit > 0) ? POLLIN : 0;
		/* Not polling an fd at all while we may not read it: a hung-up pipe or pty would
		 * otherwise report POLLHUP forever. */
		if (p->fd_out >= 0) {
			short ev = out_ev;
			if (p->tty && p->fd_in >= 0 && p->in_len > 0)
				ev |= POLLOUT;
			pfds[n++] = (struct pollfd){.fd = ev ? p->fd_out : -1, .events = ev};
		}
		if (p->fd_err >= 0)
			pfds[n++] = (struct pollfd){.fd = out_ev ? p->fd_err : -1, .events = out_ev};
		if (!p->tty && p->fd_in >= 0 && p->in_len > 0)
			pfds[n++] = (struct pollfd){.fd = p->fd_in, .events = POLLOUT};
	}
	return n;
}

/* Reads one chunk of output; returns 0 on EOF or error (the fd is closed), 1 otherwise. */
static int relay(struct proc *p, int *fd, uint16_t op)
{
	size_t max = p->credit < PROTO_MAX_DATA ? p->credit : PROTO_MAX_DATA;
	if (max == 0)
		return 1;
	uint8_t *buf = channel_data_begin(max);
	if (!buf)
		return 1;
	ssize_t n = read(*fd, buf, max);
	if (n > 0) {
		if (retain(p, op, buf, (size_t)n) < 0)
			main_log("out of memory: output of process %u not kept for a re-attach", p->id);
		p->sent += (uint64_t)n;
		/* without a host that asked for it, the output waits in `ret` for a RESUME */
		channel_data_commit(op, p->id, p->claimed ? (size_t)n : 0);
		p->credit -= (uint32_t)n;
		if (p->credit == 0 && p->reaped)
			p->nocredit_since = main_now_ms();
		return 1;
	}
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return 1;
	/* EOF, or EIO from a pty master whose slaves are all closed. */
	if (p->tty && fd == &p->fd_out)
		p->fd_in = -1;
	close_fd(fd);
	return 0;
}

void proc_handle(const struct pollfd *pfds, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (pfds[i].fd < 0 || pfds[i].revents == 0)
			continue;
		for (struct proc *p = procs; p; p = p->next) {
			if (pfds[i].fd == p->fd_out && (pfds[i].revents & (POLLIN | POLLHUP | POLLERR))) {
				relay(p, &p->fd_out, PROTO_OP_STDOUT);
			} else if (pfds[i].fd == p->fd_err && (pfds[i].revents & (POLLIN | POLLHUP | POLLERR))) {
				relay(p, &p->fd_err, PROTO_OP_STDERR);
			}
			if (p->fd_in >= 0 && pfds[i].fd == p->fd_in && (pfds[i].revents & (POLLOUT | POLLERR)))
				flush_stdin(p);
			if (pfds[i].fd == p->fd_out || pfds[i].fd == p->fd_err || pfds[i].fd == p->fd_in)
				break;
		}
	}
}

static unsigned long long finished_count;

/* The process's EXIT is due: send it to a host that asked for the process, and keep the record
 * (the EXIT and the output not yet credited) for a host that re-attaches; the oldest record
 * beyond FINISHED_MAX goes. */
static void finish(struct proc *p)
{
	if (p->main)
		sync();
	if (p->claimed)
		queue_exit(p);
	close_stdio(p);
	p->in_buf = NULL;
	p->in_len = p->in_cap = 0;
	p->finished = 1;
	p->finished_seq = ++finished_count;
}

/* Frees the oldest finished records beyond FINISHED_MAX (not while walking the table). */
static void evict_finished(void)
{
	size_t n = 0;
	struct proc *oldest = NULL;
	for (struct proc *q = procs; q; q = q->next) {
		if (!q->finished)
			continue;
		n++;
		if (!oldest || q->finished_seq < oldest->finished_seq)
			oldest = q;
	}
	if (n > FINISHED_MAX)
		free_proc(oldest);
}

int proc_tick(void)
{
	long long now = main_now_ms();
	int next = -1;
	struct proc *p = procs;
	while (p) {
		struct proc *nx = p->next;
		if (p->reaped && !p->finished) {
			int eof = p->fd_out < 0 && p->fd_err < 0;
			long long waited = p->waited_ms + (p->nocredit_since ? now - p->nocredit_since : 0);
			long long due = p->reaped_ms + EXIT_GRACE_MS + waited;
			if (eof || (!p->nocredit_since && now >= due)) {
				finish(p);
			} else if (!p->nocredit_since) {
				int left = (int)(due - now);
				if (next < 0 || left < next)
					next = left;
			}
		}
		p = nx;
	}
	evict_finished();
	return next;
}
