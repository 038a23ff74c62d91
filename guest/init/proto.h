/* steelcup guest protocol v1: frame and field codec (pure; see docs/guest-protocol.md). */
#ifndef STEELCUP_PROTO_H
#define STEELCUP_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PROTO_VERSION 1u
#define PROTO_MAGIC 0x70756373u
#define PROTO_HDR_SIZE 16u
#define PROTO_MAX_PAYLOAD 1048576u
#define PROTO_MAX_DATA 65536u
#define PROTO_MAX_STRING 65536u
#define PROTO_MAX_FIELDS 4096u
#define PROTO_FIELD_HDR 6u
#define PROTO_INITIAL_CREDIT 262144u

enum proto_op {
	PROTO_OP_HELLO = 1,
	PROTO_OP_HELLO_OK = 2,
	PROTO_OP_OK = 3,
	PROTO_OP_ERROR = 4,
	PROTO_OP_SETUP_ROOT = 5,
	PROTO_OP_START = 6,
	PROTO_OP_STDIN = 7,
	PROTO_OP_STDOUT = 8,
	PROTO_OP_STDERR = 9,
	PROTO_OP_CLOSE_STDIN = 10,
	PROTO_OP_CREDIT = 11,
	PROTO_OP_SIGNAL = 12,
	PROTO_OP_RESIZE = 13,
	PROTO_OP_EXIT = 14,
	PROTO_OP_POWEROFF = 15,
	PROTO_OP_PING = 16,
	PROTO_OP_NET_CONFIG = 17,
	PROTO_OP_MOUNT = 18,
	/* 19 is FIXUP (fixup.h) */
	PROTO_OP_STAGE_ROOT = 20,
	PROTO_OP_SYSCTL = 21,
	PROTO_OP_RESUME = 22,
	PROTO_OP_SYNC_ROOT = 23,
	PROTO_OP_STAGE_LOWER = 24,
};

enum proto_tag {
	PROTO_TAG_VERSION = 1,
	PROTO_TAG_KERNEL = 2,
	PROTO_TAG_INIT_VERSION = 3,
	PROTO_TAG_ERRNO = 4,
	PROTO_TAG_MESSAGE = 5,
	PROTO_TAG_PID = 6,
	PROTO_TAG_SOURCE = 7,
	PROTO_TAG_HOSTNAME = 8,
	PROTO_TAG_ARG = 9,
	PROTO_TAG_ENV = 10,
	PROTO_TAG_CWD = 11,
	PROTO_TAG_UID = 12,
	PROTO_TAG_GID = 13,
	PROTO_TAG_GROUP = 14,
	PROTO_TAG_TTY = 15,
	PROTO_TAG_ROWS = 16,
	PROTO_TAG_COLS = 17,
	PROTO_TAG_STDIN = 18,
	PROTO_TAG_BYTES = 19,
	PROTO_TAG_SIGNO = 20,
	PROTO_TAG_STATUS = 21,
	PROTO_TAG_SIGNAL = 22,
	PROTO_TAG_READONLY = 23,
	PROTO_TAG_MAIN = 24,
	PROTO_TAG_MAC = 25,
	PROTO_TAG_ADDRESS = 26,
	PROTO_TAG_PREFIX = 27,
	PROTO_TAG_GATEWAY = 28,
	PROTO_TAG_MTU = 29,
	PROTO_TAG_IFNAME = 30,
	PROTO_TAG_TARGET = 31,
	PROTO_TAG_FSTYPE = 32,
	PROTO_TAG_OPTIONS = 33,
	/* 34..37 are FIXUP's (fixup.h) */
	PROTO_TAG_SUBDIR = 38,
	PROTO_TAG_CAPS = 39,
	PROTO_TAG_RLIMIT = 40,
	PROTO_TAG_SYSCTL = 41,
	PROTO_TAG_PIDS_MAX = 42,
	PROTO_TAG_LAST_ID = 43,
	PROTO_TAG_PROC = 44,
	PROTO_TAG_RECEIVED = 45,
	PROTO_TAG_CONTAINER = 46,
	PROTO_TAG_CACHE = 47,
	PROTO_TAG_DROP = 48,
	PROTO_TAG_REHEARSE = 49,
	PROTO_TAG_PATH = 50,
	PROTO_TAG_STAGED = 51,
};

enum proto_type { PROTO_TYPE_UNKNOWN, PROTO_TYPE_U32, PROTO_TYPE_STRING, PROTO_TYPE_U64 };

/* Decoder results: 0 is success, negative values are errors. */
enum proto_result {
	PROTO_RES_OK = 0,
	PROTO_RES_SHORT = -1,        /* need more bytes (header or payload) */
	PROTO_RES_BAD_MAGIC = -2,
	PROTO_RES_TOO_LONG = -3,     /* length over the frame cap */
	PROTO_RES_FIELD_PAST_END = -4,
	PROTO_RES_INT_SIZE = -5,     /* u32 field not 4 bytes, u64 field not 8 */
	PROTO_RES_NUL_IN_STRING = -6,
	PROTO_RES_STRING_TOO_LONG = -7,
	PROTO_RES_TOO_MANY_FIELDS = -8,
	PROTO_RES_DATA_TOO_LONG = -9,
	PROTO_RES_TRAILING = -10,
};

struct proto_header {
	uint32_t magic;
	uint16_t op;
	uint16_t flags;
	uint32_t id;
	uint32_t len;
};

struct proto_field {
	uint16_t tag;
	uint32_t len;
	const uint8_t *val;
};

struct proto_frame {
	struct proto_header hdr;
	const uint8_t *payload; /* hdr.len bytes */
	size_t nfields;
	struct proto_field *fields; /* caller-provided, PROTO_MAX_FIELDS entries */
};

bool proto_is_data_op(uint16_t op);
enum proto_type proto_tag_type(uint16_t tag);
const char *proto_strerror(int res);

uint16_t proto_get16(const uint8_t *p);
uint32_t proto_get32(const uint8_t *p);
uint64_t proto_get64(const uint8_t *p);
void proto_put16(uint8_t *p, uint16_t v);
void proto_put32(uint8_t *p, uint32_t v);
void proto_put64(uint8_t *p, uint64_t v);

/* Parses and checks a header from n bytes: OK, SHORT, BAD_MAGIC or TOO_LONG. */
int proto_parse_header(const uint8_t *buf, size_t n, struct proto_header *h);
/* Checks and splits a payload for opcode op into fields (none for data opcodes). */
int proto_decode_payload(uint16_t op, const uint8_t *payload, uint32_t len,
			 struct proto_field *fields, size_t max_fields, size_t *nfields);
/* Decodes exactly one frame that occupies all n bytes. */
int proto_decode_frame(const uint8_t *buf, size_t n, struct proto_frame *f);

/* Last occurrence of a u32 / u64 / string tag; false if absent. */
bool proto_frame_u32(const struct proto_frame *f, uint16_t tag, uint32_t *out);
bool proto_frame_u64(const struct proto_frame *f, uint16_t tag, uint64_t *out);
bool proto_frame_str(const struct proto_frame *f, uint16_t tag, const uint8_t **val, uint32_t *len);

/* Encoder into a caller buffer; any overflow sets .overflow and makes proto_writer_end fail. */
struct proto_writer {
	uint8_t *buf;
	size_t cap;
	size_t len;
	bool overflow;
};

void proto_writer_begin(struct proto_writer *w, uint8_t *buf, size_t cap, uint16_t op, uint32_t id);
void proto_writer_u32(struct proto_writer *w, uint16_t tag, uint32_t v);
void proto_writer_u64(struct proto_writer *w, uint16_t tag, uint64_t v);
void proto_writer_bytes(struct proto_writer *w, uint16_t tag, const void *val, size_t len);
void proto_writer_str(struct proto_writer *w, uint16_t tag, const char *s);
void proto_writer_data(struct proto_writer *w, const void *data, size_t len);
/* Patches the length; returns the frame size, or 0 on overflow. */
size_t proto_writer_end(struct proto_writer *w);

#endif
