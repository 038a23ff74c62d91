/* Process table: starts processes, relays stdio under credit flow control, reaps, reports EXIT. */
#define _GNU_SOURCE
#include "proc.h"

#include "caps.h"
#include "channel.h"
#include "init.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#define EXIT_GRACE_MS 500
#define OUT_QUEUE_HIGH (1024 * 1024)
#define STDIN_BUF_MAX (4u * PROTO_INITIAL_CREDIT)
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

struct proc {
	struct proc *next;
	uint32_t id;
	pid_t pid;
	int tty;
	int main;
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
	if (p->tty)
		p->fd_in = -1;
	close_fd(&p->fd_in);
	close_fd(&p->fd_out);
	close_fd(&p->fd_err);
	free(p->in_buf);
	free(p);
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
}

static int parse_req(const struct proto_frame *f, struct start_req *r)
{
	memset(r, 0, sizeof(*r));
	r->caps = caps_default(); /* a host that sends no CAPS predates it: docker's default */
	r->argv = calloc(f->nfields + 1, sizeof(char *));
	r->envp = calloc(f->nfields + 1, sizeof(char *));
	r->groups = calloc(f->nfields + 1, sizeof(gid_t));
	if (!r->argv || !r->envp || !r->groups)
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

static void child_fail(int errfd, int err)
{
	ssize_t w = write(errfd, &err, sizeof(err));
	(void)w;
	_exit(127);
}

static void child(const struct start_req *r, const char *root, int errfd, int in, int out, int err,
		  const char *slave)
{
	sigset_t all;
	sigfillset(&all);
	for (int s = 1; s < NSIG; s++)
		signal(s, SIG_DFL);
	sigprocmask(SIG_UNBLOCK, &all, NULL);
	if (setsid() < 0)
		child_fail(errfd, errno);
	if (slave) {
		int fd = open(slave, O_RDWR);
		if (fd < 0)
			child_fail(errfd, errno);
		if (ioctl(fd, TIOCSCTTY, 0) < 0)
			child_fail(errfd, errno);
		in = out = err = fd;
	}
	if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0)
		child_fail(errfd, errno);
	/* Every fd of init is O_CLOEXEC; errfd must survive until exec, so nothing to close here. */
	if (root && (chroot(root) < 0 || chdir("/") < 0))
		child_fail(errfd, errno);
	if (chdir(r->cwd && r->cwd[0] ? r->cwd : "/") < 0)
		child_fail(errfd, errno);
	/* The host's set (docker's default unless --cap-add/--cap-drop/--privileged): without
	 * CAP_SYS_PTRACE the container cannot reach PID 1 (non-dumpable) and its control channel.
	 * The bounding set shrinks before the uid changes and the rest after it, as runc does, so a
	 * set without CAP_SETUID still runs as another user, and a non-root user gets what execve
	 * gives one: nothing permitted or effective. */
	int rc = caps_bound(r->caps);
	if (rc < 0)
		child_fail(errfd, -rc);
	if (setgroups(r->ngroups, r->groups) < 0 || setgid(r->gid) < 0 || setuid(r->uid) < 0)
		child_fail(errfd, errno);
	rc = caps_limit(r->caps);
	if (rc < 0)
		child_fail(errfd, -rc);
	child_fail(errfd, exec_lookup(r));
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

void proc_start(const struct proto_frame *f, const char *root)
{
	uint32_t id = f->hdr.id;
	struct start_req r;
	int rc = parse_req(f, &r);
	if (rc < 0) {
		channel_send_error(id, -rc, rc == -EINVAL ? "START needs a non-empty ARG" : "out of memory");
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
	char slave[128];
	int master = -1;
	const char *what = "pipe";
	if (!p) {
		rc = -ENOMEM;
		goto fail;
	}
	if (pipe2(ep, O_CLOEXEC) < 0)
		goto fail_errno;
	if (r.tty) {
		what = "pty";
		rc = open_pty(&master, slave, sizeof(slave), r.rows, r.cols);
		if (rc < 0)
			goto fail;
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
	if (pid == 0)
		child(&r, root, ep[1], in[0], out[1], err[1], r.tty ? slave : NULL);
	close_fd(&ep[1]);
	close_fd(&in[0]);
	close_fd(&out[1]);
	close_fd(&err[1]);
	int child_err = 0;
	ssize_t n;
	do
		n = read(ep[0], &child_err, sizeof(child_err));
	while (n < 0 && errno == EINTR);
	close_fd(&ep[0]);
	if (n == (ssize_t)sizeof(child_err)) {
		waitpid(pid, NULL, 0);
		close_fd(&in[1]);
		close_fd(&out[0]);
		close_fd(&err[0]);
		close_fd(&master);
		char msg[600];
		snprintf(msg, sizeof(msg), "%s: %s", r.argv[0], strerror(child_err));
		channel_send_error(id, child_err, msg);
		free(p);
		free_req(&r);
		return;
	}
	p->id = id;
	p->pid = pid;
	p->tty = r.tty;
	p->main = r.main;
	p->credit = PROTO_INITIAL_CREDIT;
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
	channel_send_ok_pid(id, (uint32_t)pid);
	free_req(&r);
	return;
fail_errno:
	rc = -errno;
fail: {
	char msg[128];
	snprintf(msg, sizeof(msg), "%s: %s", what, strerror(-rc));
	channel_send_error(id, -rc, msg);
	int *fds[] = {&in[0], &in[1], &out[0], &out[1], &err[0], &err[1], &ep[0], &ep[1], &master};
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
		channel_send_credit(p->id, (uint32_t)done);
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
	uint64_t c = (uint64_t)p->credit + bytes;
	p->credit = c > UINT32_MAX ? UINT32_MAX : (uint32_t)c;
	if (p->credit > 0 && p->nocredit_since) {
		p->waited_ms += main_now_ms() - p->nocredit_since;
		p->nocredit_since = 0;
	}
}

void proc_reset_credits(void)
{
	for (struct proc *p = procs; p; p = p->next)
		proc_credit(p->id, PROTO_INITIAL_CREDIT > p->credit ? PROTO_INITIAL_CREDIT - p->credit : 0);
}

void proc_signal(uint32_t id, int signo)
{
	struct proc *p = find(id);
	if (!p || p->reaped || signo <= 0 || signo >= NSIG)
		return;
	if (kill(-p->pid, signo) < 0)
		kill(p->pid, signo);
}

void proc_resize(uint32_t id, unsigned rows, unsigned cols)
{
	struct proc *p = find(id);
	if (!p || !p->tty || p->fd_out < 0)
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
			if (p->pid != pid || p->reaped)
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
		channel_data_commit(op, p->id, (size_t)n);
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

static void send_exit(struct proc *p)
{
	if (p->main)
		sync();
	uint8_t buf[64];
	struct proto_writer w;
	proto_writer_begin(&w, buf, sizeof(buf), PROTO_OP_EXIT, p->id);
	proto_writer_u32(&w, PROTO_TAG_STATUS, (uint32_t)p->status);
	proto_writer_u32(&w, PROTO_TAG_SIGNAL, (uint32_t)p->signo);
	channel_send(buf, proto_writer_end(&w));
}

int proc_tick(void)
{
	long long now = main_now_ms();
	int next = -1;
	struct proc *p = procs;
	while (p) {
		struct proc *nx = p->next;
		if (p->reaped) {
			int eof = p->fd_out < 0 && p->fd_err < 0;
			long long waited = p->waited_ms + (p->nocredit_since ? now - p->nocredit_since : 0);
			long long due = p->reaped_ms + EXIT_GRACE_MS + waited;
			if (eof || (!p->nocredit_since && now >= due)) {
				send_exit(p);
				free_proc(p);
			} else if (!p->nocredit_since) {
				int left = (int)(due - now);
				if (next < 0 || left < next)
					next = left;
			}
		}
		p = nx;
	}
	return next;
}
