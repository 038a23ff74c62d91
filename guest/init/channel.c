/* The control channel: finds and opens the steelcup.ctl port, frames input, queues output. */
#include "channel.h"

#include "init.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RECHECK_MS 250
#define IN_CAP (PROTO_HDR_SIZE + PROTO_MAX_PAYLOAD + 65536)

static int port_fd = -1;
static int connected;
static long long next_recheck_ms;
static uint8_t *in_buf;
static size_t in_len;
static int resyncing; /* an ERROR was sent; skip quietly until the next magic */
static uint8_t *out_buf;
static size_t out_len, out_off, out_cap;
static size_t data_hdr; /* offset of a reserved data frame */
static struct proto_field fields[PROTO_MAX_FIELDS];

static int find_port(const char *name, char *dev, size_t devlen)
{
	DIR *d = opendir("/sys/class/virtio-ports");
	if (!d)
		return -ENOENT;
	struct dirent *de;
	int rc = -ENOENT;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		char path[512], buf[256];
		snprintf(path, sizeof(path), "/sys/class/virtio-ports/%s/name", de->d_name);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		ssize_t n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (n <= 0)
			continue;
		buf[n] = 0;
		buf[strcspn(buf, "\n")] = 0;
		if (strcmp(buf, name) == 0) {
			snprintf(dev, devlen, "/dev/%s", de->d_name);
			rc = 0;
			break;
		}
	}
	closedir(d);
	return rc;
}

int channel_open(const char *name, int timeout_ms)
{
	char dev[300];
	long long deadline = main_now_ms() + timeout_ms;
	int rc;
	for (;;) {
		rc = find_port(name, dev, sizeof(dev));
		if (rc == 0) {
			port_fd = open(dev, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
			if (port_fd >= 0)
				break;
			rc = -errno;
		}
		if (main_now_ms() >= deadline)
			return rc;
		usleep(5000);
	}
	/* SIGIO tells us when the host connects or disconnects. */
	fcntl(port_fd, F_SETOWN, getpid());
	fcntl(port_fd, F_SETFL, O_RDWR | O_NONBLOCK | O_ASYNC);
	in_buf = malloc(IN_CAP);
	if (!in_buf)
		main_fatal("out of memory");
	connected = 1;
	return 0;
}

static void disconnect(void)
{
	/* Nobody will read queued replies; a new host starts with HELLO. */
	connected = 0;
	in_len = 0;
	resyncing = 0;
	out_len = out_off = 0;
	next_recheck_ms = main_now_ms() + RECHECK_MS;
}

void channel_recheck(void)
{
	if (port_fd >= 0 && !connected)
		connected = 1;
}

int channel_timeout_ms(void)
{
	if (connected)
		return -1;
	long long left = next_recheck_ms - main_now_ms();
	return left < 0 ? 0 : (int)left;
}

void channel_pollfd(struct pollfd *pfd)
{
	if (!connected && main_now_ms() >= next_recheck_ms)
		connected = 1;
	pfd->fd = connected ? port_fd : -1;
	pfd->events = POLLIN | (out_len > out_off ? POLLOUT : 0);
	pfd->revents = 0;
}

size_t channel_pending(void) { return out_len - out_off; }

static int out_reserve(size_t n)
{
	if (out_off > 0 && out_off == out_len)
		out_off = out_len = 0;
	if (out_cap - out_len >= n)
		return 0;
	if (out_off > 0) {
		memmove(out_buf, out_buf + out_off, out_len - out_off);
		out_len -= out_off;
		out_off = 0;
		if (out_cap - out_len >= n)
			return 0;
	}
	size_t cap = out_cap ? out_cap : 65536;
	while (cap - out_len < n)
		cap *= 2;
	uint8_t *p = realloc(out_buf, cap);
	if (!p)
		return -1;
	out_buf = p;
	out_cap = cap;
	return 0;
}

void channel_send(const uint8_t *frame, size_t n)
{
	if (!connected || n == 0 || out_reserve(n) < 0)
		return;
	memcpy(out_buf + out_len, frame, n);
	out_len += n;
}

uint8_t *channel_data_begin(size_t max)
{
	if (out_reserve(PROTO_HDR_SIZE + max) < 0)
		return NULL;
	data_hdr = out_len;
	return out_buf + out_len + PROTO_HDR_SIZE;
}

void channel_data_commit(uint16_t op, uint32_t id, size_t n)
{
	if (!connected || n == 0)
		return;
	uint8_t *h = out_buf + data_hdr;
	proto_put32(h, PROTO_MAGIC);
	proto_put16(h + 4, op);
	proto_put16(h + 6, 0);
	proto_put32(h + 8, id);
	proto_put32(h + 12, (uint32_t)n);
	out_len = data_hdr + PROTO_HDR_SIZE + n;
}

void channel_send_ok(uint32_t id)
{
	uint8_t buf[PROTO_HDR_SIZE];
	struct proto_writer w;
	proto_writer_begin(&w, buf, sizeof(buf), PROTO_OP_OK, id);
	channel_send(buf, proto_writer_end(&w));
}

void channel_send_ok_u32(uint32_t id, uint16_t tag, uint32_t v)
{
	uint8_t buf[64];
	struct proto_writer w;
	proto_writer_begin(&w, buf, sizeof(buf), PROTO_OP_OK, id);
	proto_writer_u32(&w, tag, v);
	channel_send(buf, proto_writer_end(&w));
}

void channel_send_error(uint32_t id, int err, const char *msg)
{
	uint8_t buf[600];
	struct proto_writer w;
	char m[512];
	snprintf(m, sizeof(m), "%s", msg);
	proto_writer_begin(&w, buf, sizeof(buf), PROTO_OP_ERROR, id);
	proto_writer_u32(&w, PROTO_TAG_ERRNO, (uint32_t)err);
	proto_writer_str(&w, PROTO_TAG_MESSAGE, m);
	channel_send(buf, proto_writer_end(&w));
}

void channel_send_credit(uint32_t id, uint32_t bytes)
{
	uint8_t buf[64];
	struct proto_writer w;
	proto_writer_begin(&w, buf, sizeof(buf), PROTO_OP_CREDIT, id);
	proto_writer_u32(&w, PROTO_TAG_BYTES, bytes);
	channel_send(buf, proto_writer_end(&w));
}

static void protocol_error(int res)
{
	if (!resyncing)
		channel_send_error(0, EPROTO, proto_strerror(res));
	resyncing = 1;
}

/* Drops bytes up to the next possible magic (a partial magic at the end is kept). */
static void skip_to_magic(size_t from)
{
	static const uint8_t magic[4] = {0x73, 0x63, 0x75, 0x70};
	size_t i = from;
	for (; i < in_len; i++) {
		size_t k = in_len - i < 4 ? in_len - i : 4;
		if (memcmp(in_buf + i, magic, k) == 0)
			break;
	}
	memmove(in_buf, in_buf + i, in_len - i);
	in_len -= i;
}

static void process_input(channel_dispatch_fn dispatch)
{
	size_t off = 0;
	for (;;) {
		struct proto_header h;
		int res = proto_parse_header(in_buf + off, in_len - off, &h);
		if (res == PROTO_RES_SHORT)
			break;
		if (res != PROTO_RES_OK) {
			protocol_error(res);
			memmove(in_buf, in_buf + off, in_len - off);
			in_len -= off;
			off = 0;
			skip_to_magic(1);
			continue;
		}
		if (in_len - off - PROTO_HDR_SIZE < h.len)
			break;
		resyncing = 0;
		struct proto_frame f = {.hdr = h, .payload = in_buf + off + PROTO_HDR_SIZE, .fields = fields};
		res = proto_decode_payload(h.op, f.payload, h.len, fields, PROTO_MAX_FIELDS, &f.nfields);
		if (res != PROTO_RES_OK)
			channel_send_error(h.id, EPROTO, proto_strerror(res));
		else
			dispatch(&f);
		off += PROTO_HDR_SIZE + h.len;
		if (!connected)
			return;
	}
	if (off > 0) {
		memmove(in_buf, in_buf + off, in_len - off);
		in_len -= off;
	}
}

static void write_out(void)
{
	while (out_len > out_off) {
		ssize_t n = write(port_fd, out_buf + out_off, out_len - out_off);
		if (n > 0) {
			out_off += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		break;
	}
	if (out_off == out_len)
		out_off = out_len = 0;
}

void channel_handle(short revents, channel_dispatch_fn dispatch)
{
	if (revents & (POLLIN | POLLHUP | POLLERR)) {
		for (;;) {
			if (in_len == IN_CAP) /* cannot happen: a full frame always fits */
				in_len = 0;
			ssize_t n = read(port_fd, in_buf + in_len, IN_CAP - in_len);
			if (n > 0) {
				in_len += (size_t)n;
				process_input(dispatch);
				if (!connected)
					return;
				continue;
			}
			if (n == 0) {
				disconnect();
				return;
			}
			if (errno == EINTR)
				continue;
			break;
		}
	}
	if (connected && (revents & POLLOUT))
		write_out();
}

void channel_flush(int timeout_ms)
{
	long long deadline = main_now_ms() + timeout_ms;
	while (connected && out_len > out_off) {
		write_out();
		long long left = deadline - main_now_ms();
		if (out_len == out_off || left <= 0)
			break;
		struct pollfd p = {.fd = port_fd, .events = POLLOUT};
		poll(&p, 1, (int)left);
	}
}
