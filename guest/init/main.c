/* steelcup guest init (PID 1): mounts, loads modules, serves the guest protocol on steelcup.ctl. */
#define _GNU_SOURCE
#include "channel.h"
#include "fixup.h"
#include "init.h"
#include "ctlimits.h"
#include "lower.h"
#include "modules.h"
#include "mounts.h"
#include "net.h"
#include "pods.h"
#include "proc.h"
#include "proto.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#define PORT_NAME "steelcup.ctl"
#define PORT_WAIT_MS 10000
#define MAX_POLLFDS 3072

static int sig_fd = -1;
static int root_ready;
static uint32_t poweroff_id;
static long long poweroff_deadline;
static int powering_off;
static uint32_t last_id; /* the highest id any host used: a new host starts above it */

long long main_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void main_log(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (n > (int)sizeof(buf) - 2)
		n = (int)sizeof(buf) - 2;
	buf[n++] = '\n';
	static const char prefix[] = "steelcup-init: ";
	ssize_t w = write(2, prefix, sizeof(prefix) - 1);
	w = write(2, buf, (size_t)n);
	(void)w;
}

/* On microvm with -no-reboot, RB_AUTOBOOT (reboot=t: triple fault) makes QEMU exit; RB_POWER_OFF
 * is tried first for machines that implement it. */
static void power_off(void) __attribute__((noreturn));
static void power_off(void)
{
	sync();
	reboot(RB_POWER_OFF);
	reboot(RB_AUTOBOOT);
	for (;;)
		pause();
}

void main_fatal(const char *msg)
{
	main_log("fatal: %s", msg);
	power_off();
}

static void handle_hello(const struct proto_frame *f)
{
	uint32_t version = 0;
	if (!proto_frame_u32(f, PROTO_TAG_VERSION, &version) || version != PROTO_VERSION) {
		channel_send_error(f->hdr.id, EPROTONOSUPPORT, "unsupported protocol version");
		return;
	}
	struct utsname u;
	if (uname(&u) < 0)
		strcpy(u.release, "unknown");
	uint8_t buf[512];
	struct proto_writer w;
	proto_writer_begin(&w, buf, sizeof(buf), PROTO_OP_HELLO_OK, f->hdr.id);
	proto_writer_u32(&w, PROTO_TAG_VERSION, PROTO_VERSION);
	proto_writer_str(&w, PROTO_TAG_KERNEL, u.release);
	proto_writer_str(&w, PROTO_TAG_INIT_VERSION, INIT_VERSION);
	proto_writer_u32(&w, PROTO_TAG_LAST_ID, last_id);
	channel_send(buf, proto_writer_end(&w));
	proc_detach_all();
}

static void copy_str(const struct proto_frame *f, uint16_t tag, char *out, size_t outlen)
{
	const uint8_t *v;
	uint32_t len;
	out[0] = 0;
	if (proto_frame_str(f, tag, &v, &len) && len < outlen) {
		memcpy(out, v, len);
		out[len] = 0;
	}
}

static void handle_setup_root(const struct proto_frame *f)
{
	uint32_t id = f->hdr.id, ro = 0, pids_max = 0, cache = 0, staged = 0;
	char tag[256], host[256], subdir[1024], msg[300];
	uint32_t container = 0;
	proto_frame_u32(f, PROTO_TAG_CONTAINER, &container);
	if (root_ready && container == 0) {
		channel_send_error(id, EBUSY, "root already set up");
		return;
	}
	copy_str(f, PROTO_TAG_SOURCE, tag, sizeof(tag));
	copy_str(f, PROTO_TAG_HOSTNAME, host, sizeof(host));
	copy_str(f, PROTO_TAG_SUBDIR, subdir, sizeof(subdir));
	proto_frame_u32(f, PROTO_TAG_READONLY, &ro);
	proto_frame_u32(f, PROTO_TAG_PIDS_MAX, &pids_max);
	proto_frame_u32(f, PROTO_TAG_CACHE, &cache);
	proto_frame_u32(f, PROTO_TAG_STAGED, &staged);
	if (tag[0] == 0) {
		channel_send_error(id, EINVAL, "SETUP_ROOT needs SOURCE (at most 255 bytes)");
		return;
	}
	const uint8_t *sv;
	uint32_t slen;
	if (proto_frame_str(f, PROTO_TAG_SUBDIR, &sv, &slen) && slen >= sizeof(subdir)) {
		channel_send_error(id, EINVAL, "SETUP_ROOT SUBDIR over 1023 bytes");
		return;
	}
	int rc;
	if (container != 0) {
		/* A pod member: the VM (its hostname, pids cgroup) is the first container's. */
		if (!root_ready) {
			channel_send_error(id, EINVAL, "a pod member's SETUP_ROOT before the VM's root");
			return;
		}
		rc = pods_setup(container, tag, subdir, ro != 0, msg, sizeof(msg));
		if (rc < 0)
			channel_send_error(id, -rc, msg);
		else
			channel_send_ok(id);
		return;
	}
	rc = mounts_setup_root(tag, subdir, ro != 0, cache, staged != 0, msg, sizeof(msg));
	if (rc < 0) {
		channel_send_error(id, -rc, msg);
		return;
	}
	if (host[0] && sethostname(host, strlen(host)) < 0) {
		snprintf(msg, sizeof(msg), "sethostname: %s", strerror(errno));
		channel_send_error(id, errno, msg);
		return;
	}
	if (pids_max && (rc = ctlimits_pids_setup(pids_max, msg, sizeof(msg))) < 0) {
		channel_send_error(id, -rc, msg);
		return;
	}
	root_ready = 1;
	channel_send_ok(id);
}

static void handle_sync_root(const struct proto_frame *f)
{
	uint32_t drop = 0;
	char msg[300];
	if (!root_ready) {
		channel_send_error(f->hdr.id, EINVAL, "no root to sync (SETUP_ROOT first)");
		return;
	}
	proto_frame_u32(f, PROTO_TAG_DROP, &drop);
	int rc = mounts_sync_root(drop != 0, msg, sizeof(msg));
	if (rc < 0)
		channel_send_error(f->hdr.id, -rc, msg);
	else
		channel_send_ok(f->hdr.id);
}

static void handle_stage_root(const struct proto_frame *f)
{
	char tag[256], msg[300];
	uint32_t cache = MOUNTS_CACHE_NONE;
	if (root_ready) {
		channel_send_error(f->hdr.id, EBUSY, "root already set up");
		return;
	}
	copy_str(f, PROTO_TAG_SOURCE, tag, sizeof(tag));
	if (tag[0] == 0) {
		channel_send_error(f->hdr.id, EINVAL, "STAGE_ROOT needs SOURCE (at most 255 bytes)");
		return;
	}
	proto_frame_u32(f, PROTO_TAG_CACHE, &cache);
	int rc = mounts_stage(tag, cache, msg, sizeof(msg));
	if (rc < 0)
		channel_send_error(f->hdr.id, -rc, msg);
	else
		channel_send_ok(f->hdr.id);
}

/* STAGE_LOWER: a pooled VM made for a known image mounts its erofs before the container is
 * known and reads the files a container of it will likely read, so they are in the guest's
 * caches when SETUP_ROOT (STAGED 1) makes that mount the root's lower. */
static void handle_stage_lower(const struct proto_frame *f)
{
	uint32_t id = f->hdr.id, cap = 0;
	char msg[300];
	if (root_ready) {
		channel_send_error(id, EBUSY, "root already set up");
		return;
	}
	proto_frame_u32(f, PROTO_TAG_BYTES, &cap);
	/* The PATH fields as C strings in wire order: each field's header on the wire is room for
	 * its NUL, so the payload's size bounds them all. */
	const char **paths = calloc(f->nfields + 1, sizeof(char *));
	char *text = malloc((size_t)f->hdr.len + 1);
	size_t npaths = 0, at = 0;
	if (!paths || !text) {
		channel_send_error(id, ENOMEM, "STAGE_LOWER: out of memory");
		goto out;
	}
	for (size_t i = 0; i < f->nfields; i++) {
		const struct proto_field *fl = &f->fields[i];
		if (fl->tag != PROTO_TAG_PATH)
			continue;
		memcpy(text + at, fl->val, fl->len);
		text[at + fl->len] = 0;
		paths[npaths++] = text + at;
		at += (size_t)fl->len + 1;
	}
	int dirfd = mounts_keep_lower(msg, sizeof(msg));
	if (dirfd < 0) {
		channel_send_error(id, -dirfd, msg);
		goto out;
	}
	struct lower_read got;
	lower_read_files(dirfd, paths, npaths, cap ? cap : LOWER_DEFAULT_CAP, &got);
	close(dirfd);
	channel_send_ok_u32(id, PROTO_TAG_BYTES,
			    got.bytes > UINT32_MAX ? UINT32_MAX : (uint32_t)got.bytes);
out:
	free(paths);
	free(text);
}

static void handle_net_config(const struct proto_frame *f)
{
	struct net_req r;
	char msg[300];
	memset(&r, 0, sizeof(r));
	copy_str(f, PROTO_TAG_MAC, r.mac, sizeof(r.mac));
	copy_str(f, PROTO_TAG_IFNAME, r.ifname, sizeof(r.ifname));
	copy_str(f, PROTO_TAG_ADDRESS, r.address, sizeof(r.address));
	copy_str(f, PROTO_TAG_GATEWAY, r.gateway, sizeof(r.gateway));
	proto_frame_u32(f, PROTO_TAG_PREFIX, &r.prefix);
	proto_frame_u32(f, PROTO_TAG_MTU, &r.mtu);
	proto_frame_u32(f, PROTO_TAG_REHEARSE, &r.rehearse);
	int rc = net_config(&r, msg, sizeof(msg));
	if (rc < 0)
		channel_send_error(f->hdr.id, -rc, msg);
	else
		channel_send_ok(f->hdr.id);
}

/* The root of the CONTAINER a frame names (0 if absent) into root; false (and ERROR EINVAL sent)
 * if that container has no root. */
static int container_root(const struct proto_frame *f, uint32_t *container, char *root,
			  size_t rootlen)
{
	*container = 0;
	proto_frame_u32(f, PROTO_TAG_CONTAINER, container);
	if (*container == 0 ? !root_ready : !pods_ready(*container)) {
		char msg[96];
		snprintf(msg, sizeof(msg), "container %u has no root (SETUP_ROOT first)",
			 (unsigned)*container);
		channel_send_error(f->hdr.id, EINVAL, msg);
		return 0;
	}
	return pods_root_path(*container, root, rootlen) == 0;
}

static void handle_start(const struct proto_frame *f)
{
	uint32_t container = 0;
	char root[256];
	proto_frame_u32(f, PROTO_TAG_CONTAINER, &container);
	if (container == 0 && !root_ready) {
		proc_start(f, NULL, 0); /* the VM's own namespaces: a pooled VM's warm-up */
		return;
	}
	if (container_root(f, &container, root, sizeof(root)))
		proc_start(f, root, container);
}

static void handle_mount(const struct proto_frame *f)
{
	uint32_t id = f->hdr.id, ro = 0, container, cache = 0;
	char source[256], fstype[16], target[4096], options[512], msg[300], root[256];
	if (!container_root(f, &container, root, sizeof(root)))
		return;
	copy_str(f, PROTO_TAG_SOURCE, source, sizeof(source));
	copy_str(f, PROTO_TAG_FSTYPE, fstype, sizeof(fstype));
	copy_str(f, PROTO_TAG_TARGET, target, sizeof(target));
	copy_str(f, PROTO_TAG_OPTIONS, options, sizeof(options));
	proto_frame_u32(f, PROTO_TAG_READONLY, &ro);
	proto_frame_u32(f, PROTO_TAG_CACHE, &cache);
	if (target[0] != '/') {
		channel_send_error(id, EINVAL, "MOUNT needs an absolute TARGET (under 4096 bytes)");
		return;
	}
	const uint8_t *v;
	uint32_t vlen;
	if (!proto_frame_str(f, PROTO_TAG_FSTYPE, &v, &vlen))
		snprintf(fstype, sizeof(fstype), "9p");
	if (cache != 0 && (cache != MOUNTS_CACHE_RAM || strcmp(fstype, "9p") != 0)) {
		channel_send_error(id, EINVAL, "MOUNT takes CACHE 2 (copy into RAM) for a 9p share "
					       "only");
		return;
	}
	int rc;
	if (cache == MOUNTS_CACHE_RAM) {
		rc = mounts_copy_into(root, source, target, ro != 0, msg, sizeof(msg));
	} else if (strcmp(fstype, "bind") == 0) {
		char subdir[1024], share[300];
		copy_str(f, PROTO_TAG_SUBDIR, subdir, sizeof(subdir));
		if (!subdir[0]) {
			channel_send_error(id, EINVAL, "a bind MOUNT needs a SUBDIR (under 1024 bytes)");
			return;
		}
		rc = pods_share_mount(source, share, sizeof(share), msg, sizeof(msg));
		if (rc == 0)
			rc = mounts_bind_into(root, share, subdir, target, ro != 0, msg, sizeof(msg));
	} else {
		rc = mounts_mount_into(root, source, fstype, target, options, ro != 0, msg,
				       sizeof(msg));
	}
	if (rc < 0)
		channel_send_error(id, -rc, msg);
	else
		channel_send_ok(id);
}

/* SYSCTL: each SYSCTL field in wire order; the first failure answers ERROR (those before it
 * stay written). */
static void handle_sysctl(const struct proto_frame *f)
{
	char spec[4096], msg[300];
	for (size_t i = 0; i < f->nfields; i++) {
		const struct proto_field *fl = &f->fields[i];
		if (fl->tag != PROTO_TAG_SYSCTL)
			continue;
		if (fl->len >= sizeof(spec)) {
			channel_send_error(f->hdr.id, ENAMETOOLONG, "SYSCTL over 4095 bytes");
			return;
		}
		memcpy(spec, fl->val, fl->len);
		spec[fl->len] = 0;
		int rc = ctlimits_sysctl_write(spec, msg, sizeof(msg));
		if (rc < 0) {
			channel_send_error(f->hdr.id, -rc, msg);
			return;
		}
	}
	channel_send_ok(f->hdr.id);
}

static void handle_poweroff(uint32_t id)
{
	if (powering_off)
		return;
	powering_off = 1;
	poweroff_id = id;
	poweroff_deadline = main_now_ms() + 1000;
	kill(-1, SIGTERM);
}

static void finish_poweroff(void)
{
	sync();
	channel_send_ok(poweroff_id);
	channel_flush(1000);
	power_off();
}

static void dispatch(const struct proto_frame *f)
{
	uint32_t id = f->hdr.id, v = 0, v2 = 0;
	if (id > last_id)
		last_id = id;
	switch (f->hdr.op) {
	case PROTO_OP_HELLO:
		handle_hello(f);
		break;
	case PROTO_OP_SETUP_ROOT:
		handle_setup_root(f);
		break;
	case PROTO_OP_SYNC_ROOT:
		handle_sync_root(f);
		break;
	case PROTO_OP_START:
		handle_start(f);
		break;
	case PROTO_OP_STDIN:
		proc_stdin(id, f->payload, f->hdr.len);
		break;
	case PROTO_OP_CLOSE_STDIN:
		proc_close_stdin(id);
		break;
	case PROTO_OP_CREDIT:
		if (proto_frame_u32(f, PROTO_TAG_BYTES, &v))
			proc_credit(id, v);
		break;
	case PROTO_OP_SIGNAL:
		if (proto_frame_u32(f, PROTO_TAG_SIGNO, &v))
			proc_signal(id, (int)v);
		break;
	case PROTO_OP_RESIZE:
		if (proto_frame_u32(f, PROTO_TAG_ROWS, &v) && proto_frame_u32(f, PROTO_TAG_COLS, &v2))
			proc_resize(id, v, v2);
		break;
	case PROTO_OP_POWEROFF:
		handle_poweroff(id);
		break;
	case PROTO_OP_PING:
		channel_send_ok(id);
		break;
	case PROTO_OP_NET_CONFIG:
		handle_net_config(f);
		break;
	case PROTO_OP_MOUNT:
		handle_mount(f);
		break;
	case FIXUP_OP:
		fixup_handle(f);
		break;
	case PROTO_OP_STAGE_ROOT:
		handle_stage_root(f);
		break;
	case PROTO_OP_SYSCTL:
		handle_sysctl(f);
		break;
	case PROTO_OP_RESUME:
		proc_resume(f);
		break;
	case PROTO_OP_STAGE_LOWER:
		handle_stage_lower(f);
		break;
	default:
		channel_send_error(id, ENOSYS, "unknown opcode");
		break;
	}
}

static void setup_signals(void)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGIO);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigprocmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	sig_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sig_fd < 0)
		main_fatal("signalfd failed");
}

static void drain_signals(void)
{
	struct signalfd_siginfo si;
	while (read(sig_fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		if (si.ssi_signo == SIGIO)
			channel_recheck();
	}
	proc_reap();
}

static int min_timeout(int a, int b)
{
	if (a < 0)
		return b;
	if (b < 0)
		return a;
	return a < b ? a : b;
}

int main(void)
{
	/* Started as a process (a pooled VM's warm-up runs this binary): print the version, touch
	 * nothing. Only PID 1 mounts, loads modules and opens the control port. */
	if (getpid() != 1) {
		puts(INIT_VERSION);
		return 0;
	}
	/* Container processes cannot name us: they run in PID namespaces of their own (proc.c).
	 * Non-dumpable as a second line: reaching our fds (the control port) through pidfd_getfd,
	 * /proc/1/fd or ptrace needs CAP_SYS_PTRACE besides (docs/security.md). */
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		main_log("prctl(PR_SET_DUMPABLE): %s", strerror(errno));
	setup_signals();
	int rc = mounts_initial();
	if (rc < 0)
		main_log("initial mounts: %s", strerror(-rc));
	long long t_start = main_now_ms();
	modules_load_all("/modules.list", "/modules");
	long long t_modules = main_now_ms();
	rc = net_boot();
	if (rc < 0)
		main_log("network at boot (arp_notify, lo up): %s", strerror(-rc));
	rc = channel_open(PORT_NAME, PORT_WAIT_MS);
	if (rc < 0) {
		main_log("port %s: %s", PORT_NAME, strerror(-rc));
		main_fatal("no control channel");
	}
	/* One line for the console log: where the guest's boot time went. */
	main_log("ready at %lld ms since boot (modules %lld ms, port %lld ms)", main_now_ms(),
		 t_modules - t_start, main_now_ms() - t_modules);
	static struct pollfd pfds[MAX_POLLFDS];
	for (;;) {
		int timeout = min_timeout(proc_tick(), channel_timeout_ms());
		if (powering_off) {
			long long left = poweroff_deadline - main_now_ms();
			if (left <= 0 || proc_live() == 0)
				finish_poweroff();
			timeout = min_timeout(timeout, (int)left);
		}
		pfds[0] = (struct pollfd){.fd = sig_fd, .events = POLLIN};
		channel_pollfd(&pfds[1]);
		size_t n = 2 + proc_pollfds(pfds + 2, MAX_POLLFDS - 2);
		int r = poll(pfds, n, timeout);
		if (r < 0) {
			if (errno != EINTR)
				main_log("poll: %s", strerror(errno));
			continue;
		}
		if (pfds[0].revents)
			drain_signals();
		if (pfds[1].revents)
			channel_handle(pfds[1].revents, dispatch);
		proc_handle(pfds + 2, n - 2);
	}
}
