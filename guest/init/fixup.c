/* FIXUP (op 19): clock, RNG reseed and vCPU count of a cloned or pooled VM. */
#define _GNU_SOURCE
#include "fixup.h"
#include "channel.h"
#include "init.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define MAX_CPUS 256
/* From <linux/random.h>, which musl does not ship. */
#define RNDADDENTROPY _IOW('R', 0x03, int[2])
#define RNDRESEEDCRNG _IO('R', 0x07)

static int hexval(uint8_t c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int fixup_unhex(const uint8_t *hex, uint32_t len, uint8_t *out, size_t cap)
{
	if (len % 2 || len / 2 > cap)
		return -1;
	for (uint32_t i = 0; i < len; i += 2) {
		int hi = hexval(hex[i]), lo = hexval(hex[i + 1]);
		if (hi < 0 || lo < 0)
			return -1;
		out[i / 2] = (uint8_t)(hi << 4 | lo);
	}
	return (int)(len / 2);
}

/* Mix host bytes into the input pool (credited), then force a CRNG reseed so the very next
 * read differs from every other clone of the same template. */
static int add_entropy(const uint8_t *bytes, int n, char *msg, size_t msglen)
{
	struct {
		int entropy_count; /* struct rand_pool_info */
		int buf_size;
		uint8_t buf[FIXUP_MAX_ENTROPY];
	} req;
	int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(msg, msglen, "open /dev/urandom: %s", strerror(errno));
		return -errno;
	}
	req.entropy_count = n * 8;
	req.buf_size = n;
	memcpy(req.buf, bytes, (size_t)n);
	int rc = 0;
	if (ioctl(fd, RNDADDENTROPY, &req) < 0) {
		rc = -errno;
		snprintf(msg, msglen, "RNDADDENTROPY: %s", strerror(errno));
	} else if (ioctl(fd, RNDRESEEDCRNG) < 0) {
		rc = -errno;
		snprintf(msg, msglen, "RNDRESEEDCRNG: %s", strerror(errno));
	}
	close(fd);
	return rc;
}

static int write_online(unsigned cpu, int on)
{
	char path[64];
	snprintf(path, sizeof(path), "/sys/devices/system/cpu/cpu%u/online", cpu);
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ssize_t w = write(fd, on ? "1" : "0", 1);
	int rc = w == 1 ? 0 : -errno;
	close(fd);
	return rc;
}

/* cpu0 stays; cpu1..want-1 online, the rest offline. Returns the number online, or -errno
 * when asked for more vCPUs than the VM has. */
static int set_cpus(uint32_t want, char *msg, size_t msglen)
{
	int online = 1;
	for (unsigned cpu = 1; cpu < MAX_CPUS; cpu++) {
		int rc = write_online(cpu, cpu < want);
		if (rc == -ENOENT) {
			if (cpu < want) {
				snprintf(msg, msglen, "only %u vCPUs present, %u asked", cpu, want);
				return -ERANGE;
			}
			break;
		}
		/* EINVAL/EBUSY: already in that state, or a CPU that cannot go offline. */
		if (cpu < want && rc < 0 && rc != -EINVAL && rc != -EBUSY) {
			snprintf(msg, msglen, "online cpu%u: %s", cpu, strerror(-rc));
			return rc;
		}
		if (cpu < want)
			online++;
	}
	return online;
}

void fixup_handle(const struct proto_frame *f)
{
	uint32_t id = f->hdr.id, sec = 0, nsec = 0, cpus = 0;
	char msg[200];
	const uint8_t *hex;
	uint32_t hexlen;
	if (proto_frame_u32(f, FIXUP_TAG_REALTIME_S, &sec)) {
		proto_frame_u32(f, FIXUP_TAG_REALTIME_NS, &nsec);
		struct timespec ts = {.tv_sec = (time_t)sec, .tv_nsec = nsec % 1000000000u};
		if (clock_settime(CLOCK_REALTIME, &ts) < 0) {
			snprintf(msg, sizeof(msg), "clock_settime: %s", strerror(errno));
			channel_send_error(id, errno, msg);
			return;
		}
	}
	if (proto_frame_str(f, FIXUP_TAG_ENTROPY, &hex, &hexlen)) {
		uint8_t bytes[FIXUP_MAX_ENTROPY];
		int n = fixup_unhex(hex, hexlen, bytes, sizeof(bytes));
		if (n < 0) {
			channel_send_error(id, EINVAL, "ENTROPY must be hex, at most 512 bytes");
			return;
		}
		int rc = n > 0 ? add_entropy(bytes, n, msg, sizeof(msg)) : 0;
		if (rc < 0) {
			channel_send_error(id, -rc, msg);
			return;
		}
	}
	int online = 0;
	if (proto_frame_u32(f, FIXUP_TAG_CPUS, &cpus) && cpus > 0) {
		online = set_cpus(cpus, msg, sizeof(msg));
		if (online < 0) {
			channel_send_error(id, -online, msg);
			return;
		}
	}
	uint8_t buf[64];
	struct proto_writer w;
	proto_writer_begin(&w, buf, sizeof(buf), PROTO_OP_OK, id);
	if (online > 0)
		proto_writer_u32(&w, FIXUP_TAG_CPUS, (uint32_t)online);
	channel_send(buf, proto_writer_end(&w));
}
